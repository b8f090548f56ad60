package emulator

import (
	"context"
	"math/rand/v2"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/nanodc/nanodc/emulator/report"
	"github.com/nanodc/nanodc/node"
)

// Workload is traffic or user behaviour a scenario runs on the fleet. A scenario names it
// by type; the composition root registers the factories (Options.Workloads), so new
// workloads (VoD, game, automation) plug in without changing the emulator's core.
type Workload interface {
	// Start launches the workload on the fleet and returns; it runs until ctx ends.
	Start(ctx context.Context, env *Env) error
	// Wait blocks until every goroutine Start launched has ended (after ctx ends).
	Wait()
	// Sample records the workload's figures for the second that just ended.
	Sample(rec *Recorder)
	// Summary is the workload's section of summary.json.
	Summary() any
	// Report is the workload's part of report.html: a summary table and plots.
	Report(rec *Recorder) (report.Table, []report.Plot)
}

// NodeStartHook is implemented by workloads that serve a protocol on every gateway: the
// emulator calls it whenever a gateway's node (re)starts.
type NodeStartHook interface {
	NodeStarted(g *Gateway)
}

// Warmer is implemented by workloads whose first part prepares what is measured (pushes
// before viewers come): the emulator judges validity from the end of the longest warm-up on
// and reports the warm-up's timing error apart. Nothing the workload measures may come from
// its warm-up.
type Warmer interface {
	Warmup() time.Duration
}

// Preparer is implemented by workloads with heavy set-up (content to generate and hash): the
// emulator calls Prepare before the fleet starts, so that the work neither slows start-up nor
// shows as timing error in the measured phase. env.Start and env.Duration are not set yet.
type Preparer interface {
	Prepare(ctx context.Context, env *Env) error
}

// NodeConfigurer is implemented by workloads that need something of every gateway's node
// (an app enabled, an observer, a client that reaches a service over the virtual network).
// The emulator calls it before each (re)start of a node, after the scenario's settings and
// the variant's node patch were applied.
type NodeConfigurer interface {
	ConfigureNode(g *Gateway, opts *node.Options)
}

// Comparer is implemented by workloads whose figures are worth comparing across a
// scenario's variants (strategies): the emulator hands it the same workload's instances, one
// per variant in order, with their recorders, and puts the result in the comparison report.
type Comparer interface {
	Compare(variants []string, runs []Workload, recs []*Recorder) (report.Table, []report.Plot)
}

// WorkloadFactory builds a workload from its scenario parameters (decode them with
// yamlstrict.DecodeNode so that typos are errors naming the field).
type WorkloadFactory func(params *yaml.Node) (Workload, error)

// Env is what a running workload may use.
type Env struct {
	Fleet *Fleet
	// Rand is the workload's own generator, derived from the seed and the workload's
	// position in the scenario: its schedule does not depend on other workloads.
	Rand     *rand.Rand
	Duration time.Duration // of the measured phase
	Start    time.Time     // of the measured phase
}

// BuiltinWorkloads are the workloads that ship with the emulator's core.
func BuiltinWorkloads() map[string]WorkloadFactory {
	return map[string]WorkloadFactory{
		"ping":       newPingWorkload,
		"throughput": newThroughputWorkload,
	}
}
