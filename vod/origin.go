package vod

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// originFetcher reads byte ranges of titles from the provider's origin and learns how long
// that takes, so the deadline scheduler knows how early it must start a gap fill.
type originFetcher struct {
	client  *http.Client
	metrics *metrics

	bytes        atomic.Int64 // body bytes from the origin, all reasons
	webseedBytes atomic.Int64 // of which anacrolix's webseed client read (bittorrent strategy)

	// lastByte is when any origin response last made progress (UnixNano), and lastReset when
	// the connections were last dropped: see watch.
	lastByte  atomic.Int64
	lastReset atomic.Int64
	resets    atomic.Int64

	mu         sync.Mutex
	latency    time.Duration // EWMA time to first byte
	throughput float64       // EWMA bytes/s of the body
}

// originStall is how long a gap fill waits without a byte from the origin, while no other
// origin response makes progress either, before it takes the connection for dead. A link
// that comes back after an outage (a WAN or ISP outage cuts the origin off) otherwise carries
// nothing until the transport's next retransmission, and its timer has doubled through the
// outage: QUIC's PTO or TCP's RTO, 2-6 s after a 10 s outage (docs/decisions.md). A congested
// link still trickles bytes; this only fires when nothing at all arrives.
const originStall = 1500 * time.Millisecond

// errOriginStalled is a fill given up by the stall watchdog.
var errOriginStalled = fmt.Errorf("no byte from the origin for %v: connection taken for dead, the next fill redials", originStall)

// ConnResetter is implemented by origin transports that can drop every connection and dial
// fresh ones on the next request (the emulator's HTTP/3 transport). Others only get
// CloseIdleConnections after their stalled requests were cancelled.
type ConnResetter interface {
	ResetConnections()
}

func newOriginFetcher(c *http.Client, m *metrics) *originFetcher {
	return &originFetcher{client: c, metrics: m, latency: 150 * time.Millisecond, throughput: 1e6}
}

// estimate is how long fetching n bytes from the origin is expected to take now.
func (o *originFetcher) estimate(n int64) time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.latency + time.Duration(float64(n)/o.throughput*float64(time.Second))
}

func (o *originFetcher) observe(ttfb, body time.Duration, n int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	const w = 0.3
	o.latency = time.Duration((1-w)*float64(o.latency) + w*float64(ttfb))
	if body > time.Millisecond && n > 16<<10 {
		o.throughput = (1-w)*o.throughput + w*float64(n)/body.Seconds()
	}
}

func (o *originFetcher) countWebseed(n int) {
	o.bytes.Add(int64(n))
	o.webseedBytes.Add(int64(n))
	o.metrics.received.WithLabelValues("origin").Add(float64(n))
}

// progress records that an origin response made progress.
func (o *originFetcher) progress(last *atomic.Int64) {
	now := time.Now().UnixNano()
	last.Store(now)
	o.lastByte.Store(now)
}

// watch cancels a request that made no progress for originStall while no other origin
// response did either, and drops the origin connections (once per stall period) so that the
// next request dials a new one instead of waiting out the dead one's retransmission backoff.
// Call the returned stop when the request ends.
func (o *originFetcher) watch(last *atomic.Int64, cancel context.CancelCauseFunc) (stop func()) {
	var t *time.Timer
	var mu sync.Mutex
	stopped := false
	check := func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		now := time.Now()
		idle := now.Sub(time.Unix(0, max(last.Load(), o.lastByte.Load())))
		if idle < originStall {
			t.Reset(originStall - idle)
			return
		}
		cancel(errOriginStalled)
		o.resetConnections(now)
	}
	mu.Lock()
	t = time.AfterFunc(originStall, check)
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}

