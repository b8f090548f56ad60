// Package vodload is the emulator's video-on-demand workload: a provider publishes a catalog
// on an origin in the datacenter, viewers arrive at gateways (Poisson, Zipf popularity, an
// optional flash crowd on one title) and each viewer is a player model reading the gateway's
// real /vod/ HTTP stream at the title's bitrate. It measures what viewers feel (startup
// delay, stalls) and what the provider pays (origin bytes against peer bytes).
//
// It plugs into the emulator through the Workload, NodeConfigurer, NodeStartHook and
// Comparer interfaces; the composition root registers it as "vod".
package vodload

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
	"weak"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"gopkg.in/yaml.v3"

	"github.com/nanodc/nanodc/emulator"
	"github.com/nanodc/nanodc/internal/yamlstrict"
	"github.com/nanodc/nanodc/node"
	"github.com/nanodc/nanodc/node/slice"
	"github.com/nanodc/nanodc/overlay"
	"github.com/nanodc/nanodc/vod"
	"github.com/nanodc/nanodc/vod/catalog"
	"github.com/nanodc/nanodc/vod/origin"
)

// Params are the workload's scenario parameters.
type Params struct {
	Titles        int           `yaml:"titles"`
	TitleDuration time.Duration `yaml:"title_duration"`
	BitrateBps    int64         `yaml:"bitrate_bps"`
	PieceLength   int64         `yaml:"piece_length"`
	// ZipfS is the popularity skew: title k (0-based) is chosen with weight 1/(k+1)^s.
	ZipfS float64 `yaml:"zipf_s"`
	// ArrivalRate is the background viewers per second, fleet-wide (Poisson).
	ArrivalRate float64 `yaml:"arrival_rate"`
	// Warmup is when viewers start arriving (pushes happen before): the same for every
	// strategy so that schedules match.
	Warmup     time.Duration `yaml:"warmup"`
	FlashCrowd struct {
		At      time.Duration `yaml:"at"`
		Viewers int           `yaml:"viewers"`
		Over    time.Duration `yaml:"over"`
		Title   int           `yaml:"title"`
	} `yaml:"flash_crowd"`
	// Push is the provider's pre-placement plan (nanodc strategy only), in tiers of titles in
	// popularity order: the first tier covers the most popular titles, the next tier the
	// titles after those, and so on.
	Push []PushTier `yaml:"push"`
	// Player model.
	StartupBuffer time.Duration `yaml:"startup_buffer"` // video buffered before playback starts
	Rebuffer      time.Duration `yaml:"rebuffer"`       // buffered before playback resumes after a stall
	MaxBuffer     time.Duration `yaml:"max_buffer"`     // the player stops reading ahead beyond this
	Abandon       time.Duration `yaml:"abandon"`        // a viewer stalled this long gives up (failed session)
	CacheBytes    int64         `yaml:"cache_bytes"`    // per gateway
	// UploadShare is the fraction of each gateway's uplink its VoD app may use for peers.
	UploadShare float64 `yaml:"upload_share"`
	// Slice, when set, runs the VoD app as production does for a video provider: in that
	// provider's slice on every gateway (created by the operator, the app a unit signed by
	// the provider, upload share and cache as the slice's quotas), instead of the node-level
	// app.
	Slice string `yaml:"slice"`
}

// PushTier pushes its Titles titles (the next ones in popularity order) to Replicas gateways
// each, spread across access nodes and ISPs, during the warm-up (NaDa-style pre-placement).
type PushTier struct {
	Titles   int `yaml:"titles"`
	Replicas int `yaml:"replicas"`
	// Prefix, when set, also places the first Prefix of playback of each of these titles on
	// every other gateway, from its nearest replicas and prefix holders, once the replicas
	// are in place (`nanodc vod push --prefix`).
	Prefix time.Duration `yaml:"prefix"`
}

// titlePush is one pushed title of the plan.
type titlePush struct {
	title, replicas int
	prefix          time.Duration
}

