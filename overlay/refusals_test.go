package overlay_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"

	"github.com/nanodc/nanodc/overlay"
)

// TestRefusalsAreReported: a slice over its stream quota gets its stream refused by the
// resource manager, and OnResourceRefused hears it by scope, resource and direction — what
// the emulator's summary lists, without the manager's costly trace.
func TestRefusalsAreReported(t *testing.T) {
	checkLeaks(t)
	var mu sync.Mutex
	var refused []string
	a := startNode(t, overlay.Config{OnResourceRefused: func(what string) {
		mu.Lock()
		refused = append(refused, what)
		mu.Unlock()
	}})
	b := startNode(t, overlay.Config{})

	// The slice "full" may have no stream at all; its protocol's handler attaches each
	// stream to the slice's scope, as the slice manager does.
	a.SetSliceLimit("full", rcmgr.BaseLimit{Memory: 1 << 20})
	const proto = "/nanodc/test/full/1.0.0"
	attached := make(chan error, 1)
	a.Host().SetStreamHandler(proto, func(s network.Stream) {
		err := s.Scope().SetService(overlay.SliceServicePrefix + "full")
		_ = s.Reset()
		attached <- err
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Connect(ctx, addrInfo(a)); err != nil {
		t.Fatal(err)
	}
	s, err := b.Host().NewStream(ctx, a.ID(), proto)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = s.Write([]byte("x")) // the handler runs once the protocol is agreed
	defer s.Reset()
	select {
	case err := <-attached:
		if !errors.Is(err, network.ErrResourceLimitExceeded) {
			t.Fatalf("attaching a stream to a slice with no streams: %v, want a refusal", err)
		}
	case <-ctx.Done():
		t.Fatal("the stream never reached its handler")
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(refused, "service/streams/inbound") {
		t.Fatalf("refusals reported %q, want service/streams/inbound", refused)
	}
}
