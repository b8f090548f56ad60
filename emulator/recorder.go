package emulator

import (
	"encoding/csv"
	"io"
	"math"
	"slices"
	"strconv"
	"sync"
)

// Recorder holds the per-second time series of a run: one row per second of the measured
// phase, one column per figure. A figure missing in a second is NaN (a gap, not a zero).
type Recorder struct {
	mu    sync.Mutex
	t     []float64
	cols  map[string][]float64
	order []string
}

func newRecorder() *Recorder { return &Recorder{cols: map[string][]float64{}} }

// row starts the row for time t (seconds since the measured phase began).
func (r *Recorder) row(t float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.t = append(r.t, t)
	for _, name := range r.order {
		r.cols[name] = append(r.cols[name], math.NaN())
	}
}

// Set records a figure for the current second. Names carry their unit, e.g.
// "ping_rtt_ms_p50.same-isp".
func (r *Recorder) Set(name string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.t) == 0 {
		return
	}
	col, ok := r.cols[name]
	if !ok {
		col = make([]float64, len(r.t))
		for i := range col {
			col[i] = math.NaN()
		}
		r.order = append(r.order, name)
	}
	col[len(col)-1] = v
	r.cols[name] = col
}

// Series returns the time axis and the values of one figure.
func (r *Recorder) Series(name string) (t, v []float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.t), slices.Clone(r.cols[name])
}

// Values returns the non-NaN values of a figure.
func (r *Recorder) Values(name string) []float64 {
	_, v := r.Series(name)
	return slices.DeleteFunc(v, math.IsNaN)
}

// WriteCSV writes the series as CSV: t_s first, then the figures in the order they first
// appeared. NaN is written as an empty cell.
func (r *Recorder) WriteCSV(w io.Writer) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cw := csv.NewWriter(w)
	if err := cw.Write(append([]string{"t_s"}, r.order...)); err != nil {
		return err
	}
	rec := make([]string, len(r.order)+1)
	for i, t := range r.t {
		rec[0] = strconv.FormatFloat(t, 'f', 0, 64)
		for j, name := range r.order {
			v := r.cols[name][i]
			if math.IsNaN(v) {
				rec[j+1] = ""
			} else {
				rec[j+1] = strconv.FormatFloat(v, 'g', 6, 64)
			}
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// quantile of sorted-in-place values (nearest rank); NaN when empty.
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	i := int(math.Ceil(q*float64(len(v)))) - 1
	return v[min(max(i, 0), len(v)-1)]
}
