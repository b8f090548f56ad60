package slice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Request is one management operation, as it arrives over HTTP or the overlay.
type Request struct {
	Op       Op       `json:"op"`
	Slice    string   `json:"slice,omitempty"`
	App      string   `json:"app,omitempty"`
	Provider string   `json:"provider,omitempty"` // slice.create: the owner's peer ID
	Quotas   *Quotas  `json:"quotas,omitempty"`   // slice.create, slice.set
	Services []string `json:"services,omitempty"` // slice.create, slice.set: granted services
	Unit     []byte   `json:"unit,omitempty"`     // app.install, app.update: an encoded unit
	Start    bool     `json:"start,omitempty"`    // app.install: start once installed
	Since    uint64   `json:"since,omitempty"`    // events.*: entries after this sequence number
	WaitMs   int64    `json:"wait_ms,omitempty"`  // events.*: wait this long for a first entry
	Limit    int      `json:"limit,omitempty"`    // events.*: at most this many
	Key      string   `json:"key,omitempty"`      // kv.get
	Role     Role     `json:"role,omitempty"`     // token.create
	Peer     string   `json:"peer,omitempty"`     // token.create for a provider
	// EveryMs makes a read-only request a watch: answered now and again every EveryMs on
	// the same stream (overlay) or response (HTTP, NDJSON) until the caller goes (watch.go).
	EveryMs int64 `json:"every_ms,omitempty"`
}

// MaxRequestBytes bounds an encoded request (a unit included).
const MaxRequestBytes = MaxUnitBytes + 64<<10

// DecodeRequest parses a request from untrusted bytes; the error names what is wrong.
func DecodeRequest(r io.Reader) (Request, error) {
	var req Request
	b, err := io.ReadAll(io.LimitReader(r, MaxRequestBytes+1))
	if err != nil {
		return req, err
	}
	if len(b) > MaxRequestBytes {
		return req, fmt.Errorf("request larger than %d bytes", MaxRequestBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("request: %w", err)
	}
	if dec.More() {
		return req, errors.New("request: trailing data")
	}
	if _, ok := lookupRule(req.Op); !ok {
		return req, fmt.Errorf("request: unknown op %q", req.Op)
	}
	if req.Slice != "" {
		if err := ValidID("slice", req.Slice); err != nil {
			return req, err
		}
	}
	if req.App != "" {
		if err := ValidID("app", req.App); err != nil {
			return req, err
		}
	}
	if req.WaitMs < 0 || req.WaitMs > 60_000 {
		return req, errors.New("request: wait_ms must be in [0, 60000]")
	}
	if req.Limit < 0 {
		return req, errors.New("request: limit must not be negative")
	}
	if err := validateWatch(req); err != nil {
		return req, err
	}
	return req, nil
}

// Error kinds the transports map to statuses.
var (
	ErrNotFound   = errors.New("not found")
	ErrBadRequest = errors.New("bad request")
)

func badRequest(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, a...))
}

