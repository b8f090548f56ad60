// Package node is one nanodc gateway: it wires the overlay, the local management API and
// metrics (and, as they land, slices and provider apps) from a Config and a data directory.
// `nanodc node` and every emulated gateway run this same code.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/nanodc/nanodc/node/slice"
	"github.com/nanodc/nanodc/overlay"
	"github.com/nanodc/nanodc/vod"
)

// Options are the node's explicit dependencies.
type Options struct {
	Config  Config
	DataDir string // identity, API token and API address live here
	Version string
	Logger  *slog.Logger
	// PacketNetwork replaces the OS's UDP sockets (the emulator); nil uses real sockets.
	PacketNetwork overlay.PacketNetwork
	// Libp2pRegisterer, when set, receives go-libp2p's metrics instead of the node's own
	// registry (the emulator shares one among all its nodes).
	Libp2pRegisterer prometheus.Registerer
	// OnDialFailure hears of every failed dial (overlay.Config.OnDialFailure; the emulator
	// logs them). It needs Libp2pRegisterer.
	OnDialFailure func(addr ma.Multiaddr, err, cause error)
	// OnRefused hears of everything the resource manager refuses
	// (overlay.Config.OnResourceRefused), whose own metrics are then off.
	OnRefused func(what string)
	// ProcessMetrics adds Go runtime and process collectors: right for the daemon, wrong for
	// hundreds of emulated nodes sharing one process.
	ProcessMetrics bool
	// VODOverride adjusts the VoD app's options after the config is applied: the emulator
	// sets the origin client that runs over its virtual network and its observers.
	VODOverride func(*vod.Options)
	// AnnounceJitter is the most the node waits, at random, before announcing itself in the
	// DHT as a gateway (0: 10 s; negative: at once, for tests).
	AnnounceJitter time.Duration
}

// Node is one running gateway.
type Node struct {
	opts     Options
	log      *slog.Logger
	overlay  *overlay.Overlay
	registry *prometheus.Registry
	tokens   *tokenStore
	slices   *slice.Manager
	api      *http.Server
	apiLn    net.Listener
	vod      *vod.App
	vodKind  *vodKind // VoD apps in providers' slices
	vodHTTP  *http.Server
	vodLn    net.Listener

	closeOnce sync.Once
	closeErr  error
}

