// Package ratelimit paces readers and writers with shared token buckets, so that everything
// one slice (or one app) sends or receives draws from one bandwidth share, whatever carries
// it: peer streams, origin fetches, management streams.
package ratelimit

import (
	"io"
	"math"
	"time"

	"golang.org/x/time/rate"
)

// Limit converts a rate in bits per second to a limiter's bytes per second; bps <= 0 means
// unlimited.
func Limit(bps int64) rate.Limit {
	if bps <= 0 {
		return rate.Inf
	}
	return rate.Limit(float64(bps) / 8)
}

// New returns a limiter for bps bits per second with a burst of burst bytes. The burst stays
// small on purpose: on a slow line a large burst is queueing delay for everything else.
func New(bps int64, burst int) *rate.Limiter { return rate.NewLimiter(Limit(bps), burst) }

// Reader paces reads from r through l (nil l: r itself). Reads are cut to the burst, and
// the time a read's bytes cost is slept after it: the bytes already arrived, so what is
// paced is how fast the reader comes back for more, which is what a flow-controlled
// transport (QUIC, TCP, HTTP bodies) turns into the sender's rate.
func Reader(r io.Reader, l *rate.Limiter) io.Reader {
	if l == nil {
		return r
	}
	return reader{r, l}
}

type reader struct {
	r io.Reader
	l *rate.Limiter
}

func (p reader) Read(b []byte) (int, error) {
	if p.l.Limit() == rate.Inf {
		return p.r.Read(b)
	}
	if burst := p.l.Burst(); burst > 0 && len(b) > burst {
		b = b[:burst]
	}
	n, err := p.r.Read(b)
	wait(p.l, n)
	return n, err
}

// Writer paces writes to w through l (nil l: w itself), a burst at a time, waiting before
// each piece is written.
func Writer(w io.Writer, l *rate.Limiter) io.Writer {
	if l == nil {
		return w
	}
	return writer{w, l}
}

type writer struct {
	w io.Writer
	l *rate.Limiter
}

func (p writer) Write(b []byte) (int, error) {
	if p.l.Limit() == rate.Inf {
		return p.w.Write(b)
	}
	step := max(p.l.Burst(), 1)
	written := 0
	for len(b) > 0 {
		n := min(len(b), step)
		wait(p.l, n)
		m, err := p.w.Write(b[:n])
		written += m
		if err != nil {
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}

// wait sleeps for the cost of n bytes. Reserving may go into debt (n larger than the burst):
// the limiter then makes the next caller wait for it, so the long-run rate holds.
func wait(l *rate.Limiter, n int) {
	if n <= 0 {
		return
	}
	r := l.ReserveN(time.Now(), n)
	if !r.OK() {
		// n exceeds the burst of a finite limiter: charge the time it would take directly.
		if lim := l.Limit(); lim > 0 && lim != rate.Inf {
			time.Sleep(time.Duration(math.Ceil(float64(n) / float64(lim) * float64(time.Second))))
		}
		return
	}
	time.Sleep(r.Delay())
}