// Do runs one management operation for p, after checking it against the access matrix.
// It is the only entry point: the HTTP API and the overlay protocol both call it.
func (m *Manager) Do(ctx context.Context, p Principal, req Request) (any, error) {
	m.mu.Lock()
	target := m.st.find(req.Slice)
	m.mu.Unlock()
	if r, ok := lookupRule(req.Op); ok && r.targetsSlice && req.Slice == "" {
		return nil, badRequest("%s needs a slice", req.Op)
	}
	grant, err := m.authorize(p, req.Op, req.Slice, target)
	if err != nil {
		return nil, err
	}
	if r, _ := lookupRule(req.Op); r.targetsSlice && target == nil {
		return nil, fmt.Errorf("%w: slice %q", ErrNotFound, req.Slice)
	}
	switch req.Op {
	case OpSliceCreate:
		return m.createSlice(req)
	case OpSliceSet:
		return m.setSlice(target, req)
	case OpSliceRemove:
		return nil, m.removeSlice(ctx, target)
	case OpSliceList:
		return m.listSlices(p, grant), nil
	case OpSliceGet, OpProbeSlice:
		return m.sliceView(target), nil
	case OpTokenCreate:
		return nil, errors.New("token.create is served by the node's local API")
	case OpAppInstall, OpAppUpdate:
		u, err := DecodeUnit(req.Unit)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
		}
		if req.Op == OpAppInstall {
			return m.install(ctx, target, u, req.Start)
		}
		return m.update(ctx, target, u)
	case OpAppStart, OpAppStop:
		m.mu.Lock()
		defer m.mu.Unlock()
		a := target.app(req.App)
		if a == nil {
			return nil, fmt.Errorf("%w: app %q in slice %q", ErrNotFound, req.App, req.Slice)
		}
		if req.Op == OpAppStart {
			err = m.startLocked(ctx, target, a, FaultFailureOnStart)
		} else {
			err = m.stopLocked(ctx, target, a, StateIdle)
		}
		m.fillRunTimeLocked(target)
		cp := *a
		return &cp, err
	case OpAppUninstall:
		return nil, m.uninstall(ctx, target, req.App)
	case OpAppList:
		return m.sliceView(target).Apps, nil
	case OpUnitList:
		return m.units(p, grant)
	case OpProbeCore:
		return m.probeCore(), nil
	case OpEventsCore:
		return m.core.since(ctx, req.Since, req.Limit, time.Duration(req.WaitMs)*time.Millisecond), nil
	case OpEventsSlice:
		m.mu.Lock()
		ls := m.live[target.ID]
		m.mu.Unlock()
		return ls.events.since(ctx, req.Since, req.Limit, time.Duration(req.WaitMs)*time.Millisecond), nil
	case OpMetricsSlice:
		b, err := m.metrics.sliceText(target.ID)
		return string(b), err
	case OpKVGet:
		if req.App == "" {
			return nil, badRequest("kv.get needs an app")
		}
		m.mu.Lock()
		ls := m.live[target.ID]
		m.mu.Unlock()
		v, ok, err := ls.storage.get(req.App, req.Key)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
		}
		if !ok {
			return nil, fmt.Errorf("%w: key %q of app %q", ErrNotFound, req.Key, req.App)
		}
		return v, nil
	}
	return nil, fmt.Errorf("op %s not implemented", req.Op)
}

// Authorize checks one operation against the matrix, for operations served outside Do
// (the node's token.create); denials are counted and logged as events like Do's.
func (m *Manager) Authorize(p Principal, op Op, sliceID string) error {
	m.mu.Lock()
	target := m.st.find(sliceID)
	m.mu.Unlock()
	_, err := m.authorize(p, op, sliceID, target)
	return err
}

func (m *Manager) authorize(p Principal, op Op, sliceID string, target *Slice) (Grant, error) {
	grant, err := authorize(p, op, sliceID, target)
	var d *DeniedError
	if errors.As(err, &d) {
		m.metrics.denials.WithLabelValues(string(op), string(p.Role)).Inc()
		m.mu.Lock()
		m.event(Event{Kind: "denied", Msg: err.Error(), Attrs: map[string]string{
			"op": string(op), "role": string(p.Role), "peer": p.Peer.String(), "slice": sliceID}}, false)
		m.mu.Unlock()
	}
	return grant, err
}

func (m *Manager) createSlice(req Request) (*SliceView, error) {
	if err := ValidID("slice", req.Slice); err != nil {
		return nil, badRequest("%v", err)
	}
	prov, err := peer.Decode(req.Provider)
	if err != nil {
		return nil, badRequest("provider %q is not a peer ID: %v", req.Provider, err)
	}
	q := Quotas{}
	if req.Quotas != nil {
		q = *req.Quotas
	}
	if err := q.validate(); err != nil {
		return nil, badRequest("%v", err)
	}
	if err := checkServices(req.Services); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.st.find(req.Slice) != nil {
		return nil, fmt.Errorf("%w: slice %q already exists", ErrBadRequest, req.Slice)
	}
	s := &Slice{ID: req.Slice, Provider: prov, Quotas: q, Services: dedup(req.Services), Created: time.Now().UTC()}
	if _, err := m.openSlice(s); err != nil {
		return nil, err
	}
	m.st.Slices = append(m.st.Slices, s)
	if err := m.persistLocked(); err != nil {
		m.st.Slices = m.st.Slices[:len(m.st.Slices)-1]
		delete(m.live, s.ID)
		m.forgetLimitsLocked(s.ID)
		return nil, err
	}
	m.event(Event{Kind: "slice.created", Slice: s.ID, Msg: fmt.Sprintf("slice %s for %s", s.ID, prov),
		Attrs: map[string]string{"services": strings.Join(s.Services, ",")}}, true)
	return m.sliceViewLocked(s), nil
}

