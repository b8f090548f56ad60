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

	"github.com/nanodc/nanodc/overlay"
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
	limit := int32(overlay.SliceLimits.StreamsInbound)
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
