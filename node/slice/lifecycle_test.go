package slice

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// do runs a request on the manager directly, as principal p, and fails the test on error.
func mustDo(t *testing.T, m *Manager, p Principal, req Request) any {
	t.Helper()
	res, err := m.Do(context.Background(), p, req)
	if err != nil {
		t.Fatalf("%s: %v", req.Op, err)
	}
	return res
}

// TestLifecycleQuotasAndRestart walks an app through install, start, stop, hot update and
// uninstall; checks the memory and app-count quotas are enforced, not just recorded; and
// restarts the manager on the same directory to find slices, quotas, apps (running again)
// and their storage as they were.
func TestLifecycleQuotasAndRestart(t *testing.T) {
	module := counterModule(t)
	dir := t.TempDir()
	provKey := newKey(t)
	prov, _ := peer.IDFromPrivateKey(provKey)
	operator := Principal{Role: RoleOperator}
	owner := Principal{Role: RoleProvider, Peer: prov}
	pack := func(name, version string, mem int64) []byte {
		u, err := Pack(provKey, Manifest{Name: name, Version: version, Kind: KindWASM, Requires: []string{ServiceStorage}, MemoryBytes: mem}, module)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := u.Encode()
		return b
	}

	gw := startGateway(t, dir, "")
	m := gw.m
	mustDo(t, m, operator, Request{Op: OpSliceCreate, Slice: "video", Provider: prov.String(),
		Quotas: &Quotas{MemoryBytes: 3 << 20, MaxApps: 2}, Services: []string{ServiceStorage, ServiceLogger}})
	a := mustDo(t, m, owner, Request{Op: OpAppInstall, Slice: "video", Unit: pack("counter", "1", 2<<20), Start: true}).(*AppRecord)
	if a.Status != StateIdle && a.Status != StateActive {
		t.Fatalf("after install+start: %+v", a)
	}
	if n1, n2 := get(t, gw, "video", "counter"), get(t, gw, "video", "counter"); n1 != 1 || n2 != 2 {
		t.Fatalf("counter %d, %d; want 1, 2", n1, n2)
	}

	// Memory quota: 2 MiB of 3 are reserved, a second app asking 2 MiB must not start.
	_, err := m.Do(context.Background(), owner, Request{Op: OpAppInstall, Slice: "video", Unit: pack("hog", "1", 2<<20), Start: true})
	if err == nil || !strings.Contains(err.Error(), "memory") {
		t.Fatalf("second app over the memory quota: %v", err)
	}
	view := mustDo(t, m, owner, Request{Op: OpSliceGet, Slice: "video"}).(*SliceView)
	if hog := findApp(view.Apps, "hog"); hog == nil || hog.Status != StateIdle || hog.Fault != FaultFailureOnStart {
		t.Fatalf("hog after a refused start: %+v", hog)
	}
	// App-count quota: two installed, a third is refused.
	if _, err := m.Do(context.Background(), owner, Request{Op: OpAppInstall, Slice: "video", Unit: pack("third", "1", 0)}); StatusOf(err) != http.StatusBadRequest {
		t.Fatalf("third app over max_apps: %v", err)
	}
	mustDo(t, m, owner, Request{Op: OpAppUninstall, Slice: "video", App: "hog"})

	// Stop: the app no longer serves; start: it serves again from its stored count.
	mustDo(t, m, owner, Request{Op: OpAppStop, Slice: "video", App: "counter"})
	if code := status(t, gw, "video", "counter"); code != http.StatusNotFound {
		t.Fatalf("stopped app answered %d", code)
	}
	mustDo(t, m, owner, Request{Op: OpAppStart, Slice: "video", App: "counter"})
	if n := get(t, gw, "video", "counter"); n != 3 {
		t.Fatalf("after restart of the app, counter %d, want 3", n)
	}
	// Hot update keeps the storage.
	up := mustDo(t, m, owner, Request{Op: OpAppUpdate, Slice: "video", Unit: pack("counter", "2", 2<<20)}).(*AppRecord)
	if up.Version != "2" || up.Status != StateActive {
		t.Fatalf("after update: %+v", up)
	}
	if n := get(t, gw, "video", "counter"); n != 4 {
		t.Fatalf("after update, counter %d, want 4", n)
	}

	// Restart the whole manager on the same directory.
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m2, err := New(context.Background(), Options{Dir: dir, Overlay: gw.ov})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m2.Close() })
	gw.m = m2
	view = mustDo(t, m2, owner, Request{Op: OpSliceGet, Slice: "video"}).(*SliceView)
	if view.Quotas.MemoryBytes != 3<<20 || view.Quotas.MaxApps != 2 || strings.Join(view.Services, ",") != "logger,storage" {
		t.Fatalf("slice after restart: %+v", view.Slice)
	}
	c := findApp(view.Apps, "counter")
	if c == nil || c.Status != StateActive || c.Version != "2" {
		t.Fatalf("counter after restart: %+v", c)
	}
	if n := get(t, gw, "video", "counter"); n != 5 {
		t.Fatalf("counter after restart %d, want 5 (storage kept)", n)
	}
	// The app's log lines and state changes are in the slice's events.
	evs := mustDo(t, m2, owner, Request{Op: OpEventsSlice, Slice: "video"}).([]Event)
	if len(evs) == 0 {
		t.Fatal("no slice events after restart")
	}
	// Uninstall removes the app's storage.
	mustDo(t, m2, owner, Request{Op: OpAppUninstall, Slice: "video", App: "counter"})
	left, _ := filepath.Glob(filepath.Join(dir, "slices", "video", "kv", "counter.*"))
	if len(left) != 0 {
		t.Fatalf("uninstall left %v", left)
	}
	units, _ := os.ReadDir(filepath.Join(dir, "units"))
	if len(units) != 0 {
		t.Fatalf("uninstall left %d units in the repository", len(units))
	}
	// Removing the slice removes its directory.
	mustDo(t, m2, operator, Request{Op: OpSliceRemove, Slice: "video"})
	if _, err := os.Stat(filepath.Join(dir, "slices", "video")); !os.IsNotExist(err) {
		t.Fatalf("slice directory after remove: %v", err)
	}
	raw, _ := json.Marshal(mustDo(t, m2, operator, Request{Op: OpSliceList}))
	if string(raw) != "null" && string(raw) != "[]" {
		t.Fatalf("slices after remove: %s", raw)
	}
}