// New loads the identity and token from the data directory and starts the overlay and the
// API listener. On error everything already started is stopped.
func New(opts Options) (_ *Node, err error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	if err := opts.Config.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if opts.DataDir == "" {
		return nil, errors.New("node: no data directory")
	}
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory %s: %w", opts.DataDir, err)
	}
	priv, err := LoadOrCreateIdentity(filepath.Join(opts.DataDir, IdentityFile))
	if err != nil {
		return nil, err
	}
	n := &Node{opts: opts, log: opts.Logger, registry: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if opts.ProcessMetrics {
		n.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}

	cfg := opts.Config
	bootstrap, _ := parseBootstrap(cfg.Bootstrap) // validated above
	var reg prometheus.Registerer
	if cfg.API.Listen != APIOff {
		reg = n.registry
	}
	n.overlay, err = overlay.New(overlay.Config{
		PrivKey:       priv,
		ListenAddrs:   parseMultiaddrs(cfg.Listen),
		AnnounceAddrs: parseMultiaddrs(cfg.Announce),
		Bootstrap:     bootstrap,
		Labels:        cfg.Labels,
		MDNS:          cfg.MDNS,
		NAT: overlay.NAT{
			PortMap:      cfg.NAT.PortMap,
			HolePunching: cfg.NAT.HolePunching,
			RelayClient:  cfg.NAT.RelayClient,
			AutoNAT:      cfg.NAT.AutoNAT,
		},
		ConnLow:         cfg.ConnMgr.Low,
		ConnHigh:        cfg.ConnMgr.High,
		ConnGrace:       cfg.ConnMgr.Grace,
		DHTMode:         cfg.DHT.Mode,
		DHTRefresh:      cfg.DHT.RefreshInterval,
		DHTBucketSize:   cfg.DHT.BucketSize,
		GossipHeartbeat: cfg.GossipSub.Heartbeat,
		// Wired only now: before, keep_bucket_connections was read and then ignored.
		KeepDHTConnections: cfg.DHT.KeepBucketConnections,
		PingInterval:       cfg.PingInterval,
		PacketNetwork:      opts.PacketNetwork,
		Registerer:         reg,
		Libp2pRegisterer:   opts.Libp2pRegisterer,
		OnDialFailure:      opts.OnDialFailure,
		OnResourceRefused:  opts.OnRefused,
		Logger:             n.log.With("component", "overlay"),
		Version:            opts.Version,
	})
	if err != nil {
		return nil, err
	}

	if cfg.VOD.Enabled {
		if err := n.startVOD(reg); err != nil {
			return nil, err
		}
	}

	operator, _ := cfg.operatorID() // validated
	n.vodKind = &vodKind{n: n}
	n.slices, err = slice.New(context.Background(), slice.Options{
		Dir: filepath.Join(opts.DataDir, "slices"), Operator: operator, Overlay: n.overlay,
		Version: opts.Version, Logger: n.log.With("component", "slices"), Registerer: reg,
		CallTimeout: cfg.Slices.CallTimeout,
		Runtimes:    map[string]slice.Runtime{KindVOD: n.vodKind},
	})
	if err != nil {
		return nil, err
	}

	if cfg.API.Listen != APIOff {
		if n.tokens, err = loadTokens(opts.DataDir); err != nil {
			return nil, err
		}
		n.apiLn, err = net.Listen("tcp", cfg.API.Listen)
		if err != nil {
			return nil, fmt.Errorf("api.listen %s: %w", cfg.API.Listen, err)
		}
		n.api = &http.Server{Handler: n.apiHandler(), ReadHeaderTimeout: 10 * time.Second}
		if err := writeFileAtomic(filepath.Join(opts.DataDir, APIAddrFile), []byte(n.apiLn.Addr().String()+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("api address file: %w", err)
		}
	}
	n.log.Info("node started", "peer_id", n.overlay.ID(), "addrs", n.overlay.Addrs(), "api", n.APIAddr(), "version", opts.Version)
	return n, nil
}

func (n *Node) startVOD(reg prometheus.Registerer) error {
	v := n.opts.Config.VOD
	providers, _ := v.providerIDs() // validated
	strategy, _ := vod.ParseStrategy(v.Strategy)
	locality, _ := vod.ParseLocality(v.Locality) // validated
	vo := vod.Options{
		Overlay:    n.overlay,
		Dir:        filepath.Join(n.opts.DataDir, "vod"),
		CacheBytes: v.CacheBytes,
		Providers:  providers,
		Strategy:   strategy,
		Locality:   locality,
		MaxPeers:   v.MaxPeers,
		Readahead:  v.Readahead,
		// Upload to peers stays below the line's uplink (see VODConfig.UploadLimitBps).
		UploadLimiter: vod.NewUploadLimiter(v.UploadLimitBps),
		Logger:        n.log.With("component", "vod"),
		// Standard BitTorrent clients may fetch from the gateway when configured.
		BitTorrentListen: v.BitTorrentListen,
		Registerer:       reg,
	}
	if n.opts.VODOverride != nil {
		n.opts.VODOverride(&vo)
	}
	var err error
	if n.vod, err = vod.New(vo); err != nil {
		return err
	}
	if v.Listen != APIOff {
		if n.vodLn, err = net.Listen("tcp", v.Listen); err != nil {
			return fmt.Errorf("vod.listen %s: %w", v.Listen, err)
		}
		n.vodHTTP = &http.Server{Handler: n.vod.Handler(), ReadHeaderTimeout: 10 * time.Second}
	}
	return nil
}

// SliceVOD is the VoD app running in a provider's slice (nil if none runs there).
func (n *Node) SliceVOD(sliceID string) *vod.App { return n.vodKind.app(sliceID) }

// VOD is the node's video-on-demand app (nil when vod.enabled is false).
func (n *Node) VOD() *vod.App { return n.vod }

// VODAddr is where home players reach /vod/ ("" when off).
func (n *Node) VODAddr() string {
	if n.vodLn == nil {
		return ""
	}
	return n.vodLn.Addr().String()
}

// Slices is the node's slice manager.
func (n *Node) Slices() *slice.Manager { return n.slices }

// Overlay is the node's overlay membership.
func (n *Node) Overlay() *overlay.Overlay { return n.overlay }

// APIAddr is where the management API listens ("" when off).
func (n *Node) APIAddr() string {
	if n.apiLn == nil {
		return ""
	}
	return n.apiLn.Addr().String()
}

// Serve runs the node until ctx ends, then shuts the API down gracefully. Cancellation is
// not an error.
func (n *Node) Serve(ctx context.Context) error {
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	wg.Go(func() { errc <- n.overlay.Serve(ctx) })
	n.slices.ServeOverlay(ctx, n.overlay.Host())
	jitter := n.opts.AnnounceJitter
	if jitter == 0 {
		jitter = 10 * time.Second
	}
	wg.Go(func() { slice.Announce(ctx, n.overlay, jitter) })
	wg.Go(func() { n.slices.RunWatchdog(ctx, n.opts.Config.Slices.Watchdog, nil) })
	if n.vod != nil {
		wg.Go(func() { errc <- n.vod.Serve(ctx) })
	}
	if n.vodHTTP != nil {
		wg.Go(func() {
			if err := n.vodHTTP.Serve(n.vodLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("vod http: %w", err)
			}
		})
		wg.Go(func() {
			<-ctx.Done()
			_ = n.vodHTTP.Close() // players reconnect; streams have no graceful end
		})
	}
	if n.api != nil {
		wg.Go(func() {
			if err := n.api.Serve(n.apiLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("management API: %w", err)
			}
		})
		wg.Go(func() {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = n.api.Shutdown(sctx)
		})
	}
	wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Close stops the node; safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.api != nil {
			errs = append(errs, n.api.Close())
		}
		if n.apiLn != nil {
			_ = n.apiLn.Close() // already closed if Serve ran
			_ = os.Remove(filepath.Join(n.opts.DataDir, APIAddrFile))
		}
		if n.vodHTTP != nil {
			errs = append(errs, n.vodHTTP.Close())
		}
		if n.vodLn != nil {
			_ = n.vodLn.Close()
		}
		if n.vod != nil {
			errs = append(errs, n.vod.Close())
		}
		if n.slices != nil {
			errs = append(errs, n.slices.Close())
		}
		if n.overlay != nil {
			errs = append(errs, n.overlay.Close())
		}
		n.closeErr = errors.Join(errs...)
		n.log.Info("node stopped")
	})
	return n.closeErr
}
