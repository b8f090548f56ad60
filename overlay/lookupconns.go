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
//
// A connection the lookup has just dialled still has streams negotiating their protocol
// (identify, pubsub, peer info, or an app's) when the lookup ends, and a negotiating stream
// may be an app's, so such a peer is passed over and looked at again a second later, when
// the negotiations are over (a CI run left one such connection open, 1 test run in 25 under
// load). So is a connection less than a second old, whose streams may not even be open yet:
// kad-dht checks every newly identified peer with a FIND_NODE of its own, and one closed
// before that request is sent is dialled again to send it, and kept
// (TestPeriodicRefreshLetsGo, 1 run in 4).
type lookupConns struct {
	o *Overlay

	mu     sync.Mutex
	active int
	since  time.Time // when the oldest lookup in flight began
	keep   map[peer.ID]struct{}
	floor  int // the most peers any lookup in flight wants to keep

	// pending are peers a sweep passed over because a stream was still negotiating, with
	// the start of that sweep's lookups; retry sweeps them once no lookup is in flight.
	pending      map[peer.ID]time.Time
	pendingFloor int
	// late is the start of the lookups whose end the retry sweep looks at once more in
	// full, with the peers their callers kept and their floor: kad-dht's query goroutines
	// may still finish a dial after a lookup has returned (see end).
	late      time.Time
	lateKeep  map[peer.ID]struct{}
	lateFloor int
	retry     *time.Timer
	closed    bool

	// lost are the peers whose last connection closed in the last redialWindow, and when
	// (see redialled); redials how often each was dialled again since, and when last.
	lost       map[peer.ID]time.Time
	redials    map[peer.ID]redials
	lostPruned time.Time // when lost and redials last dropped their old entries
}

type redials struct {
	n    int
	last time.Time
}

// redialWindow is how long after losing a peer a dial to it is taken for kad-dht's doing.
const redialWindow = 10 * time.Second

// redialled hears of every new connection, lostPeer of every closed one. kad-dht sends a
// FIND_NODE to each newly identified peer, and retries a request whose stream was reset on
// a new stream: when a connection closes with such a request on it or before it is sent
// (our sweep closed it, or the peer did), kad-dht dials the peer again, and the connection
// stays. A sweep's peers came back (TestPeriodicRefreshLetsGo, 1 run in 4); in the
// 1000-gateway DHT check, the provider dialled back each of the checkers that closed their
// connection after finding it, hundreds within the connection manager's 30 s grace, until
// its resource manager refused any more (55 failed dials). An outbound connection to a
// peer lost in the last redialWindow is therefore swept a second later, when the request
// is over, unless it carries an application's stream or the node is at its low
// watermark. kad-dht retries a request once, but a new connection brings a new request:
// the DHT checks every identified peer missing from its table with a FIND_NODE, and drops a
// peer whose request failed, so a check slower than the second (a loaded machine) was cut
// by the sweep, the peer dropped and dialled again, its next check cut in turn: the same
// peers dialled every second (TestPeriodicRefreshLetsGo, 3 runs in 8 beside busy loops).
// Each further re-dial of a peer within redialReset therefore waits twice as long, up to
// 16 s, until its check gets through.
func (l *lookupConns) redialled(_ network.Network, c network.Conn) {
	if c.Stat().Direction != network.DirOutbound {
		return
	}
	p := c.RemotePeer()
	now := time.Now()
	l.mu.Lock()
	at, ok := l.lost[p]
	delete(l.lost, p)
	ok = ok && now.Sub(at) < redialWindow
	var wait time.Duration
	if ok {
		r := l.redials[p]
		if now.Sub(r.last) > redialReset {
			r.n = 0
		}
		wait = retryDelay<<min(r.n, 4) - retryDelay // postpone adds retryDelay
		if l.redials == nil {
			l.redials = map[peer.ID]redials{}
		}
		l.redials[p] = redials{r.n + 1, now}
	}
	l.mu.Unlock()
	switch {
	case !ok:
	case wait == 0:
		l.postpone(map[peer.ID]time.Time{p: at}, l.o.cfg.ConnLow)
	default:
		time.AfterFunc(wait, func() { l.postpone(map[peer.ID]time.Time{p: at}, l.o.cfg.ConnLow) })
	}
}

// redialReset is how long after its last re-dial a peer's wait starts again at a second.
const redialReset = 30 * time.Second

func (l *lookupConns) lostPeer(nw network.Network, c network.Conn) {
	p := c.RemotePeer()
	if nw.Connectedness(p) == network.Connected {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.lost == nil {
		l.lost = map[peer.ID]time.Time{}
	}
	if now.Sub(l.lostPruned) >= redialWindow { // not on every disconnect: a busy node has many
		for q, at := range l.lost {
			if now.Sub(at) >= redialWindow {
				delete(l.lost, q)
			}
		}
		for q, r := range l.redials {
			if now.Sub(r.last) > redialReset {
				delete(l.redials, q)
			}
		}
		l.lostPruned = now
	}
	l.lost[p] = now
}

// retryDelay is how long a passed-over peer's streams get to finish negotiating.
const retryDelay = time.Second

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
	pending := l.pending
	if pending != nil {
		floor = max(floor, l.pendingFloor)
		l.pending = nil
	}
	// A late look a lookup in flight took over.
	if !l.late.IsZero() {
		since = minTime(since, l.late)
		for p := range l.lateKeep {
			kept[p] = struct{}{}
		}
		floor = max(floor, l.lateFloor)
		l.late, l.lateKeep, l.lateFloor = time.Time{}, nil, 0
	}
	l.mu.Unlock()
	cands := map[peer.ID]time.Time{}
	for _, p := range l.o.host.Network().Peers() {
		cands[p] = since
	}
	for p, t := range pending {
		cands[p] = minTime(t, since)
	}
	l.postpone(l.sweep(cands, kept, floor, false), floor)
	l.lookAgain(since, kept, floor)
}

