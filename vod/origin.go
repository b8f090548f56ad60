package vod

import (
	"context"
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

	mu         sync.Mutex
	latency    time.Duration // EWMA time to first byte
	throughput float64       // EWMA bytes/s of the body
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

// fetchRange reads exactly n bytes at off of url.
func (o *originFetcher) fetchRange(ctx context.Context, url string, off, n int64) ([]byte, error) {
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
	ttfb := time.Since(start)
	if resp.StatusCode != http.StatusPartialContent {
		return nil, fmt.Errorf("origin %s: range %d+%d: status %s", url, off, n, resp.Status)
	}
	buf := make([]byte, n)
	got, err := io.ReadFull(resp.Body, buf)
	o.bytes.Add(int64(got))
	o.metrics.received.WithLabelValues("origin").Add(float64(got))
	if err != nil {
		return nil, fmt.Errorf("origin %s: range %d+%d: read %d bytes: %w", url, off, n, got, err)
	}
	o.observe(ttfb, time.Since(start)-ttfb, n)
	return buf, nil
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
