package slice

import (
	"fmt"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Role is what a caller is to this gateway.
type Role string

const (
	RoleOperator  Role = "operator"   // owns the fleet: its key is configured on every gateway
	RoleProvider  Role = "provider"   // any other authenticated peer; owns the slices naming it
	RoleHomeAdmin Role = "home-admin" // the household's local administrator (local token)
	RoleAnonymous Role = "anonymous"  // nobody we know
)

// Principal is an authenticated caller: over the overlay its peer ID is proven by the secure
// channel; locally a token stands for it.
type Principal struct {
	Role Role    `json:"role"`
	Peer peer.ID `json:"peer,omitempty"`
}

func (p Principal) String() string {
	if p.Peer != "" {
		return fmt.Sprintf("%s %s", p.Role, p.Peer)
	}
	return string(p.Role)
}

// Op names a management operation.
type Op string

const (
	OpSliceCreate  Op = "slice.create"
	OpSliceSet     Op = "slice.set"
	OpSliceRemove  Op = "slice.remove"
	OpSliceList    Op = "slice.list"
	OpSliceGet     Op = "slice.get"
	OpTokenCreate  Op = "token.create"
	OpAppInstall   Op = "app.install"
	OpAppStart     Op = "app.start"
	OpAppStop      Op = "app.stop"
	OpAppUpdate    Op = "app.update"
	OpAppUninstall Op = "app.uninstall"
	OpAppList      Op = "app.list"
	OpUnitList     Op = "unit.list"
	OpProbeCore    Op = "probe.core"
	OpProbeSlice   Op = "probe.slice"
	OpEventsCore   Op = "events.core"
	OpEventsSlice  Op = "events.slice"
	OpMetricsSlice Op = "metrics.slice"
	OpKVGet        Op = "kv.get"
)

// Grant is how far a role reaches for one operation.
type Grant string

const (
	Deny Grant = "-"   // never
	Own  Grant = "own" // only the caller's own slices (or, for lists, filtered to them)
	All  Grant = "all" // every slice
)

// rule is one row of the matrix.
type rule struct {
	op                       Op
	operator, provider, home Grant
	targetsSlice             bool // the request names a slice that must exist
	what                     string
}

// matrix is THE access policy: Manager.Do consults nothing else. docs/access.md is rendered
// from it (TestAccessDocMatchesMatrix keeps them equal). The operator sees and manages
// everything except slice contents (kv.get); apps it installs must still be signed by the
// slice's provider.
var matrix = []rule{
	{OpSliceCreate, All, Deny, Deny, false, "create a slice for a provider, with quotas and granted services"},
	{OpSliceSet, All, Deny, Deny, true, "change a slice's quotas or granted services (at run time)"},
	{OpSliceRemove, All, Deny, Deny, true, "remove a slice, its apps and its storage"},
	{OpSliceList, All, Own, All, false, "list slices (a provider sees only its own)"},
	{OpSliceGet, All, Own, Deny, true, "one slice's quotas, services, usage and apps"},
	{OpTokenCreate, All, Deny, Deny, false, "mint a local API token for a role"},
	{OpAppInstall, All, Own, Deny, true, "install a signed deployment unit in a slice"},
	{OpAppStart, All, Own, Deny, true, "start an installed app"},
	{OpAppStop, All, Own, Deny, true, "stop a running app"},
	{OpAppUpdate, All, Own, Deny, true, "replace an app by a newer unit, hot"},
	{OpAppUninstall, All, Own, Deny, true, "stop and remove an app"},
	{OpAppList, All, Own, Deny, true, "a slice's apps with TR-181 states and faults"},
	{OpUnitList, All, Own, Deny, false, "deployment units in the repository (a provider sees those it signed)"},
	{OpProbeCore, All, Deny, All, false, "gateway version, OS metrics, slice summary"},
	{OpProbeSlice, All, Own, Deny, true, "a slice's memory, CPU, storage and apps"},
	{OpEventsCore, All, Deny, All, false, "the core event stream (denials, watchdog, slice changes)"},
	{OpEventsSlice, All, Own, Deny, true, "a slice's event stream (its apps' logs and faults)"},
	{OpMetricsSlice, All, Own, Deny, true, "Prometheus metrics of one slice only"},
	{OpKVGet, Deny, Own, Deny, true, "read a key of the slice's app storage (slice contents)"},
}

func lookupRule(op Op) (rule, bool) {
	for _, r := range matrix {
		if r.op == op {
			return r, true
		}
	}
	return rule{}, false
}

// DeniedError is an authorisation refusal; its message says who, what and why.
type DeniedError struct {
	Principal Principal
	Op        Op
	Slice     string
	Reason    string
}

func (e *DeniedError) Error() string {
	if e.Slice != "" {
		return fmt.Sprintf("denied: %s may not %s on slice %q: %s", e.Principal, e.Op, e.Slice, e.Reason)
	}
	return fmt.Sprintf("denied: %s may not %s: %s", e.Principal, e.Op, e.Reason)
}

// authorize decides one request. target is the named slice (nil when the op names none or
// the slice does not exist: ownership of a missing slice is never granted, so a provider
// cannot probe which slices exist). It returns the grant the caller acts under.
func authorize(p Principal, op Op, sliceID string, target *Slice) (Grant, error) {
	r, ok := lookupRule(op)
	if !ok {
		return Deny, fmt.Errorf("unknown operation %q", op)
	}
	var g Grant
	switch p.Role {
	case RoleOperator:
		g = r.operator
	case RoleProvider:
		g = r.provider
	case RoleHomeAdmin:
		g = r.home
	default:
		g = Deny
	}
	deny := func(reason string) (Grant, error) {
		return Deny, &DeniedError{Principal: p, Op: op, Slice: sliceID, Reason: reason}
	}
	switch {
	case g == Deny:
		return deny(fmt.Sprintf("the %s role has no %s right", p.Role, op))
	case g == Own && r.targetsSlice && (target == nil || target.Provider != p.Peer):
		return deny("not the caller's slice")
	}
	return g, nil
}

// AccessMarkdown renders the matrix as the table in docs/access.md.
func AccessMarkdown() string {
	var b strings.Builder
	b.WriteString("| operation | operator | provider | home admin | what it does |\n")
	b.WriteString("|---|---|---|---|---|\n")
	for _, r := range matrix {
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", r.op, r.operator, r.provider, r.home, r.what)
	}
	return b.String()
}
