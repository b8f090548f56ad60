package node

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/nanodc/nanodc/internal/yamlstrict"
	"github.com/nanodc/nanodc/node/slice"
	"github.com/nanodc/nanodc/overlay"
	"github.com/nanodc/nanodc/vod"
)

// Config is the node's YAML configuration. Every field is documented in docs/config.md;
// keep the two in step.
type Config struct {
	Listen       []string        `yaml:"listen"`
	Announce     []string        `yaml:"announce"`
	Bootstrap    []string        `yaml:"bootstrap"`
	Labels       overlay.Labels  `yaml:"labels"`
	MDNS         bool            `yaml:"mdns"`
	NAT          NATConfig       `yaml:"nat"`
	ConnMgr      ConnMgrConfig   `yaml:"connmgr"`
	DHT          DHTConfig       `yaml:"dht"`
	GossipSub    GossipSubConfig `yaml:"gossipsub"`
	PingInterval time.Duration   `yaml:"ping_interval"`
	API          APIConfig       `yaml:"api"`
	Log          LogConfig       `yaml:"log"`
	VOD          VODConfig       `yaml:"vod"`
	// Operator is the operator's peer ID: over the overlay, that peer manages every slice.
	Operator string       `yaml:"operator"`
	Slices   SlicesConfig `yaml:"slices"`
}

// SlicesConfig tunes the slice manager.
type SlicesConfig struct {
	// CallTimeout bounds one call into a WebAssembly app (default 100ms); a call past it
	// ends the app with a fault.
	CallTimeout time.Duration `yaml:"call_timeout"`
	// Watchdog stops the top consumer slice's apps when the gateway passes a threshold.
	Watchdog slice.WatchdogConfig `yaml:"watchdog"`
}

func (cfg *Config) operatorID() (peer.ID, error) {
	if cfg.Operator == "" {
		return "", nil
	}
	id, err := peer.Decode(cfg.Operator)
	if err != nil {
		return "", fmt.Errorf("operator: %q is not a peer ID: %w", cfg.Operator, err)
	}
	return id, nil
}

// VODConfig configures the peer-assisted video-on-demand app.
type VODConfig struct {
	// Enabled runs the app: the gateway caches, seeds and streams the providers' titles.
	Enabled bool `yaml:"enabled"`
	// Listen is where home players fetch /vod/{title} (host:port, or "off"). It is the home
	// network's side of the gateway and needs no token: a <video> element cannot send one.
	Listen string `yaml:"listen"`
	// Strategy: nanodc (default), bittorrent or cdn-only (the last two are baselines).
	Strategy string `yaml:"strategy"`
	// CacheBytes is the storage quota for cached and pushed titles.
	CacheBytes int64 `yaml:"cache_bytes"`
	// Providers are the peer IDs whose signed titles the gateway accepts (empty: any).
	Providers []string `yaml:"providers"`
	// MaxPeers is how many peers per title the gateway connects to, nearest first.
	MaxPeers int `yaml:"max_peers"`
	// Locality (nanodc strategy): isp (default) streams from the gateway's own ISP first;
	// rtt from the nearest holders by RTT wherever they are (more offload in small swarms,
	// several times the cross-ISP bytes).
	Locality string `yaml:"locality"`
	// Readahead is how much video ahead of a player the gateway asks peers for (nanodc
	// strategy; default 8s, at most 1m).
	Readahead time.Duration `yaml:"readahead"`
	// UploadLimitBps caps the app's upload to peers, bits/s (0: none). Set it a little below
	// the line's uplink (about 80 %): a saturated DSL uplink stalls the home's own streams.
	UploadLimitBps int64 `yaml:"upload_limit_bps"`
	// BitTorrentListen (host:port) also accepts standard BitTorrent clients over TCP; "" off.
	BitTorrentListen string `yaml:"bittorrent_listen"`
}

// NATConfig switches the NAT traversal helpers.
type NATConfig struct {
	PortMap      bool `yaml:"port_map"`
	HolePunching bool `yaml:"hole_punching"`
	RelayClient  bool `yaml:"relay_client"`
	AutoNAT      bool `yaml:"autonat"`
}

// ConnMgrConfig sets the connection manager's watermarks.
type ConnMgrConfig struct {
	Low   int           `yaml:"low"`
	High  int           `yaml:"high"`
	Grace time.Duration `yaml:"grace"`
}

