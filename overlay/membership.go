package overlay

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	dhtpb "github.com/libp2p/go-libp2p-kad-dht/pb"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
)

// Serve runs discovery, bootstrapping and RTT measurement until ctx ends. Cancellation is
// not an error.
func (o *Overlay) Serve(ctx context.Context) error {
	if o.mdns != nil {
		if err := o.mdns.Start(); err != nil {
			return fmt.Errorf("overlay: mDNS: %w", err)
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { o.prox.run(ctx, o.cfg.PingInterval) })
	wg.Go(func() { o.bootstrapLoop(ctx) })
	wg.Go(func() { o.refreshLoop(ctx) })
	wg.Wait()
	return nil
}

// bootstrapLoop dials the bootstrap peers until the node has neighbours, and again whenever
// it loses them all (a gateway that was offline must rejoin on its own). Once joined, it
// keeps at least minNeighbours() connections: trimming is symmetric, so a node can lose
// connections to other nodes' watermarks and end up isolated without this.
func (o *Overlay) bootstrapLoop(ctx context.Context) {
	backoff := time.Second
	// A lost connection wakes the loop at once: polling alone left a gateway whose peer
	// trimmed it below the floor there for up to the 5 s period (3 of 200 gateways at 7
	// peers when a run ended, docs/BENCHMARKS.md session 17).
	lost := make(chan struct{}, 1)
	notifee := &network.NotifyBundle{DisconnectedF: func(network.Network, network.Conn) {
		select {
		case lost <- struct{}{}:
		default:
		}
	}}
	o.host.Network().Notify(notifee)
	defer o.host.Network().StopNotify(notifee)
	// joined: the first join is due even if the node already has a peer: kad-dht dials the
	// bootstrap peers on its own when its table is empty, and when it got there first the
	// join (its lookup and its sweep) used to be skipped, leaving every connection the
	// DHT's lookups opened in place (TestJoinKeepsLowWatermark, 1 run in 3 here).
	joined := false
	for {
		switch n := len(o.host.Network().Peers()); {
		case (n == 0 || !joined) && len(o.cfg.Bootstrap) > 0:
			if joined = o.join(ctx, true); joined {
				backoff = time.Second
			} else {
				backoff = min(2*backoff, time.Minute)
			}
		case !joined && n > 0:
			// No bootstrap peers: the node joins through whoever it met (mDNS, an
			// operator's Connect, a peer that dialled it).
			joined = o.join(ctx, false)
			backoff = 5 * time.Second
		case n > 0 && n < o.minNeighbours():
			o.topUpNeighbours(ctx, o.minNeighbours()-n)
			backoff = 5 * time.Second
		default:
			backoff = 5 * time.Second
		}
		if joined {
			o.joinedOnce.Do(func() { close(o.joined) })
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff): // an abandoned timer is collected (Go 1.23+)
		case <-lost:
		}
	}
}

// join dials the bootstrap peers (if dialBootstrap) and looks itself up in the DHT, which
// announces it to its nearest peers and fills its routing table, then lets go of the
// farthest connections that took beyond the low watermark (see lookupConns). It reports
// whether the node is in: false only when no bootstrap peer answered.
func (o *Overlay) join(ctx context.Context, dialBootstrap bool) bool {
	o.lookups.begin(o.cfg.ConnLow)
	defer o.lookups.end()
	if dialBootstrap && o.connectBootstrap(ctx) == 0 {
		return false
	}
	// The DHT adds a peer to its table once identify has confirmed it speaks the DHT; a
	// lookup asked for before that finds nobody to ask.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := o.WaitRoutable(wctx); err != nil {
		return true
	}
	// A lookup of our own ID, not a routing-table refresh: it finds the peers closest to
	// us, the ones that must know us for lookups to converge here, and fills the table
	// along the way. A refresh adds a lookup per bucket: 1000 gateways dialled 133 000
	// times at start-up that way, 59 000 this way. The widest buckets, where the self
	// lookup meets hardly anyone, are seeded instead (seedWideBuckets).
	if _, err := o.dht.GetClosestPeers(wctx, string(o.host.ID())); err != nil && ctx.Err() == nil {
		o.log.Warn("DHT bootstrap", "err", err)
	}
	o.seedWideBuckets(wctx)
	return true
}

