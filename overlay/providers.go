package overlay

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p-kad-dht/records"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
)

// providerStore keeps the provider records this node holds for the DHT, in memory, as
// kad-dht's own store does by default, minus what a gateway does not need: that store
// batches writes to its datastore through a buffer allocated for 256 entries (38 KB per
// gateway at rest, 1.5 % of an emulated gateway's memory), runs a goroutine and an LRU
// cache in front of a map. Records expire after records.ProvideValidity, as there; the
// providers' addresses go to the peerstore for records.ProviderAddrTTL, as there.
type providerStore struct {
	self peer.ID
	ps   peerstore.Peerstore

	mu      sync.Mutex
	byKey   map[string][]provider // in the order they first provided
	records int
	swept   time.Time // when expired records were last dropped from every key
}

type provider struct {
	id   peer.ID
	seen time.Time
}

// maxProviderRecords bounds what peers can make a node hold. A gateway holds the records
// of the keys nearest its ID: a fleet's whole catalogue, 20 copies of each, spread over
// every gateway, comes to a handful each.
const maxProviderRecords = 1 << 16

var errProviderStoreFull = errors.New("overlay: provider store full")

func newProviderStore(self peer.ID, ps peerstore.Peerstore) *providerStore {
	return &providerStore{self: self, ps: ps, byKey: map[string][]provider{}, swept: time.Now()}
}

// AddProvider records that prov provides key (kad-dht checked that prov is the sender).
func (s *providerStore) AddProvider(_ context.Context, key []byte, prov peer.AddrInfo) error {
	if prov.ID != s.self {
		s.ps.AddAddrs(prov.ID, prov.Addrs, records.ProviderAddrTTL)
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.swept) > time.Hour {
		for k := range s.byKey {
			s.dropExpired(k, now)
		}
		s.swept = now
	}
	provs := s.byKey[string(key)]
	if i := slices.IndexFunc(provs, func(p provider) bool { return p.id == prov.ID }); i >= 0 {
		provs[i].seen = now
		return nil
	}
	if s.records >= maxProviderRecords {
		return errProviderStoreFull
	}
	s.byKey[string(key)] = append(provs, provider{prov.ID, now})
	s.records++
	return nil
}

// GetProviders returns key's providers that have not expired, with the addresses the
// peerstore has for them.
func (s *providerStore) GetProviders(_ context.Context, key []byte) ([]peer.AddrInfo, error) {
	s.mu.Lock()
	provs := s.dropExpired(string(key), time.Now())
	ids := make([]peer.ID, len(provs))
	for i, p := range provs {
		ids[i] = p.id
	}
	s.mu.Unlock()
	out := make([]peer.AddrInfo, len(ids))
	for i, id := range ids {
		out[i] = peer.AddrInfo{ID: id, Addrs: slices.Clone(s.ps.Addrs(id))}
	}
	return out, nil
}

// dropExpired removes key's expired records and returns those left; s.mu is held.
func (s *providerStore) dropExpired(key string, now time.Time) []provider {
	provs := s.byKey[key]
	kept := slices.DeleteFunc(provs, func(p provider) bool { return now.Sub(p.seen) > records.ProvideValidity })
	s.records -= len(provs) - len(kept)
	if len(kept) == 0 {
		delete(s.byKey, key)
	} else {
		s.byKey[key] = kept
	}
	return kept
}

// Close implements records.ProviderStore; there is nothing to release.
func (s *providerStore) Close() error { return nil }
