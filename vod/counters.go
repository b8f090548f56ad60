package vod

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// titleCounters are per-title figures, exported through Stats.
type titleCounters struct {
	servedCache   atomic.Int64 // bytes served to players from pieces already held
	servedNetwork atomic.Int64 // bytes served to players that had to be fetched first
	originBytes   atomic.Int64 // gap fills and pushes from the origin
	streams       atomic.Int64
	stalls        atomic.Int64
	// uploadYields counts the times the title's upload was held back for a scarcer title's
	// (uplink.go); uploadYielding says whether it is held back now.
	uploadYields   atomic.Int64
	uploadYielding atomic.Bool
}

// peerCounters are the bytes a remote peer sent us, by its locality.
type peerCounters struct {
	locality int // 0 same access node, 1 same ISP, 2 other ISP, -1 unknown
	bytes    int64
}

func (ti *title) startInflight(i int) bool {
	ti.fmu.Lock()
	defer ti.fmu.Unlock()
	if ti.inflightAt == nil {
		ti.inflightAt = map[int]bool{}
	}
	if ti.inflightAt[i] {
		return false
	}
	ti.inflightAt[i] = true
	return true
}

func (ti *title) endInflight(i int) {
	ti.fmu.Lock()
	defer ti.fmu.Unlock()
	delete(ti.inflightAt, i)
}

func (ti *title) inflight(i int) bool {
	ti.fmu.Lock()
	defer ti.fmu.Unlock()
	return ti.inflightAt[i]
}

func (ti *title) originInflight() int {
	ti.fmu.Lock()
	defer ti.fmu.Unlock()
	return len(ti.inflightAt)
}

// samplePeerRate updates the EWMA of useful bytes per second received from peers.
func (ti *title) samplePeerRate(now time.Time) {
	st := ti.t.Stats()
	useful := st.PeerConns.BytesReadUsefulData.Int64()
	ti.fmu.Lock()
	defer ti.fmu.Unlock()
	if !ti.rateAt.IsZero() {
		if dt := now.Sub(ti.rateAt).Seconds(); dt > 0 {
			inst := float64(useful-ti.rateBytes) / dt
			ti.rate = 0.8*ti.rate + 0.2*inst
		}
	}
	ti.rateAt, ti.rateBytes = now, useful
}

func (ti *title) peerRate() float64 {
	ti.fmu.Lock()
	defer ti.fmu.Unlock()
	return ti.rate
}

// countPeerRead accounts bytes a peer sent us by where the peer is.
func (a *App) countPeerRead(id peer.ID, n int) {
	a.mu.Lock()
	pc := a.peers[id]
	if pc == nil || pc.locality < 0 {
		loc := -1
		if info := a.ov.PeerInfo(id); info.Labels.ISP != "" {
			loc = info.Locality
		}
		if pc == nil {
			pc = &peerCounters{}
			a.peers[id] = pc
		}
		pc.locality = loc
	}
	pc.bytes += int64(n)
	loc := pc.locality
	a.mu.Unlock()
	a.metrics.received.WithLabelValues(localityName(loc)).Add(float64(n))
}

func localityName(l int) string {
	switch l {
	case 0:
		return "peer_same_access_node"
	case 1:
		return "peer_same_isp"
	case 2:
		return "peer_other_isp"
	}
	return "peer_unknown"
}

// isBanned tells whether anacrolix banned the peer behind a synthetic address (it sent data
// that failed a hash check).
func (a *App) isBanned(ip netip.Addr) bool {
	if a.client == nil {
		return false
	}
	for _, s := range a.client.BadPeerIPs() {
		if s == ip.String() {
			return true
		}
	}
	return false
}

// BannedPeers lists the peers this gateway banned for sending corrupt data.
func (a *App) BannedPeers() []peer.ID {
	if a.client == nil {
		return nil
	}
	var out []peer.ID
	for _, s := range a.client.BadPeerIPs() {
		if id, err := a.tr.peerOf(netip.AddrPortFrom(netip.MustParseAddr(s), 1).String()); err == nil {
			out = append(out, id)
		}
	}
	return out
}