// pushPlan lists the pushed titles, most popular first.
func (p Params) pushPlan() []titlePush {
	var out []titlePush
	for _, tier := range p.Push {
		for range tier.Titles {
			out = append(out, titlePush{title: len(out), replicas: tier.Replicas, prefix: tier.Prefix})
		}
	}
	return out
}

func defaults() Params {
	p := Params{Titles: 20, TitleDuration: 2 * time.Minute, BitrateBps: 1_000_000, ZipfS: 1, ArrivalRate: 0.2,
		Warmup: 10 * time.Second, StartupBuffer: time.Second, Rebuffer: time.Second, MaxBuffer: 20 * time.Second,
		Abandon: 30 * time.Second, CacheBytes: 1 << 30, UploadShare: 0.8}
	return p
}

// New is the workload factory.
func New(params *yaml.Node) (emulator.Workload, error) {
	p := defaults()
	if err := yamlstrict.DecodeNode(params, &p); err != nil {
		return nil, err
	}
	switch {
	case p.Titles < 1:
		return nil, errors.New("titles: must be at least 1")
	case p.TitleDuration < time.Second:
		return nil, errors.New("title_duration: must be at least 1s")
	case p.BitrateBps < 64_000:
		return nil, errors.New("bitrate_bps: must be at least 64000")
	case p.ArrivalRate < 0:
		return nil, errors.New("arrival_rate: must not be negative")
	case p.FlashCrowd.Viewers < 0 || p.FlashCrowd.Title < 0 || p.FlashCrowd.Title >= p.Titles:
		return nil, fmt.Errorf("flash_crowd: viewers must not be negative and title must be in [0, %d)", p.Titles)
	case p.UploadShare <= 0 || p.UploadShare > 1:
		return nil, errors.New("upload_share: must be in (0, 1]")
	case p.StartupBuffer <= 0 || p.Rebuffer <= 0 || p.MaxBuffer < p.StartupBuffer || p.Abandon <= 0:
		return nil, errors.New("startup_buffer, rebuffer, abandon must be positive and max_buffer >= startup_buffer")
	}
	pushed := 0
	for i, tier := range p.Push {
		if tier.Titles < 1 || tier.Replicas < 1 || tier.Prefix < 0 {
			return nil, fmt.Errorf("push[%d]: titles and replicas must be at least 1, prefix not negative", i)
		}
		pushed += tier.Titles
	}
	if pushed > p.Titles {
		return nil, fmt.Errorf("push: %d titles in all, more than the catalog's %d", pushed, p.Titles)
	}
	if p.Slice != "" {
		if err := slice.ValidID("slice", p.Slice); err != nil {
			return nil, err
		}
	}
	return &workload{p: p, stats: map[*emulator.Gateway]*gwCounters{}, sliceSetup: map[*emulator.Gateway]sliceSetup{},
		replicas: map[int]map[*emulator.Gateway]bool{}, pushedWhole: map[int]bool{}, gapFillsByCID: map[string]int64{}, avoidableByReason: map[string]int64{}, avoidableByHolder: map[string]int64{}}, nil
}

// originIP is where the provider's origin sits in the datacenter.
var originIP = net.IPv4(127, 255, 1, 1)

const originPort = 443