func checkServices(svcs []string) error {
	for _, s := range svcs {
		if !slices.Contains(CoreServices, s) {
			return badRequest("unknown service %q (the core exports %s)", s, strings.Join(CoreServices, ", "))
		}
	}
	return nil
}

func dedup(in []string) []string {
	out := slices.Clone(in)
	slices.Sort(out)
	return slices.Compact(out)
}

// setSlice changes quotas and/or grants at run time. Apps that need a service no longer
// granted keep running but their calls to it fail from now on; lowered quotas apply to the
// next allocation (and the watchdog enforces storage).
func (m *Manager) setSlice(s *Slice, req Request) (*SliceView, error) {
	if req.Quotas == nil && req.Services == nil {
		return nil, badRequest("slice.set needs quotas or services")
	}
	if req.Quotas != nil {
		if err := req.Quotas.validate(); err != nil {
			return nil, badRequest("%v", err)
		}
	}
	if err := checkServices(req.Services); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *s
	if req.Quotas != nil {
		s.Quotas = *req.Quotas
	}
	if req.Services != nil {
		s.Services = dedup(req.Services)
	}
	if err := m.persistLocked(); err != nil {
		s.Quotas, s.Services = old.Quotas, old.Services
		return nil, err
	}
	m.syncLimitsLocked(m.live[s.ID], s)
	m.event(Event{Kind: "slice.changed", Slice: s.ID, Msg: fmt.Sprintf("quotas %+v services %v", s.Quotas, s.Services)}, true)
	return m.sliceViewLocked(s), nil
}

func (m *Manager) removeSlice(ctx context.Context, s *Slice) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for _, a := range s.Apps {
		errs = append(errs, m.stopLocked(ctx, s, a, StateIdle))
	}
	dir := m.live[s.ID].storage.dir
	m.st.Slices = slices.DeleteFunc(m.st.Slices, func(x *Slice) bool { return x == s })
	delete(m.live, s.ID)
	m.forgetLimitsLocked(s.ID)
	errs = append(errs, m.persistLocked())
	for _, a := range s.Apps {
		m.removeUnitIfUnused(a.Unit)
	}
	errs = append(errs, os.RemoveAll(dir))
	m.metrics.forgetSlice(s.ID)
	m.event(Event{Kind: "slice.removed", Msg: "removed slice " + s.ID, Attrs: map[string]string{"slice": s.ID}}, false)
	return errors.Join(errs...)
}

// SliceView is a slice as management shows it: record plus usage.
type SliceView struct {
	Slice
	Usage Usage `json:"usage"`
	// Registry is the slice's private service registry now: service → app offering it.
	Registry map[string]string `json:"registry,omitempty"`
}

// Usage is what a slice uses now.
type Usage struct {
	Slice        string         `json:"-"`
	Quotas       Quotas         `json:"-"`
	MemoryBytes  int64          `json:"memory_bytes"`
	CPUSeconds   float64        `json:"cpu_seconds"`
	StorageBytes int64          `json:"storage_bytes"`
	AppsByStatus map[string]int `json:"apps_by_status"`
}

func (m *Manager) sliceView(s *Slice) *SliceView {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sliceViewLocked(s)
}

func (m *Manager) sliceViewLocked(s *Slice) *SliceView {
	m.fillRunTimeLocked(s)
	v := &SliceView{Slice: *s, Usage: m.usageLocked(s), Registry: m.live[s.ID].registrySnapshotLocked()}
	v.Quotas = s.Quotas.withDefaults()
	v.Apps = nil
	for _, a := range s.Apps {
		cp := *a
		v.Apps = append(v.Apps, &cp)
	}
	return v
}

func (m *Manager) usageLocked(s *Slice) Usage {
	u := Usage{Slice: s.ID, Quotas: s.Quotas.withDefaults(), AppsByStatus: map[string]int{}}
	ls := m.live[s.ID]
	u.CPUSeconds = ls.cpuDone
	for _, la := range ls.apps {
		u.MemoryBytes += la.inst.MemoryBytes()
		u.CPUSeconds += la.inst.CPUTime().Seconds()
	}
	u.StorageBytes = ls.storage.usage()
	for _, a := range s.Apps {
		u.AppsByStatus[a.Status]++
	}
	return u
}

