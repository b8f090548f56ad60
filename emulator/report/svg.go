package report

import (
	"fmt"
	"html"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Layout, in SVG user units. The SVG scales to its column's width, so these
// are proportions as much as sizes; 640 wide keeps 12-unit text readable
// when a plot is shown at about 500-700 CSS pixels.
const (
	svgW    = 640.0
	plotH   = 240.0 // height of the plotting area
	marginR = 22.0  // room for half of the last X tick label
	fontPx  = 13.0  // text size; matches svg.plot's CSS font size
	charEm  = 0.6   // estimated mean glyph width in ems (generous: DejaVu Sans is wide)
	rowH    = 20.0  // legend row height
)

// palette is Okabe & Ito's colour-blind safe palette, ordered so the
// low-contrast yellow comes last.
var palette = [...]string{"#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"}

// dashes tell apart series that share a colour when there are more than
// len(palette) of them.
var dashes = [...]string{"", "7 4", "2 3", "9 3 2 3"}

func seriesStyle(i int) (color, dash string) {
	return palette[i%len(palette)], dashes[(i/len(palette))%len(dashes)]
}

func seriesName(s Series, i int) string {
	if s.Name != "" {
		return s.Name
	}
	return "series " + strconv.Itoa(i+1)
}

// showLegend: a lone unnamed series needs no legend.
func showLegend(ss []Series) bool { return len(ss) > 1 || len(ss) == 1 && ss[0].Name != "" }

// esc makes s safe as SVG/XML character data or attribute value: invalid
// UTF-8 and control characters (not allowed in XML) become U+FFFD, then
// markup characters are escaped.
func esc(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0xFFFE || r == 0xFFFF {
			return '\uFFFD'
		}
		return r
	}, s)
	return html.EscapeString(s)
}

// textW estimates the rendered width of s at font size px.
func textW(s string, px float64) float64 {
	return float64(utf8.RuneCountInString(s)) * charEm * px
}

// truncate shortens s to at most n runes, marking the cut with an ellipsis.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// num formats a coordinate to 0.1 unit, which is finer than a pixel at any
// sensible zoom and keeps the file small.
func num(v float64) string {
	if !finite(v) {
		v = 0
	}
	r := math.Round(v*10) / 10
	if r == 0 {
		r = 0 // no "-0"
	}
	return strconv.FormatFloat(r, 'f', -1, 64)
}

// legendEntry is one item of a plot's legend.
type legendEntry struct {
	name, color, dash string
}

// frame is one plot's SVG under construction: margins, axes and output.
type frame struct {
	b                  strings.Builder
	p                  Plot
	left, top, pw, ph  float64
	bottom             float64
	x, y               axis
	legend             []legendEntry
	legendXY           [][2]float64
	barLegend          bool           // legend swatches are boxes rather than lines
	noXGrid            bool           // categorical X: no vertical grid lines
	xTickText          func(f *frame) // custom X tick labels (bars)
	yLabelPx, xLabelPx float64
}

// newFrame lays out a plot with Y axis y: the left margin fits the widest
// Y tick label, and the legend is wrapped into rows above the plot.
func newFrame(p Plot, y axis, legend []legendEntry) *frame {
	f := &frame{p: p, y: y, ph: plotH, legend: legend}
	wl := 0.0
	for _, l := range y.labels {
		wl = math.Max(wl, textW(l, fontPx))
	}
	f.left = 8 + wl + 8
	if p.YLabel != "" {
		f.left += 20
	}
	f.setLeft(f.left)
	f.bottom = 30
	if p.XLabel != "" {
		f.bottom += 22
	}
	return f
}