// seedWideBuckets fills the routing table's widest buckets, which a lookup of our own ID
// leaves nearly empty (half the fleet is in bucket 0, yet only the bootstrap peers were
// met there). Without it, lookups for keys in those buckets all went through the bootstrap
// peers, which then refused connections (277 failed dials in the 1000-gateway DHT check).
//
// A refresh fills bucket i by a whole lookup of a random ID in it (~20 handshakes); this
// takes the lookup's first two steps for each wide bucket not yet full: ask a bootstrap
// peer, on the connection already up, which peers it knows nearest to the ID, then ask the
// nearest of those (one handshake), and add the peers that one names without dialling
// them. The bootstrap's answer alone would do for the routing but not for the load: it
// names the same few hundred peers of its own table to every gateway, which then carried
// every lookup (83 failed dials at one of them in the DHT check); the second step's are
// peers nearest to a random ID, spread over the fleet as a refresh's are. The peers added
// are unverified: kad-dht dials them when a lookup needs them and drops those that do not
// answer, and the periodic refresh pings them.
func (o *Overlay) seedWideBuckets(ctx context.Context) {
	var boots []peer.ID
	for _, ai := range o.cfg.Bootstrap {
		if ai.ID != o.host.ID() && o.host.Network().Connectedness(ai.ID) == network.Connected {
			boots = append(boots, ai.ID)
		}
	}
	if len(boots) == 0 {
		return
	}
	pm, err := dhtpb.NewProtocolMessenger(o.dht.MessageSender())
	if err != nil {
		return
	}
	rt, k := o.dht.RoutingTable(), o.dht.BucketSize()
	ps := o.host.Peerstore()
	learn := func(found []*peer.AddrInfo, ttl time.Duration) []peer.ID {
		var ids []peer.ID
		for _, ai := range found {
			if ai.ID != o.host.ID() && len(ai.Addrs) > 0 {
				ps.AddAddrs(ai.ID, ai.Addrs, ttl)
				ids = append(ids, ai.ID)
			}
		}
		return ids
	}
	for cpl := range uint(wideBuckets) {
		if rt.NPeersForCpl(cpl) >= k {
			continue
		}
		target, err := rt.GenRandPeerID(cpl)
		if err != nil {
			return
		}
		found, err := pm.GetClosestPeers(ctx, boots[int(cpl)%len(boots)], target)
		if err != nil {
			o.log.Debug("seeding DHT bucket", "cpl", cpl, "err", err)
			continue
		}
		// A lookup's addresses last two minutes; those of the table's peers, as long as a
		// connection's, which kad-dht then keeps renewing.
		nearest := kb.SortClosestPeers(learn(found, peerstore.TempAddrTTL), kb.ConvertPeerID(target))
		for _, next := range nearest[:min(2, len(nearest))] {
			found, err := pm.GetClosestPeers(ctx, next, target)
			if err != nil {
				continue
			}
			_, _ = rt.TryAddPeer(next, true, true) // it answered
			for _, id := range learn(found, peerstore.RecentlyConnectedAddrTTL) {
				_, _ = rt.TryAddPeer(id, false, true) // a full bucket or a duplicate is fine
			}
			break
		}
	}
}

// wideBuckets is how many of the routing table's widest buckets seedWideBuckets fills.
// Bucket i holds 1/2^(i+1) of the fleet, and the self lookup meets the ~20-30 peers nearest
// to us: eight buckets cover fleets of some 10 000 gateways; beyond, the periodic refresh
// fills the rest.
const wideBuckets = 8

