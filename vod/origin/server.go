package origin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nanodc/nanodc/vod/catalog"
)

// Options configure a Server.
type Options struct {
	// Dir holds the files to serve. It must exist.
	Dir string
	// Logger receives start/stop lines and, at debug level, one line per request.
	Logger *slog.Logger
	// Registerer, if set, also gets the origin's collectors (they are always on the server's
	// own /metrics).
	Registerer prometheus.Registerer
	// ShutdownGrace bounds how long a cancelled Serve waits for running downloads; 5 s if 0.
	ShutdownGrace time.Duration
}

// Server serves one directory of video files and counts what it sends.
type Server struct {
	dir     string
	log     *slog.Logger
	reg     *prometheus.Registry
	extReg  prometheus.Registerer
	metrics *metrics
	grace   time.Duration
	handler http.Handler

	bytes, requests atomic.Int64
	mu              sync.Mutex
	clients         map[string]*client
}

// client holds one client IP's counters; the Prometheus children are looked up once.
type client struct {
	bytes, requests atomic.Int64
	promBytes       prometheus.Counter
	promRequests    prometheus.Counter
}

// Stats are the origin's counters since it started.
type Stats struct {
	BytesServed int64                  `json:"bytes_served"` // response body bytes written
	Requests    int64                  `json:"requests"`     // file requests, any status
	Clients     map[string]ClientStats `json:"clients"`      // by client IP
}

// ClientStats are one client IP's counters.
type ClientStats struct {
	BytesServed int64 `json:"bytes_served"`
	Requests    int64 `json:"requests"`
}

// New checks the directory and sets up metrics.
func New(opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("origin: no directory to serve")
	}
	fi, err := os.Stat(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("origin directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("origin directory %s: not a directory", opts.Dir)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		dir:     opts.Dir,
		log:     log,
		reg:     prometheus.NewRegistry(),
		extReg:  opts.Registerer,
		metrics: newMetrics(),
		grace:   opts.ShutdownGrace,
		clients: make(map[string]*client),
	}
	if s.grace <= 0 {
		s.grace = 5 * time.Second
	}
	for _, c := range s.metrics.collectors() {
		s.reg.MustRegister(c)
	}
	if s.extReg != nil {
		for i, c := range s.metrics.collectors() {
			if err := s.extReg.Register(c); err != nil {
				for _, done := range s.metrics.collectors()[:i] {
					s.extReg.Unregister(done)
				}
				return nil, fmt.Errorf("origin metrics: %w", err)
			}
		}
	}
	metricsHandler := promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})
	s.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Routed by hand: http.ServeMux would clean "/../x" and redirect, hiding what the
		// client asked for; here every other path is a file name, checked strictly.
		switch r.URL.Path {
		case "/api/v1/stats":
			if !allow(w, r) {
				return
			}
			writeJSON(w, http.StatusOK, s.Stats())
		case "/metrics":
			if !allow(w, r) {
				return
			}
			metricsHandler.ServeHTTP(w, r)
		default:
			s.serveFile(w, r)
		}
	})
	return s, nil
}

// Close unregisters the metrics from Options.Registerer. Serve and ServeHTTP3 stop with
// their contexts.
func (s *Server) Close() error {
	if s.extReg != nil {
		for _, c := range s.metrics.collectors() {
			s.extReg.Unregister(c)
		}
	}
	return nil
}

// Handler serves files, stats and metrics; see the package doc for the routes.
func (s *Server) Handler() http.Handler { return s.handler }

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{
		BytesServed: s.bytes.Load(),
		Requests:    s.requests.Load(),
		Clients:     make(map[string]ClientStats, len(s.clients)),
	}
	for ip, c := range s.clients {
		st.Clients[ip] = ClientStats{BytesServed: c.bytes.Load(), Requests: c.requests.Load()}
	}
	return st
}

func (s *Server) client(ip string) *client {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.clients[ip]
	if c == nil {
		c = &client{
			promBytes:    s.metrics.bytes.WithLabelValues(ip),
			promRequests: s.metrics.requests.WithLabelValues(ip),
		}
		s.clients[ip] = c
	}
	return c
}

// clientIP is the remote IP of a request; IPv4-mapped IPv6 addresses count as IPv4, so one
// client is one key whichever socket family it came through.
func clientIP(remoteAddr string) string {
	if ap, err := netip.ParseAddrPort(remoteAddr); err == nil {
		return ap.Addr().Unmap().WithZone("").String()
	}
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return remoteAddr
	}
	return host
}

