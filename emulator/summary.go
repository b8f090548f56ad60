package emulator

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nanodc/nanodc/emulator/report"
	"github.com/nanodc/nanodc/emulator/vnet"
)

// Summary is summary.json: what a run measured, and whether it can be trusted.
type Summary struct {
	Scenario        string          `json:"scenario"`
	Variant         string          `json:"variant,omitempty"`
	Description     string          `json:"description,omitempty"`
	Seed            int64           `json:"seed"`
	Gateways        int             `json:"gateways"`
	BootstrapNodes  int             `json:"bootstrap_nodes"`
	Valid           bool            `json:"valid"`
	InvalidReasons  []string        `json:"invalid_reasons,omitempty"`
	StartupSeconds  float64         `json:"startup_s"`
	SettleSeconds   float64         `json:"settle_s"`
	DurationSeconds float64         `json:"duration_s"`
	Lateness        LatenessSummary `json:"lateness"`
	// LatenessWarmup is the timing error during the workloads' warm-up (see Warmer), which
	// the validity verdict leaves out: nothing is measured then.
	LatenessWarmup *LatenessSummary `json:"lateness_warmup,omitempty"`
	WarmupSeconds  float64          `json:"warmup_s,omitempty"`
	Peers          PeersSummary     `json:"peers"`
	DHT            DHTSummary       `json:"dht_check"`
	Handshakes     struct {
		Startup HandshakeFigures `json:"startup"` // start-up and settle
		Total   HandshakeFigures `json:"total"`   // the whole run, faults included
	} `json:"handshakes"`
	Memory struct {
		PeakRSSMB            float64 `json:"peak_rss_mb"`           // the process's high-water mark
		RSSAfterStartMB      float64 `json:"rss_settled_mb"`        // right after start-up (DHT joins' connections still open), after a GC, without the heap's free pages
		RSSEndMB             float64 `json:"rss_end_mb"`            // after the measured phase
		GoHeapMB             float64 `json:"go_heap_in_use_mb"`     // at the end
		PerGatewayMB         float64 `json:"rss_per_node_mb"`       // settled RSS over the empty process, per node
		LiveHeapPerGatewayMB float64 `json:"live_heap_per_node_mb"` // live Go heap after settle, per node
		GoroutinesPerGateway float64 `json:"goroutines_per_node"`
		// The steady state: after the measured phase and a GC, without the heap's free pages.
		EndPerGatewayMB         float64 `json:"rss_end_per_node_mb"`
		EndLiveHeapPerGatewayMB float64 `json:"live_heap_end_per_node_mb"`
		EndGoroutinesPerGateway float64 `json:"goroutines_end_per_node"`
		// Where the end state's memory is, per node (see memoryClasses): what to work on
		// first to make gateways smaller.
		EndClassesPerGatewayMB map[string]float64 `json:"classes_end_per_node_mb,omitempty"`
	} `json:"memory"`
	CPU struct {
		CoresUsed        float64 `json:"cores_used"`         // average over the measured phase
		StartupCoresUsed float64 `json:"startup_cores_used"` // average over start-up and settle
		// Over the measured phase: what holds a processor away from the packet scheduler.
		PageFaultsPerSecond float64 `json:"page_faults_per_s"`
		GCCycles            uint64  `json:"gc_cycles"`
		// How long runnable goroutines waited for a processor (p99, sampled by the Go
		// runtime): set beside the scheduler's lateness, it says whether the lateness was a
		// wait for a processor or a timer that fired late.
		RunQueueWaitP99Ms float64 `json:"run_queue_wait_ms_p99"`
	} `json:"cpu"`
	Goroutines int            `json:"goroutines"`
	Network    NetworkSummary `json:"network"`
	Faults     []appliedEvent `json:"faults"`
	Workloads  map[string]any `json:"workloads"`
	GoVersion  string         `json:"go_version"`
	CPUs       int            `json:"cpus"`
	// MachineTimerFloor is how late this machine wakes a sleeping goroutine while one
	// processor is busy, measured before the fleet starts: the part of the lateness budget
	// no fleet can win back.
	MachineTimerFloor *LatenessFigures `json:"machine_timer_floor,omitempty"`
	// TimerCanary is the same probe, without the busy processor, kept running beside the
	// fleet through the measured phase: late with the packet scheduler, the machine or the
	// runtime woke everything late; on time while it is late, the emulator held it up.
	TimerCanary *LatenessFigures `json:"timer_canary,omitempty"`
	// MachineMemoryMonitors are the kernel's DAMON threads running on this machine (see
	// memoryMonitors): where there is one, it takes a share of the lateness budget that grows
	// with the fleet's memory.
	MachineMemoryMonitors []string `json:"machine_memory_monitors,omitempty"`
	// A scenario with variants: each variant's own summary, in the scenario's order.
	// Workloads then holds, per workload, its section per variant.
	VariantOrder []string            `json:"variant_order,omitempty"`
	Variants     map[string]*Summary `json:"variants,omitempty"`
	// Comparison holds the comparers' tables, for the terminal.
	Comparison []report.Table `json:"-"`
}

