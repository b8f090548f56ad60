// Package report renders an emulator run as one self-contained HTML file with inline SVG plots.
//
// The output has no external references (scripts, stylesheets, fonts or
// images), so it opens offline from a file:// URL and can be archived next to
// the run's raw data. Plots are drawn in Go as SVG; all user-supplied text is
// escaped. The same input always gives byte-identical output, so reports can be
// diffed and used in tests.
package report

import (
	"bytes"
	"fmt"
	"html/template"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Report is the content of one HTML report.
type Report struct {
	Title    string    // page heading; "Emulator report" if empty
	Subtitle string    // e.g. scenario file, seed, date
	Verdict  Verdict   // run validity, shown as a banner under the title
	Tables   []Table   // summary tables, shown first
	Sections []Section // groups of plots, in order
	Notes    []string  // free text paragraphs shown at the end (e.g. caveats)
}

// Verdict says whether the run's results can be trusted. It is shown as a
// green "valid" or a red "INVALID: reason" banner. The zero value is invalid
// so that a caller who forgets to set it does not present a run as good.
type Verdict struct {
	Valid  bool
	Reason string // why it is invalid, or an optional remark when valid
}

// Table is a summary table of preformatted cells. Cells whose text starts
// with a number are right-aligned so that columns of figures line up.
type Table struct {
	Title   string
	Columns []string
	Rows    [][]string
}

// Section is a titled group of plots.
type Section struct {
	Title string
	Plots []Plot
}

// PlotKind selects how a [Plot]'s series are drawn.
type PlotKind int

const (
	// Line draws time series: Series.X against Series.Y. A NaN or infinite
	// value leaves a gap in the line.
	Line PlotKind = iota
	// CDF draws the empirical cumulative distribution of Series.Values.
	CDF
	// Bar draws categorical values: Series.Y per Series.Labels, grouped by
	// label when there are several series.
	Bar
)

// String returns the kind's name.
func (k PlotKind) String() string {
	switch k {
	case Line:
		return "Line"
	case CDF:
		return "CDF"
	case Bar:
		return "Bar"
	}
	return "PlotKind(" + strconv.Itoa(int(k)) + ")"
}

// Plot is one chart. Up to 8 series get distinct colours from a colour-blind
// friendly palette; further series reuse them with dash patterns.
type Plot struct {
	Title          string
	Kind           PlotKind
	XLabel, YLabel string // with units, e.g. "time (s)", "throughput (Mbit/s)"
	Series         []Series
	// LogX uses a logarithmic X axis (Line and CDF; ignored for Bar).
	// Values <= 0 cannot be shown and are left out, with a note under the plot.
	LogX bool
	// Caption is an optional sentence shown under the plot.
	Caption string
	// Spans shade stretches of the X axis behind a Line plot's series (e.g. the faults of
	// a run on its time axis). Ignored for other kinds and for a logarithmic X axis.
	Spans []Span
}

// Span is a stretch [From, To] of a Line plot's X axis, shaded and labelled. Parts outside
// the plotted X range are clipped; a span that is not finite or has To < From is skipped.
type Span struct {
	From, To float64
	Label    string
}

// Series is one data set of a [Plot]. Which fields are used depends on the
// plot's kind:
//
//   - Line: X (e.g. time) and Y, in X order; NaN or ±Inf in either is a gap.
//     If X is nil, the index is used. Extra elements of the longer slice are
//     ignored. Long series are reduced to at most 2000 points by keeping the
//     minimum and maximum of each bucket, so spikes stay visible.
//   - CDF: Values are raw samples (NaN and ±Inf are skipped); if Values is nil,
//     Y is used. The package sorts them; at most 500 points are drawn.
//   - Bar: Y values with category Labels (len(Labels) == len(Y)); a NaN value
//     draws no bar. A missing label falls back to X (formatted) or the 1-based
//     index. Series sharing a label are drawn side by side in its group.
type Series struct {
	Name   string
	X, Y   []float64
	Values []float64
	Labels []string
}

// Write renders r as a complete HTML document to w. Nothing is written if
// rendering fails.
func Write(w io.Writer, r Report) error {
	var buf bytes.Buffer
	if err := page.Execute(&buf, newView(r)); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// WriteFile renders r to path. It writes a temporary file in the same
// directory and renames it over path, so readers never see a half-written
// report.
func WriteFile(path string, r Report) error {
	var buf bytes.Buffer
	if err := Write(&buf, r); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(buf.Bytes())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// CreateTemp makes the file 0600; a report is meant to be shared.
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// view is the template's data: the report with plots already rendered.
type view struct {
	Title, Subtitle string
	Verdict         Verdict
	Tables          []tableView
	Sections        []sectionView
	Notes           []string
}

type tableView struct {
	Title   string
	Columns []string
	Rows    [][]cellView
}

type cellView struct {
	Text string
	Num  bool
}

type sectionView struct {
	ID    string
	Title string
	Plots []plotView
}

type plotView struct {
	Title string
	SVG   template.HTML
	Notes []string
}

func newView(r Report) view {
	v := view{Title: r.Title, Subtitle: r.Subtitle, Verdict: r.Verdict, Notes: r.Notes}
	if strings.TrimSpace(v.Title) == "" {
		v.Title = "Emulator report"
	}
	for _, t := range r.Tables {
		tv := tableView{Title: t.Title, Columns: t.Columns}
		for _, row := range t.Rows {
			// Pad short rows so every row has a cell under every column.
			n := max(len(row), len(t.Columns))
			cells := make([]cellView, n)
			for i := range cells {
				if i < len(row) {
					cells[i] = cellView{Text: row[i], Num: looksNumeric(row[i])}
				}
			}
			tv.Rows = append(tv.Rows, cells)
		}
		v.Tables = append(v.Tables, tv)
	}
	for i, s := range r.Sections {
		sv := sectionView{ID: "sec-" + strconv.Itoa(i+1), Title: s.Title}
		for _, p := range s.Plots {
			svg, notes := renderPlot(p)
			if p.Caption != "" {
				notes = append([]string{p.Caption}, notes...)
			}
			sv.Plots = append(sv.Plots, plotView{Title: p.Title, SVG: template.HTML(svg), Notes: notes})
		}
		v.Sections = append(v.Sections, sv)
	}
	return v
}

// looksNumeric reports whether a table cell starts with a number, such as
// "12", "-3.5 ms", "95%" or "1.2k".
func looksNumeric(s string) bool {
	s = strings.TrimSpace(s)
	s = strings.TrimLeft(s, "+-−≈~<>≤≥")
	return s != "" && (s[0] >= '0' && s[0] <= '9' || s[0] == '.' && len(s) > 1 && s[1] >= '0' && s[1] <= '9')
}

var page = template.Must(template.New("report").Parse(pageTemplate))

// pageTemplate is the whole document. CSS stays small and inline; plot SVGs
// use the classes defined here so each plot need not repeat its styling.
const pageTemplate = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
:root{color-scheme:light}
body{margin:0;background:#f4f5f7;color:#1f2328;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1500px;margin:0 auto;padding:20px 24px 40px}
h1{font-size:1.6em;margin:0 0 2px}
h2{font-size:1.25em;margin:28px 0 10px;padding-bottom:4px;border-bottom:1px solid #d0d7de}
.sub{color:#57606a;margin:0}
.verdict{margin:14px 0 6px;padding:9px 14px;border-radius:6px;font-weight:600}
.verdict.ok{background:#dafbe1;color:#116329;border:1px solid #4ac26b}
.verdict.bad{background:#ffebe9;color:#a40e26;border:1px solid #ff8182}
nav{margin:10px 0;color:#57606a}
nav a{color:#0a58ca;margin-right:14px;text-decoration:none}
nav a:hover{text-decoration:underline}
.tables{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.tw{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;background:#fff;border:1px solid #d0d7de;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;padding:0 0 4px}
th,td{padding:4px 12px;text-align:left;border-bottom:1px solid #e5e7eb;white-space:nowrap}
th{background:#f6f8fa;border-bottom:1px solid #d0d7de}
td.n{text-align:right}
tbody tr:hover{background:#f6f8fa}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,540px),1fr));gap:16px}
figure{margin:0;background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:10px 12px 8px;break-inside:avoid}
figcaption{font-weight:600;margin-bottom:2px}
.cap{margin:2px 0 0;color:#57606a;font-size:.87em}
svg.plot{display:block;width:100%;height:auto;font:13px system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.plot text{fill:#1f2328}
.plot .tk{fill:#57606a}
.plot .gr{stroke:#e5e7eb;fill:none}
.plot .ax{stroke:#6e7781;fill:none}
.plot .zero{stroke:#6e7781;fill:none}
.plot .s path{fill:none;stroke-width:1.6;stroke-linejoin:round;stroke-linecap:round}
.plot .s:hover path{stroke-width:3}
.plot rect.b:hover{opacity:.75}
.plot .nd{fill:#8c959f;font-style:italic}
.plot .sp rect{fill:#fff1c2;stroke:none}
.plot .sp text{fill:#7d4e00;font-size:10px}
.notes p{white-space:pre-line;max-width:75em}
footer{margin-top:32px;color:#8c959f;font-size:.85em}
@media (max-width:600px){main{padding:12px}figure{padding:8px 6px 6px}}
@media print{body{background:#fff}figure,table{break-inside:avoid}}
</style>
</head>
<body>
<main>
<header>
<h1>{{.Title}}</h1>
{{with .Subtitle}}<p class="sub">{{.}}</p>
{{end}}{{if .Verdict.Valid}}<div class="verdict ok" role="status">&#10004; valid{{with .Verdict.Reason}}: {{.}}{{end}}</div>
{{else}}<div class="verdict bad" role="alert">&#10008; INVALID: {{or .Verdict.Reason "no reason given"}}</div>
{{end}}</header>
{{if gt (len .Sections) 1}}<nav>Sections: {{range .Sections}}<a href="#{{.ID}}">{{or .Title .ID}}</a>{{end}}</nav>
{{end}}{{with .Tables}}<section>
<h2>Summary</h2>
<div class="tables">
{{range .}}<div class="tw"><table>
{{with .Title}}<caption>{{.}}</caption>
{{end}}{{with .Columns}}<thead><tr>{{range .}}<th>{{.}}</th>{{end}}</tr></thead>
{{end}}<tbody>
{{range .Rows}}<tr>{{range .}}<td{{if .Num}} class="n"{{end}}>{{.Text}}</td>{{end}}</tr>
{{end}}</tbody>
</table></div>
{{end}}</div>
</section>
{{end}}{{range .Sections}}<section id="{{.ID}}">
{{with .Title}}<h2>{{.}}</h2>
{{end}}<div class="plots">
{{range .Plots}}<figure>
{{with .Title}}<figcaption>{{.}}</figcaption>
{{end}}{{.SVG}}
{{range .Notes}}<p class="cap">{{.}}</p>
{{end}}</figure>
{{end}}</div>
</section>
{{end}}{{with .Notes}}<section class="notes">
<h2>Notes</h2>
{{range .}}<p>{{.}}</p>
{{end}}</section>
{{end}}<footer>Generated by the nanodc emulator. Self-contained: no network access is needed to view this file.</footer>
</main>
</body>
</html>
`
