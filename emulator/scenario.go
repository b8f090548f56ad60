package emulator

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/nanodc/nanodc/emulator/vnet"
	"github.com/nanodc/nanodc/internal/yamlstrict"
	"github.com/nanodc/nanodc/node"
)

// Scenario is one emulator run as a researcher writes it (emulator/scenarios/*.yaml).
type Scenario struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Seed makes topology, identities, workload and fault schedules reproducible;
	// --seed overrides it.
	Seed int64 `yaml:"seed"`
	// Duration of the measured phase, after start-up and Settle.
	Duration time.Duration `yaml:"duration"`
	// Settle is the quiet time between the last gateway starting and the workloads.
	Settle time.Duration `yaml:"settle"`
	// StartupRate paces start-up (gateways per second) so that connecting a large fleet
	// does not starve the CPU and invalidate the run before it begins.
	StartupRate float64                `yaml:"startup_rate"`
	Profiles    map[string]LinkProfile `yaml:"profiles"`
	Topology    Topology               `yaml:"topology"`
	Node        NodeSettings           `yaml:"node"`
	Workloads   []WorkloadSpec         `yaml:"workloads"`
	Faults      []FaultSpec            `yaml:"faults"`
	Validity    Validity               `yaml:"validity"`
	// DHTCheckLookups is how many gateways look up the CID provided at the end of the run
	// (the DHT check); a number >= the fleet size means all of them.
	DHTCheckLookups int `yaml:"dht_check_lookups"`
	// DHTCheckConcurrency is how many of those lookups run at once. Every lookup of one key
	// ends at the same few nodes closest to it, so this sets the load on them: 16 at once
	// saturated ADSL uplinks of a 1000-gateway fleet (docs/BENCHMARKS.md), which measures
	// a hot spot, not whether every gateway can find the CID.
	DHTCheckConcurrency int `yaml:"dht_check_concurrency"`
	// Variants run the whole scenario once per entry, on the same seed (same topology,
	// identities, workload and fault schedules), each with its own patch of the gateways'
	// node configuration: the way to compare strategies. Empty: one run.
	Variants []Variant `yaml:"variants"`
}

// Variant is one pass of a scenario with a patch on the gateways' node configuration (the
// YAML of `nanodc node` config, e.g. {vod: {strategy: cdn-only}}).
type Variant struct {
	Name string    `yaml:"name"`
	Node yaml.Node `yaml:"node"`
}

// apply patches cfg with the variant's node settings and checks the result.
func (v *Variant) apply(cfg *node.Config) error {
	if v.Node.Kind != 0 {
		if err := yamlstrict.DecodeNode(&v.Node, cfg); err != nil {
			return fmt.Errorf("variant %s: node.%w", v.Name, err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("variant %s: node.%w", v.Name, err)
	}
	return nil
}

// LinkProfile is an access link, per direction.
type LinkProfile struct {
	Down LinkSpec `yaml:"down"`
	Up   LinkSpec `yaml:"up"`
}

// LinkSpec is one direction of an access link (see emulator/profiles.yaml).
type LinkSpec struct {
	RateBps    int64         `yaml:"rate_bps"`
	QueueBytes int           `yaml:"queue_bytes"`
	Delay      time.Duration `yaml:"delay"`
	Jitter     time.Duration `yaml:"jitter"`
	Loss       float64       `yaml:"loss"`
	Reorder    bool          `yaml:"reorder"`
}

func (l LinkSpec) vnet() vnet.LinkConfig {
	return vnet.LinkConfig{RateBps: l.RateBps, QueueBytes: l.QueueBytes, Delay: l.Delay, Jitter: l.Jitter, Loss: l.Loss, Reorder: l.Reorder}
}

// Topology is ISPs → access nodes (DSLAM/POP) → gateways, plus a datacenter site.
type Topology struct {
	ISPs []ISPSpec `yaml:"isps"`
	// ISPDelay is the default one-way delay between two ISP cores.
	ISPDelay time.Duration `yaml:"isp_delay"`
	// ISPDelays overrides ISPDelay for given pairs.
	ISPDelays  []ISPDelay     `yaml:"isp_delays"`
	Datacenter DatacenterSpec `yaml:"datacenter"`
}

// ISPSpec describes one ISP's part of the fleet.
type ISPSpec struct {
	Name                  string `yaml:"name"`
	AccessNodes           int    `yaml:"access_nodes"`
	GatewaysPerAccessNode int    `yaml:"gateways_per_access_node"`
	// Profiles maps profile name → share of this ISP's gateways; shares are normalised and
	// gateways assigned in a seeded shuffle.
	Profiles map[string]float64 `yaml:"profiles"`
	// AccessDelay is the one-way delay from an access node to the ISP core.
	AccessDelay time.Duration `yaml:"access_delay"`
}

// ISPDelay is the one-way delay between two ISP cores.
type ISPDelay struct {
	A     string        `yaml:"a"`
	B     string        `yaml:"b"`
	Delay time.Duration `yaml:"delay"`
}

// DatacenterSpec is where the operator's bootstrap nodes (and later the providers'
// origins) sit.
type DatacenterSpec struct {
	Profile string `yaml:"profile"`
	// Delay is the one-way delay from the datacenter to every ISP core.
	Delay          time.Duration `yaml:"delay"`
	BootstrapNodes int           `yaml:"bootstrap_nodes"`
}

// NodeSettings tune the emulated gateways' node configuration.
type NodeSettings struct {
	ConnLow  int `yaml:"conn_low"`
	ConnHigh int `yaml:"conn_high"`
	// ConnGrace protects new connections from trimming for this long.
	ConnGrace    time.Duration `yaml:"conn_grace"`
	PingInterval time.Duration `yaml:"ping_interval"`
	// DHTRefresh and GossipHeartbeat override the node defaults (dht.refresh_interval,
	// gossipsub.heartbeat) when set.
	DHTRefresh      time.Duration `yaml:"dht_refresh"`
	GossipHeartbeat time.Duration `yaml:"gossip_heartbeat"`
	// DHTBucketSize overrides dht.bucket_size (Kademlia's k) when set.
	DHTBucketSize int `yaml:"dht_bucket_size"`
}

// WorkloadSpec names a workload type; the rest of the mapping is that workload's own
// parameters, decoded (strictly) by its factory.
type WorkloadSpec struct {
	Type   string
	Params yaml.Node
}

// UnmarshalYAML splits `type` from the workload's parameters.
func (w *WorkloadSpec) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: a workload is a mapping with a type", n.Line)
	}
	params := yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: n.Line}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "type" {
			w.Type = n.Content[i+1].Value
			continue
		}
		params.Content = append(params.Content, n.Content[i], n.Content[i+1])
	}
	w.Params = params
	return nil
}

