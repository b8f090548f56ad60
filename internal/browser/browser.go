// Package browser plays a video in a real headless Chromium (driven with chromedp) and reports
// what the player saw: how long until playback started, how far it got, and any media error.
// The VoD tests use it to check that a gateway's stream is something a browser actually plays,
// not only bytes that look right.
//
// Codecs, checked with PlayVideo on Debian 12's chromium 156.0.8078: H.264 (baseline and
// high) + AAC in MP4, VP9 + Opus in WebM and in MP4, VP8 + Vorbis in WebM and AV1 in MP4 all
// decode. HEVC and MPEG-4 Part 2 do not, and Chromium then plays the audio alone without any
// media error; PlayVideo reports that as ErrNoVideo, counting decoded frames rather than
// trusting currentTime. TestPlayVideo (H.264, VP9) and TestPlayVideoUnsupportedCodec (MPEG-4
// Part 2) keep these findings checked.
//
// The browser never leaves the machine: it runs the real binary (/usr/lib/chromium/chromium,
// not Debian's /usr/bin/chromium wrapper, which exports Google API keys and re-enables remote
// extensions), with background networking, component updates, sync, metrics and the rest
// off, and a host resolver that answers only for localhost and 127.*, so a URL that names a
// host outside the loopback network fails (net::ERR_NAME_NOT_RESOLVED) instead of leaving.
//
// Each PlayVideo call starts its own browser with a fresh temporary profile and stops it
// (killing every child process and removing the profile) before it returns.
package browser

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// EnvBin names the environment variable that overrides the browser binary.
const EnvBin = "CHROMIUM_BIN"