// lookAgain has the retry sweep look once more at every connection dialled since since: a
// lookup returns as soon as its caller has what it wanted (FindProviders its first
// provider), while kad-dht's query goroutines may still be finishing dials, and those
// connections, open after the sweep, stayed (TestLookupsCloseWhatTheyDialled with an asker
// in DHT-client mode, 1 run in 10).
func (l *lookupConns) lookAgain(since time.Time, keep map[peer.ID]struct{}, floor int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	if l.late.IsZero() || since.Before(l.late) {
		l.late = since
	}
	if l.lateKeep == nil {
		l.lateKeep = map[peer.ID]struct{}{}
	}
	for p := range keep {
		l.lateKeep[p] = struct{}{}
	}
	l.lateFloor = max(l.lateFloor, floor)
	if l.retry == nil {
		l.retry = time.AfterFunc(retryDelay, l.retrySweep)
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// postpone keeps the peers a sweep passed over for a retry sweep.
func (l *lookupConns) postpone(passed map[peer.ID]time.Time, floor int) {
	if len(passed) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	if l.pending == nil {
		l.pending = map[peer.ID]time.Time{}
		l.pendingFloor = 0
	}
	for p, t := range passed {
		if old, ok := l.pending[p]; !ok || t.Before(old) {
			l.pending[p] = t
		}
	}
	l.pendingFloor = max(l.pendingFloor, floor)
	if l.retry == nil {
		l.retry = time.AfterFunc(retryDelay, l.retrySweep)
	}
}

// retrySweep sweeps the passed-over peers once more, now counting a stream still
// negotiating as in use. A lookup in flight takes them over instead: closing a connection
// it is using would cost kad-dht that peer.
func (l *lookupConns) retrySweep() {
	l.mu.Lock()
	l.retry = nil
	if l.active > 0 || l.closed {
		l.mu.Unlock()
		return
	}
	cands, floor := l.pending, l.pendingFloor
	l.pending = nil
	late, keep := l.late, l.lateKeep
	if !late.IsZero() {
		floor = max(floor, l.lateFloor)
		l.late, l.lateKeep, l.lateFloor = time.Time{}, nil, 0
	}
	l.mu.Unlock()
	if !late.IsZero() {
		if cands == nil {
			cands = map[peer.ID]time.Time{}
		}
		for _, p := range l.o.host.Network().Peers() {
			if t, ok := cands[p]; !ok || late.Before(t) {
				cands[p] = late
			}
		}
	}
	l.sweep(cands, keep, floor, true)
}

// close stops the retry timer; a node that is shutting down closes everything anyway.
func (l *lookupConns) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.retry != nil {
		l.retry.Stop()
		l.retry = nil
	}
}

// sweep closes the connections to cands dialled at or after each one's time (see
// lookupConns), farthest peer first, while the node has more than floor peers. Unless
// final, it returns the peers passed over because a stream was still negotiating.
func (l *lookupConns) sweep(cands map[peer.ID]time.Time, keep map[peer.ID]struct{}, floor int, final bool) map[peer.ID]time.Time {
	nw := l.o.host.Network()
	cm := l.o.host.ConnManager()
	passed := map[peer.ID]time.Time{}
	type candidate struct {
		PeerInfo
		since time.Time
	}
	var closable []candidate
	for p, since := range cands {
		conns := nw.ConnsToPeer(p)
		opened := openedSince(conns, since)
		if _, ok := keep[p]; ok || len(opened) == 0 || cm.IsProtected(p, "") {
			continue
		}
		switch app, negotiating := streamUse(conns); {
		case app:
			continue
		case negotiating || !final && youngest(opened) < retryDelay:
			if !final {
				passed[p] = since
			}
			continue
		}
		closable = append(closable, candidate{l.o.prox.info(p), since})
	}
	slices.SortFunc(closable, func(a, b candidate) int { return Closer(b.PeerInfo, a.PeerInfo) })
	peers := len(nw.Peers())
	for _, c := range closable {
		if peers <= floor {
			break
		}
		for _, conn := range openedSince(nw.ConnsToPeer(c.ID), c.since) {
			_ = conn.Close() // an error means it is already closed
		}
		if len(nw.ConnsToPeer(c.ID)) == 0 {
			peers--
		}
	}
	return passed
}

// youngest is how long ago the newest of conns was opened.
func youngest(conns []network.Conn) time.Duration {
	var newest time.Time
	for _, c := range conns {
		if t := c.Stat().Opened; t.After(newest) {
			newest = t
		}
	}
	return time.Since(newest)
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

// streamUse reports whether any of conns carries a stream of something other than the
// overlay's own upkeep (an app's transfer), and whether any carries a stream still
// negotiating its protocol (which may turn out to be either).
func streamUse(conns []network.Conn) (app, negotiating bool) {
	for _, c := range conns {
		for _, s := range c.GetStreams() {
			switch id := s.Protocol(); {
			case id == "":
				negotiating = true
			case !upkeepProtocol(id):
				return true, negotiating
			}
		}
	}
	return false, negotiating
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
