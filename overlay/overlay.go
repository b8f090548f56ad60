package overlay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	connmgrIface "github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
)

// ProtocolPrefix keeps nanodc's DHT apart from the public IPFS one.
const ProtocolPrefix = "/nanodc"

// publicDialTimeout is go-libp2p's dial timeout for public addresses.
const publicDialTimeout = 15 * time.Second

// FleetTopic carries fleet-wide events over GossipSub.
const FleetTopic = "/nanodc/fleet/1"

// DHT modes accepted in Config.DHTMode.
const (
	DHTServer = "server"
	DHTClient = "client"
	DHTAuto   = "auto"
)

// NAT selects the NAT traversal helpers. They matter on real home networks; on an
// injected network every address is reachable and they only cost CPU.
type NAT struct {
	PortMap      bool // UPnP / NAT-PMP on the home router
	HolePunching bool // DCUtR
	RelayClient  bool // reserve slots on relays when we are unreachable
	AutoNAT      bool // answer and ask reachability checks
}

// Config is everything New needs; the node package fills it from the user's YAML.
type Config struct {
	PrivKey       crypto.PrivKey
	ListenAddrs   []ma.Multiaddr
	AnnounceAddrs []ma.Multiaddr // replace the addresses we advertise (empty: automatic)
	Bootstrap     []peer.AddrInfo
	Labels        Labels
	MDNS          bool
	NAT           NAT
	ConnLow       int
	ConnHigh      int
	ConnGrace     time.Duration
	// KeepDHTConnections lets the DHT pin connections to its widest buckets' peers, as
	// go-libp2p-kad-dht does by default; off, the connection watermarks hold (see
	// boundedConnMgr).
	KeepDHTConnections bool
	DHTMode            string
	// DHTRefresh is how often the DHT refreshes its routing table (0: 10 minutes,
	// go-libp2p-kad-dht's default). Each refresh dials dozens of peers, several times what
	// joining dials; a fleet of gateways whose membership is stable can refresh far less
	// often.
	DHTRefresh time.Duration
	// DHTBucketSize is Kademlia's k (0: go-libp2p-kad-dht's 20): peers per routing-table
	// bucket, peers a lookup ends on, and copies of each provider record.
	DHTBucketSize int
	// GossipHeartbeat is GossipSub's heartbeat period (0: the library's 1 s): mesh upkeep and
	// lazy gossip to peers (measured: not a large share of an idle gateway's CPU).
	GossipHeartbeat time.Duration
	PingInterval    time.Duration // how often connected peers' RTT is refreshed
	ProbeTimeout    time.Duration // how long FindProviders waits to measure unknown RTTs
	PacketNetwork   PacketNetwork // nil: operating-system sockets, QUIC and TCP
	// Gater, when set, may refuse connections (an operator's blocklist; tests that need a
	// node nobody else can dial).
	Gater connmgrIface.ConnectionGater
	// Registerer receives the overlay's own metrics (nil: not exported).
	Registerer prometheus.Registerer
	// Libp2pRegisterer receives go-libp2p's metrics (nil: Registerer; both nil: libp2p
	// metrics off). libp2p's collectors are process-wide, so the emulator shares one
	// registry among all its nodes.
	Libp2pRegisterer prometheus.Registerer
	// OnDialFailure, when set, hears of every failed dial attempt (the address, the error and
	// its cause), for a researcher hunting the last failed handshakes of an emulated fleet.
	// It needs Libp2pRegisterer or Registerer: it rides on go-libp2p's swarm metrics tracer.
	OnDialFailure func(addr ma.Multiaddr, err, cause error)
	// OnResourceRefused, when set, hears of everything the resource manager refuses, as
	// "scope/resource/direction" (refusalCounter), and the manager's own metrics, whose
	// trace costs every stream and reservation, are off.
	OnResourceRefused func(what string)
	Logger            *slog.Logger
	Version           string
}