// FindChromium returns the browser binary: $CHROMIUM_BIN if set, else Debian's real chromium
// binary, else chromium or chromium-browser on PATH.
func FindChromium() (string, error) {
	if bin := os.Getenv(EnvBin); bin != "" {
		path, err := exec.LookPath(bin)
		if err != nil {
			return "", fmt.Errorf("browser: %s=%s: %w", EnvBin, bin, err)
		}
		return path, nil
	}
	// The binary behind Debian's wrapper script, which we bypass (see the package doc).
	const debianBin = "/usr/lib/chromium/chromium"
	if _, err := exec.LookPath(debianBin); err == nil {
		return debianBin, nil
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if path, err := exec.LookPath(name); err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("browser: no chromium found (tried $%s, %s, chromium and chromium-browser on PATH; scripts/install-deps.sh installs Debian's chromium)", EnvBin, debianBin)
}

// Require skips the test when no chromium is found, or fails it when the environment variable
// CI is set: `make test` installs chromium, so in CI a missing browser is a bug.
func Require(t testing.TB) {
	t.Helper()
	if _, err := FindChromium(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// PlayOptions tune PlayVideo. Zero fields take the defaults.
type PlayOptions struct {
	// SeekTo is the media position to seek to once the metadata is known; 0 plays from the
	// start.
	SeekTo time.Duration
	// MinAdvance is how far playback must get past its starting position (0 or SeekTo) for
	// PlayVideo to succeed; default 2 s.
	MinAdvance time.Duration
	// AudioOnly accepts a video whose picture was not decoded. Without it PlayVideo fails
	// with ErrNoVideo when playback advanced but no video frame was decoded.
	AudioOnly bool
	// Bin is the browser binary; default FindChromium().
	Bin string
}

// ErrNoVideo means playback advanced but the browser decoded no video frame. Chromium does not
// fail on a video codec it cannot decode (HEVC, MPEG-4 Part 2): it drops the video track and
// plays the audio alone, so an advancing currentTime by itself proves nothing.
var ErrNoVideo = errors.New("the browser plays the audio alone: its video codec is not supported")

// Result is what the player reported when PlayVideo stopped watching.
type Result struct {
	// StartTime is the wall time from the start of the page's navigation until playback
	// started (the first "playing" or advancing "timeupdate" after the seek, if any); 0 if it
	// never started.
	StartTime time.Duration
	// StartPosition is the media position playback started from: the position reached by
	// the seek, or 0.
	StartPosition time.Duration
	// CurrentTime is the media position (video.currentTime) at the end.
	CurrentTime time.Duration
	// Duration is the video's duration, 0 when unknown.
	Duration time.Duration
	// ReadyState is video.readyState (0 HAVE_NOTHING ... 4 HAVE_ENOUGH_DATA).
	ReadyState int
	// VideoWidth and VideoHeight are the decoded picture size, 0 before the metadata (or for
	// a file without video).
	VideoWidth, VideoHeight int
	// DecodedFrames and DroppedFrames count the video frames the player decoded and dropped
	// (getVideoPlaybackQuality), so a test can tell that video, not only audio, played.
	DecodedFrames, DroppedFrames int
	// HTTPStatus is the status of the last response the browser got for the video URL, 0 if
	// none arrived.
	HTTPStatus int
	// Error is video.error, nil if the player had none.
	Error *MediaError
}

// MediaError is the HTML MediaError of the video element.
type MediaError struct {
	Code    int    // 1 aborted, 2 network, 3 decode, 4 source not supported
	Message string // the browser's detail, e.g. "DEMUXER_ERROR_COULD_NOT_OPEN: ..."
}

var mediaErrNames = map[int]string{
	1: "MEDIA_ERR_ABORTED",
	2: "MEDIA_ERR_NETWORK",
	3: "MEDIA_ERR_DECODE",
	4: "MEDIA_ERR_SRC_NOT_SUPPORTED",
}

func (e *MediaError) Error() string {
	name := mediaErrNames[e.Code]
	if name == "" {
		name = "unknown"
	}
	if e.Message == "" {
		return fmt.Sprintf("media error %d (%s)", e.Code, name)
	}
	return fmt.Sprintf("media error %d (%s): %s", e.Code, name, e.Message)
}

// flags keep the browser headless, quiet and on the loopback network (see the package doc).
var flags = []chromedp.ExecAllocatorOption{
	chromedp.Flag("headless", "new"),
	chromedp.Flag("mute-audio", true),
	chromedp.Flag("hide-scrollbars", true),
	chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
	chromedp.Flag("disable-gpu", true),
	chromedp.Flag("no-first-run", true),
	chromedp.Flag("no-default-browser-check", true),
	chromedp.Flag("disable-dev-shm-usage", true),
	chromedp.Flag("disable-background-networking", true),
	chromedp.Flag("disable-component-update", true),
	chromedp.Flag("disable-sync", true),
	chromedp.Flag("disable-default-apps", true),
	chromedp.Flag("disable-extensions", true),
	chromedp.Flag("disable-breakpad", true),
	chromedp.Flag("disable-crash-reporter", true),
	chromedp.Flag("disable-client-side-phishing-detection", true),
	chromedp.Flag("disable-domain-reliability", true),
	chromedp.Flag("disable-field-trial-config", true),
	chromedp.Flag("disable-pings", true),
	chromedp.Flag("safebrowsing-disable-auto-update", true),
	chromedp.Flag("metrics-recording-only", true),
	chromedp.Flag("no-pings", true),
	chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,"+
		"AutofillServerCommunication,CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions,"+
		"LocalNetworkAccessChecks,PrivateNetworkAccessSendPreflights"),
	chromedp.Flag("media-router", "0"),
	chromedp.Flag("disable-background-timer-throttling", true),
	chromedp.Flag("disable-renderer-backgrounding", true),
	chromedp.Flag("disable-backgrounding-occluded-windows", true),
	chromedp.Flag("password-store", "basic"),
	chromedp.Flag("use-mock-keychain", true),
	// Every host but localhost and 127.* fails to resolve, so nothing reaches the Internet even if
	// some service slips past the flags above.
	chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.*"),
}

// page is the player. It seeks once the metadata is known, and records when playback
// (re)started at the requested position; Go polls nanodcState().
var page = template.Must(template.New("page").Parse(`<!doctype html>
<meta charset="utf-8"><title>nanodc player</title>
<video id="v" src="{{.URL}}" muted autoplay playsinline preload="auto"></video>
<script>
const seekTo = {{.SeekTo}};
const v = document.getElementById('v');
const s = {startMs: null, seeked: !(seekTo > 0), base: 0, playError: null, ended: false};
function started() {
  if (s.startMs === null && s.seeked && !v.paused && v.readyState >= 3) s.startMs = performance.now();
}
v.addEventListener('loadedmetadata', () => { if (seekTo > 0) v.currentTime = seekTo; });
v.addEventListener('seeked', () => { if (!s.seeked) { s.seeked = true; s.base = v.currentTime; } });
v.addEventListener('playing', started);
v.addEventListener('timeupdate', () => { if (v.currentTime > s.base) started(); });
v.addEventListener('ended', () => { s.ended = true; });
v.play().catch(e => { s.playError = String(e); });
window.nanodcState = () => ({
  currentTime: v.currentTime,
  duration: isFinite(v.duration) ? v.duration : 0,
  readyState: v.readyState,
  startMs: s.startMs === null ? -1 : s.startMs,
  base: s.base,
  seeked: s.seeked,
  ended: s.ended,
  playError: s.playError || '',
  videoWidth: v.videoWidth,
  videoHeight: v.videoHeight,
  frames: v.getVideoPlaybackQuality().totalVideoFrames,
  dropped: v.getVideoPlaybackQuality().droppedVideoFrames,
  errCode: v.error ? v.error.code : 0,
  errMessage: v.error ? v.error.message : '',
});
</script>
`))

// state mirrors nanodcState() in the page.
type state struct {
	CurrentTime float64 `json:"currentTime"`
	Duration    float64 `json:"duration"`
	ReadyState  int     `json:"readyState"`
	StartMs     float64 `json:"startMs"`
	Base        float64 `json:"base"`
	Seeked      bool    `json:"seeked"`
	Ended       bool    `json:"ended"`
	PlayError   string  `json:"playError"`
	VideoWidth  int     `json:"videoWidth"`
	VideoHeight int     `json:"videoHeight"`
	Frames      int     `json:"frames"`
	Dropped     int     `json:"dropped"`
	ErrCode     int     `json:"errCode"`
	ErrMessage  string  `json:"errMessage"`
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// PlayVideo opens videoURL in a <video> element of a fresh headless Chromium, seeks to
// o.SeekTo if set, and waits until playback has advanced o.MinAdvance past its starting
// position. It returns an error if the player reports a media error (a *MediaError, also in
// Result.Error), if the video ends or is too short to advance that far, or if ctx ends first;
// the Result then holds what the player had reached. The browser and its profile are gone when
// PlayVideo returns.
func PlayVideo(ctx context.Context, videoURL string, o PlayOptions) (Result, error) {
	if o.MinAdvance == 0 {
		o.MinAdvance = 2 * time.Second
	}
	// Catch seconds passed as a bare number (SeekTo: 10 is 10ns, not 10 s).
	for name, d := range map[string]time.Duration{"SeekTo": o.SeekTo, "MinAdvance": o.MinAdvance} {
		if d < 0 || (d > 0 && d < time.Millisecond) {
			return Result{}, fmt.Errorf("browser: PlayOptions.%s is %v: want a media time such as 10*time.Second", name, d)
		}
	}
	bin := o.Bin
	if bin == "" {
		var err error
		if bin, err = FindChromium(); err != nil {
			return Result{}, err
		}
	}

	// The page comes from its own loopback server: a page on 127.0.0.1 may load media from
	// another 127.0.0.1 port, where a data: or file: page would meet Chromium's local-network
	// rules.
	pageSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		page.Execute(w, struct {
			URL    string
			SeekTo float64
		}{videoURL, o.SeekTo.Seconds()})
	}))
	defer pageSrv.Close()

	// The HTTP status of the video comes from the raw response (ExtraInfo): Chromium's opaque
	// response blocking drops a 404 for a media request before responseReceived, and the
	// media error alone does not tell a 404 from a corrupt file.
	var (
		mu         sync.Mutex
		videoReqs  []network.RequestID // in the order they were sent
		statuses   = map[network.RequestID]int{}
		netFailure string
	)
	listen := func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			if ev.Request != nil && ev.Request.URL == videoURL {
				videoReqs = append(videoReqs, ev.RequestID)
			}
		case *network.EventResponseReceivedExtraInfo:
			statuses[ev.RequestID] = int(ev.StatusCode)
		case *network.EventResponseReceived:
			if ev.Response != nil {
				statuses[ev.RequestID] = int(ev.Response.Status)
			}
		case *network.EventLoadingFailed:
			if ev.Type == network.ResourceTypeMedia && !ev.Canceled {
				netFailure = ev.ErrorText
			}
		}
	}
	lastStatus := func() (status int, failure string) {
		mu.Lock()
		defer mu.Unlock()
		for i := len(videoReqs) - 1; i >= 0; i-- {
			if st, ok := statuses[videoReqs[i]]; ok {
				return st, netFailure
			}
		}
		return 0, netFailure
	}

	// The browser gets a temporary directory of its own for its profile and as
	// XDG_RUNTIME_DIR, where PulseAudio would otherwise leave a pulse-* directory in TMPDIR.
	// (Not as TMPDIR: Chromium's singleton socket path there must stay short.)
	tmp, err := os.MkdirTemp("", "nanodc-chromium-*")
	if err != nil {
		return Result{}, fmt.Errorf("browser: %w", err)
	}
	defer os.RemoveAll(tmp) // runs after cancelAlloc below has waited for the process

	// No deadline on the allocator or browser contexts: chromedp ties the browser's life to
	// them, and we want to stop it ourselves, gracefully, below.
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.WithoutCancel(ctx),
		append(flags, chromedp.ExecPath(bin), chromedp.UserDataDir(filepath.Join(tmp, "profile")),
			chromedp.Env("XDG_RUNTIME_DIR="+tmp))...)
	defer cancelAlloc() // kills what is left and waits for the process and the profile removal
	bctx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithListener(listen))
	defer cancelBrowser()
	defer func() {
		// Close the browser gracefully, bounded: a wedged browser is killed by cancelAlloc.
		cctx, cancel := context.WithTimeout(bctx, 5*time.Second)
		defer cancel()
		chromedp.Cancel(cctx)
	}()

	// Start the browser and open a blank tab. If ctx ends meanwhile, kill it outright.
	stopKill := context.AfterFunc(ctx, cancelBrowser)
	err = chromedp.Do(bctx)
	stopKill()
	if err != nil {
		return Result{}, fmt.Errorf("browser: starting %s: %w", bin, ctxErr(ctx, err))
	}
	// From here on ctx ends only runCtx, so the browser can still be closed gracefully.
	runCtx, cancelRun := context.WithCancel(bctx)
	defer cancelRun()
	stop := context.AfterFunc(ctx, cancelRun)
	defer stop()

	if err := chromedp.Do(runCtx, chromedp.Navigate(pageSrv.URL+"/")); err != nil {
		return Result{}, fmt.Errorf("browser: opening the player page: %w", ctxErr(ctx, err))
	}

	var (
		st      state
		res     Result
		failure string // why the browser's load of the video failed, if it did
		tick    = time.NewTicker(50 * time.Millisecond)
	)
	defer tick.Stop()
	fill := func() {
		res = Result{
			StartPosition: seconds(st.Base),
			CurrentTime:   seconds(st.CurrentTime),
			Duration:      seconds(st.Duration),
			ReadyState:    st.ReadyState,
			VideoWidth:    st.VideoWidth,
			VideoHeight:   st.VideoHeight,
			DecodedFrames: st.Frames,
			DroppedFrames: st.Dropped,
		}
		if st.StartMs >= 0 {
			res.StartTime = time.Duration(st.StartMs * float64(time.Millisecond))
		}
		res.HTTPStatus, failure = lastStatus()
		if st.ErrCode != 0 {
			res.Error = &MediaError{Code: st.ErrCode, Message: st.ErrMessage}
		}
	}
	// stalled says how far the player got when ctx ended.
	stalled := func() error {
		msg := fmt.Sprintf("browser: %s did not advance %v from %v: at %v, readyState %d, HTTP status %d",
			videoURL, o.MinAdvance, res.StartPosition, res.CurrentTime, res.ReadyState, res.HTTPStatus)
		if failure != "" {
			msg += ", load failed: " + failure
		}
		if st.PlayError != "" {
			msg += ", play(): " + st.PlayError
		}
		return fmt.Errorf("%s: %w", msg, context.Cause(ctx))
	}
	for {
		next, err := chromedp.Run(runCtx, chromedp.Evaluate[state](`nanodcState()`))
		if err != nil {
			if ctx.Err() != nil {
				return res, stalled()
			}
			return res, fmt.Errorf("browser: reading the player state of %s: %w", videoURL, err)
		}
		st = next
		fill()
		switch {
		case res.Error != nil:
			return res, fmt.Errorf("browser: playing %s: %w%s", videoURL, res.Error, httpDetail(res.HTTPStatus, failure))
		case st.Seeked && st.StartMs >= 0 && st.CurrentTime-st.Base >= o.MinAdvance.Seconds():
			if st.Frames == 0 && !o.AudioOnly {
				return res, fmt.Errorf("browser: %s advanced to %v but decoded no video frame: %w", videoURL, res.CurrentTime, ErrNoVideo)
			}
			return res, nil
		case st.Ended:
			return res, fmt.Errorf("browser: %s ended at %v, before advancing %v from %v", videoURL, res.CurrentTime, o.MinAdvance, res.StartPosition)
		case st.Seeked && st.Duration > 0 && st.Base+o.MinAdvance.Seconds() > st.Duration:
			return res, fmt.Errorf("browser: %s is %v long: cannot advance %v from %v", videoURL, res.Duration, o.MinAdvance, res.StartPosition)
		}
		select {
		case <-tick.C:
		case <-runCtx.Done():
			if ctx.Err() != nil {
				return res, stalled()
			}
			return res, fmt.Errorf("browser: playing %s: the browser went away: %w", videoURL, runCtx.Err())
		}
	}
}

// ctxErr prefers the caller's context error (deadline, cancel) over chromedp's wrapping of
// the derived context's cancellation.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	return err
}

// httpDetail says what the network layer saw, which the media error alone does not: a 404
// and a corrupt file both surface as MEDIA_ERR_SRC_NOT_SUPPORTED.
func httpDetail(status int, failure string) string {
	var parts []string
	if status != 0 && (status < 200 || status > 299) {
		parts = append(parts, fmt.Sprintf("HTTP %d", status))
	}
	if failure != "" {
		parts = append(parts, "load failed: "+failure)
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
