package emulator

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// progress shows a run's phase and live key figures on one redrawn line (a terminal) or
// as a line every few seconds (logs, CI).
type progress struct {
	w     io.Writer
	lines bool
	mu    sync.Mutex
	last  time.Time
	width int
}

func newProgress(w io.Writer, lines bool) *progress { return &progress{w: w, lines: lines} }

func (p *progress) show(phase string, elapsed, total time.Duration, figures string) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	bar := ""
	if total > 0 {
		const cells = 20
		done := min(cells, int(float64(cells)*elapsed.Seconds()/total.Seconds()))
		bar = fmt.Sprintf("[%s%s] %3.0fs/%.0fs ", strings.Repeat("#", done), strings.Repeat(".", cells-done), elapsed.Seconds(), total.Seconds())
	} else {
		bar = fmt.Sprintf("%4.0fs ", elapsed.Seconds())
	}
	line := fmt.Sprintf("%-8s %s %s", phase, bar, figures)
	if p.lines {
		if time.Since(p.last) < 5*time.Second {
			return
		}
		p.last = time.Now()
		fmt.Fprintln(p.w, line)
		return
	}
	pad := max(0, p.width-len(line))
	p.width = len(line)
	fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", pad))
}

func (p *progress) done() {
	if p.w != nil && !p.lines {
		fmt.Fprintln(p.w)
	}
}