func (c *Config) setDefaults() {
	if c.ConnLow == 0 {
		c.ConnLow = 32
	}
	if c.ConnHigh == 0 {
		c.ConnHigh = 96
	}
	if c.ConnGrace == 0 {
		c.ConnGrace = 30 * time.Second
	}
	if c.DHTMode == "" {
		c.DHTMode = DHTServer
	}
	if c.DHTRefresh == 0 {
		c.DHTRefresh = 10 * time.Minute // go-libp2p-kad-dht's default
	}
	if c.PingInterval == 0 {
		c.PingInterval = 30 * time.Second
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Version == "" {
		c.Version = "dev"
	}
}

// Overlay is one node's membership in the nanodc peer-to-peer network.
type Overlay struct {
	cfg     Config
	log     *slog.Logger
	host    host.Host
	dht     *dht.IpfsDHT
	mdns    mdns.Service
	prox    *proximity
	metrics *metrics
	started time.Time
	// sliceLimits holds the slices' resource-manager limits.
	sliceLimits *sliceLimiter
	// lookups closes what DHT lookups dialled once they are over.
	lookups lookupConns
	// refreshes records the periodic DHT refreshes (tests tell what a refresh dialled
	// from what kad-dht dialled on its own).
	refreshes refreshLog
	// joined is closed once the node has first joined the overlay (Joined).
	joined     chan struct{}
	joinedOnce sync.Once
	ctx        context.Context
	cancel     context.CancelFunc

	// GossipSub starts with the first topic (see Topic); until then ps is nil.
	topicsMu sync.Mutex
	psOpts   []pubsub.Option
	ps       *pubsub.PubSub
	topics   map[string]*pubsub.Topic

	closeOnce sync.Once
	closeErr  error
}

// New starts the libp2p host and DHT; GossipSub waits for the first topic (Topic).
// Discovery and bootstrapping run in Serve. On error, whatever was already started is
// stopped.
func New(cfg Config) (_ *Overlay, err error) {
	cfg.setDefaults()
	if cfg.PrivKey == nil {
		return nil, errors.New("overlay: no private key")
	}
	if err := cfg.Labels.Validate(); err != nil {
		return nil, fmt.Errorf("overlay: labels: %w", err)
	}
	var mode dht.ModeOpt
	switch cfg.DHTMode {
	case DHTServer:
		mode = dht.ModeServer
	case DHTClient:
		mode = dht.ModeClient
	case DHTAuto:
		mode = dht.ModeAuto
	default:
		return nil, fmt.Errorf("overlay: unknown DHT mode %q (want server, client or auto)", cfg.DHTMode)
	}

	o := &Overlay{cfg: cfg, log: cfg.Logger, topics: map[string]*pubsub.Topic{}, started: time.Now(), joined: make(chan struct{})}
	o.lookups.o = o
	// pubsub and the DHT live until this context ends; Close ends it.
	o.ctx, o.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			o.Close()
		}
	}()

	cm, err := connmgr.NewConnManager(cfg.ConnLow, cfg.ConnHigh, connmgr.WithGracePeriod(cfg.ConnGrace))
	if err != nil {
		return nil, fmt.Errorf("overlay: connection manager: %w", err)
	}
	var rmOpts []rcmgr.Option
	rcmgrMetrics := (cfg.Libp2pRegisterer != nil || cfg.Registerer != nil) && cfg.OnResourceRefused == nil
	if !rcmgrMetrics {
		// Its trace reporter costs ~5 % CPU in a 200-node emulation, for figures nobody reads.
		rmOpts = append(rmOpts, rcmgr.WithMetricsDisabled())
	}
	limiter := &sliceLimiter{Limiter: rcmgr.NewFixedLimiter(rcmgr.DefaultLimits.AutoScale())}
	o.sliceLimits = limiter
	var rm network.ResourceManager
	rm, err = rcmgr.NewResourceManager(limiter, rmOpts...)
	if err != nil {
		return nil, fmt.Errorf("overlay: resource manager: %w", err)
	}
	if cfg.OnResourceRefused != nil {
		rm = refusalCounter{rm, cfg.OnResourceRefused}
	}
	opts := []libp2p.Option{
		libp2p.Identity(cfg.PrivKey),
		libp2p.ListenAddrs(cfg.ListenAddrs...),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.ConnectionManager(connManager(cm, cfg.KeepDHTConnections)),
		libp2p.ResourceManager(rm),
		libp2p.UserAgent("nanodc/" + cfg.Version),
		libp2p.Transport(libp2pquic.NewTransport),
	}
	if cfg.Gater != nil {
		opts = append(opts, libp2p.ConnectionGater(cfg.Gater))
	}
	if cfg.PacketNetwork != nil {
		// An injected network's addresses sit in 127.0.0.0/8 but stand for public ones, so
		// dials get the 15 s go-libp2p allows a public address, not the 5 s it allows a LAN
		// one: a handshake across a loaded DSL uplink may well take longer than 5 s.
		opts = append(opts, quicOnPacketNetwork(cfg.PacketNetwork), libp2p.SwarmOpts(swarm.WithDialTimeoutLocal(publicDialTimeout)))
	} else {
		opts = append(opts, libp2p.Transport(tcp.NewTCPTransport))
	}
	if len(cfg.AnnounceAddrs) > 0 {
		announce := cfg.AnnounceAddrs
		opts = append(opts, libp2p.AddrsFactory(func([]ma.Multiaddr) []ma.Multiaddr { return announce }))
	}
	if cfg.NAT.PortMap {
		opts = append(opts, libp2p.NATPortMap())
	}
	if cfg.NAT.HolePunching {
		opts = append(opts, libp2p.EnableHolePunching())
	}
	if cfg.NAT.RelayClient {
		opts = append(opts, libp2p.EnableRelay(), libp2p.EnableAutoRelayWithPeerSource(o.relayCandidates))
	} else {
		opts = append(opts, libp2p.DisableRelay())
	}
	if cfg.NAT.AutoNAT {
		opts = append(opts, libp2p.EnableNATService(), libp2p.EnableAutoNATv2())
	}
	if cfg.Libp2pRegisterer == nil {
		cfg.Libp2pRegisterer = cfg.Registerer
	}
	switch {
	case cfg.Libp2pRegisterer != nil && cfg.OnDialFailure != nil:
		// go-libp2p installs its swarm metrics tracer after the caller's swarm options, so
		// the only way to see each failed dial is to turn its metrics off and install the
		// same tracer, wrapped, ourselves; the resource manager's collectors, which the off
		// switch also skips, are registered here.
		reg := cfg.Libp2pRegisterer
		tracer := dialFailureTracer{swarm.NewMetricsTracer(swarm.WithRegisterer(reg)), cfg.OnDialFailure}
		opts = append(opts, libp2p.DisableMetrics(), libp2p.SwarmOpts(swarm.WithMetricsTracer(tracer)))
		if rcmgrMetrics {
			rcmgr.MustRegisterWith(reg)
		}
	case cfg.Libp2pRegisterer != nil:
		opts = append(opts, libp2p.PrometheusRegisterer(cfg.Libp2pRegisterer))
	default:
		opts = append(opts, libp2p.DisableMetrics())
	}

	o.host, err = libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("overlay: libp2p host: %w", err)
	}
	// The overlay runs the routing-table refreshes itself (join, refreshLoop): kad-dht's
	// own would refresh every bucket as soon as its table has its first peer.
	dhtOpts := []dht.Option{dht.ProtocolPrefix(ProtocolPrefix), dht.Mode(mode), dht.BootstrapPeers(cfg.Bootstrap...),
		dht.DisableAutoRefresh(), dht.RoutingTableRefreshPeriod(cfg.DHTRefresh),
		dht.ProviderStore(newProviderStore(o.host.ID(), o.host.Peerstore()))}
	if cfg.DHTBucketSize > 0 {
		dhtOpts = append(dhtOpts, dht.BucketSize(cfg.DHTBucketSize))
	}
	o.host.Network().Notify(&network.NotifyBundle{ConnectedF: o.lookups.redialled, DisconnectedF: o.lookups.lostPeer})
	o.dht, err = dht.New(o.ctx, o.host, dhtOpts...)
	if err != nil {
		return nil, fmt.Errorf("overlay: DHT: %w", err)
	}
	params := pubsub.DefaultGossipSubParams()
	if cfg.GossipHeartbeat > 0 {
		params.HeartbeatInterval = cfg.GossipHeartbeat
	}
	// GossipSub parks 8 goroutines to dial peers learnt by peer exchange, which nanodc does
	// not use (peers come from the DHT and the neighbour floor), and one validation worker
	// per CPU for topics whose few messages are small: one of each is plenty, and saves a
	// gateway 8 goroutine stacks (about 64 KB, 7 % of its goroutines).
	params.Connectors = 1
	o.psOpts = []pubsub.Option{pubsub.WithGossipSubParams(params), pubsub.WithValidateWorkers(1)}
	o.metrics = newMetrics(cfg.Registerer, o)
	o.prox, err = newProximity(o.host, cfg.Labels, cfg.Version, o.log, o.metrics)
	if err != nil {
		return nil, fmt.Errorf("overlay: proximity: %w", err)
	}
	if cfg.MDNS {
		o.mdns = mdns.NewMdnsService(o.host, "nanodc", mdnsNotifee{o})
	}
	return o, nil
}