// HandshakeFigures count libp2p connection set-ups over the fleet.
type HandshakeFigures struct {
	Completed float64            `json:"completed"`
	Failed    float64            `json:"failed_dials"`
	Canceled  float64            `json:"canceled_dials"`
	ByKind    map[string]float64 `json:"dial_errors_by_kind"`
	// Blocked counts what the nodes' resource managers refused, by "scope/resource/direction"
	// (the whole fleet; a refused connection or stream fails the other side's dial or open).
	Blocked map[string]float64 `json:"rcmgr_blocked,omitempty"`
}

// LatenessSummary is how late the emulated network acted during the measured phase.
type LatenessSummary struct {
	Scheduler LatenessFigures `json:"scheduler"`
	Reader    LatenessFigures `json:"delivery"`
}

// LatenessFigures are in milliseconds.
type LatenessFigures struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

func latenessOf(l vnet.Lateness) LatenessFigures {
	return LatenessFigures{Count: l.Count, P50: ms(l.P50), P99: ms(l.P99), Max: ms(l.Max)}
}

// PeersSummary is the fleet's connectivity at the end of the run.
type PeersSummary struct {
	Min                int     `json:"min"`
	Median             int     `json:"median"`
	Max                int     `json:"max"`
	Avg                float64 `json:"avg"`
	GatewaysBelow8     int     `json:"gateways_below_8"`
	RoutingTableMedian int     `json:"routing_table_median"`
}

// DHTSummary is the end-of-run DHT check: one gateway provides, others look it up.
type DHTSummary struct {
	Provider         string  `json:"provider"`
	ProvideSeconds   float64 `json:"provide_s"`
	ProvideError     string  `json:"provide_error,omitempty"`
	Lookups          int     `json:"lookups"`
	Found            int     `json:"found"`
	LookupSecondsP50 any     `json:"lookup_s_p50"`
	LookupSecondsP95 any     `json:"lookup_s_p95"`
}

// NetworkSummary counts packets on the virtual network over the whole run.
type NetworkSummary struct {
	Sent      uint64     `json:"packets_sent"`
	Delivered uint64     `json:"packets_delivered"`
	Dropped   vnet.Drops `json:"packets_dropped"`
}

func networkOf(s vnet.Stats) NetworkSummary {
	return NetworkSummary{Sent: s.Sent, Delivered: s.Delivered, Dropped: s.Dropped}
}

