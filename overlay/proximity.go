package overlay

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/quic-go/quic-go"
)

// PeerInfo is what the overlay knows about another node.
type PeerInfo struct {
	ID        peer.ID        `json:"peer_id"`
	Addrs     []ma.Multiaddr `json:"addrs"`
	RTT       time.Duration  `json:"rtt_ns"` // smoothed RTT; 0 when never measured
	Labels    Labels         `json:"labels"`
	Version   string         `json:"version,omitempty"`
	Connected bool           `json:"connected"`
	// Locality is Locality(our labels, Labels): 0 same access node, 1 same ISP, 2 other.
	Locality int `json:"locality"`
}

// Closer orders peers nearest first: measured RTT first (it is what a transfer will feel),
// peers never measured after them by label locality, then by ID so the order is stable.
func Closer(a, b PeerInfo) int {
	switch {
	case a.RTT > 0 && b.RTT > 0 && a.RTT != b.RTT:
		return cmp.Compare(a.RTT, b.RTT)
	case a.RTT > 0 && b.RTT == 0:
		return -1
	case a.RTT == 0 && b.RTT > 0:
		return 1
	case a.Locality != b.Locality:
		return cmp.Compare(a.Locality, b.Locality)
	}
	return cmp.Compare(a.ID, b.ID)
}

type peerLabels struct {
	labels   Labels
	version  string
	lastSeen time.Time
}

// proximity measures RTT to connected peers and learns their labels.
type proximity struct {
	host    host.Host
	self    Labels
	version string
	log     *slog.Logger
	metrics *metrics
	sub     event.Subscription

	mu    sync.Mutex
	known map[peer.ID]*peerLabels

	wg sync.WaitGroup // one-off pings and info fetches
}

// forgetAfter bounds memory: labels of peers not seen for this long are dropped.
const forgetAfter = time.Hour

func newProximity(h host.Host, self Labels, version string, log *slog.Logger, m *metrics) (*proximity, error) {
	p := &proximity{host: h, self: self, version: version, log: log, metrics: m, known: map[peer.ID]*peerLabels{}}
	h.SetStreamHandler(InfoProtocol, p.serveInfo)
	sub, err := h.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
	if err != nil {
		return nil, err
	}
	p.sub = sub
	return p, nil
}

func (p *proximity) serveInfo(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	if err := encodeInfo(s, p.version, p.self); err != nil {
		p.log.Debug("info: write", "peer", s.Conn().RemotePeer(), "err", err)
		_ = s.Reset()
	}
}

// run reacts to newly identified peers and refreshes every connected peer's RTT each interval.
func (p *proximity) run(ctx context.Context, interval time.Duration) {
	defer p.wg.Wait()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			// Unsubscribe now, not at close(): an eventbus subscriber that stops reading
			// blocks identify's emitter, and with it new connections and the host's Close
			// (seen: 2 of 100 emulated gateways never finished closing). Close drains the
			// channel and may be called again.
			p.sub.Close()
			return
		case e, ok := <-p.sub.Out():
			if !ok {
				return
			}
			ev := e.(event.EvtPeerIdentificationCompleted)
			p.wg.Go(func() { p.learn(ctx, ev.Peer, slices.Contains(ev.Protocols, InfoProtocol)) })
		case <-tick.C:
			p.measureAll(ctx)
			p.forgetStale()
		}
	}
}

// learn measures a newly identified peer once and fetches its labels.
func (p *proximity) learn(ctx context.Context, id peer.ID, speaksInfo bool) {
	_, _ = p.measure(ctx, id) // failure is logged; the next round retries
	if speaksInfo {
		p.fetchInfo(ctx, id)
	}
}

func (p *proximity) measureAll(ctx context.Context) {
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, id := range p.host.Network().Peers() {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			_, _ = p.measure(ctx, id)
			// learn may have lost its connection half-way (a lookup's connection closed
			// while the peer stayed connected by another): ask again for labels never had.
			if !p.hasLabels(id) {
				if ok, _ := p.host.Peerstore().SupportsProtocols(id, InfoProtocol); len(ok) > 0 {
					p.fetchInfo(ctx, id)
				}
			}
		})
	}
	wg.Wait()
}

// measure refreshes id's RTT in the peerstore's latency EWMA: from the QUIC connection's own
// estimate where there is one (transportRTT), with a ping otherwise.
func (p *proximity) measure(ctx context.Context, id peer.ID) (time.Duration, error) {
	if rtt := transportRTT(p.host, id); rtt > 0 {
		p.host.Peerstore().RecordLatency(id, rtt)
		p.metrics.rtt.Observe(rtt.Seconds())
		return rtt, nil
	}
	return p.ping(ctx, id)
}

// transportRTT is the smoothed RTT a QUIC connection to id has measured on its own traffic
// (RFC 9002: every acknowledged packet, keep-alives included), 0 when no connection to id has
// one (TCP, or not connected). It costs nothing, where a ping opens a stream, negotiates its
// protocol and sends a packet each way: in the 100-gateway flash crowd the pings were 3 % of
// the emulator's CPU (docs/decisions.md "RTT from the transport, not pings"), and on a
// home gateway they take uplink and wake-ups for a figure QUIC already keeps.
func transportRTT(h host.Host, id peer.ID) time.Duration {
	for _, c := range h.Network().ConnsToPeer(id) {
		var qc *quic.Conn
		if c.As(&qc) && qc != nil {
			if rtt := qc.ConnectionStats().SmoothedRTT; rtt > 0 {
				return rtt
			}
		}
	}
	return 0
}

