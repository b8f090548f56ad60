package report_test

import (
	"log"
	"os"
	"path/filepath"

	"github.com/nanodc/nanodc/emulator/report"
)

// A run writes its report next to its other outputs.
func Example() {
	dir, err := os.MkdirTemp("", "run")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	r := report.Report{
		Title:    "smoke-10",
		Subtitle: "scenarios/smoke-10.yaml, seed 1",
		Verdict:  report.Verdict{Valid: true},
		Tables: []report.Table{{
			Columns: []string{"gateway", "mean throughput (Mbit/s)"},
			Rows:    [][]string{{"gw-1", report.FormatNumber(93.123)}},
		}},
		Sections: []report.Section{{
			Title: "Throughput",
			Plots: []report.Plot{{
				Title:  "Downlink",
				Kind:   report.Line,
				XLabel: "time (s)",
				YLabel: "throughput (Mbit/s)",
				Series: []report.Series{{Name: "gw-1", X: []float64{0, 1, 2}, Y: []float64{90, 95, 94}}},
			}, {
				Title:  "Ping RTT",
				Kind:   report.CDF,
				XLabel: "RTT (ms)",
				LogX:   true,
				Series: []report.Series{{Name: "gw-1", Values: []float64{12, 15, 11, 40, 13}}},
			}},
		}},
	}
	if err := report.WriteFile(filepath.Join(dir, "report.html"), r); err != nil {
		log.Fatal(err)
	}
	// Output:
}
