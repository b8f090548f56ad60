package emulator

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FaultSpec is one line of a scenario's fault schedule. Times are offsets into the
// measured phase.
//
//	{at: 10s, action: kill, target: random, for: 5s}          # restart after 5s (0: stays dead)
//	{at: 12s, action: link-down, target: gateway:3, for: 4s}  # the gateway's WAN link
//	{at: 20s, action: access-down, target: isp-a/an-1, for: 5s} # an access node's uplink
//	{at: 25s, action: partition, target: isp-b, for: 5s}      # cut an ISP off the others
//	{action: churn, rate_per_min: 6, for: 10s, at: 5s, until: 35s} # random kills, mean down time `for`
type FaultSpec struct {
	At         time.Duration `yaml:"at"`
	Action     string        `yaml:"action"`
	Target     string        `yaml:"target"`
	For        time.Duration `yaml:"for"`
	RatePerMin float64       `yaml:"rate_per_min"`
	Until      time.Duration `yaml:"until"`
}

// Fault actions.
const (
	FaultKill       = "kill"
	FaultLinkDown   = "link-down"
	FaultAccessDown = "access-down"
	FaultPartition  = "partition"
	FaultChurn      = "churn"
)

func (f FaultSpec) validate() error {
	if f.At < 0 || f.For < 0 {
		return errors.New("at/for: must not be negative")
	}
	switch f.Action {
	case FaultKill, FaultLinkDown:
		if f.Target != "random" && !strings.HasPrefix(f.Target, "gateway:") {
			return fmt.Errorf("target: %q, want random or gateway:N", f.Target)
		}
	case FaultAccessDown:
		if f.Target != "random" && !strings.Contains(f.Target, "/") {
			return fmt.Errorf("target: %q, want random or ISP/an-N", f.Target)
		}
	case FaultPartition:
		if f.Target == "" {
			return errors.New("target: the ISP to cut off")
		}
	case FaultChurn:
		if f.RatePerMin <= 0 || f.RatePerMin > 6000 {
			return errors.New("rate_per_min: churn needs a rate in (0, 6000]")
		}
		if f.For <= 0 {
			return errors.New("for: churn needs a mean down time")
		}
		if f.Until <= f.At {
			return errors.New("until: must be after at")
		}
	default:
		return fmt.Errorf("action: %q is not one of kill, link-down, access-down, partition, churn", f.Action)
	}
	return nil
}

// event is one concrete step of the expanded fault schedule.
type event struct {
	At      time.Duration `json:"at_ns"`
	Kind    string        `json:"kind"` // kill, restart, link-down, link-up, access-down, access-up, partition, heal
	Gateway int           `json:"gateway,omitempty"`
	Target  string        `json:"target"`
}

// maxFaultEvents bounds a schedule (a typo in a churn rate must not eat the memory).
const maxFaultEvents = 100_000

// expandFaults turns the scenario's fault lines into a time-ordered list of events, with
// every random choice drawn from rng so that a seed fixes the whole schedule.
func expandFaults(specs []FaultSpec, t *topology, horizon time.Duration, rng *rand.Rand) ([]event, error) {
	var out []event
	pickGateway := func(target string) (int, error) {
		if target == "random" {
			return rng.IntN(len(t.gateways)), nil
		}
		i, err := strconv.Atoi(strings.TrimPrefix(target, "gateway:"))
		if err != nil || i < 0 || i >= len(t.gateways) {
			return 0, fmt.Errorf("target %q: no such gateway (0..%d)", target, len(t.gateways)-1)
		}
		return i, nil
	}
	// down[i] is when gateway i comes back, so churn does not kill a dead gateway.
	down := map[int]time.Duration{}
	for i, f := range specs {
		switch f.Action {
		case FaultKill, FaultLinkDown:
			g, err := pickGateway(f.Target)
			if err != nil {
				return nil, fmt.Errorf("faults[%d].%w", i, err)
			}
			on, off := "kill", "restart"
			if f.Action == FaultLinkDown {
				on, off = "link-down", "link-up"
			}
			name := t.gateways[g].Name
			out = append(out, event{At: f.At, Kind: on, Gateway: g, Target: name})
			if f.For > 0 {
				out = append(out, event{At: f.At + f.For, Kind: off, Gateway: g, Target: name})
				down[g] = max(down[g], f.At+f.For)
			} else {
				down[g] = horizon
			}
		case FaultAccessDown:
			site := f.Target
			if site == "random" {
				site = t.sites[rng.IntN(len(t.sites))]
			} else if !slices.Contains(t.sites, site) {
				return nil, fmt.Errorf("faults[%d].target: no access node %q", i, site)
			}
			out = append(out, event{At: f.At, Kind: "access-down", Target: site})
			if f.For > 0 {
				out = append(out, event{At: f.At + f.For, Kind: "access-up", Target: site})
			}
		case FaultPartition:
			if !slices.ContainsFunc(t.ispNames, func(s string) bool { return s == f.Target }) {
				return nil, fmt.Errorf("faults[%d].target: no ISP %q", i, f.Target)
			}
			out = append(out, event{At: f.At, Kind: "partition", Target: f.Target})
			if f.For > 0 {
				out = append(out, event{At: f.At + f.For, Kind: "heal", Target: f.Target})
			}
		case FaultChurn:
			// A Poisson process of kills; each victim stays down an exponential time.
			mean := time.Duration(float64(time.Minute) / f.RatePerMin)
			for at := f.At + time.Duration(rng.ExpFloat64()*float64(mean)); at < f.Until; at += time.Duration(rng.ExpFloat64() * float64(mean)) {
				g := rng.IntN(len(t.gateways))
				if down[g] > at {
					continue
				}
				back := at + max(time.Second, time.Duration(rng.ExpFloat64()*float64(f.For)))
				down[g] = back
				name := t.gateways[g].Name
				out = append(out, event{At: at, Kind: "kill", Gateway: g, Target: name}, event{At: back, Kind: "restart", Gateway: g, Target: name})
				if len(out) > maxFaultEvents {
					return nil, fmt.Errorf("faults[%d]: churn makes more than %d events; lower rate_per_min or shorten it", i, maxFaultEvents)
				}
			}
		}
	}
	slices.SortStableFunc(out, func(a, b event) int { return int(a.At - b.At) })
	return out, nil
}