// DHTConfig sets the Kademlia DHT.
type DHTConfig struct {
	Mode string `yaml:"mode"`
	// KeepBucketConnections lets the DHT pin connections to its widest buckets' peers
	// (go-libp2p-kad-dht's default); off, the connmgr watermarks hold.
	KeepBucketConnections bool `yaml:"keep_bucket_connections"`
	// RefreshInterval is how often the routing table is refreshed (each refresh dials dozens
	// of peers, several times what joining dials).
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// BucketSize is Kademlia's k: peers per routing-table bucket, peers a lookup ends on
	// (and dials), copies of each provider record.
	BucketSize int `yaml:"bucket_size"`
}

// GossipSubConfig tunes the fleet's publish/subscribe layer.
type GossipSubConfig struct {
	// Heartbeat is the mesh upkeep and lazy-gossip period.
	Heartbeat time.Duration `yaml:"heartbeat"`
}

// APIConfig places the local management API.
type APIConfig struct {
	Listen string `yaml:"listen"`
}

// LogConfig sets the structured log.
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// APIOff in api.listen disables the management API (the emulator runs hundreds of nodes).
const APIOff = "off"

// DefaultConfig is what a node runs with when the file leaves a field out.
func DefaultConfig() Config {
	return Config{
		Listen:       []string{"/ip4/0.0.0.0/udp/4001/quic-v1", "/ip4/0.0.0.0/tcp/4001"},
		MDNS:         true,
		NAT:          NATConfig{PortMap: true, HolePunching: true, RelayClient: true, AutoNAT: true},
		ConnMgr:      ConnMgrConfig{Low: 32, High: 96, Grace: 30 * time.Second},
		DHT:          DHTConfig{Mode: overlay.DHTServer, RefreshInterval: 10 * time.Minute, BucketSize: 20},
		GossipSub:    GossipSubConfig{Heartbeat: time.Second},
		PingInterval: 30 * time.Second,
		API:          APIConfig{Listen: "127.0.0.1:7780"},
		Log:          LogConfig{Level: "info", Format: "text"},
		VOD:          VODConfig{Listen: "127.0.0.1:7781", Strategy: "nanodc", Locality: "isp", CacheBytes: 10 << 30, MaxPeers: 8},
	}
}

// LoadConfig reads path over the defaults. A missing file is an error; an empty path
// returns the defaults.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	if path == "" {
		return cfg, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if err := cfg.decode(data); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// decode applies YAML over cfg, strictly (see yamlstrict).
func (cfg *Config) decode(data []byte) error { return yamlstrict.Unmarshal(data, cfg) }

// Validate checks every field and names the first one that is wrong.
func (cfg *Config) Validate() error {
	if len(cfg.Listen) == 0 {
		return errors.New("listen: at least one address is needed")
	}
	if _, err := cfg.operatorID(); err != nil {
		return err
	}
	if cfg.Slices.CallTimeout < 0 || cfg.Slices.CallTimeout > time.Minute {
		return errors.New("slices.call_timeout: must be in [0, 1m]")
	}
	if err := cfg.Slices.Watchdog.Validate(); err != nil {
		return fmt.Errorf("slices.%w", err)
	}
	for i, s := range cfg.Listen {
		if _, err := ma.NewMultiaddr(s); err != nil {
			return fmt.Errorf("listen[%d]: %q is not a multiaddr: %w", i, s, err)
		}
	}
	for i, s := range cfg.Announce {
		if _, err := ma.NewMultiaddr(s); err != nil {
			return fmt.Errorf("announce[%d]: %q is not a multiaddr: %w", i, s, err)
		}
	}
	if _, err := parseBootstrap(cfg.Bootstrap); err != nil {
		return err
	}
	if err := cfg.Labels.Validate(); err != nil {
		return fmt.Errorf("labels.%w", err)
	}
	if cfg.ConnMgr.Low < 1 {
		return fmt.Errorf("connmgr.low: must be at least 1, got %d", cfg.ConnMgr.Low)
	}
	if cfg.ConnMgr.High < cfg.ConnMgr.Low {
		return fmt.Errorf("connmgr.high: %d is below connmgr.low %d", cfg.ConnMgr.High, cfg.ConnMgr.Low)
	}
	if cfg.ConnMgr.Grace < 0 {
		return fmt.Errorf("connmgr.grace: must not be negative, got %s", cfg.ConnMgr.Grace)
	}
	switch cfg.DHT.Mode {
	case overlay.DHTServer, overlay.DHTClient, overlay.DHTAuto:
	default:
		return fmt.Errorf("dht.mode: %q is not one of server, client, auto", cfg.DHT.Mode)
	}
	if cfg.PingInterval < time.Second {
		return fmt.Errorf("ping_interval: must be at least 1s, got %s", cfg.PingInterval)
	}
	if cfg.DHT.RefreshInterval < time.Minute || cfg.DHT.RefreshInterval > 24*time.Hour {
		return fmt.Errorf("dht.refresh_interval: must be in [1m, 24h], got %s", cfg.DHT.RefreshInterval)
	}
	if cfg.DHT.BucketSize < 4 || cfg.DHT.BucketSize > 64 {
		return fmt.Errorf("dht.bucket_size: must be in [4, 64], got %d", cfg.DHT.BucketSize)
	}
	if cfg.GossipSub.Heartbeat < 100*time.Millisecond || cfg.GossipSub.Heartbeat > time.Minute {
		return fmt.Errorf("gossipsub.heartbeat: must be in [100ms, 1m], got %s", cfg.GossipSub.Heartbeat)
	}
	if cfg.API.Listen != APIOff {
		host, port, err := net.SplitHostPort(cfg.API.Listen)
		if err != nil {
			return fmt.Errorf("api.listen: %q is not host:port (or %q): %w", cfg.API.Listen, APIOff, err)
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("api.listen: %q is not a loopback address; the management API is local only", host)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			return fmt.Errorf("api.listen: bad port %q", port)
		}
	}
	switch cfg.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q is not one of debug, info, warn, error", cfg.Log.Level)
	}
	switch cfg.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("log.format: %q is not one of text, json", cfg.Log.Format)
	}
	return cfg.VOD.validate()
}

