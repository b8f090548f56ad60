package vod

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent"

	"github.com/nanodc/nanodc/vod/catalog"
)

// StallTimeout ends a stream whose data has not advanced for this long (a title no peer and
// no origin can deliver must not hold a player and a reader forever).
const StallTimeout = 60 * time.Second

// stream is one HTTP response a home player reads. Its deadlines follow a virtual player that
// starts StartupTarget after the request and then consumes the title at its bitrate; a seek
// (a new range) re-anchors it, and so does a stall (the player waits for data, then resumes).
type stream struct {
	title   *title
	bitrate float64 // bytes per second
	created time.Time

	mu        sync.Mutex
	anchor    time.Time
	anchorOff int64
	pos       int64 // next byte the player gets

	firstByte atomic.Int64 // unix nanos of the first byte delivered; 0 before
	stalls    atomic.Int64
}

func (s *stream) deadline(off int64) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deadlineLocked(off)
}

func (s *stream) deadlineLocked(off int64) time.Time {
	return s.anchor.Add(time.Duration(float64(off-s.anchorOff) / s.bitrate * float64(time.Second)))
}

func (s *stream) position() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pos
}

func (s *stream) seek(off int64, startup time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if off == s.pos && !s.anchor.IsZero() {
		return
	}
	s.pos, s.anchorOff, s.anchor = off, off, time.Now().Add(startup)
}

// advanced records delivered bytes; when the bytes came later than the virtual player needed
// them the player stalled, and it resumes from now.
func (s *stream) advanced(n int) (late bool) {
	now := time.Now()
	first := s.firstByte.CompareAndSwap(0, now.UnixNano())
	s.mu.Lock()
	defer s.mu.Unlock()
	if first && now.Before(s.deadlineLocked(s.pos)) {
		// A player may start as soon as it has bytes: from the first byte on, plan as if it
		// plays from then (the earliest it can), not from the startup target.
		s.anchor, s.anchorOff = now, s.pos
	}
	if d := s.deadlineLocked(s.pos); now.After(d.Add(50 * time.Millisecond)) {
		late = true
		s.anchor, s.anchorOff = now, s.pos
	}
	s.pos += int64(n)
	return late
}

// titleReader is what http.ServeContent reads: the torrent (or origin) reader plus the
// bookkeeping that feeds the deadline scheduler and the metrics.
type titleReader struct {
	app *App
	s   *stream
	ctx context.Context
	// exactly one of these
	tr torrent.Reader
	or *originReader

	started bool // startPlayback ran (at the first read, once the range's start is known)
}

func (r *titleReader) Read(p []byte) (int, error) {
	pos := r.s.position()
	fromCache := false
	if r.tr != nil {
		ti := r.s.title
		plen := ti.entry.PieceLength
		fromCache = ti.t.Piece(int(pos / plen)).State().Complete
		// The piece boundary keeps a read within one piece, so "from cache" is exact.
		if end := (pos/plen + 1) * plen; int64(len(p)) > end-pos {
			p = p[:end-pos]
		}
	}
	if r.tr != nil && !r.started {
		r.started = true
		r.app.startPlayback(r.s)
	}
	ctx, cancel := context.WithTimeout(r.ctx, StallTimeout)
	defer cancel()
	var n int
	var err error
	if r.tr != nil {
		n, err = r.tr.ReadContext(ctx, p)
	} else {
		n, err = r.or.Read(p)
	}
	if n > 0 {
		if r.s.advanced(n) {
			r.s.stalls.Add(1)
			r.app.metrics.stalls.Inc()
			r.s.title.counters.stalls.Add(1)
		}
		r.app.countServed(r.s.title, n, fromCache)
	}
	if errors.Is(err, context.DeadlineExceeded) && r.ctx.Err() == nil {
		err = fmt.Errorf("title %q: no data for %s at byte %d", r.s.title.entry.Name, StallTimeout, pos)
	}
	return n, err
}

func (r *titleReader) Seek(off int64, whence int) (int64, error) {
	var abs int64
	var err error
	if r.tr != nil {
		abs, err = r.tr.Seek(off, whence)
	} else {
		abs, err = r.or.Seek(off, whence)
	}
	if err == nil && abs < r.s.title.entry.Size {
		r.s.seek(abs, r.app.opts.StartupTarget)
	}
	return abs, err
}

// Handler serves the home network: GET/HEAD /vod/{title} streams a title with full Range
// support (title = CID, infohash or name) and GET /api/v1/vod/titles lists the known titles.
func (a *App) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/vod/{title...}", a.serveTitle)
	mux.HandleFunc("GET /api/v1/vod/titles", a.serveTitles)
	mux.HandleFunc("GET /api/v1/vod/stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.Stats())
	})
	return mux
}