func connManager(cm *connmgr.BasicConnMgr, keepDHT bool) connmgrIface.ConnManager {
	if keepDHT {
		return cm
	}
	return boundedConnMgr{cm}
}

// Host is the underlying libp2p host, for apps that open their own protocols.
func (o *Overlay) Host() host.Host { return o.host }

// ID is this node's peer ID.
func (o *Overlay) ID() peer.ID { return o.host.ID() }

// Labels are this node's own labels.
func (o *Overlay) Labels() Labels { return o.cfg.Labels }

// Addrs are this node's addresses including its peer ID, QUIC first (the preferred
// transport), as others would dial them.
func (o *Overlay) Addrs() []ma.Multiaddr {
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: o.host.ID(), Addrs: o.host.Addrs()})
	if err != nil {
		return nil
	}
	isQUIC := func(a ma.Multiaddr) bool { _, err := a.ValueForProtocol(ma.P_QUIC_V1); return err == nil }
	slices.SortStableFunc(addrs, func(a, b ma.Multiaddr) int {
		switch qa, qb := isQUIC(a), isQUIC(b); {
		case qa && !qb:
			return -1
		case qb && !qa:
			return 1
		}
		return 0
	})
	return addrs
}

// Connect dials a peer directly (mDNS, CLI, tests).
func (o *Overlay) Connect(ctx context.Context, ai peer.AddrInfo) error {
	return o.host.Connect(ctx, ai)
}

