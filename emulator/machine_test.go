package emulator

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMachineFloor: the calibration sleeps 1 ms at a time for its window while a burst
// loop keeps a processor busy, and reports ordered figures over those sleeps.
func TestMachineFloor(t *testing.T) {
	start := time.Now()
	f := machineFloor(500 * time.Millisecond)
	took := time.Since(start)
	if took < 500*time.Millisecond || took > 2*time.Second {
		t.Errorf("a 500 ms calibration took %v", took)
	}
	// At most one sample per millisecond of the window, and most of them on any machine.
	if f.Count < 50 || f.Count > 500 {
		t.Errorf("%d sleeps in 500 ms", f.Count)
	}
	if f.P50 < 0 || f.P50 > f.P99 || f.P99 > f.Max {
		t.Errorf("figures not ordered: %+v", f)
	}
	if note := floorNote(&f); note == "" || floorNote(nil) != "" {
		t.Errorf("floor note %q", note)
	}
}

// TestMemoryMonitors reads a DAMON sysfs tree: a running kdamond is described with its
// operations, sampling interval and schemes; one that is off, and a machine without DAMON,
// give nothing.
func TestMemoryMonitors(t *testing.T) {
	root := t.TempDir()
	write := func(path, content string) {
		t.Helper()
		full := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("nr_kdamonds", "2")
	write("0/state", "on")
	write("0/contexts/0/operations", "paddr")
	write("0/contexts/0/monitoring_attrs/intervals/sample_us", "500000")
	write("0/contexts/0/schemes/0/action", "pageout")
	write("1/state", "off")
	write("1/contexts/0/operations", "vaddr")
	got := memoryMonitors(root)
	want := []string{"kdamond 0 (paddr, sampling every 500ms, schemes: pageout)"}
	if !slices.Equal(got, want) {
		t.Errorf("memoryMonitors = %q, want %q", got, want)
	}
	if note := memoryMonitorNote(got); !strings.Contains(note, "kdamond 0") {
		t.Errorf("note %q does not name the monitor", note)
	}
	if got := memoryMonitors(filepath.Join(root, "absent")); got != nil || memoryMonitorNote(got) != "" {
		t.Errorf("no DAMON: %q", got)
	}
}
