package report

import (
	"math"
	"slices"
	"sort"
)

const (
	maxLinePoints = 2000 // per Line series after downsampling
	maxCDFPoints  = 500  // per CDF series
)

// pt is a point of a line; a NaN y marks a gap (pen up).
type pt struct{ x, y float64 }

func (p pt) gap() bool { return math.IsNaN(p.y) }

var gapPt = pt{math.NaN(), math.NaN()}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// linePoints turns a Line series into points. Non-finite coordinates, and
// x <= 0 on a log axis, become gaps; runs of gaps collapse to one. It also
// returns how many points had x <= 0 on a log axis, for a note.
func linePoints(s Series, logX bool) (pts []pt, nonPos int) {
	n := len(s.Y)
	if s.X != nil {
		n = min(n, len(s.X))
	}
	for i := range n {
		x := float64(i)
		if s.X != nil {
			x = s.X[i]
		}
		y := s.Y[i]
		ok := finite(x) && finite(y)
		if ok && logX && x <= 0 {
			ok = false
			nonPos++
		}
		if ok {
			pts = append(pts, pt{x, y})
		} else if len(pts) > 0 && !pts[len(pts)-1].gap() {
			pts = append(pts, gapPt)
		}
	}
	if len(pts) > 0 && pts[len(pts)-1].gap() {
		pts = pts[:len(pts)-1]
	}
	return pts, nonPos
}

func countPoints(pts []pt) int {
	n := 0
	for _, p := range pts {
		if !p.gap() {
			n++
		}
	}
	return n
}

// downsample reduces pts to at most limit points (gaps not counted) by
// splitting them into buckets of consecutive points and keeping each
// bucket's minimum and maximum in their original order. Unlike averaging or
// striding, this keeps every spike and dip, which is what a reader looks for
// in a throughput or delay trace.
func downsample(pts []pt, limit int) []pt {
	if countPoints(pts) <= limit {
		return pts
	}
	buckets := limit / 2
	for {
		out := bucketMinMax(pts, buckets)
		n := countPoints(out)
		if n <= limit || buckets == 1 {
			return out
		}
		// Buckets holding gaps emit up to 4 points; shrink and retry.
		buckets = max(1, min(buckets-1, buckets*limit/n))
	}
}

// bucketMinMax keeps the extremes of each of nb index buckets. In a bucket
// with gaps, it keeps the extremes before the first gap, the gap, and the
// extremes of everything after it; inner gaps narrower than a bucket (well
// under a pixel) are bridged rather than letting gaps multiply the output.
func bucketMinMax(pts []pt, nb int) []pt {
	out := make([]pt, 0, 2*nb+8)
	emit := func(seg []pt) {
		lo, hi := -1, -1
		for i, p := range seg {
			if p.gap() {
				continue
			}
			if lo < 0 || p.y < seg[lo].y {
				lo = i
			}
			if hi < 0 || p.y > seg[hi].y {
				hi = i
			}
		}
		switch {
		case lo < 0:
		case lo == hi:
			out = append(out, seg[lo])
		case lo < hi:
			out = append(out, seg[lo], seg[hi])
		default:
			out = append(out, seg[hi], seg[lo])
		}
	}
	n := len(pts)
	for b := range nb {
		seg := pts[b*n/nb : (b+1)*n/nb]
		g := slices.IndexFunc(seg, pt.gap)
		if g < 0 {
			emit(seg)
			continue
		}
		emit(seg[:g])
		if len(out) > 0 && !out[len(out)-1].gap() {
			out = append(out, gapPt)
		}
		emit(seg[g+1:])
	}
	return out
}

// lineStats summarises a Line series' finite Y values for its tooltip.
type lineStats struct {
	n              int
	min, mean, max float64
}

func statsOf(pts []pt) lineStats {
	s := lineStats{min: math.Inf(1), max: math.Inf(-1)}
	sum := 0.0
	for _, p := range pts {
		if p.gap() {
			continue
		}
		s.n++
		sum += p.y
		s.min = math.Min(s.min, p.y)
		s.max = math.Max(s.max, p.y)
	}
	if s.n > 0 {
		s.mean = sum / float64(s.n)
	}
	return s
}

// ecdf is an empirical CDF: at each x the fraction of samples <= x.
type ecdf struct {
	xs, ps  []float64 // strictly increasing x; non-decreasing p ending at 1
	sorted  []float64 // the samples used, for quantiles
	skipped int       // non-finite samples
	nonPos  int       // samples <= 0 left out of a log axis
}

// newECDF sorts the finite samples (positive ones only if logX) and keeps
// at most limit points of the CDF. When thinning it keeps the points where
// the CDF first reaches each of limit-1 evenly spaced levels, so no vertical
// step in the drawing is larger than about 1/limit, plus the minimum and the
// maximum (where the CDF reaches exactly 1).
func newECDF(values []float64, logX bool, limit int) ecdf {
	var c ecdf
	c.sorted = make([]float64, 0, len(values))
	for _, v := range values {
		switch {
		case !finite(v):
			c.skipped++
		case logX && v <= 0:
			c.nonPos++
		default:
			c.sorted = append(c.sorted, v)
		}
	}
	sort.Float64s(c.sorted)
	n := len(c.sorted)
	for i, v := range c.sorted {
		if i+1 < n && c.sorted[i+1] == v {
			continue // the CDF at v counts all samples equal to v
		}
		c.xs = append(c.xs, v)
		c.ps = append(c.ps, float64(i+1)/float64(n))
	}
	if len(c.xs) <= limit || limit < 2 {
		return c
	}
	xs, ps := []float64{c.xs[0]}, []float64{c.ps[0]}
	last := 0
	for j := 1; j < limit; j++ {
		level := float64(j) / float64(limit-1)
		// First point reaching the level; ps[len-1] is exactly 1, so found.
		i := sort.SearchFloat64s(c.ps, level*(1-1e-12))
		i = min(i, len(c.ps)-1)
		if i > last {
			xs, ps = append(xs, c.xs[i]), append(ps, c.ps[i])
			last = i
		}
	}
	c.xs, c.ps = xs, ps
	return c
}

// quantile returns the q-quantile of the sorted samples (nearest rank).
func (c ecdf) quantile(q float64) float64 {
	n := len(c.sorted)
	if n == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(n))) - 1
	return c.sorted[min(max(i, 0), n-1)]
}