// MarshalYAML writes the spec back as one mapping.
func (w WorkloadSpec) MarshalYAML() (any, error) {
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "type"}, &yaml.Node{Kind: yaml.ScalarNode, Value: w.Type})
	n.Content = append(n.Content, w.Params.Content...)
	return n, nil
}

// Validity sets when a run is declared invalid.
type Validity struct {
	// MaxLatenessP99 is the largest acceptable p99 lateness of the packet scheduler and of
	// packet delivery over the measured phase.
	MaxLatenessP99 time.Duration `yaml:"max_lateness_p99"`
}

//go:embed profiles.yaml
var builtinProfilesYAML []byte

// BuiltinProfiles returns the link profiles shipped in emulator/profiles.yaml.
func BuiltinProfiles() map[string]LinkProfile {
	var m map[string]LinkProfile
	if err := yamlstrict.Unmarshal(builtinProfilesYAML, &m); err != nil {
		panic("emulator/profiles.yaml: " + err.Error()) // embedded; a test covers it
	}
	return m
}

// LoadScenario reads and validates a scenario file.
func LoadScenario(path string) (*Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	s, err := ParseScenario(data)
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", path, err)
	}
	return s, nil
}

// ParseScenario decodes a scenario, fills defaults and validates it.
func ParseScenario(data []byte) (*Scenario, error) {
	s := &Scenario{
		Seed:        1,
		Duration:    30 * time.Second,
		Settle:      5 * time.Second,
		StartupRate: 50,
		Node:        NodeSettings{ConnLow: 16, ConnHigh: 48, ConnGrace: 30 * time.Second, PingInterval: 10 * time.Second},
		Validity:    Validity{MaxLatenessP99: 5 * time.Millisecond},

		DHTCheckLookups:     20,
		DHTCheckConcurrency: 4,
	}
	if err := yamlstrict.Unmarshal(data, s); err != nil {
		return nil, err
	}
	profiles := BuiltinProfiles()
	for name, p := range s.Profiles {
		profiles[name] = p
	}
	s.Profiles = profiles
	if s.Topology.ISPDelay == 0 {
		s.Topology.ISPDelay = 10 * time.Millisecond
	}
	if s.Topology.Datacenter.Profile == "" {
		s.Topology.Datacenter.Profile = "datacenter"
	}
	if s.Topology.Datacenter.Delay == 0 {
		s.Topology.Datacenter.Delay = 5 * time.Millisecond
	}
	if s.Topology.Datacenter.BootstrapNodes == 0 {
		s.Topology.Datacenter.BootstrapNodes = 2
	}
	for i := range s.Topology.ISPs {
		isp := &s.Topology.ISPs[i]
		if len(isp.Profiles) == 0 {
			isp.Profiles = map[string]float64{"adsl2plus": 1}
		}
		if isp.AccessDelay == 0 {
			isp.AccessDelay = 2 * time.Millisecond
		}
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return s, nil
}

var namePattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,31}$`)

func (s *Scenario) validate() error {
	if s.Name == "" {
		return errors.New("name: missing")
	}
	if s.Duration <= 0 {
		return fmt.Errorf("duration: must be positive, got %s", s.Duration)
	}
	if s.Settle < 0 {
		return fmt.Errorf("settle: must not be negative, got %s", s.Settle)
	}
	if s.StartupRate <= 0 {
		return fmt.Errorf("startup_rate: must be positive, got %g", s.StartupRate)
	}
	for name, p := range s.Profiles {
		for dir, l := range map[string]LinkSpec{"down": p.Down, "up": p.Up} {
			if l.RateBps < 0 || l.QueueBytes < 0 || l.Delay < 0 || l.Jitter < 0 || l.Loss < 0 || l.Loss >= 1 {
				return fmt.Errorf("profiles.%s.%s: rate, queue, delay and jitter must not be negative and loss must be in [0, 1)", name, dir)
			}
		}
	}
	t := s.Topology
	if len(t.ISPs) == 0 {
		return errors.New("topology.isps: at least one ISP is needed")
	}
	var names []string
	total := 0
	for i, isp := range t.ISPs {
		field := fmt.Sprintf("topology.isps[%d]", i)
		if !namePattern.MatchString(isp.Name) {
			return fmt.Errorf("%s.name: %q must be 1-32 letters, digits, '.', '_' or '-'", field, isp.Name)
		}
		if slices.Contains(names, isp.Name) {
			return fmt.Errorf("%s.name: %q used twice", field, isp.Name)
		}
		names = append(names, isp.Name)
		if isp.AccessNodes < 1 {
			return fmt.Errorf("%s.access_nodes: must be at least 1", field)
		}
		if isp.GatewaysPerAccessNode < 1 {
			return fmt.Errorf("%s.gateways_per_access_node: must be at least 1", field)
		}
		for p, share := range isp.Profiles {
			if _, ok := s.Profiles[p]; !ok {
				return fmt.Errorf("%s.profiles: unknown profile %q", field, p)
			}
			if share <= 0 {
				return fmt.Errorf("%s.profiles.%s: share must be positive", field, p)
			}
		}
		total += isp.AccessNodes * isp.GatewaysPerAccessNode
	}
	var variants []string
	for i, v := range s.Variants {
		field := fmt.Sprintf("variants[%d]", i)
		if !namePattern.MatchString(v.Name) {
			return fmt.Errorf("%s.name: %q must be 1-32 letters, digits, '.', '_' or '-'", field, v.Name)
		}
		if slices.Contains(variants, v.Name) {
			return fmt.Errorf("%s.name: %q used twice", field, v.Name)
		}
		variants = append(variants, v.Name)
		cfg := node.DefaultConfig()
		if err := v.apply(&cfg); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
	}
	if total > maxGateways {
		return fmt.Errorf("topology: %d gateways, at most %d fit the virtual address plan", total, maxGateways)
	}
	for i, d := range t.ISPDelays {
		if !slices.Contains(names, d.A) || !slices.Contains(names, d.B) {
			return fmt.Errorf("topology.isp_delays[%d]: unknown ISP %q or %q", i, d.A, d.B)
		}
	}
	if _, ok := s.Profiles[t.Datacenter.Profile]; !ok {
		return fmt.Errorf("topology.datacenter.profile: unknown profile %q", t.Datacenter.Profile)
	}
	if t.Datacenter.BootstrapNodes < 1 || t.Datacenter.BootstrapNodes > 16 {
		return fmt.Errorf("topology.datacenter.bootstrap_nodes: must be 1 to 16")
	}
	if s.Node.ConnLow < 1 || s.Node.ConnHigh < s.Node.ConnLow {
		return fmt.Errorf("node: need 1 <= conn_low <= conn_high, got %d and %d", s.Node.ConnLow, s.Node.ConnHigh)
	}
	if s.Node.PingInterval < time.Second {
		return fmt.Errorf("node.ping_interval: must be at least 1s")
	}
	for i, w := range s.Workloads {
		if w.Type == "" {
			return fmt.Errorf("workloads[%d].type: missing", i)
		}
	}
	for i, f := range s.Faults {
		if err := f.validate(); err != nil {
			return fmt.Errorf("faults[%d].%w", i, err)
		}
	}
	if s.DHTCheckLookups < 1 {
		return errors.New("dht_check_lookups: must be at least 1")
	}
	if s.DHTCheckConcurrency < 1 {
		return errors.New("dht_check_concurrency: must be at least 1")
	}
	if s.Validity.MaxLatenessP99 <= 0 {
		return errors.New("validity.max_lateness_p99: must be positive")
	}
	return nil
}

// Gateways is the number of gateways the topology describes.
func (s *Scenario) Gateways() int {
	n := 0
	for _, isp := range s.Topology.ISPs {
		n += isp.AccessNodes * isp.GatewaysPerAccessNode
	}
	return n
}
