package report

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// renderPlot draws p as an SVG element. It also returns notes to show under
// the plot about data that could not be drawn. Unknown kinds draw as Line.
func renderPlot(p Plot) (svg string, notes []string) {
	switch p.Kind {
	case CDF:
		return renderCDF(p)
	case Bar:
		return renderBar(p)
	default:
		return renderLine(p)
	}
}

// extent tracks the range of finite values seen.
type extent struct{ lo, hi float64 }

func newExtent() extent { return extent{math.Inf(1), math.Inf(-1)} }

func (e *extent) add(v float64) {
	e.lo = math.Min(e.lo, v)
	e.hi = math.Max(e.hi, v)
}

func (e extent) empty() bool { return e.lo > e.hi }

// widen gives a single value some room so it can be drawn on an axis.
func (e extent) widen() extent {
	if e.lo < e.hi {
		return e
	}
	if e.lo == 0 {
		return extent{-1, 1}
	}
	d := math.Abs(e.lo) * 0.1
	return extent{e.lo - d, e.hi + d}
}

// valueAxis is the Y axis for measured values. Like common spreadsheet
// charts, it starts at zero when the data are all on one side of it and do
// not span too narrow a band (min < 5/6 max): throughput and delay then read
// as magnitudes, while a tight band (e.g. 95-100%) keeps its detail.
func valueAxis(e extent) axis {
	switch {
	case e.empty():
		e = extent{0, 1}
	case e.lo == e.hi && e.lo == 0:
		e = extent{0, 1}
	case e.lo == e.hi && e.lo > 0:
		e = extent{0, e.hi * 1.1}
	case e.lo == e.hi:
		e = extent{e.lo * 1.1, 0}
	case e.lo >= 0 && e.lo < e.hi*5/6:
		e.lo = 0
	case e.hi <= 0 && e.hi > e.lo*5/6:
		e.hi = 0
	}
	return niceTicks(e.lo, e.hi, yTarget, true)
}

