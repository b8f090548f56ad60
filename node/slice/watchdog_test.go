package slice

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// wat compiles a WebAssembly text module with wat2wasm.
func wat(t *testing.T, src string) []byte {
	t.Helper()
	counterModule(t) // skips or fails the same way when wat2wasm is missing
	dir := t.TempDir()
	in, out := filepath.Join(dir, "m.wat"), filepath.Join(dir, "m.wasm")
	if err := os.WriteFile(in, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("wat2wasm", in, "-o", out).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWatchdogStopsTopConsumer: past the gateway's memory threshold the watchdog stops the
// apps of the slice holding the most memory, and only those; the operator and that provider
// both get an event. A slice over its storage quota (files written behind the key/value
// store's back) is stopped too.
func TestWatchdogStopsTopConsumer(t *testing.T) {
	small := counterModule(t)
	big := wat(t, `(module (memory (export "memory") 32))`) // 2 MiB of linear memory
	gw := startGateway(t, t.TempDir(), "")
	m := gw.m
	op := Principal{Role: RoleOperator}
	keys := map[string]Principal{}
	for _, sid := range []string{"video", "game", "energy"} {
		k := newKey(t)
		id, _ := peer.IDFromPrivateKey(k)
		keys[sid] = Principal{Role: RoleProvider, Peer: id}
		mustDo(t, m, op, Request{Op: OpSliceCreate, Slice: sid, Provider: id.String(), Services: []string{ServiceStorage},
			Quotas: &Quotas{StorageBytes: 1 << 20}})
		module := small
		if sid == "game" {
			module = big
		}
		u, err := Pack(k, Manifest{Name: "app", Kind: KindWASM, Requires: []string{ServiceStorage}, MemoryBytes: 4 << 20}, module)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := u.Encode()
		mustDo(t, m, keys[sid], Request{Op: OpAppInstall, Slice: sid, Unit: b, Start: true})
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The gateway reports 1 GiB resident against a 512 MiB threshold once, then 100 MiB.
		calls := 0
		m.RunWatchdog(ctx, WatchdogConfig{Interval: 50 * time.Millisecond, MemoryBytes: 512 << 20},
			func() (int64, float64) {
				calls++
				if calls == 2 {
					return 1 << 30, 0
				}
				return 100 << 20, 0
			})
	}()
	defer func() { cancel(); <-done }()

	appStatus := func(sid string) string {
		v := mustDo(t, m, op, Request{Op: OpSliceGet, Slice: sid}).(*SliceView)
		return v.Apps[0].Status
	}
	deadline := time.Now().Add(5 * time.Second)
	for appStatus("game") != StateIdle {
		if time.Now().After(deadline) {
			t.Fatal("the watchdog did not stop the top memory consumer")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a few more rounds, below the threshold
	for _, sid := range []string{"video", "energy"} {
		if s := appStatus(sid); s != StateActive {
			t.Fatalf("%s's app is %s: only the top consumer was to be stopped", sid, s)
		}
	}
	v := mustDo(t, m, op, Request{Op: OpSliceGet, Slice: "game"}).(*SliceView)
	if !strings.Contains(v.Apps[0].FaultReason, "watchdog") {
		t.Errorf("game's app fault %q %q, want the watchdog named", v.Apps[0].Fault, v.Apps[0].FaultReason)
	}
	hasWatchdog := func(evs []Event) bool {
		for _, e := range evs {
			if e.Kind == "watchdog" && e.Slice == "game" && strings.Contains(e.Msg, "memory") {
				return true
			}
		}
		return false
	}
	if !hasWatchdog(mustDo(t, m, op, Request{Op: OpEventsCore}).([]Event)) {
		t.Error("no watchdog event for the operator")
	}
	if !hasWatchdog(mustDo(t, m, keys["game"], Request{Op: OpEventsSlice, Slice: "game"}).([]Event)) {
		t.Error("no watchdog event for game's provider")
	}
	if hasWatchdog(mustDo(t, m, keys["energy"], Request{Op: OpEventsSlice, Slice: "energy"}).([]Event)) {
		t.Error("energy's provider sees game's watchdog event")
	}

	// Storage: a file written straight into energy's files directory, past its 1 MiB quota.
	mustDo(t, m, keys["energy"], Request{Op: OpAppStart, Slice: "energy", App: "app"})
	if err := os.WriteFile(filepath.Join(gw.dir, "slices", "energy", "files", "app", "big"), make([]byte, 2<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	m.enforceStorage(context.Background())
	if s := appStatus("energy"); s != StateIdle {
		t.Fatalf("energy over its storage quota still %s", s)
	}
}
