package vod_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/nanodc/nanodc/internal/browser"
	"github.com/nanodc/nanodc/internal/testmedia"
	"github.com/nanodc/nanodc/vod"
)

// TestPlaysInBrowserAndFFprobe streams a real H.264/AAC clip from a gateway to real clients:
// Chromium plays it in a <video> element (playback time advances, also after a seek) and
// ffprobe reads the stream over HTTP with range requests. The title comes from a peer.
func TestPlaysInBrowserAndFFprobe(t *testing.T) {
	testmedia.Require(t, "ffmpeg", "ffprobe")
	browser.Require(t)
	path, err := testmedia.Generate(t.TempDir(), testmedia.Options{Duration: 12 * time.Second, BitrateBps: 600_000})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixtureFile(t, data, 700_000)
	seed := f.addGateway(vod.Options{})
	viewer := f.addGateway(vod.Options{})
	f.waitRoutable()
	f.push(seed)
	url := viewer.http.URL + "/vod/" + f.entry.CID

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	info, err := testmedia.Probe(ctx, url)
	if err != nil {
		t.Fatalf("ffprobe %s: %v", url, err)
	}
	if v, ok := info.Stream("video"); !ok || v.CodecName != "h264" || v.Width != 320 {
		t.Fatalf("ffprobe sees %+v, want an h264 320-wide video stream", info.Streams)
	}
	if d := info.Duration; d < 11*time.Second || d > 13*time.Second {
		t.Fatalf("ffprobe duration %v, want about 12s", d)
	}

	res, err := browser.PlayVideo(ctx, url, browser.PlayOptions{MinAdvance: 2 * time.Second})
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	if res.CurrentTime < 2*time.Second || res.DecodedFrames == 0 {
		t.Fatalf("chromium played to %v with %d frames decoded, want >= 2s", res.CurrentTime, res.DecodedFrames)
	}
	res, err = browser.PlayVideo(ctx, url, browser.PlayOptions{SeekTo: 6 * time.Second, MinAdvance: 2 * time.Second})
	if err != nil {
		t.Fatalf("chromium after a seek: %v", err)
	}
	if res.CurrentTime < 8*time.Second {
		t.Fatalf("after seeking to 6s chromium is at %v, want >= 8s", res.CurrentTime)
	}
	t.Logf("chromium: started in %v, played to %v (%d frames); the viewer took %d bytes from peers, %d from the origin",
		res.StartTime, res.CurrentTime, res.DecodedFrames, viewer.app.Stats().PeerBytes, viewer.app.Stats().OriginBytes)
	if viewer.app.Stats().PeerBytes == 0 {
		t.Error("the viewer's gateway took nothing from its peer")
	}
}