// writeJSONFile writes v to path as indented JSON, the way every summary file is written.
func writeJSONFile(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

func (r *run) writeOutputs(sum *Summary) error {
	if err := writeJSONFile(filepath.Join(r.opts.OutDir, "summary.json"), sum); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(r.opts.OutDir, "timeseries.csv"))
	if err != nil {
		return err
	}
	if err := r.rec.WriteCSV(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return report.WriteFile(filepath.Join(r.opts.OutDir, "report.html"), r.report(sum))
}

func (r *run) report(sum *Summary) report.Report {
	verdict := report.Verdict{Valid: sum.Valid, Reason: strings.Join(sum.InvalidReasons, "; ")}
	if sum.Valid {
		verdict.Reason = fmt.Sprintf("scheduler and delivery lateness p99 within %s", r.sc.Validity.MaxLatenessP99)
	}
	rep := report.Report{
		Title:    "nanodc emulator: " + sum.Scenario,
		Subtitle: fmt.Sprintf("%s · seed %d · %d gateways · %s · %s", r.opts.ScenarioPath, sum.Seed, sum.Gateways, time.Now().UTC().Format(time.RFC3339), sum.GoVersion),
		Verdict:  verdict,
		Tables:   []report.Table{SummaryTable(sum)},
	}
	line := func(title, ylabel string, names ...string) report.Plot {
		p := report.Plot{Title: title, Kind: report.Line, XLabel: "time (s)", YLabel: ylabel}
		for _, n := range names {
			t, y := r.rec.Series(n)
			p.Series = append(p.Series, report.Series{Name: n[strings.IndexByte(n, '.')+1:], X: t, Y: y})
		}
		return p
	}
	var profiles []string
	for _, g := range r.fleet.Gateways {
		if !slices.Contains(profiles, g.Profile) {
			profiles = append(profiles, g.Profile)
		}
	}
	slices.Sort(profiles)
	prefixed := func(prefix string) []string {
		out := make([]string, len(profiles))
		for i, p := range profiles {
			out[i] = prefix + p
		}
		return out
	}
	rep.Sections = append(rep.Sections, report.Section{Title: "Network", Plots: []report.Plot{
		line("Uplink throughput per link class (sum over gateways)", "throughput (Mbit/s)", prefixed("up_mbps.")...),
		line("Downlink throughput per link class (sum over gateways)", "throughput (Mbit/s)", prefixed("down_mbps.")...),
		line("Uplink queueing delay per link class (average over gateways)", "queueing delay (ms)", prefixed("uplink_queue_ms_avg.")...),
	}}, report.Section{Title: "Fleet and validity", Plots: []report.Plot{
		line("Gateways up and connectivity", "count", "gateways_up", "peers_avg", "peers_min"),
		line("Emulator timing error, a 1 ms sleeper beside it, and goroutines' wait for a processor (p99 per second)", "lateness / wait (ms)", "lateness_ms_p99.scheduler", "lateness_ms_p99.delivery", "timer_canary_ms_p99", "timer_canary_ms_max", "run_queue_wait_ms_p99"),
		line("Processors: cores used and GC cycles completed, per second", "cores / cycles", "cpu_cores", "gc_cycles"),
		line("Page faults per second (each holds a processor; 15-20 µs on some VMs)", "faults/s", "page_faults_per_s"),
	}})
	for i, w := range r.workloads {
		tab, plots := w.Report(r.rec)
		if len(tab.Rows) > 0 {
			rep.Tables = append(rep.Tables, tab)
		}
		rep.Sections = append(rep.Sections, report.Section{Title: "Workload: " + workloadKey(r.sc.Workloads, i), Plots: plots})
	}
	// The outages that hit many gateways at once, shaded on every plot over the run's time,
	// so that a dip or a stall can be read against them (one gateway's kill or link-down is
	// in the faults table: churn would shade the whole run).
	if spans := faultSpans(sum.Faults, sum.DurationSeconds); len(spans) > 0 {
		for si := range rep.Sections {
			for pi := range rep.Sections[si].Plots {
				if p := &rep.Sections[si].Plots[pi]; p.Kind == report.Line && p.XLabel == "time (s)" {
					p.Spans = spans
				}
			}
		}
	}
	if len(sum.Faults) > 0 {
		ft := report.Table{Title: "Faults applied", Columns: []string{"at (s)", "event", "target", "error"}}
		for _, f := range sum.Faults {
			ft.Rows = append(ft.Rows, []string{fmt.Sprintf("%.1f", f.AtSeconds), f.Kind, f.Target, f.Error})
		}
		rep.Tables = append(rep.Tables, ft)
	}
	rep.Notes = []string{
		"Every gateway is a real nanodc node (same code as `nanodc node`) whose UDP sockets are replaced by the emulator's shaped in-memory network; all peer traffic crosses the emulated access links.",
		"Lateness is how late the emulator delivered packets compared with the link model. Past the validity threshold the CPU could not keep up and timing figures (RTT, throughput) are not trustworthy.",
	}
	return rep
}

// SummaryTable is the key figures of a run as a table, for the terminal and the report.
func SummaryTable(s *Summary) report.Table {
	valid := "valid"
	if !s.Valid {
		valid = "INVALID: " + strings.Join(s.InvalidReasons, "; ")
	}
	rows := [][]string{
		{"scenario", fmt.Sprintf("%s (seed %d)", s.Scenario, s.Seed)},
		{"verdict", valid},
		{"gateways", fmt.Sprintf("%d (+%d bootstrap)", s.Gateways, s.BootstrapNodes)},
		{"start-up", fmt.Sprintf("%.1f s, then %.1f s to settle", s.StartupSeconds, s.SettleSeconds)},
		{"peers per gateway", fmt.Sprintf("min %d, median %d, max %d; %d gateways below 8", s.Peers.Min, s.Peers.Median, s.Peers.Max, s.Peers.GatewaysBelow8)},
		{"DHT check", fmt.Sprintf("found from %d of %d gateways (provide %.2f s, lookup p50 %v s)", s.DHT.Found, s.DHT.Lookups, s.DHT.ProvideSeconds, fmtAny(s.DHT.LookupSecondsP50))},
		{"handshakes", fmt.Sprintf("%.0f completed and %.0f failed dials at start-up; %.0f / %.0f over the run (faults included)%s", s.Handshakes.Startup.Completed, s.Handshakes.Startup.Failed, s.Handshakes.Total.Completed, s.Handshakes.Total.Failed, kinds(s.Handshakes.Total))},
		{"lateness p50/p99/max", fmt.Sprintf("scheduler %.2f/%.2f/%.2f ms, delivery %.2f/%.2f/%.2f ms", s.Lateness.Scheduler.P50, s.Lateness.Scheduler.P99, s.Lateness.Scheduler.Max, s.Lateness.Reader.P50, s.Lateness.Reader.P99, s.Lateness.Reader.Max)},
		{"lateness in the warm-up", warmupLateness(s)},
		{"machine timer floor", timerFloorText(s.MachineTimerFloor)},
		{"timer canary", timerCanaryText(s.TimerCanary)},
		{"kernel memory monitor", memoryMonitorText(s.MachineMemoryMonitors)},
		{"memory", fmt.Sprintf("peak RSS %.0f MB; after start-up %.0f MB = %.2f MB per node (live heap %.2f MB, %.0f goroutines per node)", s.Memory.PeakRSSMB, s.Memory.RSSAfterStartMB, s.Memory.PerGatewayMB, s.Memory.LiveHeapPerGatewayMB, s.Memory.GoroutinesPerGateway)},
		{"memory at end", fmt.Sprintf("%.0f MB = %.2f MB per node (live heap %.2f MB, %.0f goroutines per node)", s.Memory.RSSEndMB, s.Memory.EndPerGatewayMB, s.Memory.EndLiveHeapPerGatewayMB, s.Memory.EndGoroutinesPerGateway)},
		{"memory at end by class", memoryClassesText(s.Memory.EndClassesPerGatewayMB)},
		{"CPU", fmt.Sprintf("%.2f cores during the run (%d GC cycles, %.0f page faults/s, run-queue wait p99 %.2f ms), %.2f during start-up", s.CPU.CoresUsed, s.CPU.GCCycles, s.CPU.PageFaultsPerSecond, s.CPU.RunQueueWaitP99Ms, s.CPU.StartupCoresUsed)},
		{"packets", fmt.Sprintf("%d sent, %d delivered, %d dropped", s.Network.Sent, s.Network.Delivered, s.Network.Dropped.Total())},
	}
	return report.Table{Title: "Summary", Columns: []string{"figure", "value"}, Rows: rows}
}

func timerFloorText(f *LatenessFigures) string {
	if f == nil {
		return "not measured"
	}
	return fmt.Sprintf("p50/p99/max %.2f/%.2f/%.2f ms: a goroutine sleeping 1 ms while another keeps a processor busy, before the fleet started", f.P50, f.P99, f.Max)
}

func memoryMonitorText(monitors []string) string {
	if len(monitors) == 0 {
		return "none running"
	}
	return strings.Join(monitors, "; ") + ": its scans of the process's pages hold a processor for milliseconds at a time (docs/emulator.md)"
}

// memoryClassesText prints memoryClasses largest first.
func memoryClassesText(c map[string]float64) string {
	if len(c) == 0 {
		return "not measured"
	}
	keys := slices.Collect(maps.Keys(c))
	slices.SortFunc(keys, func(a, b string) int { return cmp.Compare(c[b], c[a]) })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %.2f", strings.ReplaceAll(k, "_", " "), c[k])
	}
	return strings.Join(parts, ", ") + " MB per node"
}

