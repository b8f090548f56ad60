package report

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestNiceTicks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi   float64
		target   int
		expand   bool
		want     []float64
		labels   []string // nil: not checked
		dlo, dhi float64  // domain
	}{
		{0, 10, 5, true, []float64{0, 2, 4, 6, 8, 10}, []string{"0", "2", "4", "6", "8", "10"}, 0, 10},
		{0, 1, 5, true, []float64{0, 0.2, 0.4, 0.6, 0.8, 1}, []string{"0.0", "0.2", "0.4", "0.6", "0.8", "1.0"}, 0, 1},
		{0.3, 9.7, 5, true, []float64{0, 2, 4, 6, 8, 10}, nil, 0, 10},
		{0, 3599, 6, false, []float64{0, 1000, 2000, 3000}, []string{"0", "1000", "2000", "3000"}, 0, 3599},
		{0, 600, 6, false, []float64{0, 100, 200, 300, 400, 500, 600}, nil, 0, 600},
		{-3, 7, 5, true, []float64{-4, -2, 0, 2, 4, 6, 8}, []string{"-4", "-2", "0", "2", "4", "6", "8"}, -4, 8},
		{0.001, 0.0042, 5, true, []float64{0.001, 0.002, 0.003, 0.004, 0.005}, []string{"0.001", "0.002", "0.003", "0.004", "0.005"}, 0.001, 0.005},
		{95, 100, 5, true, []float64{95, 96, 97, 98, 99, 100}, nil, 95, 100},
		{0, 0.3, 3, true, []float64{0, 0.1, 0.2, 0.3}, []string{"0.0", "0.1", "0.2", "0.3"}, 0, 0.3},
		{0, 25000, 5, true, []float64{0, 5000, 10000, 15000, 20000, 25000}, []string{"0", "5k", "10k", "15k", "20k", "25k"}, 0, 25000},
		{0, 2.5e6, 5, true, []float64{0, 5e5, 1e6, 1.5e6, 2e6, 2.5e6}, []string{"0.0", "0.5M", "1.0M", "1.5M", "2.0M", "2.5M"}, 0, 2.5e6},
		{1e9, 5e9, 4, true, []float64{1e9, 2e9, 3e9, 4e9, 5e9}, []string{"1G", "2G", "3G", "4G", "5G"}, 1e9, 5e9},
		{-0.5, 0.5, 4, true, []float64{-0.5, 0, 0.5}, []string{"-0.5", "0.0", "0.5"}, -0.5, 0.5},
		// Floating-point noise around a tick is absorbed rather than adding a tick.
		{-1e-12, 1, 5, true, []float64{0, 0.2, 0.4, 0.6, 0.8, 1}, nil, 0, 1},
	} {
		a := niceTicks(tc.lo, tc.hi, tc.target, tc.expand)
		if !slices.Equal(a.ticks, tc.want) {
			t.Errorf("niceTicks(%v, %v, %d, %v) = %v, want %v", tc.lo, tc.hi, tc.target, tc.expand, a.ticks, tc.want)
			continue
		}
		if tc.labels != nil && !slices.Equal(a.labels, tc.labels) {
			t.Errorf("niceTicks(%v, %v) labels = %q, want %q", tc.lo, tc.hi, a.labels, tc.labels)
		}
		if a.lo != tc.dlo || a.hi != tc.dhi {
			t.Errorf("niceTicks(%v, %v) domain = [%v, %v], want [%v, %v]", tc.lo, tc.hi, a.lo, a.hi, tc.dlo, tc.dhi)
		}
	}
}

