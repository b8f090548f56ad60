package emulator

import (
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
