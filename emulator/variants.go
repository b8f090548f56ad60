package emulator

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nanodc/nanodc/emulator/report"
)

// runVariants runs the scenario once per variant on the same seed, each into its own
// folder, then writes a comparison: summary.json with every variant's summary and each
// workload's section per variant, and report.html with the comparison tables and plots of
// the workloads that implement Comparer.
func runVariants(ctx context.Context, sc *Scenario, opts Options) (*Summary, error) {
	seed := sc.Seed
	if opts.Seed != nil {
		seed = *opts.Seed
	}
	combined := &Summary{
		Scenario: sc.Name, Description: sc.Description, Seed: seed, Valid: true,
		DurationSeconds: sc.Duration.Seconds(), Variants: map[string]*Summary{},
		Workloads: map[string]any{}, MachineTimerFloor: opts.timerFloor, MachineMemoryMonitors: opts.memoryMonitors,
	}
	// Only what the comparison needs is kept of each variant: holding its *run would keep
	// its whole fleet reachable, and its heap would pin pages under the next variants
	// (each variant then started with more memory in use than the one before).
	var runs []finishedRun
	for i := range sc.Variants {
		v := &sc.Variants[i]
		vopts := opts
		vopts.OutDir = filepath.Join(opts.OutDir, v.Name)
		sum, r, err := runOnce(ctx, sc, vopts, v)
		if err != nil {
			return nil, fmt.Errorf("variant %s: %w", v.Name, err)
		}
		combined.VariantOrder = append(combined.VariantOrder, v.Name)
		combined.Variants[v.Name] = sum
		combined.Gateways, combined.BootstrapNodes = sum.Gateways, sum.BootstrapNodes
		combined.GoVersion, combined.CPUs = sum.GoVersion, sum.CPUs
		if !sum.Valid {
			combined.Valid = false
			for _, reason := range sum.InvalidReasons {
				combined.InvalidReasons = append(combined.InvalidReasons, v.Name+": "+reason)
			}
		}
		for key, section := range sum.Workloads {
			m, _ := combined.Workloads[key].(map[string]any)
			if m == nil {
				m = map[string]any{}
				combined.Workloads[key] = m
			}
			m[v.Name] = section
		}
		runs = append(runs, finishedRun{workloads: r.workloads, rec: r.rec})
	}
	if err := writeJSONFile(filepath.Join(opts.OutDir, "summary.json"), combined); err != nil {
		return nil, err
	}
	return combined, report.WriteFile(filepath.Join(opts.OutDir, "report.html"), comparisonReport(sc, opts, combined, runs))
}

// finishedRun is what a variant's comparison needs once its fleet is gone.
type finishedRun struct {
	workloads []Workload
	rec       *Recorder
}

func comparisonReport(sc *Scenario, opts Options, s *Summary, runs []finishedRun) report.Report {
	verdict := report.Verdict{Valid: s.Valid, Reason: strings.Join(s.InvalidReasons, "; ")}
	if s.Valid {
		verdict.Reason = fmt.Sprintf("every variant ran with scheduler and delivery lateness p99 within %s", sc.Validity.MaxLatenessP99)
	}
	rep := report.Report{
		Title:    "nanodc emulator: " + s.Scenario + " — " + strings.Join(s.VariantOrder, " vs ") + "",
		Subtitle: fmt.Sprintf("%s · seed %d · %d gateways · %s · %s", opts.ScenarioPath, s.Seed, s.Gateways, time.Now().UTC().Format(time.RFC3339), s.GoVersion),
		Verdict:  verdict,
	}
	for i, spec := range sc.Workloads {
		if _, ok := runs[0].workloads[i].(Comparer); !ok {
			continue
		}
		ws := make([]Workload, len(runs))
		recs := make([]*Recorder, len(runs))
		for j, r := range runs {
			ws[j], recs[j] = r.workloads[i], r.rec
		}
		tab, plots := runs[0].workloads[i].(Comparer).Compare(s.VariantOrder, ws, recs)
		if len(tab.Rows) > 0 {
			rep.Tables = append(rep.Tables, tab)
			s.Comparison = append(s.Comparison, tab)
		}
		rep.Sections = append(rep.Sections, report.Section{Title: "Workload: " + workloadKey(sc.Workloads, i) + " (" + spec.Type + ")", Plots: plots})
	}
	for _, name := range s.VariantOrder {
		t := SummaryTable(s.Variants[name])
		t.Title = "Variant " + name + " (full report: " + name + "/report.html)"
		rep.Tables = append(rep.Tables, t)
	}
	rep.Notes = []string{
		"Each variant is a full run of the scenario on the same seed: same topology, identities, workload schedule and faults; only the variant's node settings differ.",
		"Every gateway is a real nanodc node whose UDP sockets are replaced by the emulator's shaped in-memory network.",
	}
	return rep
}

// KeepVariants narrows the scenario to the named variants, in the scenario's order; a name
// the scenario does not have is an error listing the ones it has.
func (s *Scenario) KeepVariants(names []string) error {
	var have []string
	var kept []Variant
	for _, v := range s.Variants {
		have = append(have, v.Name)
		if slices.Contains(names, v.Name) {
			kept = append(kept, v)
		}
	}
	for _, n := range names {
		if !slices.Contains(have, n) {
			return fmt.Errorf("--variant %q: the scenario has %v", n, have)
		}
	}
	s.Variants = kept
	return nil
}
