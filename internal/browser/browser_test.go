package browser

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nanodc/nanodc/internal/testmedia"
)

func TestMain(m *testing.M) {
	// Made here, not under a test's TMPDIR, which the tests check is left empty.
	dir, err := os.MkdirTemp("", "browser-test-clips")
	if err != nil {
		panic(err)
	}
	clips.dir = dir
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { os.RemoveAll(dir) }))
}

// clips generates each test video once per test binary: ffmpeg is the slow part.
var clips struct {
	sync.Mutex
	dir   string
	paths map[string]string
}

func clip(t *testing.T, format string) []byte {
	t.Helper()
	testmedia.Require(t, "ffmpeg")
	clips.Lock()
	defer clips.Unlock()
	if clips.paths == nil {
		clips.paths = map[string]string{}
	}
	path, ok := clips.paths[format]
	if !ok {
		var err error
		path, err = testmedia.Generate(clips.dir, testmedia.Options{Duration: 10 * time.Second, Format: format})
		if err != nil {
			t.Fatal(err)
		}
		clips.paths[format] = path
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// serve serves data at /video with http.ServeContent (Range requests, as a gateway would) and
// answers 404 elsewhere.
func serve(t *testing.T, contentType string, data []byte) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/video" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", contentType)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/video"
}

func play(t *testing.T, url string, o PlayOptions) (Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	res, err := PlayVideo(ctx, url, o)
	t.Logf("PlayVideo took %v: %+v, err %v", time.Since(start), res, err)
	return res, err
}

func TestPlayVideo(t *testing.T) {
	Require(t)
	for _, tt := range []struct{ format, contentType string }{
		{testmedia.FormatMP4, "video/mp4"},
		{testmedia.FormatWebM, "video/webm"},
	} {
		t.Run(tt.format, func(t *testing.T) {
			// The browser's profile goes under TMPDIR: it must be gone afterwards, and so
			// must every process that used it.
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp)

			res, err := play(t, serve(t, tt.contentType, clip(t, tt.format)), PlayOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if res.CurrentTime < 2*time.Second {
				t.Errorf("current time %v, want ≥ 2s", res.CurrentTime)
			}
			if res.StartTime <= 0 || res.StartTime > 10*time.Second {
				t.Errorf("start time %v, want in (0, 10s]", res.StartTime)
			}
			if res.DecodedFrames == 0 || res.VideoWidth != 320 || res.VideoHeight != 240 {
				t.Errorf("decoded %d frames of %dx%d, want some of 320x240", res.DecodedFrames, res.VideoWidth, res.VideoHeight)
			}
			if res.Duration < 9*time.Second || res.Duration > 11*time.Second {
				t.Errorf("duration %v, want about 10s", res.Duration)
			}
			if res.ReadyState < 2 || res.Error != nil {
				t.Errorf("readyState %d, error %v", res.ReadyState, res.Error)
			}
			if res.HTTPStatus != http.StatusOK && res.HTTPStatus != http.StatusPartialContent {
				t.Errorf("HTTP status %d", res.HTTPStatus)
			}
			checkGone(t, tmp)
		})
	}
}

// checkGone fails if a process still names dir on its command line (chromium passes
// --user-data-dir to every child) or if dir is not empty.
func checkGone(t *testing.T, dir string) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(dir)) {
			t.Errorf("process %s still runs: %s", filepath.Base(filepath.Dir(p)), bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
	if left, _ := os.ReadDir(dir); len(left) > 0 {
		var names []string
		for _, e := range left {
			names = append(names, e.Name())
		}
		t.Errorf("left in TMPDIR: %v", names)
	}
}

func TestPlayVideoSeek(t *testing.T) {
	Require(t)
	res, err := play(t, serve(t, "video/mp4", clip(t, testmedia.FormatMP4)), PlayOptions{SeekTo: 5 * time.Second, MinAdvance: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.StartPosition < 4900*time.Millisecond || res.StartPosition > 5100*time.Millisecond {
		t.Errorf("start position %v, want 5s", res.StartPosition)
	}
	if res.CurrentTime < 7*time.Second {
		t.Errorf("current time %v, want ≥ 7s", res.CurrentTime)
	}
}

func TestPlayVideoSeekPastEnd(t *testing.T) {
	Require(t)
	_, err := play(t, serve(t, "video/mp4", clip(t, testmedia.FormatMP4)), PlayOptions{SeekTo: 9 * time.Second, MinAdvance: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "cannot advance") {
		t.Fatalf("error %v, want one saying it cannot advance", err)
	}
}

func TestPlayVideoNotFound(t *testing.T) {
	Require(t)
	url := serve(t, "video/mp4", nil)
	res, err := play(t, strings.TrimSuffix(url, "/video")+"/missing.mp4", PlayOptions{})
	var me *MediaError
	if !errors.As(err, &me) {
		t.Fatalf("error %v, want a *MediaError", err)
	}
	if res.HTTPStatus != http.StatusNotFound || !strings.Contains(err.Error(), "HTTP 404") {
		t.Errorf("status %d, error %v: want 404 named", res.HTTPStatus, err)
	}
}

func TestPlayVideoCorrupt(t *testing.T) {
	Require(t)
	junk := make([]byte, 256<<10)
	r := rand.NewChaCha8([32]byte{1})
	r.Read(junk)
	_, err := play(t, serve(t, "video/mp4", junk), PlayOptions{})
	var me *MediaError
	if !errors.As(err, &me) {
		t.Fatalf("error %v, want a *MediaError", err)
	}
	if me.Code != 4 && me.Code != 3 {
		t.Errorf("media error %d, want 3 (decode) or 4 (not supported)", me.Code)
	}
	if !strings.Contains(err.Error(), "MEDIA_ERR_") {
		t.Errorf("error %q does not name the code", err)
	}
}

// TestPlayVideoUnsupportedCodec pins the finding in the package doc: Chromium plays the audio of
// a video whose codec it cannot decode, and PlayVideo must not call that a success.
func TestPlayVideoUnsupportedCodec(t *testing.T) {
	Require(t)
	testmedia.Require(t, "ffmpeg")
	path := filepath.Join(t.TempDir(), "mpeg4.mp4")
	out, err := exec.Command("ffmpeg", "-nostdin", "-loglevel", "error",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine",
		"-t", "5", "-c:v", "mpeg4", "-c:a", "aac", "-movflags", "+faststart", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, out)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := play(t, serve(t, "video/mp4", data), PlayOptions{MinAdvance: time.Second}); !errors.Is(err, ErrNoVideo) {
		t.Fatalf("error %v, want ErrNoVideo", err)
	}
}

// TestPlayVideoDeadline: a server that never answers must not hold PlayVideo past ctx.
func TestPlayVideoDeadline(t *testing.T) {
	Require(t)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	_, err := PlayVideo(ctx, srv.URL+"/video", PlayOptions{})
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want one wrapping context.DeadlineExceeded", err)
	}
	if took > 10*time.Second {
		t.Errorf("PlayVideo returned %v after the start, the deadline was 3s", took)
	}
	checkGone(t, tmp)
}

func TestPlayOptionsInvalid(t *testing.T) {
	// Seconds given as a bare number are nanoseconds: refused before any browser starts.
	for _, o := range []PlayOptions{{SeekTo: 10}, {MinAdvance: 2}, {SeekTo: -time.Second}} {
		if _, err := PlayVideo(context.Background(), "http://127.0.0.1:1/v", o); err == nil || !strings.Contains(err.Error(), "PlayOptions") {
			t.Errorf("PlayVideo(%+v): error %v, want one naming the option", o, err)
		}
	}
}