// RoutingTableSize is the number of peers in the DHT routing table.
func (o *Overlay) RoutingTableSize() int { return o.dht.RoutingTable().Size() }

// DHTState describes the DHT for the management API.
type DHTState struct {
	Mode             string `json:"mode"`
	ProtocolPrefix   string `json:"protocol_prefix"`
	RoutingTableSize int    `json:"routing_table_size"`
	Buckets          []int  `json:"buckets"`
}

// DHTState reports the DHT mode and routing table occupancy per bucket.
func (o *Overlay) DHTState() DHTState {
	rt := o.dht.RoutingTable()
	mode := DHTClient
	if o.dht.Mode() == dht.ModeServer {
		mode = DHTServer
	}
	var buckets []int // peers per common-prefix length with our ID, trailing empties cut
	for cpl := uint(0); cpl < 64; cpl++ {
		buckets = append(buckets, rt.NPeersForCpl(cpl))
	}
	for len(buckets) > 0 && buckets[len(buckets)-1] == 0 {
		buckets = buckets[:len(buckets)-1]
	}
	return DHTState{Mode: mode, ProtocolPrefix: ProtocolPrefix, RoutingTableSize: rt.Size(), Buckets: buckets}
}

// Joined is closed once the node has first joined the overlay: it has looked itself up in
// the DHT (which announces it to the peers nearest to it) and filled its routing table.
func (o *Overlay) Joined() <-chan struct{} { return o.joined }

