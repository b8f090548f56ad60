package vnet

import (
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPacketForwarding measures the CPU cost of the packet path
// (WriteTo, uplink, scheduler, downlink, ReadFrom) with several sender →
// receiver pairs running at once. One op is one packet.
func BenchmarkPacketForwarding(b *testing.B) {
	for _, bc := range []struct {
		name string
		link LinkConfig
	}{
		{"ideal", LinkConfig{}},
		{"shaped", LinkConfig{RateBps: 10e9, Delay: time.Millisecond, Jitter: 100 * time.Microsecond}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			const pairs, payload, window = 8, 1200, 256
			n := newNet(b, Options{Seed: 1, ReadBufferBytes: 64 << 20})
			type pair struct {
				from, to *Conn
				read     atomic.Int64
			}
			ps := make([]*pair, pairs)
			for i := range ps {
				src := addHost(b, n, fmt.Sprintf("127.30.%d.1", i), fmt.Sprintf("s%d", i), bc.link, bc.link)
				dst := addHost(b, n, fmt.Sprintf("127.30.%d.2", i), fmt.Sprintf("d%d", i), bc.link, bc.link)
				ps[i] = &pair{from: listen(b, src, 0), to: listen(b, dst, 0)}
			}
			b.SetBytes(payload)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for i, p := range ps {
				count := int64(b.N / pairs)
				if i < b.N%pairs {
					count++
				}
				wg.Go(func() { // reader
					buf := make([]byte, 2048)
					for p.read.Load() < count {
						if _, _, err := p.to.ReadFrom(buf); err != nil {
							b.Error(err)
							return
						}
						p.read.Add(1)
					}
				})
				wg.Go(func() { // writer, keeping at most window packets in flight
					buf := make([]byte, payload)
					for sent := int64(0); sent < count; sent++ {
						for sent-p.read.Load() >= window {
							runtime.Gosched()
						}
						if _, err := p.from.WriteTo(buf, p.to.LocalAddr()); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			el := time.Since(start)
			b.StopTimer()
			s := n.Stats()
			if s.Dropped.Total() != 0 {
				b.Fatalf("drops: %+v", s.Dropped)
			}
			b.ReportMetric(float64(b.N)/el.Seconds(), "packets/s")
			b.ReportMetric(float64(s.Scheduler.P99.Microseconds()), "sched-p99-µs")
		})
	}
}

// BenchmarkIdleHosts reports the memory an idle host costs: the host, its
// links and one conn with a reader blocked in ReadFrom (as a quic-go
// transport has), including that reader's goroutine stack.
func BenchmarkIdleHosts(b *testing.B) {
	const hosts = 1000
	var total uint64
	for range b.N {
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		n := New(Options{})
		var wg sync.WaitGroup
		for i := range hosts {
			h, err := n.AddHost(HostConfig{
				IP:   net.IPv4(127, 31, byte(i/250), byte(i%250+1)),
				Site: fmt.Sprintf("site%d", i%50),
				Up:   LinkConfig{RateBps: 1e6, QueueBytes: 64 << 10, Delay: 5 * time.Millisecond},
				Down: LinkConfig{RateBps: 8e6, QueueBytes: 256 << 10, Delay: 5 * time.Millisecond},
			})
			if err != nil {
				b.Fatal(err)
			}
			pc, err := h.ListenUDP("udp4", &net.UDPAddr{Port: 4001})
			if err != nil {
				b.Fatal(err)
			}
			wg.Go(func() {
				buf := make([]byte, 1500)
				for {
					if _, _, err := pc.ReadFrom(buf); err != nil {
						return
					}
				}
			})
		}
		time.Sleep(10 * time.Millisecond) // let the readers block
		runtime.GC()
		runtime.ReadMemStats(&m1)
		total += (m1.HeapAlloc + m1.StackInuse) - (m0.HeapAlloc + m0.StackInuse)
		_ = n.Close()
		wg.Wait()
	}
	b.ReportMetric(float64(total)/float64(b.N)/hosts, "bytes/host")
}
