package report

import (
	"math"
	"strconv"
	"strings"
)

// axis is a numeric axis: its domain and labelled ticks.
type axis struct {
	lo, hi float64 // domain
	log    bool
	ticks  []float64
	labels []string
}

// maxTicks bounds tick generation against degenerate ranges (e.g. a span
// that is tiny compared with the values' magnitude).
const maxTicks = 200

// niceTicks returns ticks for [lo, hi] at a 1-2-5 step (1, 2 or 5 times a
// power of ten) giving at most target intervals. With expand the domain
// grows outwards to the nearest ticks, so the ends are labelled; otherwise
// only ticks inside [lo, hi] are returned and the domain is unchanged.
// It needs lo < hi, both finite.
func niceTicks(lo, hi float64, target int, expand bool) axis {
	a := axis{lo: lo, hi: hi}
	span := hi - lo
	if !(span > 0) || math.IsInf(span, 0) || target < 1 {
		a.ticks = []float64{lo, hi}
		a.labels = []string{FormatNumber(lo), FormatNumber(hi)}
		return a
	}
	m, e := niceStep(span / float64(target))
	step := tickValue(m, e)
	const eps = 1e-9 // absorbs rounding in lo/step when lo is a multiple of step
	var kLo, kHi float64
	if expand {
		kLo, kHi = math.Floor(lo/step+eps), math.Ceil(hi/step-eps)
	} else {
		kLo, kHi = math.Ceil(lo/step-eps), math.Floor(hi/step+eps)
	}
	if kHi-kLo > maxTicks || math.Abs(kLo) > 1e15 || math.Abs(kHi) > 1e15 {
		a.ticks = []float64{lo, hi}
		a.labels = []string{FormatNumber(lo), FormatNumber(hi)}
		return a
	}
	for k := int64(kLo); k <= int64(kHi); k++ {
		a.ticks = append(a.ticks, tickValue(k*m, e))
	}
	if expand {
		a.lo, a.hi = a.ticks[0], a.ticks[len(a.ticks)-1]
	}
	mag := math.Max(math.Abs(a.lo), math.Abs(a.hi))
	for _, t := range a.ticks {
		a.labels = append(a.labels, formatTick(t, e, mag))
	}
	return a
}

// niceStep returns the smallest step m×10^e >= raw with m in {1, 2, 5}.
func niceStep(raw float64) (m int64, e int) {
	e = int(math.Floor(math.Log10(raw)))
	norm := raw / math.Pow10(e)
	const tol = 1 + 1e-9 // so that raw = 2.0000000001 still picks 2
	switch {
	case norm <= 1*tol:
		return 1, e
	case norm <= 2*tol:
		return 2, e
	case norm <= 5*tol:
		return 5, e
	}
	return 1, e + 1
}

// tickValue returns k×10^e as the float64 nearest to that decimal, so that
// 3×10^-1 is 0.3 rather than 0.30000000000000004.
func tickValue(k int64, e int) float64 {
	if e < 0 {
		return float64(k) / math.Pow10(-e)
	}
	return float64(k) * math.Pow10(e)
}

// siPrefix picks a suffix for numbers of magnitude mag: axes and tooltips
// read better as "25k" than as "25000". Small magnitudes get none, because
// "m" would clash with units such as "ms" in axis labels.
func siPrefix(mag float64) (div float64, exp int, suffix string) {
	switch {
	case mag >= 1e12:
		return 1e12, 12, "T"
	case mag >= 1e9:
		return 1e9, 9, "G"
	case mag >= 1e6:
		return 1e6, 6, "M"
	case mag >= 1e4:
		return 1e3, 3, "k"
	}
	return 1, 0, ""
}

