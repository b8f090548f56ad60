package vod

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	g "github.com/anacrolix/generics"
	alog "github.com/anacrolix/log"
	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
	"github.com/ipfs/go-cid"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/nanodc/nanodc/internal/ratelimit"
	"github.com/nanodc/nanodc/overlay"
	"github.com/nanodc/nanodc/vod/catalog"
)

// Strategy selects how a gateway gets the bytes of a title.
type Strategy string

const (
	// StrategyNanodc: nearest peers, deadline-aware origin gap filling, pushed replicas.
	StrategyNanodc Strategy = "nanodc"
	// StrategyBitTorrent: plain anacrolix behaviour: random peers, the origin is an ordinary
	// webseed, no deadlines, no push. The baseline a plain swarm gives.
	StrategyBitTorrent Strategy = "bittorrent"
	// StrategyCDNOnly: every byte from the origin, no peers. The baseline a CDN gives.
	StrategyCDNOnly Strategy = "cdn-only"
)

// NewUploadLimiter caps a gateway's seeding at bps bits per second of payload (nil for
// bps <= 0: no cap), with a burst of one 16 KiB chunk: larger bursts are queueing delay on a
// slow uplink.
func NewUploadLimiter(bps int64) *rate.Limiter {
	if bps <= 0 {
		return nil
	}
	return ratelimit.New(bps, 16<<10)
}

// Locality says which holders the nanodc strategy streams from.
type Locality string

const (
	// LocalityISP: the viewer's ISP first, others only while it falls short, and let go
	// once it suffices (vod/locality.go). The operator's choice: few bytes cross ISPs.
	LocalityISP Locality = "isp"
	// LocalityRTT: the nearest holders by measured RTT wherever they are. In small swarms it
	// offloads a little more from the origin, at several times the cross-ISP bytes
	// (docs/BENCHMARKS.md session 8).
	LocalityRTT Locality = "rtt"
)

// ParseLocality checks a locality name ("" is isp).
func ParseLocality(s string) (Locality, error) {
	switch l := Locality(s); l {
	case LocalityISP, LocalityRTT:
		return l, nil
	case "":
		return LocalityISP, nil
	}
	return "", fmt.Errorf("unknown vod locality %q (want isp or rtt)", s)
}

// ParseStrategy checks a strategy name.
func ParseStrategy(s string) (Strategy, error) {
	switch st := Strategy(s); st {
	case StrategyNanodc, StrategyBitTorrent, StrategyCDNOnly:
		return st, nil
	case "":
		return StrategyNanodc, nil
	}
	return "", fmt.Errorf("unknown vod strategy %q (want nanodc, bittorrent or cdn-only)", s)
}

// Options configure the app. Overlay and Dir are required.
type Options struct {
	Overlay *overlay.Overlay
	// Dir holds the cache: title data, piece completion, catalog entries, pins.
	Dir string
	// CacheBytes is the storage quota for cached titles (pinned titles count too).
	CacheBytes int64
	// Providers are the peer IDs whose signed catalog entries this gateway accepts.
	// Empty accepts any validly signed entry (a development fleet).
	Providers []peer.ID
	// OriginClient reaches the provider's origin; the emulator passes one that runs over the
	// shaped virtual network. Default: a plain http.Client.
	OriginClient *http.Client
	Strategy     Strategy
	// Locality says which holders the nanodc strategy prefers (default LocalityISP).
	Locality Locality
	// MaxPeers is how many peers per title the gateway connects to (our ISP's first, nearest
	// first). Default 8.
	MaxPeers int
	// StartupTarget is how soon after a stream starts its first bytes are due: the deadline
	// the scheduler plans the first pieces against. Default 700 ms.
	StartupTarget time.Duration
	// Readahead is how much video ahead of a player the nanodc strategy asks peers for.
	// Default 8 s.
	Readahead time.Duration
	// PeerRateGuess is the upload rate assumed for a peer before one was measured. Default
	// 1 Mbit/s (a DSL uplink).
	PeerRateGuess float64
	// BitTorrentListen, when set (host:port), also accepts standard BitTorrent peer
	// connections over TCP, so that ordinary clients can fetch titles from the gateway. The
	// gateway never dials TCP peers itself.
	BitTorrentListen string
	// Namespace puts the app's overlay protocols, gossip topic and gateway record under a
	// provider's slice (the slice id); "" is the gateway's own VoD app.
	Namespace string
	// UploadLimiter caps what the gateway uploads to peers (nil: no cap; NewUploadLimiter
	// makes one). On a DSL line it belongs a little below the uplink rate: a saturated uplink
	// queues the gateway's own requests and acknowledgements behind hundreds of milliseconds
	// of seeding, and its viewers stall. It and DownloadLimiter may be shared with other apps
	// (a slice's bandwidth share: every app of the slice draws from it, and a quota change
	// applies at once); the upload burst must be at least one 16 KiB chunk. DownloadLimiter
	// paces peer and origin bytes alike.
	UploadLimiter   *rate.Limiter
	DownloadLimiter *rate.Limiter
	// StreamScope, when set, is applied to every overlay stream the app opens or accepts
	// before it is used (a slice attaches them to its resource-manager scope); an error
	// refuses the stream.
	StreamScope func(network.Stream) error
	// ScarceHolders and AbundantHolders drive the nanodc strategy's scarce-first uplink
	// (uplink.go): while a peer fetches from this gateway a title at most ScarceHolders other
	// gateways hold, it stops uploading titles at least AbundantHolders others hold. Defaults
	// 3 and 8; a negative ScarceHolders turns the policy off.
	ScarceHolders   int
	AbundantHolders int
	// AnnounceJitter is the most a gateway waits, at random, before announcing itself as a
	// VoD gateway in the DHT. Default 10 s; negative: no wait.
	AnnounceJitter time.Duration
	// OnOriginFetch, when set, is told about every piece fetched from the origin as the fetch
	// starts; the function it returns, when not nil, is called as the fetch ends with the
	// bytes actually received (fewer than asked when it failed or was given up as stalled).
	OnOriginFetch func(OriginFetch) (done func(received int64))
	Logger        *slog.Logger
	Registerer    prometheus.Registerer
}

