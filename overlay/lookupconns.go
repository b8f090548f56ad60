package overlay

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// lookupConns closes the connections a DHT lookup opened once the lookup is over, and
// those a join opened beyond the low watermark once the join is over.
//
// Kademlia sends every lookup of a key to the same few nodes closest to it. go-libp2p
// leaves each connection a lookup dialled open until the connection manager's grace period
// (30 s) has passed, so a popular key — a title a crowd is starting to watch, or the
// emulator's check where 999 gateways look one CID up — piles hundreds of idle inbound
// connections on those nodes until their resource managers refuse more (measured: 3506
// refusals at 1000 gateways). A gateway looks a key up, connects to the providers it found
// and is done with the rest; closing them at once bounds the load on a hot node by the
// lookups in flight, not by the lookups of the last 30 s, and spares the memory on both ends.
//
// Lookups of one node overlap (a gateway may resolve several titles at once), and closing a
// connection another lookup is using would make kad-dht drop that peer from its routing
// table, so connections are swept when the last lookup in flight ends: every outbound
// connection opened since the first of them began, unless its peer is protected, was a
// result the caller is about to use, carries a stream of an application protocol, or is
// needed to stay above the neighbour floor.
//
// Joining is a lookup too: kad-dht's routing-table refresh dials 40-70 peers per gateway,
// and all of them stayed for the grace period, doubling a gateway's live heap during
// start-up (5.75 → 2.93 MB per gateway right after start-up at 1000 gateways once they are
// let go) and adding to the start-up load under which dials timed out. After a join, the
// farthest of those connections are closed down to the low watermark.
type lookupConns struct {
	o *Overlay

	mu     sync.Mutex
	active int
	since  time.Time // when the oldest lookup in flight began
	keep   map[peer.ID]struct{}
	floor  int // the most peers any lookup in flight wants to keep
}

// begin marks a lookup in flight after which the node wants at least floor peers.
func (l *lookupConns) begin(floor int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.active == 0 {
		l.since = time.Now()
		l.keep = map[peer.ID]struct{}{}
		l.floor = 0
	}
	l.active++
	l.floor = max(l.floor, floor)
}

// end marks a lookup over; keep are the peers its caller will talk to.
func (l *lookupConns) end(keep ...peer.ID) {
	l.mu.Lock()
	for _, p := range keep {
		l.keep[p] = struct{}{}
	}
	l.active--
	if l.active > 0 {
		l.mu.Unlock()
		return
	}
	since, kept, floor := l.since, l.keep, l.floor
	l.keep = nil
	l.mu.Unlock()
	l.sweep(since, kept, floor)
}

// sweep closes the lookups' connections (see lookupConns), farthest peer first, while the
// node has more than floor peers.
func (l *lookupConns) sweep(since time.Time, keep map[peer.ID]struct{}, floor int) {
	nw := l.o.host.Network()
	cm := l.o.host.ConnManager()
	var cands []PeerInfo
	for _, p := range nw.Peers() {
		conns := nw.ConnsToPeer(p)
		if _, ok := keep[p]; ok || len(openedSince(conns, since)) == 0 || cm.IsProtected(p, "") || inUse(conns) {
			continue
		}
		cands = append(cands, l.o.prox.info(p))
	}
	slices.SortFunc(cands, func(a, b PeerInfo) int { return Closer(b, a) })
	peers := len(nw.Peers())
	for _, pi := range cands {
		if peers <= floor {
			return
		}
		for _, c := range openedSince(nw.ConnsToPeer(pi.ID), since) {
			_ = c.Close() // an error means it is already closed
		}
		if len(nw.ConnsToPeer(pi.ID)) == 0 {
			peers--
		}
	}
}

// openedSince are the connections of conns this node dialled at or after since.
func openedSince(conns []network.Conn, since time.Time) []network.Conn {
	var out []network.Conn
	for _, c := range conns {
		if st := c.Stat(); st.Direction == network.DirOutbound && !st.Opened.Before(since) {
			out = append(out, c)
		}
	}
	return out
}

// inUse reports whether any of conns carries a stream of something other than the
// overlay's own upkeep (an app's transfer, or a stream still negotiating its protocol).
func inUse(conns []network.Conn) bool {
	for _, c := range conns {
		for _, s := range c.GetStreams() {
			if !upkeepProtocol(s.Protocol()) {
				return true
			}
		}
	}
	return false
}

// upkeepProtocol reports whether id is one the overlay speaks to every peer it connects to:
// the DHT, identify, ping, pubsub, NAT helpers and nanodc's peer info (a peer still
// connected another way gets asked for its labels again at the next ping round).
func upkeepProtocol(id protocol.ID) bool {
	if id == InfoProtocol {
		return true
	}
	for _, prefix := range []string{ProtocolPrefix + "/kad/", "/ipfs/id/", "/ipfs/ping/", "/meshsub/", "/floodsub/", "/libp2p/autonat/", "/libp2p/dcutr", "/libp2p/circuit/"} {
		if strings.HasPrefix(string(id), prefix) {
			return true
		}
	}
	return false
}
