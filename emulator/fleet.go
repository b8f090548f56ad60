package emulator

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nanodc/nanodc/emulator/vnet"
	"github.com/nanodc/nanodc/node"
	"github.com/nanodc/nanodc/overlay"
)

// Gateway is one emulated gateway: a real node.Node whose packets cross a vnet.Host.
type Gateway struct {
	gatewaySpec
	Host    *vnet.Host
	dataDir string

	mu     sync.Mutex
	node   *node.Node
	cancel context.CancelFunc
	done   chan struct{}
}

// DataDir is the gateway's data directory (its identity key is there before it first starts).
func (g *Gateway) DataDir() string { return g.dataDir }

// Node is the running node, nil while the gateway is down.
func (g *Gateway) Node() *node.Node {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.node
}

// Overlay is the running node's overlay, nil while the gateway is down.
func (g *Gateway) Overlay() *overlay.Overlay {
	if n := g.Node(); n != nil {
		return n.Overlay()
	}
	return nil
}

// Fleet is the emulated network and every node on it.
type Fleet struct {
	Net       *vnet.Network
	Gateways  []*Gateway
	Bootstrap []*Gateway
	scenario  *Scenario
	log       *slog.Logger
	libp2pReg *prometheus.Registry
	onStart   []func(*Gateway) // workloads register their protocols on every (re)start
	configure []func(*Gateway, *node.Options)
	variant   *Variant
	bootAddrs []string
	delays    map[[2]string]time.Duration
	dials     *dialLog // nil: failed dials are only counted
	refused   refusals
}

// refusals counts what the gateways' resource managers refused, fleet-wide, by
// "scope/resource/direction" (overlay.Config.OnResourceRefused).
type refusals struct {
	mu sync.Mutex
	by map[string]float64
}

func (r *refusals) add(what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.by == nil {
		r.by = map[string]float64{}
	}
	r.by[what]++
}

func (r *refusals) snapshot() map[string]float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.by)
}

// siteDelay is the one-way backbone delay between two sites.
func (f *Fleet) siteDelay(a, b string) time.Duration {
	if a == b {
		return 0
	}
	if d, ok := f.delays[[2]string{a, b}]; ok {
		return d
	}
	return f.delays[[2]string{b, a}]
}

// newFleet lays out the virtual network and the gateways' data directories; no node runs yet.
func newFleet(s *Scenario, t *topology, seed int64, dir string, log *slog.Logger) (_ *Fleet, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{
		Net:       vnet.New(vnet.Options{Seed: seed}),
		scenario:  s,
		log:       log,
		libp2pReg: prometheus.NewRegistry(),
		delays:    t.delays,
	}
	for pair, d := range t.delays {
		f.Net.SetSiteDelay(pair[0], pair[1], d)
	}
	keys := rand.New(rand.NewPCG(uint64(seed), 0x6e616e6f6463)) // identities: fixed by the seed
	// add places a gateway on the network and writes its identity; it returns the peer ID.
	add := func(spec gatewaySpec) (*Gateway, string, error) {
		p := s.Profiles[spec.Profile]
		h, err := f.Net.AddHost(vnet.HostConfig{IP: spec.IP, Site: spec.AccessNode, Up: p.Up.vnet(), Down: p.Down.vnet()})
		if err != nil {
			return nil, "", fmt.Errorf("gateway %s: %w", spec.Name, err)
		}
		g := &Gateway{gatewaySpec: spec, Host: h, dataDir: filepath.Join(dir, spec.Name)}
		var seed [ed25519.SeedSize]byte
		for i := range seed {
			seed[i] = byte(keys.Uint32())
		}
		id, err := writeIdentity(g.dataDir, seed[:])
		return g, id, err
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	for _, spec := range t.bootstrap {
		g, id, err := add(spec)
		if err != nil {
			return nil, err
		}
		f.Bootstrap = append(f.Bootstrap, g)
		f.bootAddrs = append(f.bootAddrs, fmt.Sprintf("/ip4/%s/udp/4001/quic-v1/p2p/%s", spec.IP, id))
	}
	for _, spec := range t.gateways {
		g, _, err := add(spec)
		if err != nil {
			return nil, err
		}
		f.Gateways = append(f.Gateways, g)
	}
	return f, nil
}

// writeIdentity stores a deterministic Ed25519 key where node.New will load it and returns
// the peer ID it gives.
func writeIdentity(dir string, seed []byte) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	priv, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(seed))
	if err != nil {
		return "", err
	}
	raw, err := crypto.MarshalPrivateKey(priv)
	if err != nil {
		return "", err
	}
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return "", err
	}
	return id.String(), os.WriteFile(filepath.Join(dir, node.IdentityFile), raw, 0o600)
}

// nodeConfig is the configuration every emulated gateway runs with: the production
// defaults, minus what makes no sense on the virtual network.
func (f *Fleet) nodeConfig(g *Gateway) node.Config {
	cfg := node.DefaultConfig()
	cfg.Listen = []string{fmt.Sprintf("/ip4/%s/udp/4001/quic-v1", g.IP)}
	cfg.Bootstrap = f.bootAddrs
	cfg.Labels = overlay.Labels{ISP: g.ISP, AccessNode: g.AccessNode, Extra: map[string]string{"profile": g.Profile}}
	cfg.MDNS = false           // no LAN multicast between emulated homes
	cfg.NAT = node.NATConfig{} // every virtual address is reachable
	cfg.API.Listen = node.APIOff
	cfg.ConnMgr.Low, cfg.ConnMgr.High = f.scenario.Node.ConnLow, f.scenario.Node.ConnHigh
	cfg.ConnMgr.Grace = f.scenario.Node.ConnGrace
	cfg.PingInterval = f.scenario.Node.PingInterval
	if d := f.scenario.Node.DHTRefresh; d > 0 {
		cfg.DHT.RefreshInterval = d
	}
	if d := f.scenario.Node.GossipHeartbeat; d > 0 {
		cfg.GossipSub.Heartbeat = d
	}
	if k := f.scenario.Node.DHTBucketSize; k > 0 {
		cfg.DHT.BucketSize = k
	}
	cfg.Log.Level = "warn"
	return cfg
}