// setLeft sets the left margin, and with it the plot width and the legend
// layout, which wraps over the width right of the margin.
func (f *frame) setLeft(left float64) {
	f.left = left
	f.pw = svgW - f.left - marginR
	f.legendXY = f.legendXY[:0]
	x, rows, room := 0.0, 0, svgW-8-f.left
	if len(f.legend) > 0 {
		rows = 1
	}
	for _, e := range f.legend {
		w := 24 + textW(truncate(e.name, 40), fontPx) + 18
		if x > 0 && x+w-18 > room {
			x, rows = 0, rows+1
		}
		f.legendXY = append(f.legendXY, [2]float64{x, float64(rows-1) * rowH})
		x += w
	}
	f.top = 12
	if rows > 0 {
		f.top = 10 + float64(rows)*rowH + 4
	}
}

func fitFont(s string, room float64) float64 {
	w := textW(s, fontPx)
	if w <= room {
		return fontPx
	}
	return math.Max(8, fontPx*room/w)
}

// px and py map data values to SVG coordinates. Values outside the domain
// are clamped near the plot so a bad value cannot produce wild coordinates.
func (f *frame) px(v float64) float64 { return f.left + clampT(f.x.pos(v))*f.pw }
func (f *frame) py(v float64) float64 { return f.top + f.ph - clampT(f.y.pos(v))*f.ph }

func clampT(t float64) float64 {
	if math.IsNaN(t) {
		return 0
	}
	return math.Min(math.Max(t, -0.05), 1.05)
}

// xTarget is how many X intervals fit, allowing about 90 units per label.
func (f *frame) xTarget() int { return max(2, min(10, int(f.pw/90))) }

// yTarget is the number of Y intervals to aim for.
const yTarget = 5

// begin writes the SVG header, grid, axes, tick labels and axis labels.
func (f *frame) begin() {
	h := f.top + f.ph + f.bottom
	// Shrink axis labels that would not fit along their axis.
	f.xLabelPx = fitFont(f.p.XLabel, f.pw)
	f.yLabelPx = fitFont(f.p.YLabel, f.ph+f.top)
	b := &f.b
	b.WriteString(`<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 `)
	b.WriteString(num(svgW) + " " + num(h) + `" role="img" aria-label="`)
	b.WriteString(esc(f.p.Title) + "\">\n")

	bottom := f.top + f.ph
	var grid, ax strings.Builder
	for _, t := range f.y.ticks {
		y := num(f.py(t))
		grid.WriteString("M" + num(f.left) + " " + y + "h" + num(f.pw))
		ax.WriteString("M" + num(f.left-4) + " " + y + "h4")
	}
	if !f.noXGrid {
		for _, t := range f.x.ticks {
			x := num(f.px(t))
			grid.WriteString("M" + x + " " + num(f.top) + "v" + num(f.ph))
			ax.WriteString("M" + x + " " + num(bottom) + "v4")
		}
	}
	if grid.Len() > 0 {
		b.WriteString(`<path class="gr" d="` + grid.String() + "\"/>\n")
	}
	b.WriteString(`<path class="ax" d="M` + num(f.left) + " " + num(f.top) + "v" + num(f.ph) + "h" + num(f.pw) + ax.String() + "\"/>\n")
	if f.y.lo < 0 && f.y.hi > 0 && !f.y.log {
		b.WriteString(`<path class="zero" d="M` + num(f.left) + " " + num(f.py(0)) + "h" + num(f.pw) + "\"/>\n")
	}

	b.WriteString(`<g class="tk" text-anchor="end">`)
	for i, t := range f.y.ticks {
		b.WriteString(`<text x="` + num(f.left-7) + `" y="` + num(f.py(t)+4.5) + `">` + esc(f.y.labels[i]) + "</text>")
	}
	b.WriteString("</g>\n")
	if f.xTickText != nil {
		f.xTickText(f)
	} else {
		b.WriteString(`<g class="tk" text-anchor="middle">`)
		for i, t := range f.x.ticks {
			b.WriteString(`<text x="` + num(f.px(t)) + `" y="` + num(bottom+18) + `">` + esc(f.x.labels[i]) + "</text>")
		}
		b.WriteString("</g>\n")
	}
	if f.p.XLabel != "" {
		b.WriteString(`<text x="` + num(f.left+f.pw/2) + `" y="` + num(f.top+f.ph+f.bottom-9) + `" text-anchor="middle"` + fontAttr(f.xLabelPx) + ">" + esc(f.p.XLabel) + "</text>\n")
	}
	if f.p.YLabel != "" {
		// Centred on the plot area but allowed to spill into the top margin.
		cy := num(f.top + f.ph/2)
		b.WriteString(`<text transform="rotate(-90 14 ` + cy + `)" x="14" y="` + cy + `" text-anchor="middle"` + fontAttr(f.yLabelPx) + ">" + esc(f.p.YLabel) + "</text>\n")
	}
}

