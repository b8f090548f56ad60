package overlay_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/nanodc/nanodc/overlay"
)

// BenchmarkConnect measures connection set-up between two nodes on loopback: transport
// handshake, security, muxer; per transport.
func BenchmarkConnect(b *testing.B) {
	for _, tr := range []string{"quic-v1", "tcp"} {
		b.Run(tr, func(b *testing.B) {
			listen := "/ip4/127.0.0.1/udp/0/quic-v1"
			if tr == "tcp" {
				listen = "/ip4/127.0.0.1/tcp/0"
			}
			cfg := overlay.Config{ListenAddrs: []ma.Multiaddr{ma.StringCast(listen)}}
			a := startBenchNode(b, cfg)
			ctx := context.Background()
			var total time.Duration
			for b.Loop() {
				b.StopTimer()
				c := startBenchNode(b, cfg) // a fresh peer: no cached connection or backoff
				target := peer.AddrInfo{ID: c.ID(), Addrs: c.Host().Addrs()}
				b.StartTimer()
				start := time.Now()
				if err := a.Connect(ctx, target); err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
				b.StopTimer()
				_ = c.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms/connect")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkStartToRoutable measures the time from New to a non-empty DHT routing table
// for a node given one bootstrap peer on loopback.
func BenchmarkStartToRoutable(b *testing.B) {
	seed := startBenchNode(b, overlay.Config{})
	boot := []peer.AddrInfo{{ID: seed.ID(), Addrs: seed.Host().Addrs()}}
	var total time.Duration
	for b.Loop() {
		start := time.Now()
		o := startBenchNode(b, overlay.Config{Bootstrap: boot})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := o.WaitRoutable(ctx); err != nil {
			b.Fatal(err)
		}
		cancel()
		total += time.Since(start)
		b.StopTimer()
		_ = o.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms/routable")
}

// BenchmarkIdleFleet starts a fleet of idle nodes in one process and reports memory and
// goroutines per node once they have settled.
func BenchmarkIdleFleet(b *testing.B) {
	const n = 20
	for b.Loop() {
		runtime.GC()
		rss0, g0 := rssBytes(b), runtime.NumGoroutine()
		var heap0 runtime.MemStats
		runtime.ReadMemStats(&heap0)
		seed := startBenchNode(b, overlay.Config{})
		boot := []peer.AddrInfo{{ID: seed.ID(), Addrs: seed.Host().Addrs()}}
		nodes := []*overlay.Overlay{seed}
		for range n - 1 {
			nodes = append(nodes, startBenchNode(b, overlay.Config{Bootstrap: boot}))
		}
		for _, o := range nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := o.WaitRoutable(ctx); err != nil {
				b.Fatal(err)
			}
			cancel()
		}
		time.Sleep(5 * time.Second) // settle: routing refresh, pings, identify
		runtime.GC()
		var heap1 runtime.MemStats
		runtime.ReadMemStats(&heap1)
		b.ReportMetric(float64(rssBytes(b)-rss0)/n/(1<<20), "MB-RSS/node")
		b.ReportMetric(float64(heap1.HeapInuse-heap0.HeapInuse)/n/(1<<20), "MB-heap/node")
		b.ReportMetric(float64(runtime.NumGoroutine()-g0)/n, "goroutines/node")
		b.StopTimer()
		for _, o := range nodes {
			_ = o.Close()
		}
		b.StartTimer()
	}
}

func startBenchNode(b *testing.B, cfg overlay.Config) *overlay.Overlay {
	b.Helper()
	if cfg.ListenAddrs == nil {
		cfg.ListenAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/udp/0/quic-v1")}
	}
	o, err := overlay.New(withKey(b, cfg))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go o.Serve(ctx)
	b.Cleanup(func() { cancel(); o.Close() })
	return o
}

func rssBytes(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				b.Fatal(fmt.Errorf("VmRSS: %w", err))
			}
			return kb << 10
		}
	}
	b.Fatal("no VmRSS line")
	return 0
}
