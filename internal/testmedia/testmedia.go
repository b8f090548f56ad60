// Package testmedia makes real, playable test videos with ffmpeg and inspects videos (files or
// HTTP URLs) with ffprobe, so that the video-on-demand tests stream actual media instead of
// random bytes and can check what came out the other end.
//
// Formats: "webm" is VP9 video with Opus audio, "mp4" is H.264 (libx264) with AAC audio and
// the moov atom first (-movflags +faststart), so a player can start before the whole file has
// arrived. Debian 12's chromium (156) was checked with internal/browser: it plays both, so the
// default is MP4, the format a VoD catalog most often holds. Both carry a keyframe every
// second, so a seek never has to decode far, and a steady bitrate near Options.BitrateBps, so
// a stream's byte rate is predictable.
//
// Both tools come from Debian's ffmpeg package, which scripts/install-deps.sh installs; tests
// call Require first so that a machine without them skips (or, under CI, fails).
package testmedia

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Formats that Generate makes.
const (
	FormatMP4  = "mp4"  // H.264 + AAC, moov first
	FormatWebM = "webm" // VP9 + Opus, cues first

	// DefaultFormat is the format Generate makes when Options.Format is empty.
	DefaultFormat = FormatMP4
)

// Options describe the video that Generate makes. Zero fields take the defaults.
type Options struct {
	Duration   time.Duration // default 10 s
	BitrateBps int           // total (video + audio) bits per second; default 600 kbit/s
	Width      int           // default 320
	Height     int           // default 240
	Format     string        // FormatMP4 or FormatWebM; default DefaultFormat
}

const (
	fps      = 25
	audioBps = 32_000 // small and fixed: the bitrate budget goes to video
)

func (o Options) withDefaults() (Options, error) {
	if o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
	if o.BitrateBps == 0 {
		o.BitrateBps = 600_000
	}
	if o.Width == 0 {
		o.Width = 320
	}
	if o.Height == 0 {
		o.Height = 240
	}
	if o.Format == "" {
		o.Format = DefaultFormat
	}
	switch {
	case o.Duration < 100*time.Millisecond:
		return o, fmt.Errorf("testmedia: duration %v is too short (at least 100ms)", o.Duration)
	case o.BitrateBps < 2*audioBps:
		return o, fmt.Errorf("testmedia: bitrate %d bit/s is too low (at least %d)", o.BitrateBps, 2*audioBps)
	case o.Width < 16 || o.Height < 16 || o.Width%2 != 0 || o.Height%2 != 0:
		// yuv420p, which browsers need, halves the chroma planes: odd sizes are rejected.
		return o, fmt.Errorf("testmedia: size %dx%d must be even and at least 16x16", o.Width, o.Height)
	case o.Format != FormatMP4 && o.Format != FormatWebM:
		return o, fmt.Errorf("testmedia: unknown format %q (want %q or %q)", o.Format, FormatMP4, FormatWebM)
	}
	return o, nil
}

// Generate writes a test video into dir and returns its path. The picture is ffmpeg's
// testsrc2 pattern (moving, with a frame counter) and the sound a 440 Hz sine. The file name
// is derived from the options, and the output is bit-exact for the same options and ffmpeg
// version, so callers may compare hashes across runs on one machine.
func Generate(dir string, o Options) (string, error) {
	return GenerateContext(context.Background(), dir, o)
}