func (o *Options) setDefaults() error {
	if o.Overlay == nil {
		return errors.New("vod: Options.Overlay is required")
	}
	if o.Dir == "" {
		return errors.New("vod: Options.Dir is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.OriginClient == nil {
		o.OriginClient = &http.Client{}
	}
	if o.DownloadLimiter != nil {
		c := *o.OriginClient
		c.Transport = pacedTransport{cmp.Or[http.RoundTripper](c.Transport, http.DefaultTransport), o.DownloadLimiter}
		o.OriginClient = &c
	}
	if o.StreamScope == nil {
		o.StreamScope = func(network.Stream) error { return nil }
	}
	if o.Strategy == "" {
		o.Strategy = StrategyNanodc
	}
	if _, err := ParseStrategy(string(o.Strategy)); err != nil {
		return err
	}
	var err error
	if o.Locality, err = ParseLocality(string(o.Locality)); err != nil {
		return err
	}
	if o.MaxPeers <= 0 {
		o.MaxPeers = 8
	}
	if o.StartupTarget <= 0 {
		o.StartupTarget = 700 * time.Millisecond
	}
	if o.PeerRateGuess <= 0 {
		o.PeerRateGuess = 1e6 / 8
	}
	if o.Readahead <= 0 {
		o.Readahead = 8 * time.Second
	}
	if o.AnnounceJitter == 0 {
		o.AnnounceJitter = 10 * time.Second
	}
	o.AnnounceJitter = max(o.AnnounceJitter, 0)
	if o.Namespace != "" && !namespaceRE.MatchString(o.Namespace) {
		return fmt.Errorf("vod: namespace %q: want a slice id (a-z, 0-9, '-', at most 32)", o.Namespace)
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = 10 << 30
	}
	if o.ScarceHolders == 0 {
		o.ScarceHolders = 3
	}
	if o.AbundantHolders <= 0 {
		o.AbundantHolders = 8
	}
	if o.ScarceHolders >= o.AbundantHolders {
		return fmt.Errorf("vod: ScarceHolders %d must be below AbundantHolders %d", o.ScarceHolders, o.AbundantHolders)
	}
	return nil
}

var namespaceRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// App is the VoD app of one gateway.
type App struct {
	opts    Options
	protos  ProtocolSet
	log     *slog.Logger
	ov      *overlay.Overlay
	client  *torrent.Client
	storage *guardedStorage
	tr      *transport
	btLn    net.Listener
	// streamsLost counts peer-wire streams cut by their connection going away (the transport's).
	streamsLost atomic.Int64
	origin      *originFetcher
	metrics     *metrics

	mu      sync.Mutex
	titles  map[string]*title // by CID string
	streams map[*stream]struct{}
	state   *stateFile
	peers   map[peer.ID]*peerCounters
	holders holders
	topic   *pubsub.Topic
	uplink  uplinkArbiter
	upq     *uplinkQueue // nil unless the nanodc strategy caps its upload

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// title is one catalog entry this gateway knows, and its torrent once it is in use.
type title struct {
	entry *catalog.Entry
	cid   cid.Cid
	t     *torrent.Torrent // nil until first use
	// pushing is set while a push fills the title completely.
	pushing bool
	// lastDiscovery rate-limits discovery rounds (gossip, then maybe a DHT lookup).
	lastDiscovery time.Time
	// DHT lookups back off while they find no provider not seen before (nextLookup,
	// lookupGap): in a swarm with fewer holders than MaxPeers, each lookup would only dial
	// (and close again) the same DHT nodes to learn nothing, and gossip names new holders.
	nextLookup time.Time
	lookupGap  time.Duration
	seenProv   map[peer.ID]bool
	provided   bool
	counters   titleCounters
	// origin, once set, replaces entry.Origin: the provider re-published the title with its
	// files elsewhere (AddTitle).
	origin atomic.Pointer[string]

	// guarded by fmu: gap fills in flight and the measured peer download rate.
	fmu        sync.Mutex
	inflightAt map[int]bool
	rateAt     time.Time
	rateBytes  int64
	rate       float64
	// lastShort is when a stream of the title last needed the origin for a piece its
	// connected peers could not deliver in time (after discoveryGrace): our ISP's peers
	// were short, and peers elsewhere are welcome (shortOfPeers).
	lastShort time.Time
}

// originURL is where the title's origin serves it now.
func (ti *title) originURL() string {
	if u := ti.origin.Load(); u != nil {
		return *u
	}
	return ti.entry.Origin
}

// New opens the cache in opts.Dir and starts the torrent client on the overlay's host.
func New(opts Options) (_ *App, err error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	for _, d := range []string{"data", "titles"} {
		if err := os.MkdirAll(filepath.Join(opts.Dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("vod: cache dir: %w", err)
		}
	}
	a := &App{
		opts:    opts,
		protos:  Protocols(opts.Namespace),
		log:     opts.Logger,
		ov:      opts.Overlay,
		titles:  map[string]*title{},
		streams: map[*stream]struct{}{},
		peers:   map[peer.ID]*peerCounters{},
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	if a.state, err = loadState(filepath.Join(opts.Dir, "state.json")); err != nil {
		return nil, err
	}
	a.metrics = newMetrics(opts.Registerer, a)
	a.origin = newOriginFetcher(opts.OriginClient, a.metrics)
	if opts.Strategy != StrategyCDNOnly {
		if err := a.startClient(); err != nil {
			return nil, err
		}
	}
	if a.client != nil {
		// Before the cached titles load: each announces itself on the topic once it holds
		// a verified piece (announceWhenHolding).
		if a.topic, err = a.ov.Topic(a.protos.HaveTopic); err != nil {
			return nil, fmt.Errorf("vod: gossip topic: %w", err)
		}
		a.wg.Go(func() { a.runGossip(a.topic) })
	}
	if err := a.loadTitles(); err != nil {
		return nil, err
	}
	a.ov.Host().SetStreamHandler(a.protos.Push, a.handlePush)
	a.wg.Go(a.announceGateway)
	return a, nil
}

func (a *App) startClient() error {
	completion, err := storage.NewBoltPieceCompletion(a.opts.Dir)
	if err != nil {
		return fmt.Errorf("vod: piece completion store in %s: %w", a.opts.Dir, err)
	}
	a.storage = newGuardedStorage(storage.NewFileOpts(storage.NewFileClientOpts{
		ClientBaseDir: filepath.Join(a.opts.Dir, "data"),
		// One directory per infohash: two titles may share a file name.
		TorrentDirMaker: func(base string, _ *metainfo.Info, ih metainfo.Hash) string {
			return filepath.Join(base, ih.HexString())
		},
		PieceCompletion: recordedOnly{completion},
		// No ".part" files: anacrolix marks every piece of a part file incomplete when it
		// opens a torrent, so a title cached in part (a prefix, a stream stopped halfway)
		// would be lost at each restart. Pieces are written in place instead (sparse files),
		// and the bolt completion store says which of them verified.
		UsePartFiles: g.Some(false),
		Logger:       a.log,
	}))
	cfg := torrent.NewDefaultClientConfig()
	cfg.DefaultStorage = a.storage
	cfg.DataDir = filepath.Join(a.opts.Dir, "data")
	// Peers come from the overlay only: no BitTorrent DHT, trackers, PEX (it would spread our
	// synthetic addresses), uTP or TCP sockets, no port forwarding.
	cfg.NoDHT = true
	cfg.DisableTrackers = true
	cfg.DisablePEX = true
	cfg.DisableUTP = true
	cfg.DisableTCP = true
	cfg.DisableWebtorrent = true
	cfg.NoDefaultPortForwarding = true
	cfg.ListenPort = 0
	cfg.Seed = true
	cfg.DropDuplicatePeerIds = true
	// Peer-wire streams run inside libp2p's encrypted, authenticated connections: BitTorrent's
	// header obfuscation would only add a Diffie-Hellman exchange and a round trip to every
	// peer connection. Dial in plaintext; still accept obfuscated ordinary clients.
	cfg.HeaderObfuscationPolicy = torrent.HeaderObfuscationPolicy{Preferred: false, RequirePreferred: false}
	// The nanodc strategy applies the upload cap itself, oldest request first across
	// connections, and drops what a peer cancelled (uplinkqueue.go).
	if a.opts.UploadLimiter != nil && a.opts.Strategy == StrategyNanodc {
		a.upq = newUplinkQueue(a.opts.UploadLimiter)
	} else if a.opts.UploadLimiter != nil {
		cfg.UploadRateLimiter = a.opts.UploadLimiter
	}
	if a.opts.DownloadLimiter != nil {
		cfg.DownloadRateLimiter = a.opts.DownloadLimiter
	}
	// A gateway serves each title to many neighbours; DSL uplinks are the scarce resource,
	// and mutually complete peers have nothing to trade.
	cfg.DropMutuallyCompletePeers = true
	// anacrolix owns the bound on peer-wire connections (the transport protects theirs from
	// the connection manager). A viewer needs a few good peers for one title at 1 Mbit/s and a
	// replica serves a share of a crowd: 15 per title kept the flash crowd's figures with 0.88
	// cores where 30 took 0.98 and left gateways a third more connections (docs/BENCHMARKS.md
	// session 16).
	cfg.EstablishedConnsPerTorrent = 15
	cfg.HandshakesTimeout = 10 * time.Second
	cfg.ExtendedHandshakeClientVersion = "nanodc"
	cfg.HTTPUserAgent = "nanodc-vod"
	cfg.Logger = alog.Default.WithFilterLevel(alog.Critical)
	cfg.Slogger = slog.New(levelAtLeast{a.log.Handler(), slog.LevelError})
	// The nanodc strategy fetches from the origin itself, only for pieces due too soon; the
	// bittorrent baseline lets anacrolix use the origin as an ordinary webseed.
	cfg.DisableWebseeds = a.opts.Strategy != StrategyBitTorrent
	if rt := a.opts.OriginClient.Transport; rt != nil {
		cfg.WebTransport = countingTransport{rt, a.origin}
	} else {
		cfg.WebTransport = countingTransport{http.DefaultTransport, a.origin}
	}
	cl, err := torrent.NewClient(cfg)
	if err != nil {
		return fmt.Errorf("vod: torrent client: %w", err)
	}
	a.client = cl
	a.tr = newTransport(a.ov.Host(), a.protos.Peer, a.countPeerRead, a.opts.StreamScope)
	a.tr.banned = a.isBanned
	a.tr.lost = &a.streamsLost
	a.tr.queue = a.upq
	cl.AddDialer(a.tr)
	cl.AddListener(a.tr)
	if a.opts.BitTorrentListen != "" {
		// A listener only: anacrolix's TCP dialer stays off, so it never dials the synthetic
		// addresses of libp2p peers over TCP.
		if a.btLn, err = net.Listen("tcp", a.opts.BitTorrentListen); err != nil {
			return fmt.Errorf("vod: BitTorrent listener: %w", err)
		}
		if a.upq != nil {
			cl.AddListener(queuedListener{a.btLn, a.upq})
		} else {
			cl.AddListener(a.btLn)
		}
	}
	if a.upq != nil {
		a.wg.Go(func() { a.upq.run(a.ctx.Done()) })
	}
	return nil
}

// BitTorrentAddr is where standard BitTorrent clients may connect ("" when off).
func (a *App) BitTorrentAddr() string {
	if a.btLn == nil {
		return ""
	}
	return a.btLn.Addr().String()
}

// Serve runs the background work (peer discovery, deadlines, cache) until ctx ends.
func (a *App) Serve(ctx context.Context) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	slow := time.NewTicker(2 * time.Second)
	defer slow.Stop()
	second := time.NewTicker(time.Second)
	defer second.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.ctx.Done():
			return nil
		case <-tick.C:
			if a.opts.Strategy == StrategyNanodc {
				a.scheduleDeadlines()
			}
		case now := <-second.C:
			if a.opts.Strategy == StrategyNanodc && a.opts.ScarceHolders >= 0 {
				a.arbitrateUplink(now)
			}
		case <-slow.C:
			a.discoverForActive()
			a.enforceQuota()
			a.sampleMetrics()
		}
	}
}

// Close stops streams, the torrent client (before its listener, as anacrolix requires) and
// saves the cache state.
func (a *App) Close() error {
	a.ov.Host().RemoveStreamHandler(a.protos.Push)
	a.cancel()
	a.wg.Wait()
	var errs []error
	if a.client != nil {
		errs = append(errs, a.client.Close()...)
	}
	if a.tr != nil {
		a.tr.Close()
	}
	if a.btLn != nil {
		a.btLn.Close()
	}
	if a.storage != nil {
		errs = append(errs, a.storage.Close())
	}
	if a.state != nil {
		a.mu.Lock()
		errs = append(errs, a.state.save())
		a.mu.Unlock()
	}
	if a.metrics != nil {
		a.metrics.unregister()
	}
	return errors.Join(errs...)
}

// Strategy reports the strategy this app runs.
func (a *App) Strategy() Strategy { return a.opts.Strategy }

// AddTitle makes a published title known to this gateway. The entry must verify and be signed
// by one of the configured providers. Adding a known title again is not an error; an entry of
// the same torrent published again with a new origin (the provider moved its files) is saved,
// and gap fills and streams use the new origin at once. The same content as a known title
// under another torrent (another name or piece size) is refused: titles are keyed by their
// content's CID, so it would silently stream and push the other torrent.
func (a *App) AddTitle(e *catalog.Entry) error {
	if err := e.Verify(); err != nil {
		return fmt.Errorf("vod: title %q: %w", e.Name, err)
	}
	if len(a.opts.Providers) > 0 {
		pid, err := peer.Decode(e.Provider)
		if err != nil || !slices.Contains(a.opts.Providers, pid) {
			return fmt.Errorf("vod: title %q: provider %s is not trusted on this gateway", e.Name, e.Provider)
		}
	}
	a.mu.Lock()
	known := a.titles[e.CID]
	a.mu.Unlock()
	if known != nil && known.entry.InfoHash != e.InfoHash {
		return fmt.Errorf("vod: title %q has the same content (CID %s) as title %q, a different torrent this gateway already has; a provider publishes one content once", e.Name, e.CID, known.entry.Name)
	}
	raw, err := e.Encode()
	if err != nil {
		return fmt.Errorf("vod: title %q: %w", e.Name, err)
	}
	path := filepath.Join(a.opts.Dir, "titles", e.CID+".json")
	if err := writeFileAtomic(path, raw); err != nil {
		return fmt.Errorf("vod: saving title %q: %w", e.Name, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if ti, ok := a.titles[e.CID]; ok {
		if old := ti.originURL(); old != e.Origin {
			ti.origin.Store(&e.Origin)
			if ti.t != nil && a.opts.Strategy == StrategyBitTorrent {
				ti.t.AddWebSeeds([]string{e.Origin})
			}
			a.log.Info("vod: title's origin moved", "title", e.Name, "from", old, "to", e.Origin)
		}
		return nil
	}
	a.titles[e.CID] = &title{entry: e, cid: e.ContentID()}
	return nil
}

// loadTitles reads the saved catalog entries and resumes seeding titles with cached data.
func (a *App) loadTitles() error {
	dir := filepath.Join(a.opts.Dir, "titles")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("vod: %w", err)
	}
	for _, de := range ents {
		if filepath.Ext(de.Name()) != ".json" {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, de.Name()))
		if err != nil {
			return fmt.Errorf("vod: %w", err)
		}
		e, err := catalog.Decode(raw)
		if err != nil {
			return fmt.Errorf("vod: cached title %s: %w", filepath.Join(dir, de.Name()), err)
		}
		a.titles[e.CID] = &title{entry: e, cid: e.ContentID()}
	}
	if a.client == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for c, ti := range a.titles {
		if st := a.state.Titles[c]; st != nil && (st.Pinned || st.Prefix > 0 || st.Plays > 0) {
			if _, err := a.torrentLocked(ti); err != nil {
				return err
			}
		}
	}
	return nil
}

// Titles lists the titles this gateway knows.
func (a *App) Titles() []*catalog.Entry {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*catalog.Entry, 0, len(a.titles))
	for _, ti := range a.titles {
		out = append(out, ti.entry)
	}
	slices.SortFunc(out, func(x, y *catalog.Entry) int { return cmpString(x.Name, y.Name) })
	return out
}

