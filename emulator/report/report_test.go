package report

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const evil = `<script>alert(1)</script>"'&<img src=x onerror=alert(2)>`

// sampleReport exercises every plot kind and the awkward inputs: gaps,
// spikes, log axes, many series, empty and degenerate data.
func sampleReport() Report {
	r := rand.New(rand.NewPCG(42, 7))
	const secs = 600
	t := make([]float64, secs)
	for i := range t {
		t[i] = float64(i)
	}
	var thr []Series
	for g := range 3 {
		y := make([]float64, secs)
		for i := range y {
			y[i] = 80 + 10*float64(g) + 8*r.NormFloat64()
		}
		thr = append(thr, Series{Name: fmt.Sprintf("gw-%d", g+1), X: t, Y: y})
	}
	thr[0].Y[300] = 400 // a spike must show
	for i := 400; i < 430; i++ {
		thr[1].Y[i] = math.NaN() // an outage leaves a gap
	}

	var rtt []Series
	for g := range 3 {
		v := make([]float64, 5000)
		for i := range v {
			v[i] = 20 * (1 + float64(g)) * math.Exp(0.5*r.NormFloat64())
		}
		rtt = append(rtt, Series{Name: fmt.Sprintf("gw-%d", g+1), Values: v})
	}
	rtt[2].Values[0] = math.NaN()

	many := make([]Series, 10)
	for i := range many {
		y := make([]float64, 100)
		for j := range y {
			y[j] = float64(i) + math.Sin(float64(j)/8+float64(i))
		}
		many[i] = Series{Name: fmt.Sprintf("flow %d", i+1), Y: y}
	}

	long := make([]float64, 36_000)
	for i := range long {
		long[i] = 5 + r.Float64()
	}
	long[20_000] = 30

	return Report{
		Title:    "Scenario smoke-10: 10 gateways, throughput + ping",
		Subtitle: "scenarios/smoke-10.yaml · seed 42 · 2026-01-02 15:04 UTC",
		Verdict:  Verdict{Valid: true, Reason: "CPU headroom 63%, no scheduler lag"},
		Tables: []Table{
			{Title: "Throughput", Columns: []string{"gateway", "mean (Mbit/s)", "p5 (Mbit/s)", "loss"},
				Rows: [][]string{{"gw-1", "80.4", "67.2", "0.01%"}, {"gw-2", "90.1", "77.0", "0%"}, {"gw-3", "99.8", "86.5"}}},
			{Title: "Run", Columns: []string{"key", "value"},
				Rows: [][]string{{"duration", "600 s"}, {"gateways", "10"}, {"emulator", "vnet"}}},
		},
		Sections: []Section{
			{Title: "Throughput", Plots: []Plot{
				{Title: "Downlink throughput per gateway", Kind: Line, XLabel: "time (s)", YLabel: "throughput (Mbit/s)", Series: thr},
				{Title: "Mean throughput", Kind: Bar, YLabel: "throughput (Mbit/s)", Series: []Series{
					{Name: "downlink", Y: []float64{80.4, 90.1, 99.8}, Labels: []string{"gw-1", "gw-2", "gw-3"}},
					{Name: "uplink", Y: []float64{19.9, 20.2, math.NaN()}, Labels: []string{"gw-1", "gw-2", "gw-3"}},
				}},
				{Title: "Long trace (36 000 points, one spike)", Kind: Line, XLabel: "sample", YLabel: "rate (kpkt/s)",
					Series: []Series{{Y: long}}, Caption: "Drawn with min/max buckets: the spike at sample 20 000 must be visible."},
			}},
			{Title: "Latency", Plots: []Plot{
				{Title: "Ping RTT", Kind: CDF, XLabel: "RTT (ms)", Series: rtt, LogX: true},
				{Title: "Ping RTT (linear)", Kind: CDF, XLabel: "RTT (ms)", Series: rtt[:1]},
				{Title: "Loss per gateway, long labels", Kind: Bar, YLabel: "loss (%)", XLabel: "gateway", Series: []Series{
					{Y: []float64{0.1, 0, 2.5, 0.7, -0.3, 1, 1, 1, 1, 1, 1, 1},
						Labels: []string{"gateway-alpha-0001", "gateway-beta-0002", "gateway-gamma-0003", "gateway-delta-0004",
							"gateway-epsilon-0005", "gw-6", "gw-7", "gw-8", "gw-9", "gw-10", "gw-11", "a very long label that must be cut"}},
				}},
			}},
			{Title: "Edge cases", Plots: []Plot{
				{Title: "Ten series", Kind: Line, XLabel: "time (s)", YLabel: "value (1)", Series: many},
				{Title: "No series", Kind: Line, XLabel: "time (s)", YLabel: "value"},
				{Title: "Empty and all-NaN series", Kind: CDF, Series: []Series{{Name: "empty"}, {Name: "nan", Values: []float64{math.NaN()}}}},
				{Title: "Single point", Kind: Line, Series: []Series{{Name: "one", X: []float64{5}, Y: []float64{7}}}},
				{Title: "All equal", Kind: Line, XLabel: "time (s)", YLabel: "queue (packets)", Series: []Series{{Y: []float64{3, 3, 3, 3}}}},
				{Title: "Log X, nothing positive", Kind: CDF, LogX: true, Series: []Series{{Values: []float64{-1, 0}}}},
				{Title: "Empty bars", Kind: Bar},
				{Title: "Tiny and huge values", Kind: Line, Series: []Series{
					{Name: "tiny", X: []float64{0, 1, 2}, Y: []float64{1e-9, 2e-9, 1.5e-9}},
				}},
				{Title: "Huge", Kind: Bar, Series: []Series{{Y: []float64{1e12, 3e12}, Labels: []string{"a", "b"}}}},
			}},
		},
		Notes: []string{"Times are emulator (virtual) time.", "Line 1\nline 2 of a multi-line note."},
	}
}

