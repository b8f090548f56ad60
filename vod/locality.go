package vod

import (
	"cmp"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/nanodc/nanodc/overlay"
)

// localTier ranks a peer by where it is: 0 same access node, 1 same ISP, 2 labels unknown
// (it may be either), 3 another ISP. Labels come from the overlay's info exchange or the
// holder's gossip announcement.
func localTier(p overlay.PeerInfo) int {
	switch {
	case p.Labels.ISP == "":
		return 2
	case p.Locality == 2:
		return 3
	}
	return p.Locality
}

// nearerForStreaming orders peers by tier, then by measured RTT within a tier. Tier comes
// first because an RTT measured while uplinks are busy is mostly queueing: in a flash crowd
// every holder's uplink is loaded, and RTT-first ordering picked the other ISP about as often
// as our own (47 % of peer bytes crossed ISPs, docs/BENCHMARKS.md session 8).
func nearerForStreaming(a, b overlay.PeerInfo) int {
	if ta, tb := localTier(a), localTier(b); ta != tb {
		return cmp.Compare(ta, tb)
	}
	return overlay.Closer(a, b)
}

// pickNearest chooses up to n peers to connect to for a title: our ISP's first (same access
// node, then the rest of the ISP, nearest first), and peers of unknown place and other ISPs
// only while our ISP has fewer than half of n to offer. This is biased neighbour selection
// (Bindal et al., ICDCS 2006) taken to its end: the ISPs' swarms need no standing link
// between them, since the origin fills what peers cannot deliver in time, and even one fast
// peer elsewhere carried most of a stream in TestStreamsFromOwnISP.
func pickNearest(self peer.ID, cands []overlay.PeerInfo, n int) []overlay.PeerInfo {
	cands = mergeByID(self, cands)
	slices.SortFunc(cands, nearerForStreaming)
	inside := 0
	for _, c := range cands {
		if localTier(c) <= 1 {
			inside++
		}
	}
	inside = min(inside, n)
	outside := n - inside
	if 2*inside >= n {
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
