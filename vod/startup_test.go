package vod_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/nanodc/nanodc/overlay"
	"github.com/nanodc/nanodc/vod"
)

// fetchLog records a gateway's origin fetches.
type fetchLog struct {
	mu      sync.Mutex
	fetches []vod.OriginFetch
}

func (l *fetchLog) add(f vod.OriginFetch) func(int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fetches = append(l.fetches, f)
	return nil
}

// startups lists the pieces fetched for a stream's start.
func (l *fetchLog) startups() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []int
	for _, f := range l.fetches {
		if f.Reason == "startup" {
			out = append(out, f.Piece)
		}
	}
	return out
}

// TestStreamStartsFromOriginThenPeers: a viewer connected to no holder takes the piece its
// player needs first from the origin at once (no peer could send it sooner) and the rest
// from peers; a stream that starts where a connected peer holds the piece leaves it to the
// peer.
func TestStreamStartsFromOriginThenPeers(t *testing.T) {
	f := newFixture(t, 2<<20, 1.6e6) // 32 pieces of 64 KiB, 200 kB/s
	holders := f.addPlaced("isp-a", 3, 5*time.Millisecond, 20e6)
	var log fetchLog
	viewer := f.addGatewayAt(vod.Options{OnOriginFetch: log.add}, overlay.Labels{ISP: "isp-a", AccessNode: "an-v"}, 5*time.Millisecond, 20e6, 20e6)
	f.waitRoutable()
	for _, g := range holders {
		f.push(g)
	}
	plen := f.entry.PieceLength
	// A range in piece 16 only: the stream starts there.
	resp, body := get(t, viewer, f.entry.CID, fmt.Sprintf("bytes=%d-%d", 16*plen, 17*plen-1))
	if resp.StatusCode != http.StatusPartialContent || len(body) != int(plen) {
		t.Fatalf("range in piece 16: status %s, %d bytes", resp.Status, len(body))
	}
	if got := log.startups(); !slices.Equal(got, []int{16}) {
		t.Fatalf("startup fetches from the origin: pieces %v, want [16] (no holder was connected)", got)
	}
	// The stream's discovery connects the holders; a stream starting at piece 24 then has
	// connected peers that hold it.
	waitFor(t, 20*time.Second, "the viewer connected to holders", func() bool {
		for _, ts := range viewer.app.Stats().Titles {
			if ts.CID == f.entry.CID && ts.Peers > 0 {
				return true
			}
		}
		return false
	})
	f.checkWhole(viewer)
	if got := log.startups(); !slices.Equal(got, []int{16}) {
		t.Errorf("startup fetches from the origin: pieces %v, want only [16]: connected holders held piece 0", got)
	}
	// Peers carried the title: the origin sent little more than the first piece.
	var origin int64
	for _, fe := range log.fetches {
		origin += fe.Bytes
	}
	if origin > int64(len(f.file))/4 {
		t.Errorf("the origin sent %d of %d bytes", origin, len(f.file))
	}
}

// TestAnnouncesOnceHolding: a gateway that starts streaming a title becomes a provider of it
// in the DHT only once it holds a verified piece (a holder with nothing is no use to a peer,
// and its lookup would load the uplink the stream's first piece needs).
func TestAnnouncesOnceHolding(t *testing.T) {
	f := newFixture(t, 1<<20, 2e6)
	observer := f.addGateway(vod.Options{})
	opened := make(chan struct{})
	viewer := f.addGateway(vod.Options{OriginClient: &http.Client{Transport: gatedTransport{opened, http.DefaultTransport}}})
	f.waitRoutable()
	c, err := cid.Decode(f.entry.CID)
	if err != nil {
		t.Fatal(err)
	}
	provides := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		found, _ := observer.ov.FindProviders(ctx, c, 10)
		return slices.ContainsFunc(found, func(p overlay.PeerInfo) bool { return p.ID == viewer.ov.ID() })
	}
	type result struct {
		body []byte
		err  error
	}
	streamed := make(chan result, 1)
	go func() {
		resp, err := http.Get(viewer.http.URL + "/vod/" + f.entry.CID)
		if err != nil {
			streamed <- result{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		streamed <- result{body, err}
	}()
	// The stream waits for the origin: the viewer holds nothing, and must not say it does.
	time.Sleep(3 * time.Second)
	if provides() {
		t.Fatal("the viewer is a provider of the title before holding any of it")
	}
	close(opened)
	if r := <-streamed; r.err != nil || !bytes.Equal(r.body, f.file) {
		t.Fatalf("stream: %d bytes, equal to the file: %v, err %v", len(r.body), bytes.Equal(r.body, f.file), r.err)
	}
	waitFor(t, 30*time.Second, "the viewer announced as a provider once holding", provides)
}