// lookup finds a title by CID, infohash or name.
func (a *App) lookup(ref string) (*title, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ti, ok := a.titles[ref]; ok {
		return ti, true
	}
	for _, ti := range a.titles {
		if ti.entry.InfoHash == ref || ti.entry.Name == ref {
			return ti, true
		}
	}
	return nil, false
}

// torrentLocked returns the title's torrent, adding it to the client on first use and
// announcing it in the DHT so other gateways find this one as a peer.
func (a *App) torrentLocked(ti *title) (*torrent.Torrent, error) {
	if ti.t != nil {
		return ti.t, nil
	}
	mi, err := ti.entry.MetaInfo()
	if err != nil {
		return nil, fmt.Errorf("vod: title %q: %w", ti.entry.Name, err)
	}
	spec, err := torrent.TorrentSpecFromMetaInfoErr(mi)
	if err != nil {
		return nil, fmt.Errorf("vod: title %q: %w", ti.entry.Name, err)
	}
	if a.opts.Strategy != StrategyBitTorrent {
		spec.Webseeds = nil
	}
	spec.Trackers = nil
	t, _, err := a.client.AddTorrentSpec(spec)
	if err != nil {
		return nil, fmt.Errorf("vod: title %q: %w", ti.entry.Name, err)
	}
	ti.t = t
	a.wg.Go(func() { a.announceWhenHolding(ti, t) })
	return t, nil
}