func fontAttr(px float64) string {
	if px == fontPx {
		return ""
	}
	return ` font-size="` + num(px) + `"`
}

// spans shades the stretches of the X axis in spans, clipped to the axis, each with its
// label as a tooltip and, where it fits, written at its top. They are drawn before the
// series, which stay on top. It returns a note naming the shaded spans and their stretches
// (a label rarely fits a short outage).
func (f *frame) spans(spans []Span) string {
	lo, hi := f.x.lo, f.x.hi
	var drawn []string
	for _, sp := range spans {
		if math.IsNaN(sp.From) || math.IsNaN(sp.To) || math.IsInf(sp.From, 0) || math.IsInf(sp.To, 0) || sp.To < sp.From {
			continue
		}
		from, to := math.Max(sp.From, lo), math.Min(sp.To, hi)
		if to < from {
			continue
		}
		x0, x1 := f.px(from), f.px(to)
		w := math.Max(x1-x0, 1) // an instant still shows
		f.b.WriteString(`<g class="sp"><title>` + esc(sp.Label) + `</title><rect x="` + num(x0) + `" y="` + num(f.top) +
			`" width="` + num(w) + `" height="` + num(f.ph) + `"/>`)
		if sp.Label != "" && textW(sp.Label, 10)+4 <= w {
			f.b.WriteString(`<text x="` + num(x0+2) + `" y="` + num(f.top+11) + `">` + esc(sp.Label) + `</text>`)
		}
		f.b.WriteString("</g>\n")
		drawn = append(drawn, strings.TrimSpace(sp.Label+" "+FormatNumber(sp.From)+"–"+FormatNumber(sp.To)))
	}
	if len(drawn) == 0 {
		return ""
	}
	const listed = 8
	note := "Shaded: " + strings.Join(drawn[:min(len(drawn), listed)], "; ")
	if len(drawn) > listed {
		note += fmt.Sprintf("; and %d more", len(drawn)-listed)
	}
	return note + "."
}

// noData writes a placeholder message in the middle of the plot area.
func (f *frame) noData() {
	f.b.WriteString(`<text class="nd" x="` + num(f.left+f.pw/2) + `" y="` + num(f.top+f.ph/2) + `" text-anchor="middle">no data</text>` + "\n")
}

// end writes the legend and closes the SVG.
func (f *frame) end() string {
	b := &f.b
	for i, e := range f.legend {
		x, y := f.left+f.legendXY[i][0], 10+f.legendXY[i][1]
		// The title gives the full name where the label is truncated.
		b.WriteString("<g><title>" + esc(e.name) + "</title>")
		if f.barLegend {
			b.WriteString(`<rect x="` + num(x+4) + `" y="` + num(y+4) + `" width="12" height="12" fill="` + e.color + `"/>`)
		} else {
			b.WriteString(`<path d="M` + num(x) + " " + num(y+10) + `h20" stroke="` + e.color + `" stroke-width="2.5" fill="none"`)
			if e.dash != "" {
				b.WriteString(` stroke-dasharray="` + e.dash + `"`)
			}
			b.WriteString("/>")
		}
		b.WriteString(`<text x="` + num(x+24) + `" y="` + num(y+14.5) + `">` + esc(truncate(e.name, 40)) + "</text></g>\n")
	}
	b.WriteString("</svg>")
	return b.String()
}