func findApp(apps []*AppRecord, name string) *AppRecord {
	for _, a := range apps {
		if a.Name == name {
			return a
		}
	}
	return nil
}

func status(t *testing.T, gw *gateway, sid, app string) int {
	t.Helper()
	rec := httptest.NewRecorder()
	req, _ := http.NewRequest("GET", "/slices/"+sid+"/apps/"+app+"/", nil)
	mux := http.NewServeMux()
	mux.Handle("/slices/{slice}/apps/{app}/", gw.m.AppHandler())
	mux.ServeHTTP(rec, req)
	return rec.Code
}

// TestHotUpdateLeavesOtherSlicesServing: while slice B's app is updated again and again,
// slice A's app answers every request of a steady client, and B's app is never left down.
func TestHotUpdateLeavesOtherSlicesServing(t *testing.T) {
	module := counterModule(t)
	gw := startGateway(t, t.TempDir(), "")
	m := gw.m
	op := Principal{Role: RoleOperator}
	keyA, keyB := newKey(t), newKey(t)
	idA, _ := peer.IDFromPrivateKey(keyA)
	idB, _ := peer.IDFromPrivateKey(keyB)
	for sid, id := range map[string]peer.ID{"video": idA, "game": idB} {
		mustDo(t, m, op, Request{Op: OpSliceCreate, Slice: sid, Provider: id.String(), Services: []string{ServiceStorage}})
	}
	unit := func(k int, version string) []byte {
		key := keyA
		if k == 1 {
			key = keyB
		}
		u, err := Pack(key, Manifest{Name: "counter", Version: version, Kind: KindWASM, Requires: []string{ServiceStorage}}, module)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := u.Encode()
		return b
	}
	mustDo(t, m, Principal{Role: RoleProvider, Peer: idA}, Request{Op: OpAppInstall, Slice: "video", Unit: unit(0, "1"), Start: true})
	mustDo(t, m, Principal{Role: RoleProvider, Peer: idB}, Request{Op: OpAppInstall, Slice: "game", Unit: unit(1, "1"), Start: true})

	stop := make(chan struct{})
	var served atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if c := status(t, gw, "video", "counter"); c != 200 {
				t.Errorf("slice A answered %d during B's updates", c)
			}
			served.Add(1)
		}
	}()
	for v := 2; v <= 21; v++ {
		before := served.Load()
		a := mustDo(t, m, Principal{Role: RoleProvider, Peer: idB}, Request{Op: OpAppUpdate, Slice: "game", Unit: unit(1, fmt.Sprint(v))}).(*AppRecord)
		if a.Status != StateActive || a.Version != fmt.Sprint(v) {
			t.Fatalf("B after update %d: %+v", v, a)
		}
		// A answers between every two updates of B.
		for deadline := time.Now().Add(2 * time.Second); served.Load() == before; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("A answered nothing around B's update %d", v)
			}
		}
	}
	close(stop)
	<-done
	if got := get(t, gw, "game", "counter"); got != 1 {
		t.Errorf("B's counter %d after updates, want 1 (storage kept, one request)", got)
	}
}