// announceWhenHolding tells the fleet (gossip, then the DHT) that this gateway holds the
// title once it holds a verified piece of it: a holder with nothing yet is no use to a peer,
// and a new stream's uplink is busy fetching its first piece. (Announcing at the first play
// put a DHT provide's lookup and dials on the uplink ahead of that fetch.) A pushed prefix
// does not count: a fleet's prefix holders would fill the viewers' holder lists and peer
// slots with gateways that cannot send past the first seconds, crowding out the replicas.
func (a *App) announceWhenHolding(ti *title, t *torrent.Torrent) {
	// Read once: the torrent is opened with a.mu held, and a prefix push records its prefix
	// before it lets go, so this waits for it.
	prefix := a.prefixHeld(ti)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for t.BytesCompleted() <= prefix {
		select {
		case <-a.ctx.Done():
			return
		case <-t.Closed():
			return
		case <-tick.C:
		}
	}
	a.announceHave(ti.cid)
	// The DHT record is for gateways that come later; gossip told the present ones. Its
	// lookup and a score of dials wait until the stream that made this gateway a holder is
	// under way. A pinned (pushed) title has no stream to protect and is placed to be
	// found: it provides at once.
	a.mu.Lock()
	st := a.state.Titles[ti.entry.CID]
	pinned := st != nil && st.Pinned
	a.mu.Unlock()
	if !pinned {
		wait := time.NewTimer(provideDelay)
		defer wait.Stop()
		select {
		case <-a.ctx.Done():
			return
		case <-wait.C:
		}
	}
	a.provide(ti)
}