type workload struct {
	p       Params
	fleet   *emulator.Fleet // from Prepare, before any node is configured
	env     *emulator.Env
	dir     string
	key     crypto.PrivKey // the provider's
	entries []*catalog.Entry
	srv     *origin.Server
	wg      sync.WaitGroup

	mu          sync.Mutex
	lastSummary *Summary // the last Summary taken while the fleet ran
	stats       map[*emulator.Gateway]*gwCounters
	sessions    []*session
	unavoidable int64 // origin bytes no peers could have supplied by the piece's deadline
	// origin bytes no other gateway held with a bitrate's worth of spare uplink (the
	// deadline aside: the figure before session 21)
	unavoidableByRate int64
	// origin bytes no peers could have supplied by the deadline in whole blocks, each from
	// one holder's own spare uplink
	unavoidableBlocks int64
	gapFills          int64 // origin bytes of deadline gap fills
	noHolder          int64 // of which no other gateway held the piece at all
	// avoidable gap-fill bytes (a holder had uplink to spare) by fetch reason: which
	// mechanism spends the origin's bytes beyond the unavoidable
	avoidableByReason map[string]int64
	// the same bytes by where the nearest holder with uplink to spare was (holderPlace)
	avoidableByHolder map[string]int64
	// gap-fill bytes by title CID: which titles the origin's viewing-phase bytes went to
	gapFillsByCID map[string]int64
	pushBytes     int64 // origin bytes of pushes
	// prefixPushBytes are the part of pushBytes prefix pushes took; pushedAt and
	// prefixesPlacedAt are when the replicas and then the prefixes were in place (0: not done)
	prefixPushBytes            int64
	pushedAt, prefixesPlacedAt time.Duration
	prefixPushes, prefixesDone int // gateways asked for a prefix, and those that placed it
	pushErrors                 []string
	// replicas are the gateways a title was pushed to, and pushedWhole the titles whose every
	// push completed: their viewers there read locally, and the origin owes no first copy.
	replicas    map[int]map[*emulator.Gateway]bool
	pushedWhole map[int]bool
	clients     []*http.Client
	viewingFrom time.Time

	sliceSetup map[*emulator.Gateway]sliceSetup

	players map[*vod.App]*pipeServer
	spareUp map[*emulator.Gateway]float64 // uplink bytes/s left unused in the last second
	lastUp  map[*emulator.Gateway]uint64

	// per-second series inputs, and the counters when viewing began
	lastOrigin, lastPeer int64
	excessBytes          float64 // Σ max(0, demand − upload capacity)
	baseTaken            bool
	base                 byteCounts
	basePush             int64
}

// byteCounts are the VoD byte counters summed over gateways.
type byteCounts struct {
	origin, peer, cross, wasted int64
}

func (b byteCounts) plus(o byteCounts) byteCounts {
	return byteCounts{b.origin + o.origin, b.peer + o.peer, b.cross + o.cross, b.wasted + o.wasted}
}

func (b byteCounts) minus(o byteCounts) byteCounts {
	return byteCounts{b.origin - o.origin, b.peer - o.peer, b.cross - o.cross, b.wasted - o.wasted}
}

// gwCounters follow one gateway's app across restarts (a restarted app counts from zero).
// The app is known by a weak pointer: identity is all the counters need, and a strong one
// would keep a stopped gateway's whole node (its host, swarm, torrent client) in the heap,
// across the variants that run after this one.
type gwCounters struct {
	app     weak.Pointer[vod.App]
	carried byteCounts // totals of earlier app instances
	last    byteCounts
}

// ConfigureNode enables the VoD app on every gateway, with an origin client that crosses the
// virtual network and an observer of gap fills.
func (w *workload) ConfigureNode(g *emulator.Gateway, opts *node.Options) {
	// Every strategy seeds at most UploadShare of the line's uplink, as a deployed gateway
	// would be configured: the rest keeps the home's own requests and ACKs flowing.
	upload := int64(w.p.UploadShare * float64(w.fleet.Profile(g.Profile).Up.RateBps))
	if w.p.Slice != "" {
		// The app comes with the slice (NodeStarted); the variant's strategy goes in its unit.
		w.mu.Lock()
		w.sliceSetup[g] = sliceSetup{strategy: cmp.Or(opts.Config.VOD.Strategy, string(vod.StrategyNanodc)),
			locality: opts.Config.VOD.Locality, uploadBps: upload}
		w.mu.Unlock()
		opts.Config.VOD.Enabled = false
	} else {
		opts.Config.VOD.Enabled = true
		opts.Config.VOD.Listen = node.APIOff
		opts.Config.VOD.CacheBytes = w.p.CacheBytes
		opts.Config.VOD.UploadLimitBps = upload
	}
	client := origin.NewHTTP3Client(func() (net.PacketConn, error) {
		return g.Host.ListenUDP("udp4", &net.UDPAddr{IP: g.IP})
	})
	w.mu.Lock()
	w.clients = append(w.clients, client)
	w.mu.Unlock()
	opts.VODOverride = func(o *vod.Options) {
		o.OriginClient = client
		o.OnOriginFetch = func(f vod.OriginFetch) func(int64) { return w.observeFetch(g, f) }
	}
}