// xAxis is a Line or CDF plot's X axis over e. Lines fit the data exactly
// (time series usually start and end at round times anyway); CDFs are widened
// to ticks so the first and last steps do not sit on the frame.
func xAxis(e extent, logX, expand bool, target int) axis {
	switch {
	case e.empty():
		if logX {
			return logTicks(1, 10)
		}
		return niceTicks(0, 1, target, true)
	case logX:
		return logTicks(e.lo, e.hi)
	}
	e = e.widen()
	return niceTicks(e.lo, e.hi, target, expand)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

func legendOf(ss []Series) []legendEntry {
	if !showLegend(ss) {
		return nil
	}
	var l []legendEntry
	for i, s := range ss {
		c, d := seriesStyle(i)
		l = append(l, legendEntry{seriesName(s, i), c, d})
	}
	return l
}

func renderLine(p Plot) (string, []string) {
	var notes []string
	lines := make([][]pt, len(p.Series))
	stats := make([]lineStats, len(p.Series))
	xe, ye := newExtent(), newExtent()
	nonPos := 0
	for i, s := range p.Series {
		pts, np := linePoints(s, p.LogX)
		nonPos += np
		for _, q := range pts {
			if !q.gap() {
				xe.add(q.x)
				ye.add(q.y)
			}
		}
		stats[i] = statsOf(pts)
		lines[i] = downsample(pts, maxLinePoints)
	}
	if nonPos > 0 {
		notes = append(notes, plural(nonPos, "point", "points")+" with X ≤ 0 not shown on the logarithmic X axis.")
	}
	f := newFrame(p, valueAxis(ye), legendOf(p.Series))
	f.x = fitXTicks(f, func(target int) axis { return xAxis(xe, p.LogX, false, target) })
	f.begin()
	if xe.empty() {
		f.noData()
	} else if !p.LogX {
		if note := f.spans(p.Spans); note != "" {
			notes = append(notes, note)
		}
	}
	for i, s := range p.Series {
		if len(lines[i]) == 0 {
			continue
		}
		st := stats[i]
		tip := fmt.Sprintf("%s: %d points, min %s, mean %s, max %s", seriesName(s, i), st.n,
			FormatNumber(st.min), FormatNumber(st.mean), FormatNumber(st.max))
		if drawn := countPoints(lines[i]); drawn < st.n {
			tip += fmt.Sprintf(" (drawn as %d: min/max per bucket)", drawn)
		}
		c, d := seriesStyle(i)
		f.seriesOpen(tip, c, d)
		// Mark every point of short series, where the samples themselves
		// matter, and isolated points between gaps, which a line cannot show.
		all := countPoints(lines[i]) <= markAllBelow
		var marks [][2]float64
		var w pathWriter
		pts := lines[i]
		for j, q := range pts {
			if q.gap() {
				continue
			}
			x, y := f.px(q.x), f.py(q.y)
			first := j == 0 || pts[j-1].gap()
			if first {
				w.moveTo(x, y)
			} else {
				w.lineTo(x, y)
			}
			if all || first && (j == len(pts)-1 || pts[j+1].gap()) {
				marks = append(marks, [2]float64{x, y})
			}
		}
		f.b.WriteString(w.String())
		f.seriesClose(c, marks)
	}
	return f.end(), notes
}

// markAllBelow: Line series with fewer points get a marker on each.
const markAllBelow = 40

// fitXTicks picks the most X ticks whose labels do not overlap.
func fitXTicks(f *frame, mk func(target int) axis) axis {
	for target := f.xTarget(); ; target-- {
		a := mk(target)
		if target <= 2 || len(a.ticks) < 2 {
			return a
		}
		room := f.pw / float64(len(a.ticks)-1) * 0.9 // ticks are at most this close
		if a.log {
			room = math.Inf(1)
			for i := 1; i < len(a.ticks); i++ {
				room = math.Min(room, (a.pos(a.ticks[i])-a.pos(a.ticks[i-1]))*f.pw)
			}
		}
		widest := 0.0
		for _, l := range a.labels {
			widest = math.Max(widest, textW(l, fontPx))
		}
		if widest+10 <= room {
			return a
		}
		if a.log {
			// Thin 1-2-5 log ticks to powers of ten.
			var t axis = a
			t.ticks, t.labels = nil, nil
			for i, v := range a.ticks {
				if d := math.Log10(v); d == math.Round(d) {
					t.ticks = append(t.ticks, v)
					t.labels = append(t.labels, a.labels[i])
				}
			}
			return t
		}
	}
}

// cdfAxis is the Y axis of a CDF: quartiles, so the median is a grid line.
func cdfAxis() axis {
	return axis{lo: 0, hi: 1,
		ticks:  []float64{0, 0.25, 0.5, 0.75, 1},
		labels: []string{"0", "0.25", "0.5", "0.75", "1"}}
}

func renderCDF(p Plot) (string, []string) {
	var notes []string
	cdfs := make([]ecdf, len(p.Series))
	xe := newExtent()
	skipped, nonPos := 0, 0
	for i, s := range p.Series {
		vals := s.Values
		if vals == nil {
			vals = s.Y
		}
		c := newECDF(vals, p.LogX, maxCDFPoints)
		skipped += c.skipped
		nonPos += c.nonPos
		if len(c.xs) > 0 {
			xe.add(c.xs[0])
			xe.add(c.xs[len(c.xs)-1])
		}
		cdfs[i] = c
	}
	if skipped > 0 {
		notes = append(notes, plural(skipped, "non-finite sample", "non-finite samples")+" (NaN or ±Inf) left out.")
	}
	if nonPos > 0 {
		notes = append(notes, plural(nonPos, "sample", "samples")+" ≤ 0 left out: they cannot be shown on the logarithmic X axis.")
	}
	if p.YLabel == "" {
		p.YLabel = "fraction of samples ≤ x"
	}
	f := newFrame(p, cdfAxis(), legendOf(p.Series))
	f.x = fitXTicks(f, func(target int) axis { return xAxis(xe, p.LogX, true, target) })
	f.begin()
	if xe.empty() {
		f.noData()
	}
	for i, s := range p.Series {
		c := cdfs[i]
		if len(c.xs) == 0 {
			continue
		}
		tip := fmt.Sprintf("%s: %d samples, min %s, median %s, p90 %s, p99 %s, max %s", seriesName(s, i), len(c.sorted),
			FormatNumber(c.sorted[0]), FormatNumber(c.quantile(0.5)), FormatNumber(c.quantile(0.9)),
			FormatNumber(c.quantile(0.99)), FormatNumber(c.sorted[len(c.sorted)-1]))
		col, d := seriesStyle(i)
		f.seriesOpen(tip, col, d)
		// A step function: up at each sample, flat in between, and flat at 1
		// to the right edge, as the CDF stays 1 past the largest sample.
		var w pathWriter
		w.moveTo(f.px(c.xs[0]), f.py(0))
		prev := 0.0
		for j, x := range c.xs {
			w.lineTo(f.px(x), f.py(prev))
			w.lineTo(f.px(x), f.py(c.ps[j]))
			prev = c.ps[j]
		}
		w.lineTo(f.px(f.x.hi), f.py(1))
		f.b.WriteString(w.String())
		f.seriesClose(col, nil)
	}
	return f.end(), notes
}

// maxCatLabel is the longest category label shown in full on a bar plot's
// X axis; the tooltip has the whole label.
const maxCatLabel = 18

func renderBar(p Plot) (string, []string) {
	// Categories in order of first appearance. The k-th use of a label within
	// one series is its own category, so duplicate labels lose no data.
	type catKey struct {
		label string
		k     int
	}
	var cats []string
	index := map[catKey]int{}
	vals := make([]map[int]float64, len(p.Series))
	ye := newExtent()
	for si, s := range p.Series {
		vals[si] = map[int]float64{}
		seen := map[string]int{}
		for i, v := range s.Y {
			label := strconv.Itoa(i + 1)
			switch {
			case i < len(s.Labels):
				label = s.Labels[i]
			case i < len(s.X):
				label = FormatNumber(s.X[i])
			}
			key := catKey{label, seen[label]}
			seen[label]++
			ci, ok := index[key]
			if !ok {
				ci = len(cats)
				index[key] = ci
				cats = append(cats, label)
			}
			if finite(v) {
				vals[si][ci] = v
				ye.add(v)
			}
		}
	}
	// Bars grow from zero, so zero is always on the axis; a little headroom
	// keeps value labels above the tallest bar inside the plot.
	if ye.empty() {
		ye = extent{0, 1}
	} else {
		ye.lo, ye.hi = math.Min(ye.lo, 0), math.Max(ye.hi, 0)
		if ye.lo == ye.hi {
			ye.hi = 1
		}
		pad := (ye.hi - ye.lo) * 0.06
		if ye.hi > 0 {
			ye.hi += pad
		}
		if ye.lo < 0 {
			ye.lo -= pad
		}
	}
	ya := niceTicks(ye.lo, ye.hi, yTarget, true)
	f := newFrame(p, ya, legendOf(p.Series))
	f.barLegend, f.noXGrid = true, true
	f.x = axis{lo: 0, hi: math.Max(1, float64(len(cats)))}

	nc, ns := len(cats), max(1, len(p.Series))
	shown := make([]string, nc)
	widest := 0.0
	for i, c := range cats {
		shown[i] = truncate(c, maxCatLabel)
		widest = math.Max(widest, textW(shown[i], fontPx))
	}
	slot := f.pw / math.Max(1, float64(nc))
	rotate := widest > slot-6
	every := 1 // label every n-th category when they cannot all fit
	if rotate {
		// Rotated labels hang down-left from their slot's centre; widen the
		// left margin so the first ones are not cut off at the SVG's edge.
		cos := math.Cos(40 * math.Pi / 180)
		for range 2 { // the margin changes the slot width: settle it
			need := f.left
			for i, l := range shown {
				need = math.Max(need, textW(l, fontPx)*cos-(float64(i)+0.5)*slot+2)
			}
			f.setLeft(need)
			slot = f.pw / math.Max(1, float64(nc))
		}
		// Rotated labels are parallel, slot·sin(40°) apart; keep ~13 units.
		every = int(math.Ceil(13 / (slot * math.Sin(40*math.Pi/180))))
		f.bottom += widest*math.Sin(40*math.Pi/180) + 4
	}
	f.xTickText = func(f *frame) {
		y := f.top + f.ph + 18
		if rotate {
			f.b.WriteString(`<g class="tk" text-anchor="end">`)
		} else {
			f.b.WriteString(`<g class="tk" text-anchor="middle">`)
		}
		for i := 0; i < nc; i += every {
			x := f.left + (float64(i)+0.5)*slot
			if rotate {
				f.b.WriteString(`<text transform="rotate(-40 ` + num(x+4) + " " + num(y-4) + `)" x="` + num(x+4) + `" y="` + num(y-4) + `">`)
			} else {
				f.b.WriteString(`<text x="` + num(x) + `" y="` + num(y) + `">`)
			}
			f.b.WriteString(esc(shown[i]) + "</text>")
		}
		f.b.WriteString("</g>\n")
	}
	f.begin()
	if nc == 0 {
		f.noData()
		return f.end(), nil
	}

	group := slot * 0.8
	bw := group / float64(ns)
	gapW := 0.0
	if ns > 1 {
		gapW = math.Min(1.5, bw*0.15)
	}
	// Value labels only where every bar has room for its own.
	labelPx := 11.0
	showVals := true
	for si := range p.Series {
		for _, v := range vals[si] {
			if textW(FormatNumber(v), labelPx)+2 > bw {
				showVals = false
			}
		}
	}
	var labels strings.Builder
	for si, s := range p.Series {
		col, _ := seriesStyle(si)
		f.b.WriteString(`<g fill="` + col + `">`)
		for ci := range nc {
			v, ok := vals[si][ci]
			if !ok {
				continue
			}
			x := f.left + float64(ci)*slot + (slot-group)/2 + float64(si)*bw
			y0, y1 := f.py(math.Max(v, 0)), f.py(math.Min(v, 0))
			tip := cats[ci] + ": " + FormatNumber(v)
			if showLegend(p.Series) {
				tip = cats[ci] + " — " + seriesName(s, si) + ": " + FormatNumber(v)
			}
			f.b.WriteString(`<rect class="b" x="` + num(x+gapW/2) + `" y="` + num(y0) + `" width="` + num(bw-gapW) +
				`" height="` + num(y1-y0) + `"><title>` + esc(tip) + "</title></rect>")
			if showVals {
				ly := y0 - 3
				if v < 0 {
					ly = y1 + 10
				}
				labels.WriteString(`<text x="` + num(x+bw/2) + `" y="` + num(ly) + `">` + esc(FormatNumber(v)) + "</text>")
			}
		}
		f.b.WriteString("</g>\n")
	}
	if labels.Len() > 0 {
		f.b.WriteString(`<g class="tk" text-anchor="middle" font-size="11">` + labels.String() + "</g>\n")
	}
	return f.end(), nil
}