func timerCanaryText(f *LatenessFigures) string {
	if f == nil {
		return "not measured"
	}
	return fmt.Sprintf("p50/p99/max %.2f/%.2f/%.2f ms: a goroutine sleeping 1 ms beside the fleet through the run", f.P50, f.P99, f.Max)
}

func warmupLateness(s *Summary) string {
	w := s.LatenessWarmup
	if w == nil {
		return "no warm-up"
	}
	return fmt.Sprintf("p99 scheduler %.2f ms, delivery %.2f ms over the first %.0f s (not judged: nothing is measured then)", w.Scheduler.P99, w.Reader.P99, s.WarmupSeconds)
}

func fmtAny(v any) string {
	if f, ok := v.(float64); ok {
		return fmt.Sprintf("%.2f", f)
	}
	return "-"
}

// PrintSummary writes the summary table and each workload's key figures to w.
func PrintSummary(w io.Writer, s *Summary) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(s.Variants) > 0 {
		for _, name := range s.VariantOrder {
			v := s.Variants[name]
			verdict := "valid"
			if !v.Valid {
				verdict = "INVALID: " + strings.Join(v.InvalidReasons, "; ")
			}
			fmt.Fprintf(tw, "variant %s\t%s; start-up %.1f s; lateness p99 %.2f/%.2f ms; peak RSS %.0f MB\n", name, verdict, v.StartupSeconds, v.Lateness.Scheduler.P99, v.Lateness.Reader.P99, v.Memory.PeakRSSMB)
		}
		fmt.Fprintf(tw, "machine timer floor\t%s\n", timerFloorText(s.MachineTimerFloor))
		fmt.Fprintf(tw, "kernel memory monitor\t%s\n", memoryMonitorText(s.MachineMemoryMonitors))
		for _, t := range s.Comparison {
			fmt.Fprintf(tw, "\n%s\n", t.Title)
			fmt.Fprintf(tw, "%s\n", strings.Join(t.Columns, "\t"))
			for _, row := range t.Rows {
				fmt.Fprintf(tw, "%s\n", strings.Join(row, "\t"))
			}
		}
		tw.Flush()
		return
	}
	for _, row := range SummaryTable(s).Rows {
		fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
	}
	for _, name := range mapKeys(s.Workloads) {
		b, _ := json.Marshal(s.Workloads[name])
		fmt.Fprintf(tw, "workload %s\t%s\n", name, b)
	}
	tw.Flush()
}

