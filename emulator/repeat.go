package emulator

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strings"
)

// RepeatSummary is what Repeat writes to repeat.json: every number of the runs' summaries
// with its median and range. One run of a busy fleet is one sample of the machine's timing
// noise (the flash crowd's origin ratio moved by ±0.01 between runs of the same code), so a
// change is judged on medians over runs of the same seed, not on one run.
type RepeatSummary struct {
	Scenario  string   `json:"scenario"`
	Seed      int64    `json:"seed"`
	Runs      int      `json:"runs"`
	ValidRuns int      `json:"valid_runs"`
	RunDirs   []string `json:"run_dirs"`
	// Variants are the scenario's variants in run order (none for a scenario without them).
	Variants []string `json:"variants,omitempty"`
	// Figures has one entry per number found in every run's summary.json, by its dotted path
	// ("variants.nanodc.workloads.vod.offload_ratio"), sorted by path; booleans count as 0
	// and 1, lists (per-viewer records, fault logs) are left out.
	Figures []RepeatFigure `json:"figures"`
}

// RepeatFigure is one number over the runs.
type RepeatFigure struct {
	Path   string    `json:"path"`
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	Values []float64 `json:"values"` // in run order
}

// Repeat runs the scenario n times on the same seed, each run's outputs in OutDir/run-K as a
// single run writes them, then writes OutDir/repeat.json (RepeatSummary). An invalid run is
// kept and counted: its figures are in the medians, and ValidRuns says how many were valid.
func Repeat(ctx context.Context, sc *Scenario, opts Options, n int) (*RepeatSummary, error) {
	if n < 1 {
		return nil, fmt.Errorf("repeat: %d runs; want at least 1", n)
	}
	rs := &RepeatSummary{Scenario: sc.Name, Seed: sc.Seed, Runs: n}
	if opts.Seed != nil {
		rs.Seed = *opts.Seed
	}
	var flats []map[string]float64
	for k := 1; k <= n; k++ {
		ropts := opts
		ropts.OutDir = filepath.Join(opts.OutDir, fmt.Sprintf("run-%d", k))
		if opts.Progress != nil {
			fmt.Fprintf(opts.Progress, "run %d of %d: %s\n", k, n, ropts.OutDir)
		}
		sum, err := Run(ctx, sc, ropts)
		if err != nil {
			return nil, fmt.Errorf("run %d of %d: %w", k, n, err)
		}
		rs.RunDirs = append(rs.RunDirs, ropts.OutDir)
		if sum.Valid {
			rs.ValidRuns++
		}
		rs.Variants = sum.VariantOrder
		flat, err := flattenSummary(sum)
		if err != nil {
			return nil, err
		}
		flats = append(flats, flat)
	}
	rs.Figures = figuresOverRuns(flats)
	return rs, writeJSONFile(filepath.Join(opts.OutDir, "repeat.json"), rs)
}

// flattenSummary maps every number (and boolean) of a summary, as summary.json has it, to its
// dotted path. A scenario with variants also lists each workload's sections by variant at
// the top ("workloads.vod.nanodc"), a copy of "variants.nanodc.workloads.vod": left out.
func flattenSummary(sum *Summary) (map[string]float64, error) {
	data, err := json.Marshal(sum)
	if err != nil {
		return nil, err
	}
	var tree map[string]any
	if err := json.Unmarshal(data, &tree); err != nil {
		return nil, err
	}
	if len(sum.Variants) > 0 {
		delete(tree, "workloads")
	}
	out := map[string]float64{}
	flattenInto(out, "", tree)
	return out, nil
}

func flattenInto(out map[string]float64, prefix string, v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			flattenInto(out, p, child)
		}
	case float64:
		out[prefix] = v
	case bool:
		out[prefix] = 0
		if v {
			out[prefix] = 1
		}
	}
}

// figuresOverRuns keeps the paths every run has, with their median and range.
func figuresOverRuns(flats []map[string]float64) []RepeatFigure {
	if len(flats) == 0 {
		return nil
	}
	var figs []RepeatFigure
	for path := range flats[0] {
		vals := make([]float64, 0, len(flats))
		for _, f := range flats {
			v, ok := f[path]
			if !ok {
				break
			}
			vals = append(vals, v)
		}
		if len(vals) < len(flats) {
			continue
		}
		figs = append(figs, RepeatFigure{Path: path, Median: median(vals), Min: slices.Min(vals), Max: slices.Max(vals), Values: vals})
	}
	slices.SortFunc(figs, func(a, b RepeatFigure) int { return strings.Compare(a.Path, b.Path) })
	return figs
}

func median(vals []float64) float64 {
	s := slices.Clone(vals)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// repeatHeadline are the fleet's figures PrintRepeat shows for every run or variant, before
// the workloads' own.
var repeatHeadline = []string{
	"valid", "lateness.scheduler.p99_ms", "lateness.delivery.p99_ms", "cpu.cores_used",
	"peers.min", "peers.median", "memory.rss_end_per_node_mb",
}

// PrintRepeat writes the runs' headline figures and every workload's top figures (those at
// most two levels into its section) as a table: median, range and each run's value. All
// figures are in repeat.json.
func PrintRepeat(w io.Writer, rs *RepeatSummary) {
	fmt.Fprintf(w, "%d runs of %s (seed %d): %d valid\n", rs.Runs, rs.Scenario, rs.Seed, rs.ValidRuns)
	byPath := map[string]RepeatFigure{}
	for _, f := range rs.Figures {
		byPath[f.Path] = f
	}
	prefixes := []string{""}
	if len(rs.Variants) > 0 {
		prefixes = prefixes[:0]
		for _, v := range rs.Variants {
			prefixes = append(prefixes, "variants."+v+".")
		}
	}
	fmt.Fprintf(w, "%-58s %10s %10s %10s  %s\n", "figure", "median", "min", "max", "runs")
	for _, prefix := range prefixes {
		var rows []RepeatFigure
		for _, p := range repeatHeadline {
			if f, ok := byPath[prefix+p]; ok {
				rows = append(rows, f)
			}
		}
		for _, f := range rs.Figures {
			rest, ok := strings.CutPrefix(f.Path, prefix+"workloads.")
			if ok && strings.Count(rest, ".") <= 2 {
				rows = append(rows, f)
			}
		}
		for _, f := range rows {
			vals := make([]string, len(f.Values))
			for i, v := range f.Values {
				vals[i] = formatFigure(v)
			}
			fmt.Fprintf(w, "%-58s %10s %10s %10s  %s\n", strings.TrimPrefix(f.Path, "variants."),
				formatFigure(f.Median), formatFigure(f.Min), formatFigure(f.Max), strings.Join(vals, " "))
		}
	}
}

// formatFigure prints a figure with four significant digits, whole numbers without a point.
func formatFigure(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.4g", v)
}