// ServeAddTitle adds the signed catalog entry in the request body (POST): the title becomes
// streamable at /vod/{title} and is fetched on first play. Only entries signed by a provider
// the app trusts are accepted, so whoever may reach it can add nothing but that provider's
// own titles. Callers decide who may reach it (the node's core API wants its token; a
// slice's app takes it on its home-side path).
func (a *App) ServeAddTitle(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, catalog.MaxEntrySize))
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "reading catalog entry: " + err.Error()})
		return
	}
	e, err := catalog.Decode(body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	if err := a.AddTitle(e); err != nil {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"cid": e.CID, "name": e.Name})
}

func (a *App) serveTitles(w http.ResponseWriter, _ *http.Request) {
	type item struct {
		CID        string  `json:"cid"`
		InfoHash   string  `json:"infohash"`
		Name       string  `json:"name"`
		Size       int64   `json:"size"`
		MIME       string  `json:"mime"`
		BitrateBps int64   `json:"bitrate_bps"`
		DurationS  float64 `json:"duration_s"`
		Cached     int64   `json:"cached_bytes"`
		Pinned     bool    `json:"pinned"`
	}
	var out []item
	for _, e := range a.Titles() {
		ti, _ := a.lookup(e.CID)
		it := item{CID: e.CID, InfoHash: e.InfoHash, Name: e.Name, Size: e.Size, MIME: e.MIME,
			BitrateBps: e.BitrateBps, DurationS: e.DurationS}
		a.mu.Lock()
		if ti.t != nil {
			it.Cached = ti.t.BytesCompleted()
		}
		if st := a.state.Titles[e.CID]; st != nil {
			it.Pinned = st.Pinned
		}
		a.mu.Unlock()
		out = append(out, it)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *App) serveTitle(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method " + r.Method + " not allowed; use GET or HEAD"})
		return
	}
	ref := strings.TrimSuffix(r.PathValue("title"), "/")
	ti, ok := a.lookup(ref)
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("unknown title %q", ref)})
		return
	}
	e := ti.entry
	s := &stream{title: ti, bitrate: float64(e.BitrateBps) / 8, created: time.Now()}
	s.seek(0, a.opts.StartupTarget)
	tr := &titleReader{app: a, s: s, ctx: r.Context()}
	if a.opts.Strategy == StrategyCDNOnly {
		tr.or = &originReader{ctx: r.Context(), of: a.origin, url: ti.originURL(), size: e.Size}
		defer tr.or.Close()
	} else {
		a.mu.Lock()
		t, err := a.torrentLocked(ti)
		a.mu.Unlock()
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		rd := t.NewReader()
		defer rd.Close()
		// Not SetResponsive: a responsive reader hands out chunks before their piece passed its
		// hash check, and no unverified byte may reach a player.
		if a.opts.Strategy == StrategyNanodc {
			rd.SetReadahead(a.readaheadBytes(e))
		}
		rd.SetContext(r.Context())
		tr.tr = rd
	}
	if r.Method == http.MethodGet {
		a.startStream(s)
		defer a.endStream(s)
	}
	w.Header().Set("Content-Type", e.MIME)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("ETag", `"`+e.CID+`"`)
	http.ServeContent(w, r, "", time.Time{}, tr)
}

// readaheadBytes is how much of a title ahead of a player the nanodc strategy asks peers for.
func (a *App) readaheadBytes(e *catalog.Entry) int64 {
	return max(int64(a.opts.Readahead.Seconds()*float64(e.BitrateBps)/8), 8<<10)
}

func (a *App) startStream(s *stream) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.streams[s] = struct{}{}
	st := a.state.title(s.title.entry.CID)
	st.Plays++
	st.LastUsed = time.Now()
	s.title.counters.streams.Add(1)
	a.metrics.streams.Inc()
}

func (a *App) endStream(s *stream) {
	a.mu.Lock()
	delete(a.streams, s)
	a.state.title(s.title.entry.CID).LastUsed = time.Now()
	a.mu.Unlock()
	if fb := s.firstByte.Load(); fb > 0 {
		startup := time.Unix(0, fb).Sub(s.created)
		a.metrics.startup.Observe(startup.Seconds())
	}
}

func (a *App) countServed(ti *title, n int, fromCache bool) {
	if fromCache {
		ti.counters.servedCache.Add(int64(n))
		a.metrics.served.WithLabelValues("cache").Add(float64(n))
	} else {
		ti.counters.servedNetwork.Add(int64(n))
		a.metrics.served.WithLabelValues("network").Add(float64(n))
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

var _ io.ReadSeeker = (*titleReader)(nil)