// observeFetch checks, at the moment of a gap fill, whether any other live gateway held the
// piece: if none did with uplink to spare, no peer could have supplied it. The bytes count
// when the fill ends, as many as it received (a fill given up on a dead connection and
// tried again counts once).
func (w *workload) observeFetch(self *emulator.Gateway, f vod.OriginFetch) (done func(received int64)) {
	if f.Reason == "push" || f.Reason == "prefix" {
		return func(received int64) {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.pushBytes += received
			if f.Reason == "prefix" {
				w.prefixPushBytes += received
			}
		}
	}
	// "In time" is the piece's deadline: the time it had left for a deadline fill, and the
	// startup goal for a stream's first piece (its player waits for it now). Peers could have
	// supplied it if the holders' uplink left unused in the last second, all of it, would
	// have carried the piece by then, even with no time spent connecting: the most any swarm
	// could have done. (The figure before session 21 asked only for one holder with a
	// bitrate's worth of spare uplink, whatever the deadline; kept as UnavoidableByRateBytes.
	// No ADSL2+ holder can send a 128 KiB piece due in 0.5 s, spare uplink or not.)
	due := f.Due
	if f.Reason == "startup" {
		due = startupGoal
	}
	heldAtAll, heldWithRate := false, false
	spare := 0.0
	spareBlocks := int64(0) // whole blocks the holders' spare uplink carries by then
	// where the nearest holder with spare uplink was: what the stream would have had to do
	// to use it (ask a peer it had, connect to one of its ISP, or cross the ISP border)
	spareWhere := ""
	for _, g := range w.env.Fleet.Gateways {
		if g == self {
			continue
		}
		if app := w.app(g.Node()); app != nil && app.HasPiece(f.CID, f.Piece) {
			heldAtAll = true
			w.mu.Lock()
			s := w.spareUp[g]
			w.mu.Unlock()
			if s <= 0 {
				continue
			}
			spare += s
			spareBlocks += int64(s * due.Seconds() / wireBlock)
			heldWithRate = heldWithRate || s >= float64(w.p.BitrateBps)/8
			if where := holderPlace(self, g, f.Holders); spareWhere == "" || where < spareWhere {
				spareWhere = where
			}
		}
	}
	inTime := spare*due.Seconds() >= float64(f.Bytes)
	inTimeBlocks := spareBlocks*wireBlock >= f.Bytes
	return func(n int64) {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.gapFills += n
		w.gapFillsByCID[f.CID] += n
		if !heldWithRate {
			w.unavoidableByRate += n
		}
		if !inTimeBlocks {
			w.unavoidableBlocks += n
		}
		if !inTime {
			w.unavoidable += n
		} else {
			w.avoidableByReason[f.Reason] += n
			w.avoidableByHolder[f.Reason+"/"+spareWhere] += n
		}
		if !heldAtAll {
			w.noHolder += n
		}
	}
}

// wireBlock is the unit a peer sends (BitTorrent's 16 KiB block): a holder helps a piece
// only with the whole blocks its spare uplink carries by the deadline.
const wireBlock = 16 << 10

// startupGoal is what "in time" means for a stream's first piece: the startup goal
// (p95 <= 1 s).
const startupGoal = time.Second

