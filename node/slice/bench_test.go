package slice

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// benchGateway is a manager with n slices, each running the counter app (the small WAT one).
func benchGateway(b *testing.B, n int) (*Manager, []Principal) {
	b.Helper()
	m, err := New(context.Background(), Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	keys := make([]crypto.PrivKey, n)
	for i := range keys {
		keys[i] = newKey(b)
	}
	return m, addCounterSlices(b, m, keys)
}

// addCounterSlices creates slices p000, p001… on m, one per key (its provider), each running
// the counter app signed by that key, and returns the providers.
func addCounterSlices(tb testing.TB, m *Manager, keys []crypto.PrivKey) []Principal {
	tb.Helper()
	module := counterModule(tb)
	var owners []Principal
	for i, key := range keys {
		id, _ := peer.IDFromPrivateKey(key)
		sid := fmt.Sprintf("p%03d", i)
		if _, err := m.Do(context.Background(), Principal{Role: RoleOperator}, Request{Op: OpSliceCreate, Slice: sid, Provider: id.String(),
			Services: []string{ServiceStorage, ServiceLogger, ServiceMetrics}}); err != nil {
			tb.Fatal(err)
		}
		u, err := Pack(key, Manifest{Name: "counter", Kind: KindWASM, Requires: []string{ServiceStorage}, MemoryBytes: 64 << 10}, module)
		if err != nil {
			tb.Fatal(err)
		}
		raw, _ := u.Encode()
		owner := Principal{Role: RoleProvider, Peer: id}
		if _, err := m.Do(context.Background(), owner, Request{Op: OpAppInstall, Slice: sid, Unit: raw, Start: true}); err != nil {
			tb.Fatal(err)
		}
		owners = append(owners, owner)
	}
	return owners
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

// BenchmarkIdleSliceMemory: what one more idle slice with one small WASM app costs the
// gateway (Go heap and stacks, guest linear memory included since wazero allocates it on the
// Go heap). The goal is <= 0.5 MB, so that 100 fit in 64 MB.
func BenchmarkIdleSliceMemory(b *testing.B) {
	const n = 100
	for range b.N {
		_, _ = benchGateway(b, 1) // warm: runtime, compiled module, code paths
		before := heapInUse()
		m, _ := benchGateway(b, n)
		after := heapInUse()
		runtime.KeepAlive(m)
		b.ReportMetric(float64(after-before)/n/1024, "KiB/slice")
		b.ReportMetric(float64(after-before)/(1<<20), "MiB/100slices")
	}
}

// BenchmarkProbeSlice is one provider's probe of its slice (probe.slice through Do, the
// path both transports take).
func BenchmarkProbeSlice(b *testing.B) {
	m, owners := benchGateway(b, 100)
	req := Request{Op: OpProbeSlice, Slice: "p042"}
	b.ResetTimer()
	for range b.N {
		if _, err := m.Do(context.Background(), owners[42], req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e3, "us/probe")
}

// BenchmarkProbePolling: 100 providers each polling their slice's probe once a second, as
// a share of one core (the goal is <= 1 %). Measured as CPU time per round of 100 probes.
func BenchmarkProbePolling(b *testing.B) {
	m, owners := benchGateway(b, 100)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		for i, o := range owners {
			if _, err := m.Do(context.Background(), o, Request{Op: OpProbeSlice, Slice: fmt.Sprintf("p%03d", i)}); err != nil {
				b.Fatal(err)
			}
		}
	}
	perRound := time.Since(start) / time.Duration(b.N)
	b.ReportMetric(perRound.Seconds()*100, "%core@1Hz")
}

// BenchmarkInstallToRunning: from an encoded unit arriving to its app answering.
func BenchmarkInstallToRunning(b *testing.B) {
	module := counterModule(b)
	m, err := New(context.Background(), Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	key := newKey(b)
	id, _ := peer.IDFromPrivateKey(key)
	owner := Principal{Role: RoleProvider, Peer: id}
	if _, err := m.Do(context.Background(), Principal{Role: RoleOperator}, Request{Op: OpSliceCreate, Slice: "bench", Provider: id.String(),
		Services: []string{ServiceStorage}, Quotas: &Quotas{MaxApps: 1000, MemoryBytes: 1 << 30}}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		u, _ := Pack(key, Manifest{Name: fmt.Sprintf("c%d", i%900), Kind: KindWASM, Requires: []string{ServiceStorage}, MemoryBytes: 64 << 10}, module)
		raw, _ := u.Encode()
		if _, err := m.Do(context.Background(), owner, Request{Op: OpAppInstall, Slice: "bench", Unit: raw, Start: true}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if _, err := m.Do(context.Background(), owner, Request{Op: OpAppUninstall, Slice: "bench", App: u.Manifest.Name}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "ms/install")
}

// BenchmarkProbeOverOverlay is one provider's probe of its slice through the real management
// protocol (a libp2p stream on loopback QUIC, JSON both ways): what polling really costs the
// gateway and the provider together.
func BenchmarkProbeOverOverlay(b *testing.B) {
	module := counterModule(b)
	gw := startGateway(b, b.TempDir(), "")
	key := newKey(b)
	c := newClient(b, gw, key)
	if _, err := gw.m.Do(context.Background(), Principal{Role: RoleOperator}, Request{Op: OpSliceCreate, Slice: "video",
		Provider: c.id().String(), Services: []string{ServiceStorage}}); err != nil {
		b.Fatal(err)
	}
	u, _ := Pack(key, Manifest{Name: "counter", Kind: KindWASM, Requires: []string{ServiceStorage}}, module)
	raw, _ := u.Encode()
	if _, err := gw.m.Do(context.Background(), Principal{Role: RoleProvider, Peer: c.id()}, Request{Op: OpAppInstall, Slice: "video", Unit: raw, Start: true}); err != nil {
		b.Fatal(err)
	}
	req := Request{Op: OpProbeSlice, Slice: "video"}
	b.ResetTimer()
	for range b.N {
		if _, err := Call(context.Background(), c.h, c.gw, req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e3, "us/probe")
}