// prefixHeld is how many bytes of the title a prefix push placed here (its whole pieces;
// 0 without one).
func (a *App) prefixHeld(ti *title) int64 {
	a.mu.Lock()
	st := a.state.Titles[ti.entry.CID]
	a.mu.Unlock()
	if st == nil || st.Prefix <= 0 {
		return 0
	}
	_, n := prefixSpan(ti.entry, st.Prefix)
	return n
}

// provide announces the title in the DHT (retrying while the overlay is not routable yet).
func (a *App) provide(ti *title) {
	for attempt := 0; attempt < 5; attempt++ {
		ctx, cancel := context.WithTimeout(a.ctx, 30*time.Second)
		err := a.ov.Provide(ctx, ti.cid)
		cancel()
		if err == nil {
			a.mu.Lock()
			ti.provided = true
			a.mu.Unlock()
			return
		}
		if a.ctx.Err() != nil {
			return
		}
		a.log.Debug("vod: provide", "title", ti.entry.Name, "err", err)
		select {
		case <-a.ctx.Done():
			return
		case <-time.After(time.Duration(attempt+1) * time.Second):
		}
	}
}

const (
	// lookupDelay is how long a stream's provider lookup waits when gossip already named
	// enough holders in our ISP.
	lookupDelay = 2 * time.Second
	// provideDelay is how long a new holder waits before its DHT provide.
	provideDelay = 5 * time.Second
)