// holderPlace says how far a holder was from the gateway that fetched from the origin, in
// an order where less is nearer: "0-torrent-peer" (a peer of the title's swarm the deadline
// logic found too slow), "1-neighbour-same-isp" and "1-neighbour-other-isp" (an overlay
// neighbour outside the title's swarm), "2-same-isp", "3-other-isp" (not connected).
func holderPlace(self, holder *emulator.Gateway, torrentPeers []peer.ID) string {
	o, h := self.Overlay(), holder.Overlay()
	if o == nil || h == nil {
		return "3-other-isp"
	}
	if slices.Contains(torrentPeers, h.ID()) {
		return "0-torrent-peer"
	}
	neighbour, same := o.Host().Network().Connectedness(h.ID()) == network.Connected, self.ISP == holder.ISP
	switch {
	case neighbour && same:
		return "1-neighbour-same-isp"
	case neighbour:
		return "1-neighbour-other-isp"
	case same:
		return "2-same-isp"
	}
	return "3-other-isp"
}

var _ emulator.Warmer = (*workload)(nil)

// Warmup is when viewers may start coming: pushes happen before, and nothing is measured.
func (w *workload) Warmup() time.Duration { return w.p.Warmup }

// NodeStarted gives a (re)started gateway the provider's catalog, and in slice mode first the
// provider's slice with its VoD app (both persist: a restarted gateway has them already).
func (w *workload) NodeStarted(g *emulator.Gateway) {
	w.mu.Lock()
	entries := w.entries
	w.mu.Unlock()
	n := g.Node()
	if n == nil {
		return
	}
	if w.p.Slice != "" {
		if err := w.setupSlice(g, n); err != nil {
			w.mu.Lock()
			w.pushErrors = append(w.pushErrors, fmt.Sprintf("%s: slice: %v", g.Name, err))
			w.mu.Unlock()
			return
		}
	}
	if app := w.app(n); app != nil {
		for _, e := range entries {
			_ = app.AddTitle(e)
		}
	}
}

// sliceSetup is what ConfigureNode learnt for a gateway's slice.
type sliceSetup struct {
	strategy  string
	locality  string
	uploadBps int64
}