// refreshLoop refreshes the DHT's routing table every Config.DHTRefresh, first after a
// random part of the period and then at a tenth's jitter, so that a fleet started together
// does not refresh together (each refresh dials dozens of peers; a synchronised wave of
// them once collapsed 600 gateways). Each refresh is a lookup for lookupConns: what it
// dialled is let go down to the low watermark when it ends.
func (o *Overlay) refreshLoop(ctx context.Context) {
	period := o.cfg.DHTRefresh
	wait := period/2 + rand.N(period)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = period - period/10 + rand.N(period/5)
		if len(o.host.Network().Peers()) == 0 {
			continue // the bootstrap loop rejoins first
		}
		o.refreshes.begin()
		o.lookups.begin(o.cfg.ConnLow)
		err := o.refresh(ctx)
		o.lookups.end()
		o.refreshes.end()
		o.metrics.observeOp("refresh", o.refreshes.last().began, err)
	}
}

// refreshLog keeps the count and times of the periodic refreshes.
type refreshLog struct {
	mu     sync.Mutex
	began  int
	latest refreshTimes
}

// refreshTimes are when a refresh began and when it ended (zero while it runs).
type refreshTimes struct{ began, ended time.Time }

func (r *refreshLog) begin() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.began++
	r.latest = refreshTimes{began: time.Now()}
}

func (r *refreshLog) end() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.latest.ended = time.Now()
}

// last is the latest refresh's times; count how many have begun.
func (r *refreshLog) last() refreshTimes {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.latest
}

func (r *refreshLog) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.began
}

// refresh refreshes the routing table twice: after the first refresh since its table was
// empty, kad-dht may start one of its own (rtPeerLoop's RefreshNoWait, even with its auto
// refresh off), which would dial after the caller's sweep and keep what it dialled.
// Refreshes run one at a time, so once the second returns, that one is over too; and
// the second costs little, skipping the buckets and peers the first has just seen to.
func (o *Overlay) refresh(ctx context.Context) error {
	var first error
	for range 2 {
		select {
		case err := <-o.dht.RefreshRoutingTable():
			if err != nil && ctx.Err() == nil {
				o.log.Warn("DHT refresh", "err", err)
				first = cmp.Or(first, err)
			}
		case <-ctx.Done():
			return nil
		}
	}
	return first
}

// minNeighbours is 8, or the low watermark if that is lower: enough for the DHT and gossip
// to stay healthy, and never above what trimming aims at. (It was half the low watermark
// until joins stopped keeping every connection they dialled: a gateway with a low watermark
// of 12 could then sit at 6-7 peers after faults.)
func (o *Overlay) minNeighbours() int { return max(min(o.cfg.ConnLow, 8), 1) }

// topUpNeighbours dials up to want routing-table peers we are not connected to, nearest
// (by labels) first.
func (o *Overlay) topUpNeighbours(ctx context.Context, want int) {
	var cands []PeerInfo
	for _, id := range o.dht.RoutingTable().ListPeers() {
		if o.host.Network().Connectedness(id) != network.Connected {
			cands = append(cands, o.prox.info(id))
		}
	}
	slices.SortFunc(cands, Closer)
	for _, c := range cands {
		if want == 0 {
			return
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := o.host.Connect(cctx, peer.AddrInfo{ID: c.ID})
		cancel()
		if err == nil {
			want--
		}
	}
}

func (o *Overlay) connectBootstrap(ctx context.Context) int {
	var (
		wg sync.WaitGroup
		mu sync.Mutex
		ok int
	)
	for _, ai := range o.cfg.Bootstrap {
		if ai.ID == o.host.ID() {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := o.host.Connect(cctx, ai); err != nil {
				o.log.Debug("bootstrap dial failed", "peer", ai.ID, "err", err)
				return
			}
			o.host.ConnManager().Protect(ai.ID, "bootstrap")
			mu.Lock()
			ok++
			mu.Unlock()
		})
	}
	wg.Wait()
	if ok > 0 {
		o.log.Info("bootstrapped", "connected", ok, "of", len(o.cfg.Bootstrap))
	}
	return ok
}
