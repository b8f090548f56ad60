package slice

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// holdRuntime is a built-in app kind for the test: it serves "echo" in its slice's
// namespace, answering one byte and then holding the stream open until the app stops.
type holdRuntime struct{}

type holdApp struct {
	stop chan struct{}
	once sync.Once
	rm   func()
}

func (holdRuntime) Start(_ context.Context, env AppEnv, _ *Unit) (Instance, error) {
	a := &holdApp{stop: make(chan struct{})}
	rm, err := env.Handle("echo", func(s network.Stream) {
		defer s.Close()
		var b [1]byte
		if _, err := io.ReadFull(s, b[:]); err != nil {
			return
		}
		if _, err := s.Write(b[:]); err != nil {
			return
		}
		<-a.stop
	})
	a.rm = rm
	return a, err
}

func (a *holdApp) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusNoContent)
}
func (a *holdApp) Stop(context.Context) error {
	a.once.Do(func() { a.rm(); close(a.stop) })
	return nil
}
func (a *holdApp) Fault() (string, string) { return "", "" }
func (a *holdApp) Done() <-chan struct{}   { return a.stop }
func (a *holdApp) MemoryBytes() int64      { return 0 }
func (a *holdApp) CPUTime() time.Duration  { return 0 }

// TestSliceStreamsAreScoped: streams to a slice's protocols count against that slice's own
// resource-manager scope. Attackers holding streams open on slice A's protocol are cut off at
// A's limit, while slice B's protocol keeps answering.
func TestSliceStreamsAreScoped(t *testing.T) {
	gw := startGatewayWith(t, Options{Runtimes: map[string]Runtime{"hold": holdRuntime{}}})
	op := Principal{Role: RoleOperator}
	for _, sid := range []string{"a", "b"} {
		k := newKey(t)
		id, _ := peer.IDFromPrivateKey(k)
		mustDo(t, gw.m, op, Request{Op: OpSliceCreate, Slice: sid, Provider: id.String()})
		u, err := Pack(k, Manifest{Name: "echo", Kind: "hold"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := u.Encode()
		mustDo(t, gw.m, Principal{Role: RoleProvider, Peer: id}, Request{Op: OpAppInstall, Slice: sid, Unit: b, Start: true})
	}

	try := func(c *client, sid string) (network.Stream, bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := c.h.NewStream(ctx, c.gw, ProtocolID(sid, "echo"))
		if err != nil {
			return nil, false
		}
		_ = s.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := s.Write([]byte{7}); err != nil {
			s.Reset()
			return nil, false
		}
		var b [1]byte
		if _, err := io.ReadFull(s, b[:]); err != nil || b[0] != 7 {
			s.Reset()
			return nil, false
		}
		_ = s.SetDeadline(time.Time{})
		return s, true
	}

	var held []network.Stream
	var accepted atomic.Int32
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 4 { // four attackers: each is also bounded per protocol and peer by libp2p
		c := newClient(t, gw, newKey(t))
		wg.Go(func() {
			for range 60 {
				if s, ok := try(c, "a"); ok {
					accepted.Add(1)
					mu.Lock()
					held = append(held, s)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	defer func() {
		for _, s := range held {
			s.Reset()
		}
	}()
	limit := int32(Defaults.streamLimits().StreamsInbound)
	t.Logf("slice a accepted %d of 240 streams (limit %d)", accepted.Load(), limit)
	if n := accepted.Load(); n > limit || n < limit/2 {
		t.Fatalf("slice a accepted %d held streams from 240 attempts; want its limit %d (and not far below)", n, limit)
	}
	// Slice b is untouched.
	s, ok := try(newClient(t, gw, newKey(t)), "b")
	if !ok {
		t.Fatal("slice b refused a stream while slice a was full")
	}
	s.Close()
	// And a is full for everybody now, newcomers included.
	if s, ok = try(newClient(t, gw, newKey(t)), "a"); ok {
		s.Close()
		t.Fatal("slice a accepted a stream past its limit")
	}
}

// sinkRuntime is a built-in app kind for the test: it reads everything a peer sends on "sink"
// in its slice's namespace, and answers with one byte when the sender closes.
type sinkRuntime struct{}

func (sinkRuntime) Start(_ context.Context, env AppEnv, _ *Unit) (Instance, error) {
	a := &holdApp{stop: make(chan struct{})}
	rm, err := env.Handle("sink", func(s network.Stream) {
		defer s.Close()
		if _, err := io.Copy(io.Discard, s); err != nil {
			s.Reset()
			return
		}
		_, _ = s.Write([]byte{1})
	})
	a.rm = rm
	return a, err
}

// TestSliceStreamLimitsFollowQuotas: a slice's streams quota sets its resource-manager limit,
// and changing the quota changes the limit of the live scope at once.
func TestSliceStreamLimitsFollowQuotas(t *testing.T) {
	gw := startGatewayWith(t, Options{Runtimes: map[string]Runtime{"hold": holdRuntime{}}})
	op := Principal{Role: RoleOperator}
	k := newKey(t)
	id, _ := peer.IDFromPrivateKey(k)
	mustDo(t, gw.m, op, Request{Op: OpSliceCreate, Slice: "a", Provider: id.String(), Quotas: &Quotas{Streams: 9}})
	u, _ := Pack(k, Manifest{Name: "echo", Kind: "hold"}, nil)
	raw, _ := u.Encode()
	mustDo(t, gw.m, Principal{Role: RoleProvider, Peer: id}, Request{Op: OpAppInstall, Slice: "a", Unit: raw, Start: true})

	c := newClient(t, gw, newKey(t))
	var held []network.Stream
	defer func() {
		for _, s := range held {
			s.Reset()
		}
	}()
	open := func(n int) (accepted int) {
		for range n {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s, err := c.h.NewStream(ctx, c.gw, ProtocolID("a", "echo"))
			cancel()
			if err != nil {
				continue
			}
			_ = s.SetDeadline(time.Now().Add(5 * time.Second))
			var b [1]byte
			if _, err := s.Write([]byte{7}); err != nil {
				s.Reset()
				continue
			}
			if _, err := io.ReadFull(s, b[:]); err != nil {
				s.Reset()
				continue
			}
			held = append(held, s)
			accepted++
		}
		return accepted
	}
	// 9 streams: 6 (two thirds) either way.
	if n := open(10); n != 6 {
		t.Fatalf("slice with a 9-stream quota accepted %d inbound streams of 10; want 6", n)
	}
	if lim := gw.ov.SliceLimit("a").GetStreamLimit(network.DirInbound); lim != 6 {
		t.Fatalf("scope limit %d, want 6", lim)
	}
	mustDo(t, gw.m, op, Request{Op: OpSliceSet, Slice: "a", Quotas: &Quotas{Streams: 30}})
	if n := open(20); n != 14 {
		t.Fatalf("after raising the quota to 30 streams, %d more streams were accepted of 20; want 14 (20 in all)", n)
	}
}

// TestSliceBandwidthShare: bytes a peer sends to a slice's app are paced by the slice's
// download share, and the share can be changed while the app runs.
func TestSliceBandwidthShare(t *testing.T) {
	gw := startGatewayWith(t, Options{Runtimes: map[string]Runtime{"sink": sinkRuntime{}}})
	op := Principal{Role: RoleOperator}
	k := newKey(t)
	id, _ := peer.IDFromPrivateKey(k)
	const bps = 2_000_000 // 250 kB/s
	mustDo(t, gw.m, op, Request{Op: OpSliceCreate, Slice: "a", Provider: id.String(), Quotas: &Quotas{DownloadBps: bps}})
	u, _ := Pack(k, Manifest{Name: "sink", Kind: "sink"}, nil)
	raw, _ := u.Encode()
	mustDo(t, gw.m, Principal{Role: RoleProvider, Peer: id}, Request{Op: OpAppInstall, Slice: "a", Unit: raw, Start: true})
	c := newClient(t, gw, newKey(t))
	send := func(n int) time.Duration {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := c.h.NewStream(ctx, c.gw, ProtocolID("a", "sink"))
		if err != nil {
			t.Fatal(err)
		}
		_ = s.SetDeadline(time.Now().Add(30 * time.Second))
		start := time.Now()
		if _, err := s.Write(make([]byte, n)); err != nil {
			t.Fatal(err)
		}
		_ = s.CloseWrite()
		var b [1]byte
		if _, err := io.ReadFull(s, b[:]); err != nil {
			t.Fatal(err)
		}
		s.Close()
		return time.Since(start)
	}
	const size = 512 << 10
	// Lower bound only (a noisy machine can be slower, never faster): the bytes beyond one
	// burst cannot arrive faster than the share.
	minTime := time.Duration(float64(size-downloadBurst) / (bps / 8) * float64(time.Second))
	if d := send(size); d < minTime*9/10 {
		t.Fatalf("%d bytes reached the slice in %v; its %d bit/s share allows no less than %v", size, d, bps, minTime)
	}
	mustDo(t, gw.m, op, Request{Op: OpSliceSet, Slice: "a", Quotas: &Quotas{DownloadBps: 0}})
	d := send(size)
	t.Logf("%d bytes: %v unpaced", size, d)
	if d > minTime {
		t.Fatalf("after the share was lifted, %d bytes still took %v (paced: >= %v)", size, d, minTime)
	}
}