// discover adds peers that hold the title: the nearest ones for nanodc, a random sample for
// the bittorrent baseline (a tracker hands out random peers).
func (a *App) discover(ti *title) { a.discoverAfter(ti, nil) }

// discoverAfter is discover once after has closed (or firstFillWait passed): a new stream's
// first piece goes ahead of its lookups and dials on the uplink (startPlayback).
func (a *App) discoverAfter(ti *title, after <-chan struct{}) {
	a.mu.Lock()
	t := ti.t
	if t == nil || time.Since(ti.lastDiscovery) < 3*time.Second {
		a.mu.Unlock()
		return
	}
	ti.lastDiscovery = time.Now()
	a.mu.Unlock()
	a.wg.Go(func() {
		if after != nil {
			wait := time.NewTimer(firstFillWait)
			select {
			case <-after:
			case <-wait.C:
			case <-a.ctx.Done():
			}
			wait.Stop()
		}
		// Gossip first: holders announced seconds ago, known without a lookup.
		gossip := a.gossipHolders(ti.cid)
		if len(gossip) > 0 {
			a.addPeers(t, a.pick(ti, gossip))
		}
		if !a.lookupDue(ti) {
			return
		}
		// When gossip named enough of our ISP's holders, the lookup leaves the uplink to the
		// handshakes with them for a while: its dials would delay the stream's next pieces.
		if a.opts.Strategy == StrategyNanodc && 2*a.usable(gossip) >= a.opts.MaxPeers {
			wait := time.NewTimer(lookupDelay)
			select {
			case <-wait.C:
			case <-a.ctx.Done():
				wait.Stop()
				return
			}
		}
		ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
		defer cancel()
		found, err := a.ov.FindProviders(ctx, ti.cid, max(4*a.opts.MaxPeers, 20))
		if err != nil {
			a.log.Debug("vod: find providers", "title", ti.entry.Name, "err", err)
			return
		}
		a.lookedUp(ti, found)
		a.addPeers(t, a.pick(ti, append(found, a.gossipHolders(ti.cid)...)))
	})
}

