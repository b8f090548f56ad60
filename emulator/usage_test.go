package emulator

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestHistogramQuantile: the quantile is taken over the samples gained between two reads of
// a cumulative histogram, as the upper edge of its bucket.
func TestHistogramQuantile(t *testing.T) {
	edges := []float64{0, 0.001, 0.002, 0.004, 0.008}
	before := []uint64{50, 10, 0, 0}
	after := []uint64{140, 15, 4, 1} // gained: 90, 5, 4, 1
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, time.Millisecond}, {0.95, 2 * time.Millisecond}, {0.99, 4 * time.Millisecond}, {1, 8 * time.Millisecond}} {
		if got := histogramQuantile(before, after, edges, c.q); got != c.want {
			t.Errorf("q %.2f = %v, want %v", c.q, got, c.want)
		}
	}
	if got := histogramQuantile(after, after, edges, 0.99); got != 0 {
		t.Errorf("no new samples: %v, want 0", got)
	}
	if got := histogramQuantile(nil, after, edges[:3], 0.99); got != 0 {
		t.Errorf("edges that do not fit the counts: %v, want 0", got)
	}
}

// TestRunQueueWait: goroutines that outnumber the processors wait for one, and the usage
// between two reads says so.
func TestRunQueueWait(t *testing.T) {
	before := readUsage()
	var wg sync.WaitGroup
	deadline := time.Now().Add(300 * time.Millisecond)
	for range 4 * runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for time.Now().Before(deadline) {
			}
		})
	}
	wg.Wait()
	busy := readUsage().since(before)
	// Each waits for the others' 10 ms time slices: far more than a millisecond.
	if busy.runQueueWaitP99 < time.Millisecond || busy.runQueueWaitP99 > 5*time.Second {
		t.Errorf("with %d spinning goroutines per processor the run-queue wait p99 is %v", 4, busy.runQueueWaitP99)
	}
	if busy.cores <= 0 {
		t.Errorf("spinning used %.2f cores", busy.cores)
	}
}
