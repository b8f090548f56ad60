package slice

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/nanodc/nanodc/overlay"
)

// counterModule builds examples/wasm/counter (a tiny WAT app: GET bumps a counter kept in
// the storage service and answers {"count":N}).
func counterModule(t testing.TB) []byte { return watModule(t, "counter") }

// watModule assembles examples/wasm/<name>/<name>.wat.
func watModule(t testing.TB, name string) []byte {
	t.Helper()
	if _, err := exec.LookPath("wat2wasm"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("wat2wasm missing (scripts/install-deps.sh installs wabt)")
		}
		t.Skip("wat2wasm missing: run scripts/install-deps.sh")
	}
	out := filepath.Join(t.TempDir(), name+".wasm")
	cmd := exec.Command("wat2wasm", "../../examples/wasm/"+name+"/"+name+".wat", "-o", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// gateway is one real overlay node with a slice manager serving the management protocol.
type gateway struct {
	ov  *overlay.Overlay
	m   *Manager
	dir string
}

func startGateway(t testing.TB, dir string, operator peer.ID) *gateway {
	t.Helper()
	return startGatewayWith(t, Options{Dir: dir, Operator: operator})
}

// startGatewayWith starts a gateway with opts (Dir defaults to a temporary directory).
func startGatewayWith(t testing.TB, opts Options) *gateway {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	ov, err := overlay.New(overlay.Config{PrivKey: newKey(t),
		ListenAddrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/udp/0/quic-v1")}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	opts.Overlay, opts.Version = ov, "test"
	m, err := New(ctx, opts)
	if err != nil {
		cancel()
		ov.Close()
		t.Fatal(err)
	}
	m.ServeOverlay(ctx, ov.Host())
	t.Cleanup(func() {
		cancel()
		if err := m.Close(); err != nil {
			t.Errorf("manager close: %v", err)
		}
		ov.Close()
	})
	return &gateway{ov: ov, m: m, dir: opts.Dir}
}

// client is a management caller: a bare libp2p host with its own key.
type client struct {
	key crypto.PrivKey
	h   host.Host
	gw  peer.ID
}

func newClient(t testing.TB, gw *gateway, key crypto.PrivKey) *client {
	t.Helper()
	h, err := libp2p.New(libp2p.Identity(key), libp2p.NoListenAddrs, libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Connect(ctx, peer.AddrInfo{ID: gw.ov.ID(), Addrs: gw.ov.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	return &client{key: key, h: h, gw: gw.ov.ID()}
}

func (c *client) id() peer.ID { id, _ := peer.IDFromPrivateKey(c.key); return id }

func (c *client) do(t *testing.T, req Request) Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := Call(ctx, c.h, c.gw, req)
	if resp.Status == 0 {
		t.Fatalf("%s: no response: %v", req.Op, err)
	}
	return resp
}

func (c *client) must(t *testing.T, req Request) json.RawMessage {
	t.Helper()
	resp := c.do(t, req)
	if resp.Status != http.StatusOK {
		t.Fatalf("%s by %s: %d %s", req.Op, c.id(), resp.Status, resp.Error)
	}
	return resp.Result
}

func (c *client) unit(t *testing.T, name, version string, module []byte, requires ...string) []byte {
	t.Helper()
	u, err := Pack(c.key, Manifest{Name: name, Version: version, Kind: KindWASM, Requires: requires}, module)
	if err != nil {
		t.Fatal(err)
	}
	b, err := u.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestIsolationMatrix: two competing providers and the operator on one gateway, over the
// real overlay protocol. For every operation of the matrix, provider A against provider B's
// slice is refused (lists come back filtered instead), the operator gets exactly what the
// matrix grants it, and B can do everything on its own slice.
func TestIsolationMatrix(t *testing.T) {
	module := counterModule(t)
	opKey := newKey(t)
	opID, _ := peer.IDFromPrivateKey(opKey)
	gw := startGateway(t, t.TempDir(), opID)
	op, a, b := newClient(t, gw, opKey), newClient(t, gw, newKey(t)), newClient(t, gw, newKey(t))
	services := []string{ServiceLogger, ServiceStorage, ServiceMetrics}

	op.must(t, Request{Op: OpSliceCreate, Slice: "video", Provider: a.id().String(), Services: services})
	op.must(t, Request{Op: OpSliceCreate, Slice: "game", Provider: b.id().String(), Services: services})
	a.must(t, Request{Op: OpAppInstall, Slice: "video", Unit: a.unit(t, "counter", "1", module, ServiceStorage), Start: true})
	b.must(t, Request{Op: OpAppInstall, Slice: "game", Unit: b.unit(t, "counter", "1", module, ServiceStorage), Start: true})
	// Give both apps state and events.
	for _, sid := range []string{"video", "game"} {
		get(t, gw, sid, "counter")
	}

	// requests builds, for each op, a request aimed at slice sid whose only possible failure
	// is authorisation (valid ids, a unit signed by the slice's owner).
	requests := func(sid string, owner *client) map[Op]Request {
		return map[Op]Request{
			OpSliceCreate:  {Op: OpSliceCreate, Slice: "extra-" + sid, Provider: owner.id().String()},
			OpSliceSet:     {Op: OpSliceSet, Slice: sid, Services: services},
			OpSliceRemove:  {Op: OpSliceRemove, Slice: sid},
			OpSliceList:    {Op: OpSliceList},
			OpSliceGet:     {Op: OpSliceGet, Slice: sid},
			OpTokenCreate:  {Op: OpTokenCreate, Role: RoleHomeAdmin},
			OpAppInstall:   {Op: OpAppInstall, Slice: sid, Unit: owner.unit(t, "second", "1", module)},
			OpAppStart:     {Op: OpAppStart, Slice: sid, App: "counter"},
			OpAppStop:      {Op: OpAppStop, Slice: sid, App: "counter"},
			OpAppUpdate:    {Op: OpAppUpdate, Slice: sid, Unit: owner.unit(t, "counter", "2", module, ServiceStorage)},
			OpAppUninstall: {Op: OpAppUninstall, Slice: sid, App: "second"},
			OpAppList:      {Op: OpAppList, Slice: sid},
			OpUnitList:     {Op: OpUnitList},
			OpProbeCore:    {Op: OpProbeCore},
			OpProbeSlice:   {Op: OpProbeSlice, Slice: sid},
			OpEventsCore:   {Op: OpEventsCore},
			OpEventsSlice:  {Op: OpEventsSlice, Slice: sid},
			OpMetricsSlice: {Op: OpMetricsSlice, Slice: sid},
			OpKVGet:        {Op: OpKVGet, Slice: sid, App: "counter", Key: "count"},
		}
	}
	// Destructive operations last, so the others find the slice as it was.
	order := func() []rule {
		rs := slices.Clone(matrix)
		last := map[Op]int{OpAppUninstall: 1, OpSliceRemove: 2}
		slices.SortStableFunc(rs, func(x, y rule) int { return last[x.op] - last[y.op] })
		return rs
	}

	// Provider A against B's slice.
	reqsB := requests("game", b)
	for _, r := range matrix {
		resp := a.do(t, reqsB[r.op])
		switch r.op {
		case OpSliceList, OpUnitList:
			if resp.Status != http.StatusOK {
				t.Errorf("A %s: %d %s", r.op, resp.Status, resp.Error)
			}
			if strings.Contains(string(resp.Result), "game") || strings.Contains(string(resp.Result), b.id().String()) {
				t.Errorf("A %s shows B's slice or units: %s", r.op, resp.Result)
			}
		default:
			if resp.Status != http.StatusForbidden {
				t.Errorf("A %s on B's slice: %d %q, want 403", r.op, resp.Status, resp.Error)
			}
		}
	}
	// A cannot smuggle a unit signed by B into its own slice either: the signer must own it.
	if resp := a.do(t, Request{Op: OpAppInstall, Slice: "video", Unit: b.unit(t, "foreign", "1", module)}); resp.Status != http.StatusBadRequest ||
		!strings.Contains(resp.Error, "signed by") {
		t.Errorf("A installing B's unit in its slice: %d %q", resp.Status, resp.Error)
	}
	// A slice that does not exist looks the same to A as B's slice: no probing competitors.
	if resp := a.do(t, Request{Op: OpSliceGet, Slice: "nosuch"}); resp.Status != http.StatusForbidden {
		t.Errorf("A probing a missing slice: %d, want 403 like an existing one", resp.Status)
	}

	// B on its own slice: everything a provider is granted works.
	for _, r := range order() {
		if r.provider == Deny {
			continue
		}
		if r.op == OpSliceRemove {
			continue // denied to providers anyway
		}
		resp := b.do(t, reqsB[r.op])
		if resp.Status != http.StatusOK {
			t.Errorf("B %s on its own slice: %d %s", r.op, resp.Status, resp.Error)
		}
	}

	// The operator on B's slice: exactly what the matrix grants.
	for _, r := range order() {
		resp := op.do(t, reqsB[r.op])
		if r.operator == Deny {
			if resp.Status != http.StatusForbidden {
				t.Errorf("operator %s: %d, want 403 (slice contents are the provider's)", r.op, resp.Status)
			}
			continue
		}
		if resp.Status == http.StatusForbidden {
			t.Errorf("operator %s: 403 %s", r.op, resp.Error)
		}
	}

	// Everything A was refused is in the core event stream, and not in A's own slice stream.
	var core []Event
	if err := json.Unmarshal(op.must(t, Request{Op: OpEventsCore}), &core); err != nil {
		t.Fatal(err)
	}
	denials := 0
	for _, e := range core {
		if e.Kind == "denied" && e.Attrs["peer"] == a.id().String() {
			denials++
		}
	}
	if want := len(matrix) - 2 + 1; denials < want {
		t.Errorf("%d denials of A in the core events, want at least %d", denials, want)
	}
	// A's app still serves: nothing B or the operator did to B's slice touched it.
	if n := get(t, gw, "video", "counter"); n < 2 {
		t.Errorf("A's counter at %d after the matrix run", n)
	}
}

// get calls an app's HTTP handler through the manager and returns the counter it reports.
func get(t *testing.T, gw *gateway, sid, app string) int {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/slices/{slice}/apps/{app}/", gw.m.AppHandler())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/slices/" + sid + "/apps/" + app + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/%s: %d %s", sid, app, resp.StatusCode, body)
	}
	var v struct {
		Count int `json:"count"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("GET %s/%s: %s: %v", sid, app, body, err)
	}
	return v.Count
}