func (v *VODConfig) validate() error {
	if v.Listen != APIOff {
		if _, port, err := net.SplitHostPort(v.Listen); err != nil {
			return fmt.Errorf("vod.listen: %q is not host:port (or %q): %w", v.Listen, APIOff, err)
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			return fmt.Errorf("vod.listen: bad port %q", port)
		}
	}
	if v.BitTorrentListen != "" {
		if _, _, err := net.SplitHostPort(v.BitTorrentListen); err != nil {
			return fmt.Errorf("vod.bittorrent_listen: %q is not host:port: %w", v.BitTorrentListen, err)
		}
	}
	if _, err := vod.ParseStrategy(v.Strategy); err != nil {
		return fmt.Errorf("vod.strategy: %w", err)
	}
	if v.CacheBytes < 0 {
		return fmt.Errorf("vod.cache_bytes: must not be negative, got %d", v.CacheBytes)
	}
	if v.MaxPeers < 0 {
		return fmt.Errorf("vod.max_peers: must not be negative, got %d", v.MaxPeers)
	}
	if _, err := vod.ParseLocality(v.Locality); err != nil {
		return fmt.Errorf("vod.locality: %w", err)
	}
	if v.UploadLimitBps < 0 {
		return fmt.Errorf("vod.upload_limit_bps: must not be negative, got %d", v.UploadLimitBps)
	}
	if v.Readahead < 0 || v.Readahead > time.Minute {
		return fmt.Errorf("vod.readahead: must be in [0, 1m] (0: default), got %s", v.Readahead)
	}
	if _, err := v.providerIDs(); err != nil {
		return err
	}
	return nil
}

func (v *VODConfig) providerIDs() ([]peer.ID, error) {
	var out []peer.ID
	for i, s := range v.Providers {
		id, err := peer.Decode(s)
		if err != nil {
			return nil, fmt.Errorf("vod.providers[%d]: %q is not a peer ID: %w", i, s, err)
		}
		out = append(out, id)
	}
	return out, nil
}

func parseBootstrap(addrs []string) ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	for i, s := range addrs {
		m, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("bootstrap[%d]: %q is not a multiaddr: %w", i, s, err)
		}
		ai, err := peer.AddrInfoFromP2pAddr(m)
		if err != nil {
			return nil, fmt.Errorf("bootstrap[%d]: %q must end in /p2p/<peer ID>: %w", i, s, err)
		}
		out = append(out, *ai)
	}
	return out, nil
}

func parseMultiaddrs(ss []string) []ma.Multiaddr {
	out := make([]ma.Multiaddr, 0, len(ss))
	for _, s := range ss {
		if m, err := ma.NewMultiaddr(s); err == nil { // Validate has rejected bad ones
			out = append(out, m)
		}
	}
	return out
}
