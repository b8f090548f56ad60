package origin

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testDir makes a directory to serve, with a secret file beside it that must never be served.
func testDir(t *testing.T) (dir string, movie []byte) {
	t.Helper()
	parent := t.TempDir()
	dir = filepath.Join(parent, "videos")
	must(t, os.Mkdir(dir, 0o755))
	movie = make([]byte, 100)
	for i := range movie {
		movie[i] = byte(i)
	}
	big := make([]byte, 1<<20+7)
	_, _ = rand.Read(big)
	must(t, os.WriteFile(filepath.Join(dir, "movie.mp4"), movie, 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "big.webm"), big, 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "noext"), []byte("plain"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, ".hidden.mp4"), []byte("hidden"), 0o644))
	must(t, os.WriteFile(filepath.Join(parent, "secret.txt"), []byte("SECRET"), 0o644))
	must(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "sub", "x.mp4"), []byte("SECRET"), 0o644))
	must(t, os.Symlink(filepath.Join(parent, "secret.txt"), filepath.Join(dir, "out.mp4")))
	must(t, os.Symlink("../secret.txt", filepath.Join(dir, "rel.mp4")))
	must(t, os.Symlink("movie.mp4", filepath.Join(dir, "inner.mp4")))
	return dir, movie
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// serve runs s over HTTP/1.1 on 127.0.0.1 and returns its address; the server stops, and
// Serve's result is checked, at the end of the test.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve returned %v after cancel, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return within 10s of cancel")
		}
	})
	return ln.Addr().String()
}

