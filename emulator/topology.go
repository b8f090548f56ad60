package emulator

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"time"
)

// maxGateways is what the address plan 127.1.0.1 … 127.1.239.250 holds.
const maxGateways = 60000

// datacenterSite is the site of the operator's bootstrap nodes and providers' origins.
const datacenterSite = "datacenter"

// gatewaySpec is one gateway's place in the topology, fixed by the scenario and seed.
type gatewaySpec struct {
	Index      int    `json:"index"`
	Name       string `json:"name"`
	ISP        string `json:"isp"`
	AccessNode string `json:"access_node"` // the vnet site, "ISP/an-N"
	Profile    string `json:"profile"`
	IP         net.IP `json:"ip"`
}

// topology is the expanded, deterministic topology of a run.
type topology struct {
	gateways  []gatewaySpec
	bootstrap []gatewaySpec // in the datacenter
	sites     []string      // access nodes, in order
	ispNames  []string
	// delays between sites, one-way; set on the virtual network.
	delays map[[2]string]time.Duration
}

func gatewayIP(i int) net.IP { return net.IPv4(127, 1, byte(i/250), byte(i%250+1)) }

// buildTopology expands the scenario's ISPs into gateways; rng decides profile placement.
func buildTopology(s *Scenario, rng *rand.Rand) *topology {
	t := &topology{delays: map[[2]string]time.Duration{}}
	accessDelay := map[string]time.Duration{}
	siteISP := map[string]string{}
	for _, isp := range s.Topology.ISPs {
		t.ispNames = append(t.ispNames, isp.Name)
		n := isp.AccessNodes * isp.GatewaysPerAccessNode
		profiles := apportion(isp.Profiles, n)
		rng.Shuffle(len(profiles), func(i, j int) { profiles[i], profiles[j] = profiles[j], profiles[i] })
		k := 0
		for a := range isp.AccessNodes {
			site := fmt.Sprintf("%s/an-%d", isp.Name, a)
			t.sites = append(t.sites, site)
			accessDelay[site] = isp.AccessDelay
			siteISP[site] = isp.Name
			for range isp.GatewaysPerAccessNode {
				i := len(t.gateways)
				t.gateways = append(t.gateways, gatewaySpec{
					Index: i, Name: fmt.Sprintf("gw-%04d", i), ISP: isp.Name, AccessNode: site,
					Profile: profiles[k], IP: gatewayIP(i),
				})
				k++
			}
		}
	}
	for b := range s.Topology.Datacenter.BootstrapNodes {
		t.bootstrap = append(t.bootstrap, gatewaySpec{
			Index: b, Name: fmt.Sprintf("boot-%d", b), ISP: "operator", AccessNode: datacenterSite,
			Profile: s.Topology.Datacenter.Profile, IP: net.IPv4(127, 255, 0, byte(b+1)),
		})
	}
	ispDelay := func(a, b string) time.Duration {
		if a == b {
			return 0
		}
		for _, d := range s.Topology.ISPDelays {
			if d.A == a && d.B == b || d.A == b && d.B == a {
				return d.Delay
			}
		}
		return s.Topology.ISPDelay
	}
	for i, a := range t.sites {
		for _, b := range t.sites[i+1:] {
			t.delays[[2]string{a, b}] = accessDelay[a] + ispDelay(siteISP[a], siteISP[b]) + accessDelay[b]
		}
		t.delays[[2]string{a, datacenterSite}] = accessDelay[a] + s.Topology.Datacenter.Delay
	}
	return t
}

// apportion splits n gateways over profiles by share (largest remainder), in name order so
// that the result depends only on the scenario.
func apportion(shares map[string]float64, n int) []string {
	names := make([]string, 0, len(shares))
	total := 0.0
	for name, s := range shares {
		names = append(names, name)
		total += s
	}
	sort.Strings(names)
	type rem struct {
		name string
		frac float64
	}
	var out []string
	var rems []rem
	for _, name := range names {
		exact := shares[name] / total * float64(n)
		whole := int(math.Floor(exact))
		for range whole {
			out = append(out, name)
		}
		rems = append(rems, rem{name, exact - float64(whole)})
	}
	slices.SortStableFunc(rems, func(a, b rem) int {
		switch {
		case a.frac > b.frac:
			return -1
		case a.frac < b.frac:
			return 1
		}
		return 0
	})
	for i := 0; len(out) < n; i++ {
		out = append(out, rems[i%len(rems)].name)
	}
	return out
}