// seriesOpen starts a series group: the tooltip and the stroke style.
func (f *frame) seriesOpen(tip, color, dash string) {
	f.b.WriteString(`<g class="s"><title>` + esc(tip) + `</title><path stroke="` + color + `"`)
	if dash != "" {
		f.b.WriteString(` stroke-dasharray="` + dash + `"`)
	}
	f.b.WriteString(` d="`)
}

// seriesClose ends the series' path, adds its point markers (circles of
// the series' colour at the given coordinates) and closes the group.
func (f *frame) seriesClose(color string, marks [][2]float64) {
	f.b.WriteString(`"/>`)
	for _, m := range marks {
		f.b.WriteString(`<circle cx="` + num(m[0]) + `" cy="` + num(m[1]) + `" r="2.5" fill="` + color + `"/>`)
	}
	f.b.WriteString("</g>\n")
}

// pathWriter emits compact SVG path data: relative moves in tenths of a
// unit, with collinear segments merged (flat stretches of a trace cost
// nothing). Deltas are taken between rounded absolute positions, so rounding
// never accumulates.
type pathWriter struct {
	b        []byte
	wx, wy   int64 // last written point
	cx, cy   int64 // current point; (wx,wy)→(cx,cy) is pending
	open     bool  // a subpath is open
	lWritten bool  // the open subpath's "l" command is written
}

func tenths(v float64) int64 {
	if !finite(v) {
		return 0
	}
	return int64(math.Round(v * 10))
}

// appendNum appends t tenths as a decimal; sep adds the separator that a
// following number needs unless it starts with '-'.
func appendNum(b []byte, t int64, sep bool) []byte {
	if t < 0 {
		b = append(b, '-')
		t = -t
	} else if sep {
		b = append(b, ' ')
	}
	q, r := t/10, t%10
	if q != 0 || r == 0 {
		b = strconv.AppendInt(b, q, 10)
	}
	if r != 0 {
		b = append(b, '.', byte('0'+r))
	}
	return b
}

func (w *pathWriter) moveTo(x, y float64) {
	w.close()
	w.cx, w.cy = tenths(x), tenths(y)
	w.wx, w.wy = w.cx, w.cy
	w.b = append(w.b, 'M')
	w.b = appendNum(w.b, w.cx, false)
	w.b = appendNum(w.b, w.cy, true)
	w.open, w.lWritten = true, false
}

func (w *pathWriter) lineTo(x, y float64) {
	nx, ny := tenths(x), tenths(y)
	d1x, d1y := w.cx-w.wx, w.cy-w.wy
	d2x, d2y := nx-w.cx, ny-w.cy
	switch {
	case d2x == 0 && d2y == 0:
		return
	case d1x == 0 && d1y == 0:
	case d1x*d2y == d1y*d2x && d1x*d2x+d1y*d2y > 0:
		// Same direction: extend the pending segment.
	default:
		w.flush()
	}
	w.cx, w.cy = nx, ny
}

// flush writes the pending segment.
func (w *pathWriter) flush() {
	dx, dy := w.cx-w.wx, w.cy-w.wy
	if dx == 0 && dy == 0 {
		return
	}
	if !w.lWritten {
		w.b = append(w.b, 'l')
		w.b = appendNum(w.b, dx, false)
		w.lWritten = true
	} else {
		w.b = appendNum(w.b, dx, true)
	}
	w.b = appendNum(w.b, dy, true)
	w.wx, w.wy = w.cx, w.cy
}

// close ends the open subpath. A lone point draws nothing; callers mark
// such points themselves.
func (w *pathWriter) close() {
	if w.open {
		w.flush()
		w.open = false
	}
}

func (w *pathWriter) String() string {
	w.close()
	return string(w.b)
}
