package vod

import (
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Scarce titles first on the uplink.
//
// A DSL gateway's uplink is the fleet's scarcest resource, and anacrolix shares it evenly
// among the connections that ask. A gateway that holds one of the few copies of a tail title
// (a replica the provider pushed, or the gateway of its only other viewer) is often a crowd
// viewer's gateway too, and then its uplink also seeds the crowd's title, which dozens of
// gateways hold. The tail title's viewer gets a fraction of an uplink that barely carries one
// stream, misses deadlines, and the origin sends what this gateway held: in the session-13
// flash crowd, title 3 took 14 MB from the origin (most of a copy) with both its replicas up.
//
// So, for the nanodc strategy: while a peer is fetching from this gateway a title that at
// most ScarceHolders other gateways hold, the gateway stops uploading the titles that at
// least AbundantHolders others hold (anacrolix chokes their peers, who ask the other
// holders), and resumes yieldHold after the last scarce upload. Who holds what comes from
// the fleet's have-gossip: gateways announce a title once they hold a verified piece of it
// beyond a pushed prefix.

// yieldHold is how long abundant titles stay held back after the last scarce upload: a
// viewer's requests come in bursts (a readahead's worth, then a pause), and releasing
// between bursts would hand the uplink back to the crowd each time.
const yieldHold = 3 * time.Second

// uplinkArbiter is the state of the scarce-first policy; only Serve's goroutine uses it.
type uplinkArbiter struct {
	sent        map[*title]int64 // peer-upload bytes per open title at the last look
	scarceUntil time.Time        // abundant titles are held back until then
	yielding    map[*title]bool  // titles whose upload is held back now
}

// arbitrateUplink applies the scarce-first policy once; Serve calls it every second.
func (a *App) arbitrateUplink(now time.Time) {
	u := &a.uplink
	if u.sent == nil {
		u.sent, u.yielding = map[*title]int64{}, map[*title]bool{}
	}
	a.mu.Lock()
	open := make([]*title, 0, len(a.titles))
	for _, ti := range a.titles {
		if ti.t != nil {
			open = append(open, ti)
		}
	}
	a.mu.Unlock()
	self := a.ov.ID()
	abundant := make([]*title, 0, len(open))
	for _, ti := range open {
		st := ti.t.Stats()
		sent := st.PeerConns.BytesWrittenData.Int64()
		uploading := sent > u.sent[ti]
		u.sent[ti] = sent
		switch n := a.otherHolders(ti, self, now); {
		case n <= a.opts.ScarceHolders && uploading:
			u.scarceUntil = now.Add(yieldHold)
		case n >= a.opts.AbundantHolders:
			abundant = append(abundant, ti)
		}
	}
	hold := now.Before(u.scarceUntil)
	for _, ti := range abundant {
		switch {
		case hold && !u.yielding[ti]:
			ti.t.DisallowDataUpload()
			u.yielding[ti] = true
			ti.counters.uploadYields.Add(1)
		case !hold && u.yielding[ti]:
			ti.t.AllowDataUpload()
			delete(u.yielding, ti)
		}
	}
	// A title no longer abundant (holders age out of the gossip) or closed is let go too.
	for ti := range u.yielding {
		if !hold || !slices.Contains(abundant, ti) {
			if ti.t != nil {
				ti.t.AllowDataUpload()
			}
			delete(u.yielding, ti)
		}
	}
	for ti := range u.sent {
		if !slices.Contains(open, ti) {
			delete(u.sent, ti)
		}
	}
	for _, ti := range open {
		ti.counters.uploadYielding.Store(u.yielding[ti])
	}
}

// otherHolders is how many gateways other than self recently announced holding the title.
func (a *App) otherHolders(ti *title, self peer.ID, now time.Time) int {
	n := 0
	for _, h := range a.holders.of(ti.cid.String(), now) {
		if h.id != self {
			n++
		}
	}
	return n
}
