package emulator

import (
	"context"
	"runtime/debug"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/nanodc/nanodc/emulator/report"
)

// tinyFleet is a scenario's fleet for tests that need a run but not a network to speak
// of: 3 gateways and a bootstrap node, 2 s measured.
const tinyFleet = `
duration: 2s
settle: 1s
startup_rate: 40
topology:
  isps:
    - {name: isp-a, access_nodes: 1, gateways_per_access_node: 3, profiles: {vdsl2: 1}}
  isp_delay: 10ms
  datacenter: {profile: datacenter, delay: 5ms, bootstrap_nodes: 1}
node: {conn_low: 4, conn_high: 8, ping_interval: 5s}
dht_check_lookups: 1
`

const gcPaceScenario = `
name: gc-pace
seed: 1
workloads:
  - type: gogc
` + tinyFleet

// gogcProbe reads the collector's GOGC when the measured phase starts.
type gogcProbe struct{ atStart int64 }

func (p *gogcProbe) Start(context.Context, *Env) error { p.atStart = currentGOGC(); return nil }
func (p *gogcProbe) Wait()                             {}
func (p *gogcProbe) Sample(*Recorder)                  {}
func (p *gogcProbe) Summary() any                      { return nil }
func (p *gogcProbe) Report(*Recorder) (report.Table, []report.Plot) {
	return report.Table{}, nil
}

func currentGOGC() int64 { return int64(uint64Metric("/gc/gogc:percent")) }

// TestMeasuredGCPercent: the workloads run at the collector pace the options ask for, and the
// process's own pace (start-up's) is back once the run is over.
func TestMeasuredGCPercent(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 3-gateway emulation")
	}
	prev := debug.SetGCPercent(60)
	defer debug.SetGCPercent(prev)
	sc, err := ParseScenario([]byte(gcPaceScenario))
	if err != nil {
		t.Fatal(err)
	}
	probe := &gogcProbe{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err = Run(ctx, sc, Options{OutDir: t.TempDir(), MeasuredGCPercent: 777, Workloads: map[string]WorkloadFactory{
		"gogc": func(*yaml.Node) (Workload, error) { return probe, nil },
	}})
	if err != nil {
		t.Fatal(err)
	}
	if probe.atStart != 777 {
		t.Errorf("GOGC %d while measuring, want 777", probe.atStart)
	}
	if got := currentGOGC(); got != 60 {
		t.Errorf("GOGC %d after the run, want the process's 60 back", got)
	}
}