const (
	// minLookupGap and maxLookupGap bound the time between two DHT lookups for a title.
	minLookupGap = 3 * time.Second
	maxLookupGap = 30 * time.Second
)

// lookupDue reports whether the title's DHT lookup may run now.
func (a *App) lookupDue(ti *title) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return !time.Now().Before(ti.nextLookup)
}

// lookedUp sets when the title's next lookup may run: soon when this one found a provider
// never seen before (the swarm is growing), twice the last gap (up to maxLookupGap) when not.
func (a *App) lookedUp(ti *title, found []overlay.PeerInfo) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ti.seenProv == nil {
		ti.seenProv = map[peer.ID]bool{}
	}
	fresh := false
	for _, p := range found {
		if !ti.seenProv[p.ID] {
			ti.seenProv[p.ID] = true
			fresh = true
		}
	}
	if fresh || ti.lookupGap == 0 {
		ti.lookupGap = minLookupGap
	} else {
		ti.lookupGap = min(2*ti.lookupGap, maxLookupGap)
	}
	ti.nextLookup = time.Now().Add(ti.lookupGap)
}

// pick chooses whom to connect to: for nanodc our ISP's holders first and other ISPs only
// to make up for what ours lack (pickNearest); for the bittorrent baseline a random sample
// (a tracker hands out random peers).
func (a *App) pick(ti *title, cands []overlay.PeerInfo) []overlay.PeerInfo {
	switch {
	case a.opts.Strategy == StrategyNanodc && a.opts.Locality == LocalityRTT:
		return pickByRTT(a.ov.ID(), cands, a.opts.MaxPeers)
	case a.opts.Strategy == StrategyNanodc:
		return pickNearest(a.ov.ID(), cands, a.opts.MaxPeers, ti.shortOfPeers(time.Now()))
	}
	cands = mergeByID(a.ov.ID(), cands)
	rand.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	return cands[:min(len(cands), a.opts.MaxPeers)]
}

// peerSourceOverlay marks the BitTorrent connections this gateway dialled to peers the
// overlay found (anacrolix marks those it accepted otherwise).
const peerSourceOverlay torrent.PeerSource = "nanodc-overlay"

func (a *App) addPeers(t *torrent.Torrent, found []overlay.PeerInfo) {
	peers := make([]torrent.PeerInfo, 0, len(found))
	for _, p := range found {
		if p.ID == a.ov.ID() || a.isBanned(syntheticAddr(p.ID).Addr()) {
			continue
		}
		peers = append(peers, torrent.PeerInfo{Addr: a.tr.addrOf(p.ID), Source: peerSourceOverlay})
	}
	if len(peers) > 0 {
		t.AddPeers(peers)
	}
}