// WaitRoutable blocks until the DHT routing table holds at least one peer.
func (o *Overlay) WaitRoutable(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for o.dht.RoutingTable().Size() == 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Uptime is the time since New.
func (o *Overlay) Uptime() time.Duration { return time.Since(o.started) }

// Topic joins (once) and returns a GossipSub topic.
func (o *Overlay) Topic(name string) (*pubsub.Topic, error) {
	o.topicsMu.Lock()
	defer o.topicsMu.Unlock()
	if t, ok := o.topics[name]; ok {
		return t, nil
	}
	if o.ps == nil {
		// Started on first use: GossipSub opens a stream to every connected peer that speaks
		// it and keeps three goroutines per peer, half of what a connection costs a gateway,
		// for nothing while no app on the node has a topic. A node that starts it later
		// announces the protocol by identify push, and its peers open their streams then.
		ps, err := pubsub.NewGossipSub(o.ctx, o.host, o.psOpts...)
		if err != nil {
			return nil, fmt.Errorf("overlay: gossipsub: %w", err)
		}
		o.ps = ps
	}
	t, err := o.ps.Join(name)
	if err != nil {
		return nil, err
	}
	o.topics[name] = t
	return t, nil
}

// PubSubPeers is the number of peers we share at least one topic with (0 until an app
// joins a topic, see Topic).
func (o *Overlay) PubSubPeers() int {
	o.topicsMu.Lock()
	defer o.topicsMu.Unlock()
	if o.ps == nil {
		return 0
	}
	return len(o.ps.ListPeers(""))
}

// Close stops everything New and Serve started. It is safe to call more than once.
func (o *Overlay) Close() error {
	o.closeOnce.Do(func() {
		var errs []error
		if o.mdns != nil {
			errs = append(errs, o.mdns.Close())
		}
		if o.prox != nil {
			o.prox.close()
		}
		o.lookups.close()
		// Topics need no closing: their subscriptions end with pubsub's context below, and
		// Topic.Close refuses while an app still holds a subscription.
		if o.dht != nil {
			errs = append(errs, o.dht.Close())
		}
		o.cancel()
		if o.host != nil {
			errs = append(errs, o.host.Close())
		}
		if o.metrics != nil {
			o.metrics.unregister()
		}
		o.closeErr = errors.Join(errs...)
	})
	return o.closeErr
}

// relayCandidates offers connected peers as relays to autorelay.
func (o *Overlay) relayCandidates(ctx context.Context, num int) <-chan peer.AddrInfo {
	out := make(chan peer.AddrInfo, num)
	defer close(out)
	if o.host == nil {
		return out
	}
	for _, p := range o.host.Network().Peers() {
		if len(out) == num {
			break
		}
		out <- o.host.Peerstore().PeerInfo(p)
	}
	return out
}

type mdnsNotifee struct{ o *Overlay }

func (n mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	if ai.ID == n.o.host.ID() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.o.host.Connect(ctx, ai); err != nil {
		n.o.log.Debug("mDNS peer dial failed", "peer", ai.ID, "err", err)
	}
}

// SliceServicePrefix names the resource-manager service scopes of providers' slices: the
// streams of a slice's protocols are attached to the service SliceServicePrefix+<slice id>,
// which has SliceLimits of its own. One slice exhausting its streams or stream memory does so
// inside its scope; the gateway's system limits (and the other slices) are untouched.
const SliceServicePrefix = "nanodc-slice-"

// SliceLimits bounds each slice's streams unless SetSliceLimit gave it its own: far below the
// system limits, so that no slice, nor a few together, can take the gateway's streams or
// memory from the others.
var SliceLimits = rcmgr.BaseLimit{StreamsInbound: 128, StreamsOutbound: 128, Streams: 192, Memory: 16 << 20}

// sliceLimiter answers the resource manager's question "what may service S use" for slices.
type sliceLimiter struct {
	rcmgr.Limiter
	mu     sync.Mutex
	limits map[string]rcmgr.BaseLimit // by service name
}

func (l *sliceLimiter) GetServiceLimits(svc string) rcmgr.Limit {
	if strings.HasPrefix(svc, SliceServicePrefix) {
		l.mu.Lock()
		defer l.mu.Unlock()
		if lim, ok := l.limits[svc]; ok {
			return lim
		}
		return SliceLimits
	}
	return l.Limiter.GetServiceLimits(svc)
}

// SetSliceLimit gives slice id's resource-manager scope its own limits (from its quotas),
// applied at once to a scope that already exists: a quota change takes effect without a
// restart, and new streams past the new limit are refused.
func (o *Overlay) SetSliceLimit(id string, lim rcmgr.BaseLimit) {
	svc := SliceServicePrefix + id
	o.sliceLimits.mu.Lock()
	if o.sliceLimits.limits == nil {
		o.sliceLimits.limits = map[string]rcmgr.BaseLimit{}
	}
	o.sliceLimits.limits[svc] = lim
	o.sliceLimits.mu.Unlock()
	o.setServiceLimit(svc, lim)
}

// RemoveSliceLimit forgets a removed slice's limits (its scope falls back to SliceLimits).
func (o *Overlay) RemoveSliceLimit(id string) {
	o.sliceLimits.mu.Lock()
	delete(o.sliceLimits.limits, SliceServicePrefix+id)
	o.sliceLimits.mu.Unlock()
	o.setServiceLimit(SliceServicePrefix+id, SliceLimits)
}

func (o *Overlay) setServiceLimit(svc string, lim rcmgr.Limit) {
	_ = o.host.Network().ResourceManager().ViewService(svc, func(s network.ServiceScope) error {
		if sl, ok := s.(rcmgr.ResourceScopeLimiter); ok {
			sl.SetLimit(lim)
		}
		return nil
	})
}

// SliceLimit is the limit slice id's scope has now (for tests and probes).
func (o *Overlay) SliceLimit(id string) rcmgr.Limit {
	return o.sliceLimits.GetServiceLimits(SliceServicePrefix + id)
}

// dialFailureTracer is go-libp2p's swarm metrics tracer that also reports failed dials.
type dialFailureTracer struct {
	swarm.MetricsTracer
	onFailure func(addr ma.Multiaddr, err, cause error)
}

func (t dialFailureTracer) FailedDialing(addr ma.Multiaddr, err, cause error) {
	t.MetricsTracer.FailedDialing(addr, err, cause)
	t.onFailure(addr, err, cause)
}
