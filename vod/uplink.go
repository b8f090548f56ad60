package vod

import (
	"time"

	"github.com/anacrolix/torrent"
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

// uplinkArbiter is the state of the scarce-first policy; only Serve's goroutine uses it. It
// keys by torrent, not title: an evicted title's torrent is dropped and a new one opened if
// it is streamed again (ti.t changes under a.mu, from other goroutines).
type uplinkArbiter struct {
	sent        map[*torrent.Torrent]int64 // peer-upload bytes per open torrent at the last look
	scarceUntil time.Time                  // abundant titles are held back until then
	yielding    map[*torrent.Torrent]bool  // torrents whose upload is held back now
}

// arbitrateUplink applies the scarce-first policy once; Serve calls it every second.
func (a *App) arbitrateUplink(now time.Time) {
	u := &a.uplink
	if u.sent == nil {
		u.sent, u.yielding = map[*torrent.Torrent]int64{}, map[*torrent.Torrent]bool{}
	}
	type openTitle struct {
		ti *title
		t  *torrent.Torrent
	}
	a.mu.Lock()
	open := make([]openTitle, 0, len(a.titles))
	for _, ti := range a.titles {
		if ti.t != nil {
			open = append(open, openTitle{ti, ti.t})
		}
	}
	a.mu.Unlock()
	self := a.ov.ID()
	abundant := map[*torrent.Torrent]bool{}
	isOpen := make(map[*torrent.Torrent]bool, len(open))
	for _, o := range open {
		isOpen[o.t] = true
		st := o.t.Stats()
		sent := st.PeerConns.BytesWrittenData.Int64()
		uploading := sent > u.sent[o.t]
		u.sent[o.t] = sent
		switch n := a.otherHolders(o.ti, self, now); {
		case n <= a.opts.ScarceHolders && uploading:
			u.scarceUntil = now.Add(yieldHold)
		case n >= a.opts.AbundantHolders:
			abundant[o.t] = true
		}
	}
	hold := now.Before(u.scarceUntil)
	for _, o := range open {
		if hold && abundant[o.t] && !u.yielding[o.t] {
			o.t.DisallowDataUpload()
			u.yielding[o.t] = true
			o.ti.counters.uploadYields.Add(1)
		}
	}
	// Let go when the hold ends, when a title is no longer abundant (its holders age out of
	// the gossip), and of dropped torrents.
	for t := range u.yielding {
		if !hold || !abundant[t] {
			t.AllowDataUpload()
			delete(u.yielding, t)
		}
	}
	for t := range u.sent {
		if !isOpen[t] {
			delete(u.sent, t)
			delete(u.yielding, t)
		}
	}
	for _, o := range open {
		o.ti.counters.uploadYielding.Store(u.yielding[o.t])
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
