package emulator

import (
	"slices"
	"testing"

	"github.com/nanodc/nanodc/emulator/report"
)

// TestFaultSpans: partitions and access-node outages become spans from their start to their
// end (or the end of the run), per target; single gateways' faults and failed events do not.
func TestFaultSpans(t *testing.T) {
	ev := func(at float64, kind, target, err string) appliedEvent {
		return appliedEvent{event: event{Kind: kind, Target: target}, AtSeconds: at, Error: err}
	}
	applied := []appliedEvent{
		ev(10, "kill", "gw-0003", ""),
		ev(20, "partition", "isp-b", ""),
		ev(25, "access-down", "isp-a/an-0", ""),
		ev(26, "restart", "gw-0003", ""),
		ev(30, "heal", "isp-b", ""),
		ev(32, "access-down", "isp-a/an-1", "no such access node"),
		ev(40, "access-down", "isp-a/an-0", ""), // already down: the span goes on
		ev(50, "partition", "isp-a", ""),        // never healed: to the run's end
		ev(55, "access-up", "isp-a/an-0", ""),
	}
	got := faultSpans(applied, 120)
	want := []report.Span{
		{From: 20, To: 30, Label: "partition isp-b"},
		{From: 25, To: 55, Label: "outage isp-a/an-0"},
		{From: 50, To: 120, Label: "partition isp-a"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("spans = %+v, want %+v", got, want)
	}
	if got := faultSpans(nil, 120); len(got) != 0 {
		t.Errorf("no faults: spans %+v", got)
	}
}
