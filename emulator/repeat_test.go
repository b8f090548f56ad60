package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const repeatScenario = `
name: repeat
seed: 3
workloads:
  - type: ping
    pairs: 2
    interval: 200ms
variants:
  - name: one
  - name: two
` + tinyFleet

// TestRepeat runs a 3-gateway scenario with two variants twice and checks that every run's
// outputs are there and that repeat.json's figures are those runs' own numbers, in run order.
func TestRepeat(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 3-gateway emulation four times")
	}
	sc, err := ParseScenario([]byte(repeatScenario))
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rs, err := Repeat(ctx, sc, Options{OutDir: out}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if rs.Runs != 2 || len(rs.RunDirs) != 2 || rs.ValidRuns > 2 || strings.Join(rs.Variants, ",") != "one,two" {
		t.Fatalf("repeat summary: runs %d, dirs %v, valid %d, variants %v", rs.Runs, rs.RunDirs, rs.ValidRuns, rs.Variants)
	}
	byPath := map[string]RepeatFigure{}
	for _, f := range rs.Figures {
		byPath[f.Path] = f
		if len(f.Values) != 2 || f.Min > f.Median || f.Median > f.Max {
			t.Errorf("figure %s: %+v", f.Path, f)
		}
		if strings.HasPrefix(f.Path, "workloads.") {
			t.Errorf("figure %s: the top-level copy of the variants' workloads is kept", f.Path)
		}
	}
	for k, dir := range rs.RunDirs {
		for _, name := range []string{"summary.json", "report.html", "one/summary.json", "two/timeseries.csv"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				t.Errorf("run %d: %v", k+1, err)
			}
		}
		var sum struct {
			Variants map[string]struct {
				Lateness struct {
					Scheduler struct {
						Count float64 `json:"count"`
					} `json:"scheduler"`
				} `json:"lateness"`
				Workloads struct {
					Ping struct {
						Pairs float64 `json:"pairs"`
					} `json:"ping"`
				} `json:"workloads"`
			} `json:"variants"`
		}
		data, err := os.ReadFile(filepath.Join(dir, "summary.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &sum); err != nil {
			t.Fatal(err)
		}
		for _, v := range []string{"one", "two"} {
			count := byPath["variants."+v+".lateness.scheduler.count"]
			if len(count.Values) != 2 || count.Values[k] != sum.Variants[v].Lateness.Scheduler.Count || count.Values[k] == 0 {
				t.Errorf("variant %s run %d: packets scheduled %v in repeat.json, %v in its summary.json", v, k+1, count.Values, sum.Variants[v].Lateness.Scheduler.Count)
			}
			// Every run after the first starts with the last fleet's freed heap resident; the
			// per-node memory must still count this fleet only. (The first run here follows
			// the package's other tests, whose fleets' leftovers, freed during it, have put a
			// 3-gateway figure at -4 to -5 MB in CI: a process running one scenario has none.)
			if mem := byPath["variants."+v+".memory.rss_end_per_node_mb"]; len(mem.Values) != 2 || (k > 0 && mem.Values[k] <= 0) {
				t.Errorf("variant %s run %d: memory per node at the end %v MB, want > 0", v, k+1, mem.Values)
			}
			if pairs := byPath["variants."+v+".workloads.ping.pairs"]; pairs.Median != 2 || sum.Variants[v].Workloads.Ping.Pairs != 2 {
				t.Errorf("variant %s: ping pairs %+v, want 2 in every run", v, pairs)
			}
		}
	}
	data, err := os.ReadFile(filepath.Join(out, "repeat.json"))
	if err != nil {
		t.Fatal(err)
	}
	var written RepeatSummary
	if err := json.Unmarshal(data, &written); err != nil {
		t.Fatal(err)
	}
	if len(written.Figures) != len(rs.Figures) || written.Runs != 2 {
		t.Errorf("repeat.json: %d figures over %d runs, returned %d over 2", len(written.Figures), written.Runs, len(rs.Figures))
	}
	var printed bytes.Buffer
	PrintRepeat(&printed, rs)
	for _, want := range []string{"2 runs of repeat (seed 3)", "one.valid", "two.workloads.ping.pairs", "two.lateness.scheduler.p99_ms"} {
		if !strings.Contains(printed.String(), want) {
			t.Errorf("printed table lacks %q:\n%s", want, printed.String())
		}
	}
}

func TestFiguresOverRuns(t *testing.T) {
	figs := figuresOverRuns([]map[string]float64{
		{"a": 3, "b": 1, "only.first": 9},
		{"a": 1, "b": 1},
		{"a": 2, "b": 4},
		{"a": 10, "b": 1},
	})
	if len(figs) != 2 || figs[0].Path != "a" || figs[1].Path != "b" {
		t.Fatalf("figures %+v: want a and b (only.first is not in every run)", figs)
	}
	if a := figs[0]; a.Median != 2.5 || a.Min != 1 || a.Max != 10 || a.Values[3] != 10 {
		t.Errorf("a: %+v, want median 2.5 of 1-10, values in run order", a)
	}
	if b := figs[1]; b.Median != 1 || b.Max != 4 {
		t.Errorf("b: %+v, want median 1, max 4", b)
	}
	if m := median([]float64{5, 1, 3}); m != 3 {
		t.Errorf("median of 5, 1, 3 = %v", m)
	}
	if _, err := Repeat(context.Background(), &Scenario{}, Options{}, 0); err == nil || !strings.Contains(err.Error(), "at least 1") {
		t.Errorf("Repeat with 0 runs: %v", err)
	}
}