// clientFrom returns an HTTP client whose connections come from the local IP ip.
func clientFrom(t *testing.T, ip string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	tr := &http.Transport{DialContext: d.DialContext, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func newServer(t *testing.T, dir string) *Server {
	t.Helper()
	s, err := New(Options{Dir: dir, ShutdownGrace: time.Second})
	must(t, err)
	return s
}

func get(t *testing.T, c *http.Client, method, url, rng string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	must(t, err)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := c.Do(req)
	must(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	must(t, err)
	return resp, body
}

func TestRanges(t *testing.T) {
	dir, movie := testDir(t)
	s := newServer(t, dir)
	addr := serve(t, s)
	c := clientFrom(t, "127.0.0.1")
	url := "http://" + addr + "/movie.mp4"
	for _, tc := range []struct {
		name, method, rng string
		status            int
		body              []byte
		contentRange      string
		contentLength     string
	}{
		{"whole", "GET", "", 200, movie, "", "100"},
		{"first ten", "GET", "bytes=0-9", 206, movie[0:10], "bytes 0-9/100", "10"},
		{"from ten", "GET", "bytes=10-", 206, movie[10:], "bytes 10-99/100", "90"},
		{"last five", "GET", "bytes=-5", 206, movie[95:], "bytes 95-99/100", "5"},
		{"end past the end", "GET", "bytes=90-1000", 206, movie[90:], "bytes 90-99/100", "10"},
		{"start past the end", "GET", "bytes=100-", 416, nil, "bytes */100", ""},
		{"head", "HEAD", "", 200, nil, "", "100"},
		{"head range", "HEAD", "bytes=20-29", 206, nil, "bytes 20-29/100", "10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, c, tc.method, url, tc.rng)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status != 416 && !bytes.Equal(body, tc.body) {
				t.Errorf("body %v, want %v", body, tc.body)
			}
			var e struct {
				Error string `json:"error"`
			}
			if tc.status == 416 && (json.Unmarshal(body, &e) != nil || !strings.Contains(e.Error, "range")) {
				t.Errorf("416 body %q, want a JSON error about the range", body)
			}
			for _, h := range []struct{ key, want string }{
				{"Content-Range", tc.contentRange},
				{"Accept-Ranges", map[bool]string{true: "", false: "bytes"}[tc.status == 416]},
				{"Content-Type", map[bool]string{true: "application/json", false: "video/mp4"}[tc.status == 416]},
			} {
				if got := resp.Header.Get(h.key); got != h.want {
					t.Errorf("%s = %q, want %q", h.key, got, h.want)
				}
			}
			if tc.contentLength != "" && resp.Header.Get("Content-Length") != tc.contentLength {
				t.Errorf("Content-Length = %q, want %q", resp.Header.Get("Content-Length"), tc.contentLength)
			}
		})
	}
	t.Run("seeks on one connection", func(t *testing.T) {
		for _, off := range []int{50, 0, 90, 33, 99} {
			resp, body := get(t, c, "GET", url, fmt.Sprintf("bytes=%d-%d", off, min(off+9, 99)))
			if resp.StatusCode != 206 || !bytes.Equal(body, movie[off:min(off+10, 100)]) {
				t.Fatalf("seek to %d: status %d body %v", off, resp.StatusCode, body)
			}
		}
	})
	t.Run("multiple ranges", func(t *testing.T) {
		resp, body := get(t, c, "GET", url, "bytes=0-1,50-52,-2")
		mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if resp.StatusCode != 206 || err != nil || mt != "multipart/byteranges" {
			t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
		for _, want := range []struct {
			cr   string
			body []byte
		}{{"bytes 0-1/100", movie[0:2]}, {"bytes 50-52/100", movie[50:53]}, {"bytes 98-99/100", movie[98:]}} {
			p, err := mr.NextPart()
			must(t, err)
			got, _ := io.ReadAll(p)
			if p.Header.Get("Content-Range") != want.cr || !bytes.Equal(got, want.body) || p.Header.Get("Content-Type") != "video/mp4" {
				t.Errorf("part %q %v, want %q %v", p.Header.Get("Content-Range"), got, want.cr, want.body)
			}
		}
	})
	t.Run("content types", func(t *testing.T) {
		for _, tc := range []struct{ path, want string }{
			{"/big.webm", "video/webm"},
			{"/noext", "application/octet-stream"},
		} {
			resp, _ := get(t, c, "HEAD", "http://"+addr+tc.path, "")
			if got := resp.Header.Get("Content-Type"); got != tc.want {
				t.Errorf("%s: Content-Type %q, want %q", tc.path, got, tc.want)
			}
		}
	})
}

// rawGet sends a request line exactly as given, bypassing any client-side path cleaning.
func rawGet(t *testing.T, addr, method, target string) (int, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	must(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n", method, target)
	must(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	must(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func TestNoTraversal(t *testing.T) {
	dir, _ := testDir(t)
	addr := serve(t, newServer(t, dir))
	for _, target := range []string{
		"/../secret.txt",
		"/%2e%2e/secret.txt",
		"/%2E%2E%2Fsecret.txt",
		"/..%2fsecret.txt",
		"/..%5csecret.txt",
		"/videos/../secret.txt",
		"//etc/passwd",
		"/%2fetc%2fpasswd",
		"http://origin/../secret.txt",
		"/out.mp4",   // symlink out of the directory (absolute)
		"/rel.mp4",   // symlink out of the directory (relative)
		"/inner.mp4", // symlinks are never followed, even inside
		"/sub",
		"/sub/x.mp4",
		"/.hidden.mp4",
		"/.",
		"/..",
		"/",
		"/movie.mp4%00",
		"/nope.mp4",
	} {
		t.Run(target, func(t *testing.T) {
			status, body := rawGet(t, addr, "GET", target)
			var e struct {
				Error string `json:"error"`
			}
			if status != 404 || json.Unmarshal(body, &e) != nil || e.Error == "" {
				t.Errorf("status %d body %q, want 404 with a JSON error", status, body)
			}
			if bytes.Contains(body, []byte("SECRET")) {
				t.Errorf("served a file outside the directory: %q", body)
			}
		})
	}
	for _, tc := range []struct{ method, target string }{
		{"POST", "/movie.mp4"},
		{"PUT", "/movie.mp4"},
		{"DELETE", "/nope.mp4"},
		{"POST", "/api/v1/stats"},
		{"DELETE", "/metrics"},
	} {
		status, body := rawGet(t, addr, tc.method, tc.target)
		if status != 405 || !strings.Contains(string(body), `"error": "method `+tc.method+` not allowed`) {
			t.Errorf("%s %s: status %d body %q, want a JSON 405", tc.method, tc.target, status, body)
		}
	}
}

func TestCountsPerClient(t *testing.T) {
	dir, _ := testDir(t)
	reg := prometheus.NewRegistry()
	s, err := New(Options{Dir: dir, Registerer: reg})
	must(t, err)
	defer s.Close()
	addr := serve(t, s)
	base := "http://" + addr
	c1, c2 := clientFrom(t, "127.0.0.1"), clientFrom(t, "127.0.0.2")

	get(t, c1, "GET", base+"/movie.mp4", "")          // 100
	get(t, c1, "GET", base+"/movie.mp4", "bytes=0-9") // 10
	get(t, c1, "GET", base+"/big.webm", "")           // 1 MiB + 7, through sendfile
	get(t, c2, "GET", base+"/movie.mp4", "bytes=-5")  // 5
	get(t, c2, "HEAD", base+"/movie.mp4", "")         // 0
	_, notFound := get(t, c2, "GET", base+"/nope.mp4", "")

	want := Stats{
		BytesServed: 100 + 10 + (1<<20 + 7) + 5 + int64(len(notFound)),
		Requests:    6,
		Clients: map[string]ClientStats{
			"127.0.0.1": {BytesServed: 100 + 10 + 1<<20 + 7, Requests: 3},
			"127.0.0.2": {BytesServed: 5 + int64(len(notFound)), Requests: 3},
		},
	}
	if got := s.Stats(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
	// The stats and metrics endpoints are not counted as file requests.
	resp, body := get(t, c1, "GET", base+"/api/v1/stats", "")
	var fromAPI Stats
	if resp.StatusCode != 200 || json.Unmarshal(body, &fromAPI) != nil || fmt.Sprint(fromAPI) != fmt.Sprint(want) {
		t.Errorf("/api/v1/stats = %d %s, want %+v", resp.StatusCode, body, want)
	}
	_, metrics := get(t, c2, "GET", base+"/metrics", "")
	for _, line := range []string{
		`nanodc_origin_bytes_served_total{client="127.0.0.1"} ` + strconv.FormatFloat(100+10+1<<20+7, 'g', -1, 64),
		`nanodc_origin_bytes_served_total{client="127.0.0.2"} ` + strconv.Itoa(5+len(notFound)),
		`nanodc_origin_requests_total{client="127.0.0.2"} 3`,
	} {
		if !strings.Contains(string(metrics), line+"\n") {
			t.Errorf("/metrics lacks %q:\n%s", line, metrics)
		}
	}
	if n, err := testutilCount(reg); err != nil || n != 4 {
		t.Errorf("external registry: %d series (%v), want 4", n, err)
	}
}

func testutilCount(g prometheus.Gatherer) (int, error) {
	mfs, err := g.Gather()
	n := 0
	for _, mf := range mfs {
		n += len(mf.GetMetric())
	}
	return n, err
}

func TestNewErrors(t *testing.T) {
	dir, _ := testDir(t)
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{}, "no directory"},
		{Options{Dir: filepath.Join(dir, "missing")}, "origin directory: stat " + filepath.Join(dir, "missing") + ": no such file"},
		{Options{Dir: filepath.Join(dir, "movie.mp4")}, "not a directory"},
	} {
		if _, err := New(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want %q", tc.opts, err, tc.want)
		}
	}
	reg := prometheus.NewRegistry()
	s, err := New(Options{Dir: dir, Registerer: reg})
	must(t, err)
	if _, err := New(Options{Dir: dir, Registerer: reg}); err == nil || !strings.Contains(err.Error(), "origin metrics") {
		t.Errorf("second New on one registry = %v, want a metrics error", err)
	}
	s.Close()
	if _, err := New(Options{Dir: dir, Registerer: reg}); err != nil {
		t.Errorf("New after Close on one registry = %v", err)
	}
}

// TestServeLifecycle checks a cancelled Serve returns nil, closes its listener and leaves no
// goroutine behind, even with an idle keep-alive connection open.
func TestServeLifecycle(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir, _ := testDir(t)
	s := newServer(t, dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	tr := &http.Transport{}
	resp, err := (&http.Client{Transport: tr}).Get("http://" + ln.Addr().String() + "/movie.mp4")
	must(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v after cancel, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	tr.CloseIdleConnections()
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("listener still accepts after Serve returned")
	}
	// A listener that fails is an error, not a clean stop.
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	ln2.Close()
	if err := s.Serve(context.Background(), ln2); err == nil {
		t.Error("Serve on a closed listener returned nil")
	}
}

// serveHTTP3 runs s over HTTP/3 on 127.0.0.1 and returns its address and a stop that
// cancels it and returns ServeHTTP3's result (failing the test if it does not return).
func serveHTTP3(t *testing.T, s *Server) (addr string, stop func() error) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeHTTP3(ctx, pc) }()
	return pc.LocalAddr().String(), func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("ServeHTTP3 did not return")
			return nil
		}
	}
}

func TestHTTP3(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir, movie := testDir(t)
	s := newServer(t, dir)
	addr, stop := serveHTTP3(t, s)

	var clientConns []net.PacketConn
	c := NewHTTP3Client(func() (net.PacketConn, error) {
		pc, err := net.ListenPacket("udp", "127.0.0.2:0")
		if err == nil {
			clientConns = append(clientConns, pc)
		}
		return pc, err
	})
	c.Timeout = 10 * time.Second
	for _, tc := range []struct {
		url, rng string
		status   int
		body     []byte
	}{
		{"https://" + addr + "/movie.mp4", "bytes=10-19", 206, movie[10:20]},
		{"http://" + addr + "/movie.mp4", "bytes=-3", 206, movie[97:]}, // http:// is rewritten
		{"https://" + addr + "/movie.mp4", "", 200, movie},
	} {
		resp, body := get(t, c, "GET", tc.url, tc.rng)
		if resp.StatusCode != tc.status || !bytes.Equal(body, tc.body) || resp.Proto != "HTTP/3.0" {
			t.Errorf("GET %s %s: %s %d %v, want HTTP/3.0 %d %v", tc.url, tc.rng, resp.Proto, resp.StatusCode, body, tc.status, tc.body)
		}
	}
	if _, err := c.Get("https://localhost:1/movie.mp4"); err == nil || !strings.Contains(err.Error(), "want an IP address") {
		t.Errorf("GET by host name = %v, want an IP-only error", err)
	}
	want := ClientStats{BytesServed: 10 + 3 + 100, Requests: 3}
	if got := s.Stats().Clients["127.0.0.2"]; got != want {
		t.Errorf("stats for 127.0.0.2 = %+v, want %+v", got, want)
	}
	if len(clientConns) != 1 {
		t.Errorf("%d packet conns used, want 1 (one QUIC connection reused)", len(clientConns))
	}
	must(t, c.Transport.(io.Closer).Close())
	if err := stop(); err != nil {
		t.Fatalf("ServeHTTP3 = %v after cancel, want nil", err)
	}
}

// TestHTTP3ResetConnections: after ResetConnections the next request runs on a new QUIC
// connection (its own packet conn), and once the transport is closed a reset does not bring
// it back.
func TestHTTP3ResetConnections(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir, movie := testDir(t)
	addr, stop := serveHTTP3(t, newServer(t, dir))
	defer func() { must(t, stop()) }()

	dials := 0
	tr := NewHTTP3Transport(func() (net.PacketConn, error) {
		dials++
		return net.ListenPacket("udp", "127.0.0.2:0")
	})
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := "https://" + addr + "/movie.mp4"
	for round, wantDials := range []int{1, 1, 2} {
		if round == 2 {
			tr.ResetConnections()
		}
		resp, body := get(t, c, "GET", url, "bytes=0-9")
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, movie[:10]) {
			t.Fatalf("round %d: %d %v", round, resp.StatusCode, body)
		}
		if dials != wantDials {
			t.Errorf("round %d: %d connections dialled, want %d", round, dials, wantDials)
		}
	}
	must(t, tr.Close())
	tr.ResetConnections()
	if _, err := c.Get(url); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("GET after Close and a reset = %v, want a closed-transport error", err)
	}
}