// ping measures one RTT; go-libp2p records it in the peerstore's latency EWMA.
func (p *proximity) ping(ctx context.Context, id peer.ID) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(noDial(ctx), 5*time.Second)
	defer cancel()
	res := <-ping.Ping(ctx, p.host, id)
	if res.Error != nil {
		p.log.Debug("ping failed", "peer", id, "err", res.Error)
		return 0, res.Error
	}
	p.metrics.rtt.Observe(res.RTT.Seconds())
	return res.RTT, nil
}

func (p *proximity) fetchInfo(ctx context.Context, id peer.ID) {
	ctx, cancel := context.WithTimeout(noDial(ctx), 10*time.Second)
	defer cancel()
	s, err := p.host.NewStream(ctx, id, InfoProtocol)
	if err != nil {
		p.log.Debug("info: open", "peer", id, "err", err)
		return
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	version, labels, err := decodeInfo(s)
	if err != nil {
		p.log.Info("info: bad answer", "peer", id, "err", err)
		_ = s.Reset()
		return
	}
	p.mu.Lock()
	p.known[id] = &peerLabels{labels: labels, version: version, lastSeen: time.Now()}
	p.mu.Unlock()
}

// noDial keeps a measurement from opening a connection. Proximity measures the peers the
// node is connected to; a peer it lists or learns about may be let go (a lookup's sweep, the
// connection manager) before the ping or info stream opens, and a stream opened then would
// dial it again and keep it for good: a CI run found a lookup's swept peer back a second
// later, re-dialled by the ping of its identify-time measurement.
func noDial(ctx context.Context) context.Context {
	return network.WithNoDial(ctx, "proximity measures connected peers only")
}

func (p *proximity) forgetStale() {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, k := range p.known {
		if p.host.Network().Connectedness(id) == network.Connected {
			k.lastSeen = now
		} else if now.Sub(k.lastSeen) > forgetAfter {
			delete(p.known, id)
		}
	}
}

// info assembles what we know about id.
func (p *proximity) info(id peer.ID) PeerInfo {
	pi := PeerInfo{
		ID:        id,
		Addrs:     p.host.Peerstore().Addrs(id),
		RTT:       p.host.Peerstore().LatencyEWMA(id),
		Connected: p.host.Network().Connectedness(id) == network.Connected,
	}
	// The address in use comes first: it is the one the RTT was measured on.
	if conns := p.host.Network().ConnsToPeer(id); len(conns) > 0 {
		inUse := conns[0].RemoteMultiaddr()
		pi.Addrs = append([]ma.Multiaddr{inUse}, slices.DeleteFunc(pi.Addrs, inUse.Equal)...)
	}
	p.mu.Lock()
	if k, ok := p.known[id]; ok {
		pi.Labels, pi.Version = k.labels, k.version
	}
	p.mu.Unlock()
	pi.Locality = Locality(p.self, pi.Labels)
	return pi
}

// hasLabels tells whether id's info message has arrived.
func (p *proximity) hasLabels(id peer.ID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.known[id]
	return ok
}

func (p *proximity) close() {
	if p.sub != nil {
		p.sub.Close()
	}
	p.host.RemoveStreamHandler(InfoProtocol)
	p.wg.Wait()
}

// Peers lists the connected peers, nearest first.
func (o *Overlay) Peers() []PeerInfo {
	ids := o.host.Network().Peers()
	out := make([]PeerInfo, 0, len(ids))
	for _, id := range ids {
		out = append(out, o.prox.info(id))
	}
	slices.SortFunc(out, Closer)
	return out
}

// PeerInfo is what the overlay knows about one peer, connected or not.
func (o *Overlay) PeerInfo(id peer.ID) PeerInfo { return o.prox.info(id) }

// Nearest returns up to k connected peers, nearest first, that satisfy keep (nil: all).
func (o *Overlay) Nearest(k int, keep func(PeerInfo) bool) []PeerInfo {
	var out []PeerInfo
	for _, pi := range o.Peers() {
		if len(out) == k {
			break
		}
		if keep == nil || keep(pi) {
			out = append(out, pi)
		}
	}
	return out
}

// MeasureRTT measures id's RTT now (dialling it if needed: a QUIC handshake alone gives
// the first estimate) and fetches its labels if unknown.
func (o *Overlay) MeasureRTT(ctx context.Context, id peer.ID) (time.Duration, error) {
	if err := o.host.Connect(ctx, peer.AddrInfo{ID: id}); err != nil {
		return 0, err
	}
	rtt, err := o.prox.measure(ctx, id)
	if err != nil {
		return 0, err
	}
	if !o.prox.hasLabels(id) {
		o.prox.fetchInfo(ctx, id)
	}
	return rtt, nil
}
