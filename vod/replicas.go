package vod

import (
	"cmp"
	"hash/fnv"
	"slices"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/nanodc/nanodc/overlay"
)

// ChooseReplicas picks n gateways for a push, spread across access nodes (and ISPs): one per
// access node in turn, ISPs interleaved, so that every neighbourhood gets a nearby copy
// before any gets a second. Candidates must match every selector label (ISP, access_node
// or an extra label). Gateways in avoid (those holding another title of the same push) are
// chosen only when too few others match: an ADSL uplink seeds about one stream, so two
// titles on one gateway share it while others sit idle. The choice is deterministic for a
// given candidate set.
func ChooseReplicas(cands []overlay.PeerInfo, n int, selector map[string]string, avoid map[peer.ID]bool) []overlay.PeerInfo {
	var free, avoided []overlay.PeerInfo
	for _, c := range cands {
		switch {
		case !c.Labels.Matches(selector):
		case avoid[c.ID]:
			avoided = append(avoided, c)
		default:
			free = append(free, c)
		}
	}
	out := spreadOrder(free)
	if len(out) < n {
		out = append(out, spreadOrder(avoided)...)
	}
	return out[:min(n, len(out))]
}

// spreadOrder orders gateways round-robin over their access nodes, ISPs interleaved: the
// first of every access node (ranked within its ISP), then the second, and so on.
func spreadOrder(cands []overlay.PeerInfo) []overlay.PeerInfo {
	byAN := map[string][]overlay.PeerInfo{}
	var ans []string
	for _, c := range cands {
		key := c.Labels.ISP + "/" + c.Labels.AccessNode
		if _, ok := byAN[key]; !ok {
			ans = append(ans, key)
		}
		byAN[key] = append(byAN[key], c)
	}
	for _, k := range ans {
		slices.SortFunc(byAN[k], func(a, b overlay.PeerInfo) int { return cmp.Compare(a.ID, b.ID) })
	}
	rank := map[string]int{}
	seen := map[string]int{}
	slices.Sort(ans)
	for _, k := range ans {
		isp := byAN[k][0].Labels.ISP
		rank[k] = seen[isp]
		seen[isp]++
	}
	slices.SortStableFunc(ans, func(a, b string) int { return cmp.Compare(rank[a], rank[b]) })
	out := make([]overlay.PeerInfo, 0, len(cands))
	for round := 0; len(out) < len(cands); round++ {
		for _, k := range ans {
			if round < len(byAN[k]) {
				out = append(out, byAN[k][round])
			}
		}
	}
	return out
}

// PrefixSourcesFor names the PrefixSources peers a prefix push to gateway id (labels at)
// fetches from: up to PrefixSources-1 of the nearest gateways that already hold the prefix
// (holders), then the nearest replicas for the rest. The replicas' uplinks are busy trading
// the whole title among themselves while prefixes go out, and the gateways that got their
// prefix have idle ones: chaining lets the prefix spread like a tree instead of every
// gateway queueing at the replicas (in the flash crowd, 26-30 of 75 prefixes were not in
// place when the viewers came). At least one replica stays among the sources: the first
// prefixes have no holder to come from.
func PrefixSourcesFor(id peer.ID, at overlay.Labels, replicas, holders []overlay.PeerInfo) []peer.ID {
	out := nearest(id, at, holders, PrefixSources-1)
	return append(out, nearest(id, at, replicas, PrefixSources-len(out))...)
}

// PrefixTree is one title's prefix pushes in progress: it names each push's sources
// (PrefixSourcesFor) and learns the gateways whose prefix is in place. Safe for concurrent use.
type PrefixTree struct {
	replicas []overlay.PeerInfo
	mu       sync.Mutex
	holders  []overlay.PeerInfo
}

// NewPrefixTree starts a title's prefix pushes from these replicas.
func NewPrefixTree(replicas []overlay.PeerInfo) *PrefixTree {
	return &PrefixTree{replicas: replicas}
}

// Sources names the peers a prefix push to g fetches from.
func (p *PrefixTree) Sources(g overlay.PeerInfo) []peer.ID {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PrefixSourcesFor(g.ID, g.Labels, p.replicas, p.holders)
}

// Placed records that g holds the prefix now: a source for the pushes that follow.
func (p *PrefixTree) Placed(g overlay.PeerInfo) {
	p.mu.Lock()
	p.holders = append(p.holders, g)
	p.mu.Unlock()
}

// nearest returns up to k of cands nearest a gateway id with labels at: those on its access
// node first, then those in its ISP, then the others. Within a tier the order is a
// rendezvous hash of id and the candidate, so that the gateways of one access node spread
// over the sources of a tier instead of all taking the same first ones, and the choice is
// still deterministic.
func nearest(id peer.ID, at overlay.Labels, cands []overlay.PeerInfo, k int) []peer.ID {
	if k <= 0 {
		return nil
	}
	tier := func(l overlay.Labels) int {
		switch {
		case l.ISP == at.ISP && l.AccessNode == at.AccessNode:
			return 0
		case l.ISP == at.ISP:
			return 1
		}
		return 2
	}
	sorted := slices.DeleteFunc(slices.Clone(cands), func(c overlay.PeerInfo) bool { return c.ID == id })
	score := make(map[peer.ID]uint64, len(sorted))
	for _, c := range sorted {
		h := fnv.New64a()
		h.Write([]byte(id))
		h.Write([]byte(c.ID))
		score[c.ID] = h.Sum64()
	}
	slices.SortStableFunc(sorted, func(a, b overlay.PeerInfo) int {
		return cmp.Or(cmp.Compare(tier(a.Labels), tier(b.Labels)), cmp.Compare(score[a.ID], score[b.ID]), cmp.Compare(a.ID, b.ID))
	})
	out := make([]peer.ID, 0, min(k, len(sorted)))
	for _, r := range sorted[:min(k, len(sorted))] {
		out = append(out, r.ID)
	}
	return out
}