// setupSlice does what the operator and the provider do: the operator creates the slice,
// the provider installs its signed VoD unit (skipped when the gateway has them already).
func (w *workload) setupSlice(g *emulator.Gateway, n *node.Node) error {
	if n.SliceVOD(w.p.Slice) != nil {
		return nil
	}
	w.mu.Lock()
	su := w.sliceSetup[g]
	w.mu.Unlock()
	ctx := context.Background()
	provider, _ := peer.IDFromPrivateKey(w.key)
	m := n.Slices()
	operator := slice.Principal{Role: slice.RoleOperator}
	if _, err := m.Do(ctx, operator, slice.Request{Op: slice.OpSliceGet, Slice: w.p.Slice}); errors.Is(err, slice.ErrNotFound) {
		_, err = m.Do(ctx, operator, slice.Request{Op: slice.OpSliceCreate, Slice: w.p.Slice, Provider: provider.String(),
			Quotas: &slice.Quotas{StorageBytes: w.p.CacheBytes * 10 / 9, UploadBps: su.uploadBps}})
		if err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	unit := map[string]string{"strategy": su.strategy}
	if su.locality != "" {
		unit["locality"] = su.locality
	}
	cfg, _ := json.Marshal(unit)
	u, err := slice.Pack(w.key, slice.Manifest{Name: "vod", Kind: node.KindVOD, Config: cfg}, nil)
	if err != nil {
		return err
	}
	raw, err := u.Encode()
	if err != nil {
		return err
	}
	_, err = m.Do(ctx, slice.Principal{Role: slice.RoleProvider, Peer: provider}, slice.Request{Op: slice.OpAppInstall, Slice: w.p.Slice, Unit: raw, Start: true})
	return err
}

// app is the VoD app the workload drives on a gateway: the node-level one, or the one in the
// provider's slice.
func (w *workload) app(n *node.Node) *vod.App {
	if n == nil {
		return nil
	}
	if w.p.Slice != "" {
		return n.SliceVOD(w.p.Slice)
	}
	return n.VOD()
}

// Prepare publishes the catalog before the fleet starts: generating and hashing the titles is
// a burst of CPU that must not show in the measured phase.
func (w *workload) Prepare(_ context.Context, env *emulator.Env) error {
	w.fleet = env.Fleet
	var err error
	if w.dir, err = emulator.ScratchDir("nanodc-vod-*"); err != nil {
		return err
	}
	return w.publish(env)
}

func (w *workload) Start(ctx context.Context, env *emulator.Env) error {
	w.env = env
	host, err := env.Fleet.AddDatacenterHost(originIP)
	if err != nil {
		return fmt.Errorf("origin host: %w", err)
	}
	pc, err := host.ListenUDP("udp4", &net.UDPAddr{IP: originIP, Port: originPort})
	if err != nil {
		return fmt.Errorf("origin socket: %w", err)
	}
	if w.srv, err = origin.New(origin.Options{Dir: w.dir}); err != nil {
		return err
	}
	w.wg.Go(func() { _ = w.srv.ServeHTTP3(ctx, pc) })
	for _, g := range env.Fleet.Gateways {
		w.NodeStarted(g)
	}
	strategy := vod.StrategyNanodc
	for _, g := range env.Fleet.Gateways {
		if app := w.app(g.Node()); app != nil {
			strategy = app.Strategy()
			break
		}
	}
	if strategy == vod.StrategyNanodc && len(w.p.Push) > 0 {
		w.wg.Go(func() { w.push(ctx) })
	}
	w.schedule(ctx, env)
	return nil
}

// publish writes the catalog: titles of random bytes (the player model reads bytes, not
// pictures) signed by a provider key derived from the seed.
func (w *workload) publish(env *emulator.Env) error {
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(env.Rand.Uint32())
	}
	key, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		return err
	}
	w.key = key
	size := int64(w.p.TitleDuration.Seconds() * float64(w.p.BitrateBps) / 8)
	for i := range w.p.Titles {
		path := filepath.Join(w.dir, fmt.Sprintf("title-%02d.mp4", i))
		s := seed
		s[0] ^= byte(i) // every title distinct
		s[1] ^= byte(i >> 8)
		if err := writeRandom(path, size, rand.NewChaCha8(s)); err != nil {
			return err
		}
		e, err := catalog.Publish(context.Background(), path, catalog.PublishOptions{
			Key: key, OriginBase: fmt.Sprintf("https://%s:%d", originIP, originPort),
			BitrateBps: w.p.BitrateBps, Duration: w.p.TitleDuration, MIME: "video/mp4", PieceLength: w.p.PieceLength,
			Now: func() time.Time { return time.Unix(1_700_000_000, 0) },
		})
		if err != nil {
			return fmt.Errorf("publishing title %d: %w", i, err)
		}
		w.entries = append(w.entries, e)
	}
	return nil
}

