package vod

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/nanodc/nanodc/overlay"
)

// TestLookupBacksOffWhileNothingNew: a title's DHT lookups space out (3, 6, 12, … up to 30 s)
// while they keep finding the same providers, and come back to 3 s once one finds a provider
// never seen before.
func TestLookupBacksOffWhileNothingNew(t *testing.T) {
	a := &App{}
	ti := &title{}
	if !a.lookupDue(ti) {
		t.Fatal("a title never looked up must be due")
	}
	same := []overlay.PeerInfo{{ID: peer.ID("p1")}, {ID: peer.ID("p2")}}
	want := []time.Duration{minLookupGap, 2 * minLookupGap, 4 * minLookupGap, 8 * minLookupGap, maxLookupGap, maxLookupGap}
	for i, w := range want {
		before := time.Now()
		a.lookedUp(ti, same)
		if ti.lookupGap != w {
			t.Fatalf("lookup %d with nothing new: gap %v, want %v", i+1, ti.lookupGap, w)
		}
		if ti.nextLookup.Before(before.Add(w)) {
			t.Fatalf("lookup %d: next lookup at %v, before the %v gap", i+1, ti.nextLookup.Sub(before), w)
		}
		if a.lookupDue(ti) {
			t.Fatalf("lookup %d: due again at once", i+1)
		}
	}
	a.lookedUp(ti, append(same, overlay.PeerInfo{ID: peer.ID("p3")}))
	if ti.lookupGap != minLookupGap {
		t.Fatalf("a new provider: gap %v, want %v", ti.lookupGap, minLookupGap)
	}
	ti.nextLookup = time.Now().Add(-time.Millisecond)
	if !a.lookupDue(ti) {
		t.Fatal("past nextLookup the lookup must be due")
	}
}
