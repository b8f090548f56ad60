package overlay

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p-kad-dht/records"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/test"
	"github.com/libp2p/go-libp2p/p2p/host/peerstore/pstoremem"
	ma "github.com/multiformats/go-multiaddr"
)

func TestProviderStore(t *testing.T) {
	ps, err := pstoremem.NewPeerstore()
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	self, a, b := test.RandPeerIDFatal(t), test.RandPeerIDFatal(t), test.RandPeerIDFatal(t)
	s := newProviderStore(self, ps)
	ctx := context.Background()
	addr := ma.StringCast("/ip4/127.0.0.9/udp/4001/quic-v1")
	for _, p := range []peer.AddrInfo{{ID: b, Addrs: []ma.Multiaddr{addr}}, {ID: a}, {ID: b}} {
		if err := s.AddProvider(ctx, []byte("title"), p); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.GetProviders(ctx, []byte("title"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != b || got[1].ID != a {
		t.Fatalf("providers %v, want %s then %s, once each", got, b, a)
	}
	if len(got[0].Addrs) != 1 || !got[0].Addrs[0].Equal(addr) {
		t.Errorf("provider's addresses %v, want %v from the record", got[0].Addrs, addr)
	}
	if none, _ := s.GetProviders(ctx, []byte("other")); len(none) != 0 {
		t.Errorf("an unknown key has providers %v", none)
	}

	// A record older than the validity is gone, from the key and the count.
	s.mu.Lock()
	s.byKey["title"][0].seen = time.Now().Add(-records.ProvideValidity - time.Minute)
	s.mu.Unlock()
	if got, _ := s.GetProviders(ctx, []byte("title")); len(got) != 1 || got[0].ID != a {
		t.Errorf("after b's record expired: %v, want only %s", got, a)
	}
	if s.records != 1 {
		t.Errorf("%d records counted, want 1", s.records)
	}

	// Full: a new record is refused, an existing one still refreshed.
	s.records = maxProviderRecords
	if err := s.AddProvider(ctx, []byte("new"), peer.AddrInfo{ID: b}); err != errProviderStoreFull {
		t.Errorf("adding to a full store: %v, want %v", err, errProviderStoreFull)
	}
	if err := s.AddProvider(ctx, []byte("title"), peer.AddrInfo{ID: a}); err != nil {
		t.Errorf("refreshing a record in a full store: %v", err)
	}
}
