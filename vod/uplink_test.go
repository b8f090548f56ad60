package vod_test

import (
	"context"
	"crypto/sha256"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nanodc/nanodc/overlay"
	"github.com/nanodc/nanodc/vod"
	"github.com/nanodc/nanodc/vod/catalog"
)

// TestScarceTitleGetsTheUplink: gateway A holds a scarce title (nobody else has it) and an
// abundant one (two more gateways hold it). While a viewer streams the scarce title from A,
// A stops uploading the abundant one, whose viewer still gets every byte from the other
// holders; a few seconds after the scarce stream ends, A uploads the abundant title again.
func TestScarceTitleGetsTheUplink(t *testing.T) {
	f := newFixture(t, 4<<20, 2e6)
	// The abundant title, from an origin that goes down with the fixture's.
	abundant, other := f.publishOther(len(f.file), 2e6)
	opts := vod.Options{ScarceHolders: 1, AbundantHolders: 2}
	at := func(an string, up int64) *gateway {
		g := f.addGatewayAt(opts, overlay.Labels{ISP: "isp-a", AccessNode: an}, 5*time.Millisecond, up, 20e6)
		if err := g.app.AddTitle(abundant); err != nil {
			t.Fatal(err)
		}
		return g
	}
	a := at("an-1", 4e6)
	b1, b2 := at("an-2", 2e6), at("an-3", 2e6)
	viewer, crowd := at("an-4", 20e6), at("an-5", 20e6)
	f.waitRoutable()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := a.app.Push(ctx, abundant); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	for _, g := range []*gateway{b1, b2} { // from A and each other, at once
		go func() { errs <- g.app.Push(ctx, abundant) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	f.push(a)
	// From here on peers are the only source: what A does not send, the others must.
	f.up.Store(false)
	waitFor(t, 20*time.Second, "A to hear that the others hold the abundant title", func() bool {
		return len(a.app.GossipHoldersForTest(abundant.CID)) >= 2
	})

	uploaded := func() vod.TitleStats { return titleStats(t, a, abundant.CID) }
	var wg sync.WaitGroup
	fetch := func(g *gateway, e *catalog.Entry, want []byte) {
		wg.Go(func() {
			resp, err := http.Get(g.http.URL + "/vod/" + e.CID)
			if err != nil {
				t.Errorf("%s: %v", e.Name, err)
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != http.StatusOK || sha256.Sum256(body) != sha256.Sum256(want) {
				t.Errorf("%s: status %s, %d bytes (%v), not the file", e.Name, resp.Status, len(body), err)
			}
		})
	}
	fetch(crowd, abundant, other)
	waitFor(t, 20*time.Second, "A to upload the abundant title", func() bool { return uploaded().UploadedBytes > 256<<10 })
	fetch(viewer, f.entry, f.file)
	waitFor(t, 10*time.Second, "A to hold the abundant title back", func() bool { return uploaded().UploadYielding })
	before := uploaded()
	time.Sleep(1500 * time.Millisecond)
	after := uploaded()
	// The scarce title takes A's 4 Mbit/s uplink for about 8 s, and the hold outlasts its
	// last upload by 3 s: A is still holding back.
	if !after.UploadYielding {
		t.Errorf("A uploads the abundant title again 1.5 s into the scarce one's stream")
	}
	// A chunk already on its way may still land; nothing more.
	if sent := after.UploadedBytes - before.UploadedBytes; sent > 64<<10 {
		t.Errorf("A uploaded %d bytes of the abundant title in 1.5 s while a peer fetched the scarce one", sent)
	}
	wg.Wait()
	waitFor(t, 10*time.Second, "A to upload the abundant title again", func() bool { return !uploaded().UploadYielding })
	st := uploaded()
	if st.UploadYields < 1 {
		t.Errorf("upload yields %d, want at least 1", st.UploadYields)
	}
	t.Logf("A uploaded %d bytes of the abundant title, held back %d time(s); %d bytes of the scarce one",
		st.UploadedBytes, st.UploadYields, titleStats(t, a, f.entry.CID).UploadedBytes)
}
