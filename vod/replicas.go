package vod

import (
	"cmp"
	"slices"

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

// NearestReplicas returns up to k of the replicas nearest a gateway with labels at: those on
// its access node first, then those in its ISP, then the others (each tier in ID order, so
// the choice is deterministic), as the sources a prefix push names to that gateway.
func NearestReplicas(at overlay.Labels, replicas []overlay.PeerInfo, k int) []peer.ID {
	tier := func(l overlay.Labels) int {
		switch {
		case l.ISP == at.ISP && l.AccessNode == at.AccessNode:
			return 0
		case l.ISP == at.ISP:
			return 1
		}
		return 2
	}
	sorted := slices.Clone(replicas)
	slices.SortStableFunc(sorted, func(a, b overlay.PeerInfo) int {
		return cmp.Or(cmp.Compare(tier(a.Labels), tier(b.Labels)), cmp.Compare(a.ID, b.ID))
	})
	out := make([]peer.ID, 0, min(k, len(sorted)))
	for _, r := range sorted[:min(k, len(sorted))] {
		out = append(out, r.ID)
	}
	return out
}
