package vod

import (
	"cmp"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/nanodc/nanodc/overlay"
)

// localTier ranks a peer by where it is: 0 our ISP, 1 labels unknown (it may be either),
// 2 another ISP. Labels come from the overlay's info exchange or the holder's gossip
// announcement. Within our ISP the access node is not a tier: RTT orders the ISP's peers,
// and under load it is what tells a busy uplink from an idle one.
func localTier(p overlay.PeerInfo) int {
	switch {
	case p.Labels.ISP == "":
		return 1
	case p.Locality == 2:
		return 2
	}
	return 0
}

// nearerForStreaming orders peers by tier, then by measured RTT within a tier. The tier
// comes first because an RTT measured while uplinks are busy is mostly queueing: in a flash
// crowd every holder's uplink is loaded, and RTT-first ordering picked the other ISP about as
// often as our own (35-47 % of peer bytes crossed ISPs, docs/BENCHMARKS.md session 8).
func nearerForStreaming(a, b overlay.PeerInfo) int {
	if ta, tb := localTier(a), localTier(b); ta != tb {
		return cmp.Compare(ta, tb)
	}
	return overlay.Closer(a, b)
}

// shortMemory is how long after a stream last needed the origin for want of peers its title
// still counts as short of peers.
const shortMemory = 10 * time.Second

func (ti *title) markShort(now time.Time) {
	ti.fmu.Lock()
	defer ti.fmu.Unlock()
	ti.lastShort = now
}

// shortOfPeers tells whether a stream of the title recently needed the origin for a piece
// its connected peers could not deliver in time.
func (ti *title) shortOfPeers(now time.Time) bool {
	ti.fmu.Lock()
	defer ti.fmu.Unlock()
	return !ti.lastShort.IsZero() && now.Sub(ti.lastShort) < shortMemory
}

// pickNearest chooses peers to connect to for a title: up to n of our ISP's (nearest first),
// and peers of unknown place and other ISPs only to make up the n while our ISP offers fewer
// than n/2, or, when short (our ISP's peers left a stream to the origin), up to n/2 of them
// besides. Even one fast peer elsewhere carried most of a stream in TestStreamsFromOwnISP,
// so none is taken while the ISP has enough. The origin is outside the ISP too: when the ISP's peers fall short, a
// holder elsewhere costs the ISP no more than the origin and spares the provider. Peers
// elsewhere are let go once ours carry the stream (App.trimOutside).
func pickNearest(self peer.ID, cands []overlay.PeerInfo, n int, short bool) []overlay.PeerInfo {
	cands = mergeByID(self, cands)
	slices.SortFunc(cands, nearerForStreaming)
	inside := 0
	for _, c := range cands {
		if localTier(c) == 0 {
			inside++
		}
	}
	inside = min(inside, n)
	outside := n - inside
	switch {
	case short:
		outside = max(outside, n/2)
	case 2*inside >= n:
		outside = 0
	}
	return cands[:min(len(cands), inside+outside)]
}

// mergeByID drops self and repeated peers (the DHT and gossip may both name one), keeping
// labels any of the copies had.
func mergeByID(self peer.ID, cands []overlay.PeerInfo) []overlay.PeerInfo {
	out := make([]overlay.PeerInfo, 0, len(cands))
	at := map[peer.ID]int{}
	for _, c := range cands {
		if c.ID == self {
			continue
		}
		i, seen := at[c.ID]
		switch {
		case !seen:
			at[c.ID] = len(out)
			out = append(out, c)
		case out[i].Labels.ISP == "" && c.Labels.ISP != "":
			out[i].Labels, out[i].Locality = c.Labels, c.Locality
		}
	}
	return out
}

// usable counts the candidates the app's locality would stream from first: our ISP's for
// LocalityISP, any for LocalityRTT.
func (a *App) usable(cands []overlay.PeerInfo) int {
	cands = mergeByID(a.ov.ID(), cands)
	if a.opts.Locality == LocalityRTT {
		return len(cands)
	}
	n := 0
	for _, c := range cands {
		if localTier(c) == 0 {
			n++
		}
	}
	return n
}

// pickByRTT chooses the n nearest peers by measured RTT wherever they are (LocalityRTT);
// labels only break ties (overlay.Closer).
func pickByRTT(self peer.ID, cands []overlay.PeerInfo, n int) []overlay.PeerInfo {
	cands = mergeByID(self, cands)
	slices.SortFunc(cands, overlay.Closer)
	return cands[:min(len(cands), n)]
}