// isBootstrap tells the operator's bootstrap nodes from gateways.
func (g *Gateway) isBootstrap() bool { return g.AccessNode == datacenterSite }

// AddDatacenterHost puts a host (a provider's origin, say) in the datacenter site, behind
// the datacenter profile's link, so that reaching it crosses the gateways' shaped links.
func (f *Fleet) AddDatacenterHost(ip net.IP) (*vnet.Host, error) {
	p := f.scenario.Profiles[f.scenario.Topology.Datacenter.Profile]
	return f.Net.AddHost(vnet.HostConfig{IP: ip, Site: datacenterSite, Up: p.Up.vnet(), Down: p.Down.vnet()})
}

// Profile returns a link profile of the scenario by name.
func (f *Fleet) Profile(name string) LinkProfile { return f.scenario.Profiles[name] }

// Start brings a gateway's node up (again, after a kill: same identity, same address).
func (f *Fleet) Start(g *Gateway) error {
	if err := f.startNode(g); err != nil {
		return err
	}
	for _, hook := range f.onStart {
		hook(g)
	}
	return nil
}

func (f *Fleet) startNode(g *Gateway) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.node != nil {
		return nil
	}
	opts := node.Options{
		Config:           f.nodeConfig(g),
		DataDir:          g.dataDir,
		Version:          "emulated",
		Logger:           f.log.With("gateway", g.Name),
		PacketNetwork:    g.Host,
		Libp2pRegisterer: f.libp2pReg,
		OnRefused:        f.refused.add,
	}
	if f.dials != nil {
		from := g.Name
		opts.OnDialFailure = func(addr ma.Multiaddr, err, cause error) { f.dials.record(from, addr, err, cause) }
	}
	if f.variant != nil && !g.isBootstrap() {
		if err := f.variant.apply(&opts.Config); err != nil {
			return fmt.Errorf("gateway %s: %w", g.Name, err)
		}
	}
	if !g.isBootstrap() {
		for _, c := range f.configure {
			c(g, &opts)
		}
	}
	n, err := node.New(opts)
	if err != nil {
		return fmt.Errorf("gateway %s: %w", g.Name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.node, g.cancel, g.done = n, cancel, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		if err := n.Serve(ctx); err != nil {
			f.log.Warn("node stopped with error", "gateway", g.Name, "err", err)
		}
	}(g.done)
	return nil
}

// Kill stops a gateway's node abruptly for the network (its conns close), cleanly for the
// process.
func (f *Fleet) Kill(g *Gateway) error {
	g.mu.Lock()
	n, cancel, done := g.node, g.cancel, g.done
	g.node = nil
	g.mu.Unlock()
	if n == nil {
		return nil
	}
	cancel()
	<-done
	return n.Close()
}

// Up counts the gateways whose node runs.
func (f *Fleet) Up() int {
	up := 0
	for _, g := range f.Gateways {
		if g.Node() != nil {
			up++
		}
	}
	return up
}

// Close stops every node and the network.
func (f *Fleet) Close() error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	sem := make(chan struct{}, 16)
	for _, g := range append(append([]*Gateway{}, f.Gateways...), f.Bootstrap...) {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f.Kill(g); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	errs = append(errs, f.Net.Close())
	return errors.Join(errs...)
}

// startPaced starts gateways at up to rate per second. Every second it looks at how late
// the network ran; while the p99 is above limit it holds further starts back, so that the
// burst of handshakes and DHT lookups of new nodes cannot starve the ones already up.
// If it has to hold for stallAfter in a row, the machine cannot run this fleet validly and
// it gives up with an error saying how far it got.
func (f *Fleet) startPaced(ctx context.Context, gws []*Gateway, rate float64, limit, stallAfter time.Duration, progress func(started int, held bool)) error {
	interval := time.Duration(float64(time.Second) / rate)
	next, check := time.Now(), time.Now().Add(time.Second)
	held, heldSince := false, time.Time{}
	for i := 0; i < len(gws); {
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(check) {
			sched, reader := f.Net.TakeLateness()
			p99 := max(sched.P99, reader.P99)
			wasHeld := held
			held = p99 > limit
			switch {
			case held && !wasHeld:
				heldSince = time.Now()
			case held && time.Since(heldSince) > stallAfter:
				return fmt.Errorf("start-up stalled at %d of %d gateways: the emulator's timing error stayed above %s (p99 %s) for %s; this machine cannot run this fleet validly", i, len(gws), limit, p99.Round(time.Millisecond), stallAfter)
			}
			check = time.Now().Add(time.Second)
		}
		if !held {
			if err := f.Start(gws[i]); err != nil {
				return err
			}
			i++
			next = next.Add(interval)
		} else {
			next = time.Now().Add(interval)
		}
		progress(i, held)
		if !sleepCtx(ctx, time.Until(next)) && ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}
