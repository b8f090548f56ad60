package testmedia

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestGenerateAndProbe(t *testing.T) {
	Require(t, "ffmpeg", "ffprobe")
	tests := []struct {
		format     string
		wantFormat string // a name in ffprobe's format_name list
		wantVideo  string
		wantAudio  string
	}{
		{FormatMP4, "mp4", "h264", "aac"},
		{FormatWebM, "webm", "vp9", "opus"},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			o := Options{Duration: 8 * time.Second, BitrateBps: 600_000, Width: 320, Height: 240, Format: tt.format}
			start := time.Now()
			path, err := Generate(t.TempDir(), o)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("generated %s in %v", path, time.Since(start))
			if !strings.HasSuffix(path, "."+tt.format) {
				t.Errorf("path %s lacks the .%s extension", path, tt.format)
			}

			start = time.Now()
			info, err := Probe(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("probed in %v: %+v", time.Since(start), info)
			if !strings.Contains(info.FormatName, tt.wantFormat) {
				t.Errorf("format %q, want one naming %q", info.FormatName, tt.wantFormat)
			}
			if d := info.Duration - o.Duration; d < -o.Duration/10 || d > o.Duration/10 {
				t.Errorf("duration %v, want %v ± 10%%", info.Duration, o.Duration)
			}
			if d := info.BitRate - int64(o.BitrateBps); d < -int64(o.BitrateBps)/4 || d > int64(o.BitrateBps)/4 {
				t.Errorf("bit rate %d, want %d ± 25%%", info.BitRate, o.BitrateBps)
			}
			v, ok := info.Stream("video")
			if !ok || v.CodecName != tt.wantVideo || v.Width != o.Width || v.Height != o.Height {
				t.Errorf("video stream %+v (found %v), want %s %dx%d", v, ok, tt.wantVideo, o.Width, o.Height)
			}
			if a, ok := info.Stream("audio"); !ok || a.CodecName != tt.wantAudio {
				t.Errorf("audio stream %+v (found %v), want %s", a, ok, tt.wantAudio)
			}
			if tt.format == FormatMP4 {
				checkMoovFirst(t, path)
			}
			if matches, _ := os.ReadDir(filepath.Dir(path)); len(matches) != 1 {
				t.Errorf("dir holds %d entries, want only the video (no .part leftovers)", len(matches))
			}
		})
	}
}

// checkMoovFirst walks the top-level MP4 boxes: a browser can start a progressive download only
// if moov (the index) comes before mdat (the media).
func checkMoovFirst(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var boxes []string
	for off := int64(0); ; {
		var hdr [16]byte
		if _, err := f.ReadAt(hdr[:8], off); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		size := int64(binary.BigEndian.Uint32(hdr[:4]))
		if size == 1 { // 64-bit size follows the type
			if _, err := f.ReadAt(hdr[8:16], off); err != nil {
				t.Fatal(err)
			}
			size = int64(binary.BigEndian.Uint64(hdr[8:16]))
		}
		if size < 8 {
			t.Fatalf("box %q at %d has size %d", hdr[4:8], off, size)
		}
		boxes = append(boxes, string(hdr[4:8]))
		off += size
	}
	moov, mdat := -1, -1
	for i, b := range boxes {
		switch {
		case b == "moov" && moov < 0:
			moov = i
		case b == "mdat" && mdat < 0:
			mdat = i
		}
	}
	if moov < 0 || mdat < 0 || moov > mdat {
		t.Errorf("top-level boxes %v: want moov before mdat (faststart)", boxes)
	}
}

func TestGenerateIsDeterministic(t *testing.T) {
	Require(t, "ffmpeg")
	for _, format := range []string{FormatMP4, FormatWebM} {
		o := Options{Duration: 3 * time.Second, Format: format}
		var sums [2][32]byte
		for i := range sums {
			path, err := Generate(t.TempDir(), o)
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			sums[i] = sha256.Sum256(b)
		}
		if sums[0] != sums[1] {
			t.Errorf("%s: two runs made different files", format)
		}
	}
}

// TestProbeHTTP probes a file over HTTP as the gateway tests will: ffprobe must get the same
// answer as from the file, reading with Range requests.
func TestProbeHTTP(t *testing.T) {
	Require(t, "ffmpeg", "ffprobe")
	path, err := Generate(t.TempDir(), Options{Duration: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ranges atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") != "" {
			ranges.Add(1)
		}
		w.Header().Set("Content-Type", "video/mp4")
		http.ServeContent(w, r, "video.mp4", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want, err := Probe(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got, err := Probe(ctx, srv.URL+"/video.mp4")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("probed over HTTP in %v with %d range requests", time.Since(start), ranges.Load())
	if got.Duration != want.Duration || got.FormatName != want.FormatName || len(got.Streams) != len(want.Streams) {
		t.Errorf("over HTTP: %+v, from the file: %+v", got, want)
	}
	if ranges.Load() == 0 {
		t.Errorf("ffprobe sent no Range request")
	}
}

func TestProbeErrors(t *testing.T) {
	Require(t, "ffprobe")
	ctx := context.Background()
	missing := t.TempDir() + "/missing.mp4"
	if _, err := Probe(ctx, missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("probing a missing file: error %v, want one naming %s", err, missing)
	}
	junk := t.TempDir() + "/junk.mp4"
	if err := os.WriteFile(junk, bytes.Repeat([]byte("not a video "), 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Probe(ctx, junk); err == nil {
		t.Errorf("probing junk: no error")
	}
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	if _, err := Probe(ctx, srv.URL+"/v.mp4"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("probing a 404: error %v, want one naming 404", err)
	}
}

func TestOptionsInvalid(t *testing.T) {
	for _, o := range []Options{
		{Format: "avi"},
		{Width: 321},
		{Duration: time.Millisecond},
		{BitrateBps: 1000},
	} {
		if _, err := Generate(t.TempDir(), o); err == nil {
			t.Errorf("Generate(%+v): no error", o)
		}
	}
}