// TestNiceTicksProperties checks random ranges: the step is 1, 2 or 5 times
// a power of ten, the expanded domain covers the data, and the tick count
// stays near the target.
func TestNiceTicksProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		scale := math.Pow10(r.IntN(24) - 12)
		lo := (r.Float64()*2 - 1) * scale * 10
		hi := lo + r.Float64()*scale + scale*1e-3
		target := 2 + r.IntN(8)
		a := niceTicks(lo, hi, target, true)
		if a.lo > lo+1e-9*(hi-lo) || a.hi < hi-1e-9*(hi-lo) {
			t.Fatalf("niceTicks(%g, %g) domain [%g, %g] does not cover the data", lo, hi, a.lo, a.hi)
		}
		if n := len(a.ticks); n < 2 || n > target+2 {
			t.Fatalf("niceTicks(%g, %g, %d) gave %d ticks", lo, hi, target, n)
		}
		step := a.ticks[1] - a.ticks[0]
		m := step / math.Pow10(int(math.Floor(math.Log10(step)+1e-9)))
		if !near(m, 1) && !near(m, 2) && !near(m, 5) {
			t.Fatalf("niceTicks(%g, %g) step %g is not 1-2-5 (mantissa %g)", lo, hi, step, m)
		}
		for i := 1; i < len(a.ticks); i++ {
			if !near(a.ticks[i]-a.ticks[i-1], step) {
				t.Fatalf("niceTicks(%g, %g) uneven ticks %v", lo, hi, a.ticks)
			}
		}
		if len(a.labels) != len(a.ticks) || slices.Contains(a.labels, "") {
			t.Fatalf("niceTicks(%g, %g) labels %q", lo, hi, a.labels)
		}
		if len(slices.Compact(slices.Clone(a.labels))) != len(a.labels) {
			t.Fatalf("niceTicks(%g, %g) duplicate labels %q", lo, hi, a.labels)
		}
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-6*math.Max(math.Abs(a), math.Abs(b)) }

func TestNiceTicksDegenerate(t *testing.T) {
	for _, r := range [][2]float64{{1, 1}, {math.MaxFloat64 / -1, math.MaxFloat64}, {1e15, 1e15 + 1}, {0, 1e-300}} {
		a := niceTicks(r[0], r[1], 5, true)
		if len(a.ticks) < 2 || len(a.ticks) > maxTicks+1 || len(a.labels) != len(a.ticks) {
			t.Errorf("niceTicks(%g, %g) = %v %q", r[0], r[1], a.ticks, a.labels)
		}
	}
}

func TestLogTicks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi   float64
		want     []float64
		dlo, dhi float64
	}{
		{1, 1000, []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}, 1, 1000},
		{3, 40, []float64{2, 5, 10, 20, 50}, 2, 50},
		{3, 3, []float64{1, 2, 5, 10}, 1, 10},
		{0.05, 2000, []float64{0.1, 1, 10, 100, 1000}, 0.05, 2000},
		{1e-6, 1e6, []float64{1e-6, 1e-4, 0.01, 1, 100, 1e4, 1e6}, 1e-6, 1e6},
	} {
		a := logTicks(tc.lo, tc.hi)
		if !slices.EqualFunc(a.ticks, tc.want, near) || !near(a.lo, tc.dlo) || !near(a.hi, tc.dhi) {
			t.Errorf("logTicks(%g, %g) = %v on [%g, %g], want %v on [%g, %g]", tc.lo, tc.hi, a.ticks, a.lo, a.hi, tc.want, tc.dlo, tc.dhi)
		}
	}
}

func TestFormatNumber(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{
		{0, "0"}, {1, "1"}, {-2.5, "-2.5"}, {1.5, "1.5"}, {3.14159, "3.142"}, {1234.56, "1235"},
		{0.0125, "0.0125"}, {0.001, "0.001"}, {1.5e-5, "1.5e-05"},
		{12345, "12.3k"}, {-12345, "-12.3k"}, {999960, "1M"}, {1e6, "1M"}, {2.5e9, "2.5G"}, {4.2e12, "4.2T"},
		{math.NaN(), "NaN"}, {math.Inf(1), "+Inf"}, {math.Inf(-1), "-Inf"},
	} {
		if got := FormatNumber(tc.v); got != tc.want {
			t.Errorf("FormatNumber(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
}