// discoverForActive looks for more peers for titles being streamed or pushed that have fewer
// connected peers than wanted, or (nanodc) fewer of our ISP's than wanted, and lets go of
// peers of other ISPs once ours suffice (trimOutside).
func (a *App) discoverForActive() {
	if a.client == nil {
		return
	}
	a.mu.Lock()
	var want []*title
	next := map[*title]int{} // the earliest stream's next piece, per streamed title
	for s := range a.streams {
		if !slices.Contains(want, s.title) {
			want = append(want, s.title)
		}
		if plen := s.title.entry.PieceLength; plen > 0 {
			p := int(s.position() / plen)
			if n, ok := next[s.title]; !ok || p < n {
				next[s.title] = p
			}
		}
	}
	for _, ti := range a.titles {
		if ti.pushing && !slices.Contains(want, ti) {
			want = append(want, ti)
		}
	}
	a.mu.Unlock()
	for _, ti := range want {
		if ti.t == nil || ti.t.Complete().Bool() {
			continue
		}
		conns := ti.t.PeerConns()
		wantMore := len(conns) < a.opts.MaxPeers
		if a.opts.Strategy == StrategyNanodc {
			short := ti.shortOfPeers(time.Now())
			wantMore = wantMore || short
			if a.opts.Locality == LocalityISP {
				placed := a.place(conns)
				wantMore = wantMore || 2*insideHolders(placed, -1) < a.opts.MaxPeers
				if n, streamed := next[ti]; streamed && !short {
					a.trimOutside(ti, placed, n)
				}
			}
		}
		if wantMore {
			a.discover(ti)
		}
	}
}

// trimOutside closes the connections we opened to gateways outside our ISP for a title once
// at least half of MaxPeers connected peers of our ISP hold what the stream needs next (the
// piece a readahead ahead of next) and they keep up (the caller checks shortOfPeers): the
// outside ones were dialled to make up for what our ISP lacked, and an idle one elsewhere
// would otherwise carry most of the stream (TestTrimsOtherISPs). Connections other gateways
// opened to us stay: they may have no holder nearer than us.
func (a *App) trimOutside(ti *title, conns []placedConn, next int) {
	if ti.t.Info() == nil || ti.entry.PieceLength <= 0 {
		return
	}
	ahead := min(next+int(a.readaheadBytes(ti.entry)/ti.entry.PieceLength), ti.t.NumPieces()-1)
	if 2*insideHolders(conns, ahead) < a.opts.MaxPeers {
		return
	}
	for _, c := range conns {
		if c.tier == 2 && c.pc.Discovery == peerSourceOverlay {
			c.pc.Close()
		}
	}
}

// placedConn is a peer connection and where its peer is (localTier; -1 when the peer behind
// the address is unknown).
type placedConn struct {
	pc   *torrent.PeerConn
	tier int
}

func (a *App) place(conns []*torrent.PeerConn) []placedConn {
	out := make([]placedConn, len(conns))
	for i, pc := range conns {
		out[i] = placedConn{pc, -1}
		if id, err := a.tr.peerOf(pc.RemoteAddr.String()); err == nil {
			out[i].tier = localTier(a.ov.PeerInfo(id))
		}
	}
	return out
}

// insideHolders counts the connections to peers in our ISP that hold piece (any peer when
// piece is negative).
func insideHolders(conns []placedConn, piece int) int {
	n := 0
	for _, c := range conns {
		if c.tier == 0 && (piece < 0 || c.pc.PeerPieces().Contains(uint32(piece))) {
			n++
		}
	}
	return n
}

// pacedTransport paces the bodies of origin responses through the download limiter.
type pacedTransport struct {
	rt  http.RoundTripper
	lim *rate.Limiter
}

func (p pacedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := p.rt.RoundTrip(r)
	if err == nil {
		resp.Body = struct {
			io.Reader
			io.Closer
		}{ratelimit.Reader(resp.Body, p.lim), resp.Body}
	}
	return resp, err
}

// ResetConnections passes the origin stall watchdog's reset on (see ConnResetter).
func (p pacedTransport) ResetConnections() {
	if r, ok := p.rt.(ConnResetter); ok {
		r.ResetConnections()
	} else {
		p.CloseIdleConnections()
	}
}

// CloseIdleConnections passes http.Client.CloseIdleConnections on.
func (p pacedTransport) CloseIdleConnections() {
	if c, ok := p.rt.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// countingTransport counts the body bytes anacrolix's webseed client reads from the origin.
type countingTransport struct {
	rt http.RoundTripper
	of *originFetcher
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, add: c.of.countWebseed}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	add func(int)
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.add(n)
	}
	return n, err
}

// levelAtLeast drops records below a level: anacrolix logs every peer event at Info.
type levelAtLeast struct {
	slog.Handler
	min slog.Level
}

func (h levelAtLeast) Enabled(_ context.Context, l slog.Level) bool { return l >= h.min }

func (h levelAtLeast) WithAttrs(as []slog.Attr) slog.Handler {
	return levelAtLeast{h.Handler.WithAttrs(as), h.min}
}

func (h levelAtLeast) WithGroup(name string) slog.Handler {
	return levelAtLeast{h.Handler.WithGroup(name), h.min}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