// GenerateContext is Generate with a context that kills ffmpeg when it ends.
func GenerateContext(ctx context.Context, dir string, o Options) (string, error) {
	o, err := o.withDefaults()
	if err != nil {
		return "", err
	}
	name := fmt.Sprintf("testsrc2-%dx%d-%dms-%dbps.%s", o.Width, o.Height, o.Duration.Milliseconds(), o.BitrateBps, o.Format)
	path := filepath.Join(dir, name)
	// Write to a unique file beside the target and rename, so a killed or failed run leaves no
	// half file that a server would take for a finished one, and concurrent calls do not clash.
	f, err := os.CreateTemp(dir, "."+name+".*.part")
	if err != nil {
		return "", fmt.Errorf("testmedia: %w", err)
	}
	tmp := f.Name()
	f.Close()

	secs := strconv.FormatFloat(o.Duration.Seconds(), 'f', 3, 64)
	vbps := o.BitrateBps - audioBps
	args := []string{
		"-hide_banner", "-nostdin", "-loglevel", "error", "-y",
		"-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=%dx%d:rate=%d", o.Width, o.Height, fps),
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", secs,
		"-map", "0:v", "-map", "1:a",
		"-pix_fmt", "yuv420p",
		// A keyframe every second and none elsewhere: seeks and segment cuts land on
		// predictable boundaries.
		"-g", strconv.Itoa(fps), "-keyint_min", strconv.Itoa(fps), "-sc_threshold", "0",
		"-b:v", strconv.Itoa(vbps), "-maxrate", strconv.Itoa(vbps), "-bufsize", strconv.Itoa(vbps),
		"-b:a", strconv.Itoa(audioBps), "-ac", "1",
		// No timestamps, encoder versions or random IDs in the file.
		"-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
		// One thread: x264's frame threads with VBV rate control made CI's output differ from
		// run to run, and a few seconds of 360p encode fast enough on one core.
		"-threads", "1",
	}
	switch o.Format {
	case FormatMP4:
		args = append(args,
			// Baseline: the profile every H.264 decoder, hardware or software, plays.
			"-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "baseline",
			"-c:a", "aac",
			"-movflags", "+faststart",
			"-f", "mp4")
	case FormatWebM:
		args = append(args,
			// Realtime speed 8 is ~10x faster than "good"; row-mt stays off because it made
			// the output differ from run to run.
			"-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-row-mt", "0",
			"-minrate", strconv.Itoa(vbps),
			"-c:a", "libopus",
			"-cues_to_front", "1",
			"-f", "webm")
	}
	args = append(args, tmp)

	cmd := exec.CommandContext(ctx, "ffmpeg", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("testmedia: ffmpeg making %s: %w: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("testmedia: %w", err)
	}
	return path, nil
}

// Info is what ffprobe says about a video.
type Info struct {
	FormatName string        // ffprobe's format name, e.g. "mov,mp4,m4a,3gp,3g2,mj2" or "matroska,webm"
	Duration   time.Duration // of the container
	BitRate    int64         // bits per second of the container, 0 if unknown
	Streams    []Stream
}

// Stream is one stream of a video.
type Stream struct {
	CodecType string // "video", "audio", ...
	CodecName string // "h264", "vp9", "aac", "opus", ...
	Width     int    // video only
	Height    int    // video only
}

// Stream returns the first stream of the codec type ("video", "audio").
func (i Info) Stream(codecType string) (Stream, bool) {
	for _, s := range i.Streams {
		if s.CodecType == codecType {
			return s, true
		}
	}
	return Stream{}, false
}

// Probe runs ffprobe on a file or a URL. ffprobe reads http:// URLs with Range requests, as a
// player does, so probing a server's URL checks that it serves a well-formed, seekable video.
func Probe(ctx context.Context, pathOrURL string) (Info, error) {
	cmd := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-print_format", "json",
		"-show_format", "-show_streams", pathOrURL)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return Info{}, fmt.Errorf("testmedia: ffprobe %s: %w: %s", pathOrURL, err, strings.TrimSpace(stderr.String()))
	}
	var out struct {
		Format struct {
			FormatName string `json:"format_name"`
			Duration   string `json:"duration"`
			BitRate    string `json:"bit_rate"`
		} `json:"format"`
		Streams []struct {
			CodecType string `json:"codec_type"`
			CodecName string `json:"codec_name"`
			Width     int    `json:"width"`
			Height    int    `json:"height"`
		} `json:"streams"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return Info{}, fmt.Errorf("testmedia: ffprobe %s printed no JSON: %w", pathOrURL, err)
	}
	info := Info{FormatName: out.Format.FormatName}
	if out.Format.Duration != "" {
		secs, err := strconv.ParseFloat(out.Format.Duration, 64)
		if err != nil {
			return Info{}, fmt.Errorf("testmedia: ffprobe %s: duration %q: %w", pathOrURL, out.Format.Duration, err)
		}
		info.Duration = time.Duration(math.Round(secs * float64(time.Second)))
	}
	if out.Format.BitRate != "" {
		br, err := strconv.ParseInt(out.Format.BitRate, 10, 64)
		if err != nil {
			return Info{}, fmt.Errorf("testmedia: ffprobe %s: bit rate %q: %w", pathOrURL, out.Format.BitRate, err)
		}
		info.BitRate = br
	}
	for _, s := range out.Streams {
		info.Streams = append(info.Streams, Stream{CodecType: s.CodecType, CodecName: s.CodecName, Width: s.Width, Height: s.Height})
	}
	if len(info.Streams) == 0 {
		return info, fmt.Errorf("testmedia: ffprobe %s: no streams", pathOrURL)
	}
	return info, nil
}

// Require skips the test when one of the tools (e.g. "ffmpeg", "ffprobe") is not on PATH,
// or fails it when the environment variable CI is set: `make test` installs them
// (scripts/install-deps.sh), so a missing tool in CI is a bug, not a reason to pass quietly.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("missing %s (scripts/install-deps.sh installs it)", strings.Join(missing, ", "))
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}