func (m *Manager) usages() []Usage {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Usage
	for _, s := range m.st.Slices {
		out = append(out, m.usageLocked(s))
	}
	return out
}

func (m *Manager) listSlices(p Principal, g Grant) []*SliceView {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*SliceView
	for _, s := range m.st.Slices {
		if g == Own && s.Provider != p.Peer {
			continue
		}
		out = append(out, m.sliceViewLocked(s))
	}
	return out
}

// UnitInfo describes a unit in the repository.
type UnitInfo struct {
	CID      string   `json:"cid"`
	Manifest Manifest `json:"manifest"`
	Signer   peer.ID  `json:"signer"`
	Bytes    int      `json:"module_bytes"`
}

func (m *Manager) units(p Principal, g Grant) ([]UnitInfo, error) {
	entries, err := os.ReadDir(filepath.Join(m.opts.Dir, "units"))
	if err != nil {
		return nil, err
	}
	var out []UnitInfo
	for _, e := range entries {
		c, ok := strings.CutSuffix(e.Name(), ".unit")
		if !ok {
			continue
		}
		u, err := m.loadUnit(c)
		if err != nil {
			continue
		}
		signer, _ := u.SignerID()
		if g == Own && signer != p.Peer {
			continue
		}
		out = append(out, UnitInfo{CID: c, Manifest: u.Manifest, Signer: signer, Bytes: len(u.Module)})
	}
	return out, nil
}

// CoreProbe is the gateway-wide probe.
type CoreProbe struct {
	Version   string       `json:"version"`
	UptimeS   float64      `json:"uptime_s"`
	Slices    []SliceBrief `json:"slices"`
	OS        OSMetrics    `json:"os"`
	GoHeap    uint64       `json:"go_heap_bytes"`
	Goroutine int          `json:"goroutines"`
}

// SliceBrief is one slice in the core probe: no contents.
type SliceBrief struct {
	ID       string  `json:"id"`
	Provider peer.ID `json:"provider"`
	Apps     int     `json:"apps"`
	Usage    Usage   `json:"usage"`
}

func (m *Manager) probeCore() *CoreProbe {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	p := &CoreProbe{Version: m.opts.Version, UptimeS: time.Since(m.started).Seconds(),
		OS: readOSMetrics(m.opts.Dir), GoHeap: ms.HeapAlloc, Goroutine: runtime.NumGoroutine()}
	m.mu.Lock()
	for _, s := range m.st.Slices {
		p.Slices = append(p.Slices, SliceBrief{ID: s.ID, Provider: s.Provider, Apps: len(s.Apps), Usage: m.usageLocked(s)})
	}
	m.mu.Unlock()
	return p
}

// OSMetrics are the host's figures (Linux /proc; zero elsewhere).
type OSMetrics struct {
	CPUs           int     `json:"cpus"`
	Load1          float64 `json:"load1"`
	MemTotalBytes  uint64  `json:"mem_total_bytes"`
	MemAvailBytes  uint64  `json:"mem_available_bytes"`
	SwapTotalBytes uint64  `json:"swap_total_bytes"`
	SwapFreeBytes  uint64  `json:"swap_free_bytes"`
	DiskTotalBytes uint64  `json:"disk_total_bytes"`
	DiskFreeBytes  uint64  `json:"disk_free_bytes"`
}

func readOSMetrics(dir string) OSMetrics {
	o := OSMetrics{CPUs: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			var key string
			var kb uint64
			if _, err := fmt.Sscanf(line, "%s %d", &key, &kb); err != nil {
				continue
			}
			switch key {
			case "MemTotal:":
				o.MemTotalBytes = kb << 10
			case "MemAvailable:":
				o.MemAvailBytes = kb << 10
			case "SwapTotal:":
				o.SwapTotalBytes = kb << 10
			case "SwapFree:":
				o.SwapFreeBytes = kb << 10
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		_, _ = fmt.Sscanf(string(b), "%f", &o.Load1)
	}
	var fs syscall.Statfs_t
	if syscall.Statfs(dir, &fs) == nil {
		o.DiskTotalBytes = fs.Blocks * uint64(fs.Bsize)
		o.DiskFreeBytes = fs.Bavail * uint64(fs.Bsize)
	}
	return o
}
