package emulator

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/nanodc/nanodc/node"
)

func TestBuiltinProfiles(t *testing.T) {
	p := BuiltinProfiles()
	for _, name := range []string{"adsl2plus", "vdsl2", "cable", "ftth", "datacenter"} {
		if _, ok := p[name]; !ok {
			t.Errorf("built-in profile %q missing", name)
		}
	}
	if got := p["adsl2plus"]; got.Down.RateBps != 24e6 || got.Up.RateBps != 1.4e6 {
		t.Errorf("adsl2plus = %+v, want 24/1.4 Mbit/s", got)
	}
}

func TestShippedScenariosParse(t *testing.T) {
	files, _ := filepath.Glob("scenarios/*.yaml")
	if len(files) == 0 {
		t.Fatal("no scenarios shipped")
	}
	for _, f := range files {
		s, err := LoadScenario(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		for i, w := range s.Workloads {
			factory, ok := BuiltinWorkloads()[w.Type]
			if !ok {
				continue // provided by another package (vod, ...)
			}
			if _, err := factory(&w.Params); err != nil {
				t.Errorf("%s: workloads[%d]: %v", f, i, err)
			}
		}
	}
}

const minimal = "name: t\ntopology:\n  isps:\n    - {name: a, access_nodes: 2, gateways_per_access_node: 3}\n"

func TestScenarioErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown field", minimal + "durration: 3s\n", "field durration not found"},
		{"bad duration", minimal + "duration: soon\n", "duration"},
		{"no name", "topology: {isps: [{name: a, access_nodes: 1, gateways_per_access_node: 1}]}\n", "name: missing"},
		{"no isps", "name: t\n", "topology.isps"},
		{"bad isp count", "name: t\ntopology: {isps: [{name: a, access_nodes: 0, gateways_per_access_node: 1}]}\n", "topology.isps[0].access_nodes"},
		{"unknown profile", "name: t\ntopology: {isps: [{name: a, access_nodes: 1, gateways_per_access_node: 1, profiles: {dialup: 1}}]}\n", `unknown profile "dialup"`},
		{"wrong type deep", "name: t\ntopology:\n  isps:\n    - name: a\n      access_nodes: many\n", "topology.isps[0].access_nodes"},
		{"bad loss", minimal + "profiles: {x: {up: {loss: 1.5}}}\n", "profiles.x.up"},
		{"bad fault", minimal + "faults: [{at: 1s, action: explode}]\n", "faults[0].action"},
		{"churn without until", minimal + "faults: [{action: churn, rate_per_min: 5, for: 2s}]\n", "faults[0].until"},
		{"workload without type", minimal + "workloads: [{pairs: 3}]\n", "workloads[0].type"},
		{"too many gateways", "name: t\ntopology: {isps: [{name: a, access_nodes: 1000, gateways_per_access_node: 100}]}\n", "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseScenario([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestWorkloadParamErrors(t *testing.T) {
	s, err := ParseScenario([]byte(minimal + "workloads: [{type: ping, pairz: 3}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newPingWorkload(&s.Workloads[0].Params); err == nil || !strings.Contains(err.Error(), "pairz") {
		t.Fatalf("err = %v, want it to name pairz", err)
	}
}

// TestSeedDeterminism: the same seed gives the same topology, identities, fault schedule
// and workload choices; another seed changes them.
func TestSeedDeterminism(t *testing.T) {
	data, err := os.ReadFile("scenarios/smoke.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ParseScenario(data)
	if err != nil {
		t.Fatal(err)
	}
	sc.Faults = append(sc.Faults, FaultSpec{Action: FaultChurn, RatePerMin: 30, For: 3 * time.Second, At: time.Second, Until: 20 * time.Second})
	type plan struct {
		Profiles []string
		Events   []event
		Pairs    []string
		Peers    []string
	}
	planFor := func(seed int64) plan {
		topo := buildTopology(sc, rand.New(rand.NewPCG(uint64(seed), 1)))
		evs, err := expandFaults(sc.Faults, topo, sc.Duration, rand.New(rand.NewPCG(uint64(seed), 2)))
		if err != nil {
			t.Fatal(err)
		}
		f, err := newFleet(sc, topo, seed, t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var p plan
		for _, g := range topo.gateways {
			p.Profiles = append(p.Profiles, g.Profile)
		}
		for _, g := range f.Gateways {
			id, err := identityID(g.dataDir)
			if err != nil {
				t.Fatal(err)
			}
			p.Peers = append(p.Peers, id)
		}
		p.Events = evs
		env := &Env{Fleet: f, Rand: rand.New(rand.NewPCG(uint64(seed), 100))}
		for _, pr := range pickPairs(env, 10) {
			p.Pairs = append(p.Pairs, pr.src.Name+">"+pr.dst.Name)
		}
		return p
	}
	a, b, c := planFor(1), planFor(1), planFor(2)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("same seed, different plans:\n%+v\n%+v", a, b)
	}
	if reflect.DeepEqual(a.Profiles, c.Profiles) || reflect.DeepEqual(a.Events, c.Events) || reflect.DeepEqual(a.Pairs, c.Pairs) || reflect.DeepEqual(a.Peers, c.Peers) {
		t.Fatalf("different seeds gave an identical part of the plan")
	}
	if len(a.Events) < 8 {
		t.Fatalf("expected churn events in the schedule, got %d events", len(a.Events))
	}
}

func FuzzParseScenario(f *testing.F) {
	data, _ := os.ReadFile("scenarios/smoke.yaml")
	f.Add(data)
	f.Add([]byte(minimal))
	f.Add([]byte(minimal + "faults: [{action: churn, rate_per_min: 5, for: 2s, until: 9s}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseScenario(data)
		if err != nil {
			return
		}
		if s.Gateways() < 1 || s.Gateways() > maxGateways {
			t.Fatalf("accepted a scenario with %d gateways", s.Gateways())
		}
		topo := buildTopology(s, rand.New(rand.NewPCG(1, 1)))
		if len(topo.gateways) != s.Gateways() {
			t.Fatalf("topology has %d gateways, scenario says %d", len(topo.gateways), s.Gateways())
		}
		_, _ = expandFaults(s.Faults, topo, s.Duration, rand.New(rand.NewPCG(1, 2)))
	})
}

// identityID is the peer ID of the key node.New will load from dir.
func identityID(dir string) (string, error) {
	priv, err := node.LoadOrCreateIdentity(filepath.Join(dir, node.IdentityFile))
	if err != nil {
		return "", err
	}
	id, err := peer.IDFromPrivateKey(priv)
	return id.String(), err
}
