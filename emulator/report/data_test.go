package report

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestDownsampleKeepsSpikes(t *testing.T) {
	const n = 100_000
	r := rand.New(rand.NewPCG(3, 4))
	s := Series{X: make([]float64, n), Y: make([]float64, n)}
	for i := range n {
		s.X[i] = float64(i) / 10
		s.Y[i] = 50 + r.Float64()
	}
	s.Y[54321] = 1000 // one-sample spike
	s.Y[77777] = -1000
	for i := 20_000; i < 21_000; i++ {
		s.Y[i] = math.NaN() // an outage
	}
	pts, _ := linePoints(s, false)
	out := downsample(pts, maxLinePoints)
	if got := countPoints(out); got > maxLinePoints || got < maxLinePoints/2 {
		t.Fatalf("downsampled to %d points, want <= %d and not far fewer", got, maxLinePoints)
	}
	var hasSpike, hasDip bool
	last := math.Inf(-1)
	for i, p := range out {
		if p.gap() {
			continue
		}
		hasSpike = hasSpike || p.y == 1000
		hasDip = hasDip || p.y == -1000
		if p.x < last {
			t.Fatalf("points out of X order at %d", i)
		}
		last = p.x
		if p.x >= 2000 && p.x < 2100 {
			t.Fatalf("point %v drawn inside the NaN gap", p)
		}
		// No segment may bridge the gap.
		if i > 0 && !out[i-1].gap() && out[i-1].x < 2000 && p.x >= 2100 {
			t.Fatalf("segment %v-%v bridges the gap", out[i-1], p)
		}
	}
	if !hasSpike || !hasDip {
		t.Errorf("spike kept: %v, dip kept: %v", hasSpike, hasDip)
	}
}

func TestDownsampleShortAndPathological(t *testing.T) {
	short := []pt{{0, 1}, {1, 2}, {2, 3}}
	if got := downsample(short, maxLinePoints); !slices.Equal(got, short) {
		t.Errorf("short series changed: %v", got)
	}
	// Every other value missing: gaps everywhere must not defeat the limit.
	s := Series{Y: make([]float64, 50_000)}
	for i := range s.Y {
		s.Y[i] = float64(i % 7)
		if i%2 == 1 {
			s.Y[i] = math.NaN()
		}
	}
	pts, _ := linePoints(s, false)
	if got := countPoints(downsample(pts, maxLinePoints)); got > maxLinePoints {
		t.Errorf("alternating gaps: %d points, want <= %d", got, maxLinePoints)
	}
}

func TestLinePoints(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	s := Series{X: []float64{-1, 0, 1, 2, 3, 4, 5, 6}, Y: []float64{nan, 1, 2, inf, nan, 5, 6, 7, 8}}
	pts, _ := linePoints(s, false)
	want := []pt{{0, 1}, {1, 2}, gapPt, {4, 5}, {5, 6}, {6, 7}}
	if !slices.EqualFunc(pts, want, func(a, b pt) bool { return a.gap() && b.gap() || a == b }) {
		t.Errorf("linePoints = %v, want %v", pts, want)
	}
	pts, nonPos := linePoints(s, true)
	if nonPos != 1 || pts[0] != (pt{1, 2}) {
		t.Errorf("log X: nonPos = %d, pts = %v", nonPos, pts)
	}
	pts, _ = linePoints(Series{Y: []float64{3, 4}}, false)
	if !slices.Equal(pts, []pt{{0, 3}, {1, 4}}) {
		t.Errorf("nil X should use the index: %v", pts)
	}
}

func TestECDF(t *testing.T) {
	c := newECDF([]float64{3, 1, 2, 2, math.NaN(), math.Inf(-1)}, false, maxCDFPoints)
	if !slices.Equal(c.xs, []float64{1, 2, 3}) || !slices.Equal(c.ps, []float64{0.25, 0.75, 1}) || c.skipped != 2 {
		t.Errorf("ecdf = %v %v skipped %d", c.xs, c.ps, c.skipped)
	}
	if q := c.quantile(0.5); q != 2 {
		t.Errorf("median = %v, want 2", q)
	}

	r := rand.New(rand.NewPCG(5, 6))
	vals := make([]float64, 100_000)
	for i := range vals {
		vals[i] = math.Round(math.Exp(r.NormFloat64())*1000) / 100 // many ties
	}
	vals[7] = -1
	for _, logX := range []bool{false, true} {
		c := newECDF(vals, logX, maxCDFPoints)
		if len(c.xs) > maxCDFPoints || len(c.xs) < maxCDFPoints/2 || len(c.xs) != len(c.ps) {
			t.Fatalf("logX=%v: %d points, want <= %d", logX, len(c.xs), maxCDFPoints)
		}
		if c.ps[len(c.ps)-1] != 1 {
			t.Errorf("logX=%v: CDF ends at %v, want 1", logX, c.ps[len(c.ps)-1])
		}
		if c.xs[0] != c.sorted[0] || c.xs[len(c.xs)-1] != c.sorted[len(c.sorted)-1] {
			t.Errorf("logX=%v: CDF does not span min..max", logX)
		}
		for i := 1; i < len(c.xs); i++ {
			if c.xs[i] <= c.xs[i-1] || c.ps[i] < c.ps[i-1] {
				t.Fatalf("logX=%v: not monotonic at %d: (%v,%v) after (%v,%v)", logX, i, c.xs[i], c.ps[i], c.xs[i-1], c.ps[i-1])
			}
			// Thinning keeps steps small, so the drawing is faithful.
			if c.ps[i]-c.ps[i-1] > 2.0/maxCDFPoints+1e-9 && c.xs[i] != c.xs[i-1] {
				// A single value may hold a big share of samples: allowed only
				// if that value alone makes the jump.
				j := slices.Index(c.sorted, c.xs[i])
				if float64(j)/float64(len(c.sorted)) > c.ps[i-1]+2.0/maxCDFPoints {
					t.Fatalf("logX=%v: step %v at %v too big", logX, c.ps[i]-c.ps[i-1], c.xs[i])
				}
			}
		}
		if logX && (c.nonPos != 1 || c.xs[0] <= 0) {
			t.Errorf("log X: nonPos = %d, min = %v", c.nonPos, c.xs[0])
		}
	}
	if c := newECDF(nil, false, maxCDFPoints); len(c.xs) != 0 || !math.IsNaN(c.quantile(0.5)) {
		t.Errorf("empty ecdf = %+v", c)
	}
}