// resetConnections drops the origin connections, at most once per stall period (every fill
// stuck on a dead connection would otherwise drop the new one too).
func (o *originFetcher) resetConnections(now time.Time) {
	prev := o.lastReset.Load()
	if now.Sub(time.Unix(0, prev)) < originStall || !o.lastReset.CompareAndSwap(prev, now.UnixNano()) {
		return
	}
	o.resets.Add(1)
	if r, ok := o.client.Transport.(ConnResetter); ok {
		r.ResetConnections()
		return
	}
	o.client.CloseIdleConnections()
}

// fetchRange reads exactly n bytes at off of url; on an error, what it returns are the bytes
// that came before it (for the caller's accounting only). A fetch stalled on a dead connection ends
// with errOriginStalled after originStall (see watch).
func (o *originFetcher) fetchRange(ctx context.Context, url string, off, n int64) ([]byte, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	stop := o.watch(&last, cancel)
	defer stop()
	buf, err := o.doFetchRange(ctx, url, off, n, &last)
	if err != nil && errors.Is(context.Cause(ctx), errOriginStalled) {
		return buf, fmt.Errorf("origin %s: range %d+%d: %w", url, off, n, errOriginStalled)
	}
	return buf, err
}

func (o *originFetcher) doFetchRange(ctx context.Context, url string, off, n int64, last *atomic.Int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("origin %s: %w", url, err)
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	start := time.Now()
	resp, err := o.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("origin %s: %w", url, err)
	}
	defer resp.Body.Close()
	o.progress(last)
	ttfb := time.Since(start)
	if resp.StatusCode != http.StatusPartialContent {
		return nil, fmt.Errorf("origin %s: range %d+%d: status %s", url, off, n, resp.Status)
	}
	buf := make([]byte, n)
	got, err := io.ReadFull(progressReader{resp.Body, o, last}, buf)
	o.bytes.Add(int64(got))
	o.metrics.received.WithLabelValues("origin").Add(float64(got))
	if err != nil {
		// The bytes that came count as sent (the caller's accounting), though they are no use.
		return buf[:got], fmt.Errorf("origin %s: range %d+%d: read %d bytes: %w", url, off, n, got, err)
	}
	o.observe(ttfb, time.Since(start)-ttfb, n)
	return buf, nil
}

// progressReader marks progress on every read that returns bytes.
type progressReader struct {
	r    io.Reader
	o    *originFetcher
	last *atomic.Int64
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.o.progress(p.last)
	}
	return n, err
}

// originReader is an io.ReadSeeker over a title at the origin, for the cdn-only strategy:
// each seek starts a new range request at the next read.
type originReader struct {
	ctx  context.Context
	of   *originFetcher
	url  string
	size int64
	pos  int64
	body io.ReadCloser
}

func (r *originReader) Read(p []byte) (int, error) {
	if r.pos >= r.size {
		return 0, io.EOF
	}
	if r.body == nil {
		req, err := http.NewRequestWithContext(r.ctx, http.MethodGet, r.url, nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", r.pos))
		resp, err := r.of.client.Do(req)
		if err != nil {
			return 0, fmt.Errorf("origin %s: %w", r.url, err)
		}
		if resp.StatusCode != http.StatusPartialContent {
			resp.Body.Close()
			return 0, fmt.Errorf("origin %s: range %d-: status %s", r.url, r.pos, resp.Status)
		}
		r.body = resp.Body
	}
	n, err := r.body.Read(p)
	r.pos += int64(n)
	r.of.bytes.Add(int64(n))
	r.of.metrics.received.WithLabelValues("origin").Add(float64(n))
	if err == io.EOF && r.pos < r.size {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (r *originReader) Seek(off int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = off
	case io.SeekCurrent:
		abs = r.pos + off
	case io.SeekEnd:
		abs = r.size + off
	}
	if abs < 0 {
		return 0, fmt.Errorf("seek to %d: negative position", abs)
	}
	if abs != r.pos && r.body != nil {
		r.body.Close()
		r.body = nil
	}
	r.pos = abs
	return abs, nil
}

func (r *originReader) Close() error {
	if r.body != nil {
		return r.body.Close()
	}
	return nil
}