// kinds lists a run's dial errors by kind and what resource managers refused, if anything.
func kinds(h HandshakeFigures) string {
	var parts []string
	for _, m := range []map[string]float64{h.ByKind, h.Blocked} {
		keys := slices.Sorted(maps.Keys(m))
		for _, k := range keys {
			if m[k] > 0 && k != "application canceled" { // cancelled dials did not fail
				parts = append(parts, fmt.Sprintf("%s %.0f", k, m[k]))
			}
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "; " + strings.Join(parts, ", ")
}

// faultSpans pairs the applied partitions and access-node outages with their ends: the
// stretches of the run they covered (to the end of the run when they never ended).
func faultSpans(applied []appliedEvent, end float64) []report.Span {
	// Each kind of outage by its starting and ending event, and the span's label.
	kinds := map[string]struct {
		start bool
		label string
	}{
		"partition": {true, "partition "}, "heal": {false, "partition "},
		"access-down": {true, "outage "}, "access-up": {false, "outage "},
	}
	var spans []report.Span
	open := map[string]int{} // label -> index in spans of the outage still running
	for _, ev := range applied {
		k, ok := kinds[ev.Kind]
		if !ok || ev.Error != "" {
			continue
		}
		label := k.label + ev.Target
		i, running := open[label]
		switch {
		case k.start && !running:
			open[label] = len(spans)
			spans = append(spans, report.Span{From: ev.AtSeconds, To: end, Label: label})
		case !k.start && running:
			spans[i].To = ev.AtSeconds
			delete(open, label)
		}
	}
	return spans
}