// push pre-places the plan's titles on replicas spread across access nodes, each title on
// gateways that hold no earlier title while there are enough of them, as vod.PushFleet does.
func (w *workload) push(ctx context.Context) {
	var cands []overlay.PeerInfo
	byID := map[string]*emulator.Gateway{}
	for _, g := range w.env.Fleet.Gateways {
		if o := g.Overlay(); o != nil {
			cands = append(cands, overlay.PeerInfo{ID: o.ID(), Labels: overlay.Labels{ISP: g.ISP, AccessNode: g.AccessNode}})
			byID[o.ID().String()] = g
		}
	}
	// Replicas are due in place when viewers may come: each push takes from the origin
	// what its peers would not deliver by then.
	due := w.env.Start.Add(w.p.Warmup)
	pctx, cancel := context.WithDeadline(ctx, due)
	defer cancel()
	var wg sync.WaitGroup
	loaded := map[peer.ID]bool{}
	plan := w.p.pushPlan()
	for _, tp := range plan {
		t, e := tp.title, w.entries[tp.title]
		chosen := vod.ChooseReplicas(cands, tp.replicas, nil, loaded)
		for _, r := range chosen {
			loaded[r.ID] = true
		}
		w.mu.Lock()
		w.replicas[t] = map[*emulator.Gateway]bool{}
		for _, r := range chosen {
			w.replicas[t][byID[r.ID.String()]] = true
		}
		w.pushedWhole[t] = len(chosen) > 0
		w.mu.Unlock()
		// Each replica learns the others, as from `nanodc vod push`: they trade pieces.
		with := make([]peer.ID, len(chosen))
		for i, r := range chosen {
			with[i] = r.ID
		}
		for _, r := range chosen {
			g := byID[r.ID.String()]
			wg.Go(func() {
				if app := w.app(g.Node()); app != nil {
					if err := app.Push(pctx, e, with...); err != nil && ctx.Err() == nil {
						w.mu.Lock()
						w.pushErrors = append(w.pushErrors, fmt.Sprintf("%s: %v", g.Name, err))
						w.pushedWhole[t] = false
						w.mu.Unlock()
					}
				} else {
					w.mu.Lock()
					w.pushedWhole[t] = false
					w.mu.Unlock()
				}
			})
		}
	}
	replicasDone := make(chan struct{})
	go func() {
		wg.Wait()
		w.mu.Lock()
		w.pushedAt = time.Since(w.env.Start)
		w.mu.Unlock()
		close(replicasDone)
	}()
	if slices.ContainsFunc(plan, func(tp titlePush) bool { return tp.prefix > 0 }) {
		// As vod.PushFleet: once the replicas are in place, or two thirds of the way
		// to the deadline if they are not yet.
		select {
		case <-replicasDone:
		case <-time.After(time.Until(vod.PrefixesFrom(time.Now(), due))):
		case <-ctx.Done():
		}
		w.pushPrefixes(ctx, pctx, plan, cands, byID)
		w.mu.Lock()
		w.prefixesPlacedAt = time.Since(w.env.Start)
		w.mu.Unlock()
	}
	<-replicasDone
}

// prefixPushesAtOnce bounds the emulated fleet's concurrent prefix pushes. `nanodc vod push`
// runs vod.PrefixPushesAtOnce, a bound for the provider's node; here every gateway's
// handshakes share the machine's two processors, and 32 at once held the packet scheduler
// up to 1.7 s in the flash crowd (docs/BENCHMARKS.md session 12).
const prefixPushesAtOnce = 8

// pushPrefixes places the first tier.Prefix of each pushed title that has one on every
// gateway that is not one of its replicas, from the nearest replicas and the nearest gateways
// whose prefix is in place (vod.PrefixTree), as `nanodc vod push --prefix` does (vod.PushFleet), prefixPushesAtOnce at a time.
func (w *workload) pushPrefixes(ctx, pctx context.Context, plan []titlePush, cands []overlay.PeerInfo, byID map[string]*emulator.Gateway) {
	sem := make(chan struct{}, prefixPushesAtOnce)
	var wg sync.WaitGroup
	for _, tp := range plan {
		if tp.prefix <= 0 {
			continue
		}
		t, e := tp.title, w.entries[tp.title]
		prefix := vod.PrefixBytes(e, tp.prefix)
		w.mu.Lock()
		replicas := w.replicas[t]
		w.mu.Unlock()
		var placed []overlay.PeerInfo
		for _, c := range cands {
			if replicas[byID[c.ID.String()]] {
				placed = append(placed, c)
			}
		}
		tree := vod.NewPrefixTree(placed)
		for _, c := range cands {
			g := byID[c.ID.String()]
			if replicas[g] {
				continue
			}
			app := w.app(g.Node())
			if app == nil {
				continue
			}
			sem <- struct{}{}
			w.mu.Lock()
			w.prefixPushes++
			w.mu.Unlock()
			sources := tree.Sources(c)
			wg.Go(func() {
				defer func() { <-sem }()
				err := app.PushPrefix(pctx, e, prefix, sources...)
				if err == nil {
					tree.Placed(c)
				}
				w.mu.Lock()
				defer w.mu.Unlock()
				switch {
				case err == nil:
					w.prefixesDone++
				case ctx.Err() == nil:
					w.pushErrors = append(w.pushErrors, fmt.Sprintf("%s (prefix): %v", g.Name, err))
				}
			})
		}
	}
	wg.Wait()
}

