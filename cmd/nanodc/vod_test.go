package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// run runs the binary and returns its stdout; stderr goes into the failure message.
func run(t *testing.T, bin string, env []string, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, &cmdError{err: err, stderr: stderr.String()}
	}
	return out, nil
}

type cmdError struct {
	err    error
	stderr string
}

func (e *cmdError) Error() string { return e.err.Error() + ": " + e.stderr }

// lockedBuffer collects a child's log while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestVodPublishOriginAria2 plays the provider and a stock BitTorrent client: make a key,
// start the origin, publish a file, then let aria2c fetch the title with nothing but the
// published .torrent (no trackers, no DHT, no peers: only the BEP 19 webseed) and compare bytes.
func TestVodPublishOriginAria2(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	aria, err := exec.LookPath("aria2c")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("aria2c is not installed (scripts/install-deps.sh installs the aria2 package)")
		}
		t.Skip("aria2c is not installed (apt-get install aria2)")
	}
	bin := buildBinary(t)
	root := t.TempDir()
	media, cat, dl := filepath.Join(root, "media"), filepath.Join(root, "catalog"), filepath.Join(root, "download")
	if err := os.Mkdir(media, 0o755); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(root, "provider.key")
	noFFprobe := []string{"PATH=" + t.TempDir()} // the results must not depend on ffprobe being installed

	out, err := run(t, bin, nil, "vod", "keygen", "--out", key, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var kg struct {
		PeerID string `json:"peer_id"`
	}
	if err := json.Unmarshal(out, &kg); err != nil || !strings.HasPrefix(kg.PeerID, "12D3KooW") {
		t.Fatalf("keygen output %q: want a JSON Ed25519 peer ID", out)
	}

	// The origin first, on a free port, so the published webseed URL names it.
	addr, origin, originLog := startOrigin(t, bin, media)

	data := make([]byte, 3<<20+12345) // not a whole number of pieces
	_, _ = rand.Read(data)
	video := filepath.Join(media, "title one.mp4")
	if err := os.WriteFile(video, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, bin, noFFprobe, "vod", "publish", video, "--key", key, "--origin", "http://"+addr+"/",
		"--catalog", cat, "--bitrate", "1.5M", "--mime", "video/mp4", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var titles []struct {
		Name, CID, InfoHash, Torrent, Origin, Provider string
		Size, Pieces                                   int64
		BitrateBps                                     int64 `json:"bitrate_bps"`
		PieceLength                                    int64 `json:"piece_length"`
	}
	if err := json.Unmarshal(out, &titles); err != nil || len(titles) != 1 {
		t.Fatalf("publish output %q: %v", out, err)
	}
	ti := titles[0]
	if ti.Name != "title one.mp4" || ti.Size != int64(len(data)) || ti.BitrateBps != 1_500_000 ||
		ti.PieceLength != 256<<10 || ti.Pieces != 13 || ti.Provider != kg.PeerID ||
		ti.Origin != "http://"+addr+"/title%20one.mp4" || ti.Torrent != filepath.Join(cat, "title one.mp4.torrent") {
		t.Fatalf("published title %+v", ti)
	}

	out, err = run(t, bin, nil, "vod", "catalog", "--catalog", cat)
	if err != nil || !strings.Contains(string(out), ti.CID) || !strings.Contains(string(out), "title one.mp4") {
		t.Fatalf("vod catalog: %v\n%s", err, out)
	}

	// A stock client, with every peer source off: the webseed is the only way to the bytes.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ariaCmd := exec.CommandContext(ctx, aria,
		"--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false", "--enable-peer-exchange=false",
		"--disable-ipv6=true", "--seed-time=0", "--bt-stop-timeout=30", "--file-allocation=none",
		"--console-log-level=warn", "--summary-interval=0", "--dir", dl, ti.Torrent)
	ariaOut, err := ariaCmd.CombinedOutput()
	if err != nil {
		t.Fatalf("aria2c: %v\n%s\norigin log:\n%s", err, ariaOut, originLog)
	}
	got, err := os.ReadFile(filepath.Join(dl, "title one.mp4"))
	if err != nil {
		t.Fatalf("aria2c left no file: %v\n%s", err, ariaOut)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("downloaded %d bytes differ from the published file (%d bytes)", len(got), len(data))
	}

	resp, err := http.Get("http://" + addr + "/api/v1/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Clients map[string]struct {
			BytesServed int64 `json:"bytes_served"`
			Requests    int64 `json:"requests"`
		} `json:"clients"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if c := st.Clients["127.0.0.1"]; c.BytesServed < int64(len(data)) || c.Requests < 1 {
		t.Errorf("origin stats for 127.0.0.1: %+v, want at least the %d bytes of the title", c, len(data))
	}

	if err := origin.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- origin.Wait() }()
	select {
	case err := <-done:
		if err != nil || !strings.Contains(originLog.String(), "origin stopped") {
			t.Errorf("origin exited with %v after SIGINT:\n%s", err, originLog)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("origin did not stop within 10s of SIGINT")
	}
}

func TestVodCLIErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "k")
	if _, err := run(t, bin, nil, "vod", "keygen", "--out", key); err != nil {
		t.Fatal(err)
	}
	video := filepath.Join(dir, "v.mp4")
	_ = os.WriteFile(video, []byte("not really a video"), 0o644)
	noFFprobe := []string{"PATH=" + t.TempDir()}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"vod", "keygen", "--out", key}, "already exists; not overwriting"},
		{[]string{"vod", "origin", "--dir", filepath.Join(dir, "missing"), "--listen", "127.0.0.1:0"}, "origin directory: stat " + filepath.Join(dir, "missing")},
		{[]string{"vod", "catalog", "--catalog", filepath.Join(dir, "missing")}, "catalog directory"},
		{[]string{"vod", "publish", video, "--key", key, "--origin", "http://127.0.0.1:1/", "--catalog", dir}, "pass --bitrate"},
		{[]string{"vod", "publish", video, "--key", key, "--origin", "http://127.0.0.1:1/", "--catalog", dir, "--bitrate", "fast"}, "--bitrate: \"fast\""},
		{[]string{"vod", "publish", video, "--key", key, "--origin", "127.0.0.1:1", "--catalog", dir, "--bitrate", "1M"}, "--origin:"},
		{[]string{"vod", "publish", video, "--key", key, "--origin", "http://127.0.0.1:1/", "--catalog", dir, "--bitrate", "1M", "--piece-length", "100000"}, "piece length 100000"},
		{[]string{"vod", "publish", video, "--key", video, "--origin", "http://127.0.0.1:1/", "--catalog", dir, "--bitrate", "1M"}, "provider key file " + video},
		{[]string{"vod", "publish", "--key", key}, "requires at least 1 arg"},
	} {
		_, err := run(t, bin, noFFprobe, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("nanodc %v: %v, want a failure mentioning %q", tc.args, err, tc.want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1500000", 1_500_000, true}, {"1.5M", 1_500_000, true}, {"1500k", 1_500_000, true},
		{"2Mbps", 2_000_000, true}, {"800 kb/s", 0, false}, {"0", 0, false}, {"-1M", 0, false}, {"fast", 0, false},
	} {
		got, err := parseBitrate(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("parseBitrate(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"262144", 262144, true}, {"256KiB", 256 << 10, true}, {"256K", 256 << 10, true}, {"1MiB", 1 << 20, true},
		{"1.5MiB", 0, false}, {"KiB", 0, false}, {"-1", 0, false},
	} {
		got, err := parseSize(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"2m", 2 * time.Minute, true}, {"90.5", 90500 * time.Millisecond, true}, {"0", 0, false}, {"soon", 0, false},
	} {
		got, err := parseDuration(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("parseDuration(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