func (s *Server) serveFile(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	c := s.client(clientIP(r.RemoteAddr))
	c.requests.Add(1)
	s.requests.Add(1)
	c.promRequests.Inc()
	cw := &countingWriter{ResponseWriter: w, add: func(n int64) {
		c.bytes.Add(n)
		s.bytes.Add(n)
		c.promBytes.Add(float64(n))
	}}
	s.file(cw, r)
	s.log.Debug("origin request", "client", r.RemoteAddr, "method", r.Method, "path", r.URL.Path,
		"range", r.Header.Get("Range"), "status", cw.status(), "bytes", cw.n, "duration", time.Since(start))
}

func (s *Server) file(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r) {
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, "/")
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such file %q", r.URL.Path))
		return
	}
	if err := catalog.ValidateName(name); err != nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such file %q: %v", name, err))
		return
	}
	// os.Root confines every lookup to the directory, whatever races with renames or links.
	root, err := os.OpenRoot(s.dir)
	if err != nil {
		s.log.Error("origin directory unavailable", "dir", s.dir, "err", err)
		writeError(w, http.StatusInternalServerError, "origin directory unavailable")
		return
	}
	defer root.Close()
	lfi, err := root.Lstat(name)
	if err != nil || !lfi.Mode().IsRegular() {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such file %q", name))
		return
	}
	f, err := root.Open(name)
	if err != nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such file %q", name))
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such file %q", name))
		return
	}
	ct := catalog.MIMEByExtension(name)
	if ct == "" {
		ct = mime.TypeByExtension(filepath.Ext(name))
	}
	if ct == "" {
		ct = "application/octet-stream" // never sniff: that would read the file for nothing
	}
	w.Header().Set("Content-Type", ct)
	http.ServeContent(&jsonErrors{ResponseWriter: w}, r, name, fi.ModTime(), f)
}

// jsonErrors turns the plain-text errors http.ServeContent writes with http.Error (416 for a
// range past the end, 412 for a failed precondition) into the API's {"error": "..."} form.
type jsonErrors struct {
	http.ResponseWriter
	failed bool
}

func (w *jsonErrors) WriteHeader(code int) {
	h := w.Header()
	if code >= 400 && strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		w.failed = true
		h.Set("Content-Type", "application/json")
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *jsonErrors) Write(p []byte) (int, error) {
	if !w.failed {
		return w.ResponseWriter.Write(p)
	}
	b, _ := json.Marshal(map[string]string{"error": strings.TrimSpace(string(p))})
	if _, err := w.ResponseWriter.Write(append(b, '\n')); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ReadFrom passes ServeContent's copy through to the counting writer's fast path; errors
// never use it.
func (w *jsonErrors) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok && !w.failed {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{w}, r)
}

func (w *jsonErrors) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// allow admits GET and HEAD; anything else gets a JSON 405.
func allow(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed, use GET or HEAD", r.Method))
	return false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// countingWriter counts the body bytes the connection accepted, as they go (a long download
// shows up in Stats while it runs, not only at its end).
type countingWriter struct {
	http.ResponseWriter
	add  func(int64)
	n    int64
	code int
}

func (w *countingWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.count(n)
	return n, err
}

// ReadFrom keeps the underlying writer's fast path (sendfile on TCP) that http.ServeContent
// uses through io.Copy.
func (w *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err := rf.ReadFrom(r)
		w.count64(n)
		return n, err
	}
	return io.Copy(writerOnly{w}, r)
}

func (w *countingWriter) count(n int) { w.count64(int64(n)) }

func (w *countingWriter) count64(n int64) {
	if n > 0 {
		w.n += n
		w.add(n)
	}
}

func (w *countingWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

// Flush and Unwrap keep http.ResponseController working through the wrapper.
func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// writerOnly hides ReadFrom so io.Copy does not recurse into it.
type writerOnly struct{ io.Writer }

// Serve serves HTTP/1.1 on ln until ctx is cancelled, then shuts down gracefully (running
// downloads get ShutdownGrace to finish) and returns nil. It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("origin serving HTTP", "addr", ln.Addr().String(), "dir", s.dir)
	select {
	case err := <-errc:
		return fmt.Errorf("origin: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		s.log.Warn("origin: downloads still running at shutdown; closing them", "err", err)
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("origin: %w", err)
	}
	s.log.Info("origin stopped", "addr", ln.Addr().String())
	return nil
}

// isClosed reports errors that only mean the listener was closed.
func isClosed(err error) bool {
	return errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) || errors.Is(err, fs.ErrClosed)
}