var svgRE = regexp.MustCompile(`(?s)<svg\b.*?</svg>`)

func render(t testing.TB, r Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, r); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// checkXML parses s strictly as XML, as an SVG viewer would.
func checkXML(t *testing.T, s string) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(s))
	for {
		_, err := d.Token()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("invalid SVG: %v\n%.2000s", err, s)
		}
	}
}

func countPlots(r Report) int {
	n := 0
	for _, s := range r.Sections {
		n += len(s.Plots)
	}
	return n
}

func TestRenderAllKinds(t *testing.T) {
	r := sampleReport()
	out := render(t, r)
	svgs := svgRE.FindAllString(out, -1)
	if len(svgs) != countPlots(r) {
		t.Fatalf("found %d <svg> elements, want %d", len(svgs), countPlots(r))
	}
	badNum := regexp.MustCompile(`\b(x|y|d|width|height|viewBox|transform)="[^"]*(NaN|Inf)`)
	for _, s := range svgs {
		checkXML(t, s)
		if m := badNum.FindString(s); m != "" {
			t.Errorf("non-finite number in SVG attribute: %s", m)
		}
	}
	// The page as a whole should be tag-balanced HTML.
	d := xml.NewDecoder(strings.NewReader(out))
	d.Strict, d.AutoClose, d.Entity = false, xml.HTMLAutoClose, xml.HTMLEntity
	for {
		if _, err := d.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("page does not parse: %v", err)
		}
	}
	for _, want := range []string{
		"<!DOCTYPE html>", `<meta charset="utf-8">`, "Downlink throughput per gateway", "time (s)", "throughput (Mbit/s)",
		`class="verdict ok"`, "CPU headroom 63%", `<td class="n">80.4</td>`, `href="#sec-2"`, "no data",
		"samples ≤ 0 left out", "non-finite sample (NaN or ±Inf) left out", "gw-3", "flow 10", ">a very long label…<",
		"line 2 of a multi-line note",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

func TestNoExternalReferences(t *testing.T) {
	out := render(t, sampleReport())
	rest := strings.ReplaceAll(out, `xmlns="http://www.w3.org/2000/svg"`, "")
	for _, bad := range []string{"http://", "https://", "//cdn", "<script", "<link", "@import", "url(", "src="} {
		if strings.Contains(rest, bad) {
			t.Errorf("output contains %q", bad)
		}
	}
}

func TestEscaping(t *testing.T) {
	r := Report{
		Title: evil, Subtitle: evil, Verdict: Verdict{Reason: evil}, Notes: []string{evil},
		Tables: []Table{{Title: evil, Columns: []string{evil}, Rows: [][]string{{evil, evil}}}},
		Sections: []Section{{Title: evil, Plots: []Plot{
			{Title: evil, XLabel: evil, YLabel: evil, Caption: evil, Series: []Series{{Name: evil, Y: []float64{1, 2}}, {Name: "\x00\x1b\xff", Y: []float64{2, 1}}}},
			{Title: evil, Kind: CDF, Series: []Series{{Name: evil, Values: []float64{1, 2}}}},
			{Title: evil, Kind: Bar, Series: []Series{{Name: evil, Y: []float64{1, 2}, Labels: []string{evil, "ok"}}}},
		}}},
	}
	out := render(t, r)
	for _, bad := range []string{"<script", "<img", "onerror=alert(2)>"} {
		if strings.Contains(out, bad) {
			t.Errorf("unescaped %q in output", bad)
		}
	}
	if !strings.Contains(out, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Error("escaped title missing")
	}
	if !strings.Contains(out, `class="verdict bad"`) || !strings.Contains(out, "INVALID: &lt;script&gt;") {
		t.Error("invalid verdict banner missing")
	}
	for _, s := range svgRE.FindAllString(out, -1) {
		checkXML(t, s)
	}
}

func TestVerdict(t *testing.T) {
	out := render(t, Report{})
	if !strings.Contains(out, "INVALID: no reason given") || !strings.Contains(out, "<h1>Emulator report</h1>") {
		t.Error("zero Report should render as an invalid run with a default title")
	}
	out = render(t, Report{Verdict: Verdict{Valid: true}})
	if !strings.Contains(out, `class="verdict ok" role="status">&#10004; valid</div>`) {
		t.Error("valid banner missing")
	}
}

func TestEmptyInputs(t *testing.T) {
	nan := math.NaN()
	var plots []Plot
	for _, k := range []PlotKind{Line, CDF, Bar, PlotKind(99)} {
		for _, logX := range []bool{false, true} {
			for _, ss := range [][]Series{
				nil, {{}}, {{Name: "x"}},
				{{X: []float64{nan}, Y: []float64{nan}, Values: []float64{nan}, Labels: []string{""}}},
				{{X: []float64{1}, Y: []float64{1}, Values: []float64{1}, Labels: []string{"a"}}},
				{{X: []float64{0, 0}, Y: []float64{-2, -2}, Values: []float64{-2, -2}}},
				{{X: []float64{1, 2}, Y: []float64{math.MaxFloat64, -math.MaxFloat64}, Values: []float64{math.MaxFloat64, -math.MaxFloat64}}},
				{{X: []float64{1, 2, 3}, Y: []float64{math.Inf(1), 1, math.Inf(-1)}}},
			} {
				plots = append(plots, Plot{Kind: k, LogX: logX, Series: ss})
			}
		}
	}
	r := Report{Sections: []Section{{Plots: plots}, {}}, Tables: []Table{{}, {Rows: [][]string{{}}}}}
	out := render(t, r)
	svgs := svgRE.FindAllString(out, -1)
	if len(svgs) != len(plots) {
		t.Fatalf("found %d <svg> elements, want %d", len(svgs), len(plots))
	}
	for _, s := range svgs {
		checkXML(t, s)
	}
}

func TestDeterministic(t *testing.T) {
	a, b := render(t, sampleReport()), render(t, sampleReport())
	if a != b {
		t.Fatal("two renders of the same report differ")
	}
}

// TestFileSize: 50 plots of hour-long 1 Hz series must stay small enough to
// mail around and open quickly.
func TestFileSize(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	series := func(n int) []Series {
		var ss []Series
		for g := range n {
			x, y := make([]float64, 3600), make([]float64, 3600)
			for i := range x {
				x[i], y[i] = float64(i), 100*r.Float64() // noise: the worst case for compression
			}
			ss = append(ss, Series{Name: fmt.Sprintf("gw-%d", g), X: x, Y: y})
		}
		return ss
	}
	for _, tc := range []struct{ perPlot, limit int }{{1, 2 << 20}, {3, 5 << 20}} {
		var plots []Plot
		for i := range 50 {
			plots = append(plots, Plot{Title: fmt.Sprint("plot ", i), XLabel: "time (s)", YLabel: "throughput (Mbit/s)", Series: series(tc.perPlot)})
		}
		n := len(render(t, Report{Sections: []Section{{Plots: plots}}}))
		t.Logf("50 plots x %d series x 3600 points: %d bytes", tc.perPlot, n)
		if n > tc.limit {
			t.Errorf("50 plots x %d series: %d bytes, want < %d", tc.perPlot, n, tc.limit)
		}
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "report.html")
	r := sampleReport()
	if err := WriteFile(path, r); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != render(t, r) {
		t.Error("file differs from Write output")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary files left behind: %v", ents)
	}
	if err := WriteFile(filepath.Join(dir, "missing", "report.html"), r); err == nil {
		t.Error("WriteFile into a missing directory succeeded")
	}
	// A copy for eyeballing: REPORT_SAMPLE=/tmp/report-sample.html go test -run TestWriteFile
	if p := os.Getenv("REPORT_SAMPLE"); p != "" {
		if err := WriteFile(p, r); err != nil {
			t.Fatal(err)
		}
		t.Logf("sample report written to %s", p)
	}
}

func BenchmarkWrite(b *testing.B) {
	r := sampleReport()
	for b.Loop() {
		if err := Write(io.Discard, r); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSpans: a Line plot's spans are shaded behind its series, clipped to the X axis, with
// their labels; spans that are not finite, end before they start or fall outside the axis
// are not drawn, and other kinds of plot ignore them.
func TestSpans(t *testing.T) {
	spans := []Span{
		{From: 20, To: 30, Label: "partition isp-b"},
		{From: 90, To: 500, Label: "outage isp-a/an-0"}, // clipped at the axis end
		{From: 40, To: 35, Label: "backwards"},
		{From: math.NaN(), To: 50, Label: "not a number"},
		{From: 200, To: 300, Label: "after the end"},
	}
	x := []float64{0, 25, 50, 75, 100}
	line := Plot{Title: "line", Kind: Line, XLabel: "time (s)", Series: []Series{{Name: "a", X: x, Y: []float64{1, 2, 3, 2, 1}}}, Spans: spans}
	cdf := Plot{Title: "cdf", Kind: CDF, Series: []Series{{Name: "a", Values: x}}, Spans: spans}
	out := render(t, Report{Sections: []Section{{Title: "s", Plots: []Plot{line, cdf}}}})
	svgs := svgRE.FindAllString(out, -1)
	if len(svgs) != 2 {
		t.Fatalf("%d SVGs, want 2", len(svgs))
	}
	checkXML(t, svgs[0])
	for _, want := range []string{"partition isp-b", "outage isp-a/an-0"} {
		if !strings.Contains(svgs[0], "<title>"+want+"</title>") {
			t.Errorf("line plot: no span labelled %q", want)
		}
	}
	for _, absent := range []string{"backwards", "not a number", "after the end"} {
		if strings.Contains(svgs[0], absent) {
			t.Errorf("line plot: span %q drawn", absent)
		}
	}
	if got := strings.Count(svgs[0], `<g class="sp">`); got != 2 {
		t.Errorf("line plot: %d spans drawn, want 2", got)
	}
	if strings.Index(svgs[0], `class="sp"`) > strings.Index(svgs[0], `class="s"`) {
		t.Error("spans drawn over the series, want behind")
	}
	// The clipped span ends at the axis' right end, where the last point is drawn.
	rects := regexp.MustCompile(`<g class="sp"><title>outage isp-a/an-0</title><rect x="([0-9.]+)" y="[0-9.]+" width="([0-9.]+)"`).FindStringSubmatch(svgs[0])
	if rects == nil {
		t.Fatal("no rect for the clipped span")
	}
	x0, _ := strconv.ParseFloat(rects[1], 64)
	w, _ := strconv.ParseFloat(rects[2], 64)
	if x0+w > svgW {
		t.Errorf("clipped span ends at %v, past the plot (%v wide)", x0+w, float64(svgW))
	}
	if strings.Contains(svgs[1], `class="sp"`) {
		t.Error("CDF plot drew spans")
	}
	if !strings.Contains(out, "Shaded: partition isp-b 20–30; outage isp-a/an-0 90–500.") {
		t.Error("no note under the line plot naming the shaded spans")
	}
}