// formatTick formats tick t of an axis whose step is m×10^e and whose
// largest absolute end is mag. All ticks of one axis get the same number of
// decimals, so labels line up and differ only where the values differ.
func formatTick(t float64, e int, mag float64) string {
	div, pe, suf := siPrefix(mag)
	dec := max(0, pe-e)
	sci := mag >= 1e15 || e < -6
	if math.Abs(t) < math.Pow10(e)/2 {
		// Zero needs no suffix, and this avoids "-0" and "1e-17" from rounding.
		if sci {
			return "0"
		}
		return strconv.FormatFloat(0, 'f', dec, 64)
	}
	if sci {
		// Scientific notation with one exponent for the whole axis, and
		// enough digits that neighbouring ticks differ.
		p := int(math.Floor(math.Log10(mag)))
		return strconv.FormatFloat(t/math.Pow10(p), 'f', max(0, p-e), 64) + "e" + strconv.Itoa(p)
	}
	return strconv.FormatFloat(t/div, 'f', dec, 64) + suf
}

// FormatNumber formats v compactly for labels and tooltips: about four
// significant digits, a k/M/G/T suffix from 10,000 up, and exponent notation
// below 0.001. It is exported so callers can format table cells the same way.
func FormatNumber(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case v == 0:
		return "0"
	}
	a := math.Abs(v)
	if a >= 1e15 || a < 1e-3 {
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
	if a >= 1e4 {
		div, _, suf := siPrefix(a)
		x := v / div
		s := strconv.FormatFloat(x, 'f', max(0, 2-int(math.Floor(math.Log10(math.Abs(x))))), 64)
		// Rounding can carry into the next prefix: 999.96k is 1M.
		if r, _ := strconv.ParseFloat(s, 64); math.Abs(r) >= 1000 && suf != "T" {
			return FormatNumber(math.Copysign(1000*div, v))
		}
		return trimZeros(s) + suf
	}
	dec := max(0, 3-int(math.Floor(math.Log10(a))))
	return trimZeros(strconv.FormatFloat(v, 'f', dec, 64))
}

// trimZeros drops trailing zeros after a decimal point, and the point.
func trimZeros(s string) string {
	if !strings.Contains(s, ".") {
		return s
	}
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// logTicks returns a log axis covering [lo, hi] (0 < lo <= hi). The domain
// is widened to 1, 2 or 5 times a power of ten. Ticks are at 1-2-5 values
// over up to three decades, otherwise at powers of ten (every few decades
// for very wide ranges) so that labels do not crowd.
func logTicks(lo, hi float64) axis {
	if hi <= lo {
		lo, hi = lo/2, hi*2
	}
	dlo := int(math.Floor(math.Log10(lo)))
	dhi := int(math.Ceil(math.Log10(hi)))
	a := axis{log: true, lo: math.Pow10(dlo), hi: math.Pow10(dhi)}
	// Tighten the domain to the 1-2-5 values just outside the data.
	for _, m := range []float64{5, 2} {
		if v := m * math.Pow10(dlo); v <= lo*(1+1e-12) {
			a.lo = v
			break
		}
	}
	for _, m := range []float64{1, 2, 5} {
		if v := m * math.Pow10(dhi-1); v >= hi*(1-1e-12) && v > a.lo {
			a.hi = v
			break
		}
	}
	decades := dhi - dlo
	if decades <= 3 {
		for d := dlo; d <= dhi; d++ {
			for _, m := range []int64{1, 2, 5} {
				v := tickValue(m, d)
				if v >= a.lo*(1-1e-12) && v <= a.hi*(1+1e-12) {
					a.ticks = append(a.ticks, v)
				}
			}
		}
	} else {
		stride := (decades + 7) / 8
		for d := dlo; d <= dhi; d++ {
			if v := tickValue(1, d); d%stride == 0 && v >= a.lo*(1-1e-12) && v <= a.hi*(1+1e-12) {
				a.ticks = append(a.ticks, v)
			}
		}
	}
	for _, t := range a.ticks {
		a.labels = append(a.labels, FormatNumber(t))
	}
	return a
}

// pos maps v in the axis domain to t in [0, 1].
func (a axis) pos(v float64) float64 {
	if a.log {
		return (math.Log10(v) - math.Log10(a.lo)) / (math.Log10(a.hi) - math.Log10(a.lo))
	}
	return (v - a.lo) / (a.hi - a.lo)
}