// schedule draws the viewers (same draws for every strategy: the generator is the
// workload's own) and starts a goroutine per viewer at its arrival time.
func (w *workload) schedule(ctx context.Context, env *emulator.Env) {
	type arrival struct {
		at    time.Duration
		title int
		gw    int
	}
	var arrivals []arrival
	weights := make([]float64, w.p.Titles)
	total := 0.0
	for k := range weights {
		weights[k] = 1 / math.Pow(float64(k+1), w.p.ZipfS)
		total += weights[k]
	}
	zipf := func() int {
		x := env.Rand.Float64() * total
		for k, wt := range weights {
			if x < wt {
				return k
			}
			x -= wt
		}
		return len(weights) - 1
	}
	n := len(env.Fleet.Gateways)
	if w.p.ArrivalRate > 0 {
		for t := w.p.Warmup; ; {
			t += time.Duration(env.Rand.ExpFloat64() / w.p.ArrivalRate * float64(time.Second))
			if t >= env.Duration {
				break
			}
			arrivals = append(arrivals, arrival{t, zipf(), env.Rand.IntN(n)})
		}
	}
	fc := w.p.FlashCrowd
	for range fc.Viewers {
		at := w.p.Warmup + fc.At + time.Duration(env.Rand.Float64()*float64(fc.Over))
		arrivals = append(arrivals, arrival{at, fc.Title, env.Rand.IntN(n)})
	}
	w.viewingFrom = env.Start.Add(w.p.Warmup)
	for _, a := range arrivals {
		s := &session{title: a.title, gw: env.Fleet.Gateways[a.gw], arrival: a.at, flash: a.title == fc.Title}
		w.sessions = append(w.sessions, s)
		w.wg.Go(func() {
			if !sleepUntil(ctx, env.Start.Add(a.at)) {
				return
			}
			w.play(ctx, s)
		})
	}
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	tm := time.NewTimer(time.Until(t))
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

func (w *workload) Wait() {
	w.wg.Wait()
	w.mu.Lock()
	clients := w.clients
	w.clients = nil
	players := w.players
	w.players = nil
	w.mu.Unlock()
	for _, ps := range players {
		ps.shutdown()
	}
	for _, c := range clients {
		if t, ok := c.Transport.(*origin.HTTP3Transport); ok {
			_ = t.Close()
		}
	}
	if w.srv != nil {
		_ = w.srv.Close()
	}
	if w.dir != "" {
		_ = os.RemoveAll(w.dir)
	}
}

// counters sums the gateways' VoD counters, following apps across restarts.
func (w *workload) counters() (sum byteCounts) {
	for _, g := range w.env.Fleet.Gateways {
		c := w.stats[g]
		if c == nil {
			c = &gwCounters{}
			w.stats[g] = c
		}
		app := w.app(g.Node())
		if id := weak.Make(app); id != c.app {
			c.carried, c.last = c.carried.plus(c.last), byteCounts{}
			c.app = id
		}
		if app != nil {
			st := app.Stats()
			c.last = byteCounts{st.OriginBytes, st.PeerBytes, st.CrossISPPeer, st.PeerWastedBytes}
		}
		sum = sum.plus(c.carried.plus(c.last))
	}
	return sum
}

// writeRandom writes size pseudo-random bytes, a chunk at a time.
func writeRandom(path string, size int64, r *rand.ChaCha8) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, r, size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
