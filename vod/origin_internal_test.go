package vod

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nanodc/nanodc/emulator/vnet"
	"github.com/nanodc/nanodc/vod/origin"
)

// originPath is a gateway and the emulated origin on the virtual network, the gateway's
// link shaped as given, and an origin fetcher over HTTP/3 that counts its connections.
type originPath struct {
	gw    *vnet.Host
	of    *originFetcher
	url   string
	data  []byte
	dials atomic.Int32
}

func newOriginPath(t *testing.T, link vnet.LinkConfig) *originPath {
	t.Helper()
	vn := vnet.New(vnet.Options{Seed: 3})
	t.Cleanup(func() { vn.Close() })
	dc := vnet.LinkConfig{RateBps: 1e9, QueueBytes: 1 << 20, Delay: time.Millisecond}
	oh, err := vn.AddHost(vnet.HostConfig{IP: net.IPv4(127, 44, 0, 1), Site: "datacenter", Up: dc, Down: dc})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := vn.AddHost(vnet.HostConfig{IP: net.IPv4(127, 44, 1, 1), Site: "an-0", Up: link, Down: link})
	if err != nil {
		t.Fatal(err)
	}
	p := &originPath{gw: gw, data: make([]byte, 1<<20)}
	rand.Read(p.data)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "clip.mp4"), p.data, 0o644); err != nil {
		t.Fatal(err)
	}
	srv, err := origin.New(origin.Options{Dir: dir, ShutdownGrace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := oh.ListenUDP("udp4", &net.UDPAddr{IP: oh.IP(), Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeHTTP3(ctx, pc) }()
	t.Cleanup(func() { cancel(); <-done })
	client := origin.NewHTTP3Client(func() (net.PacketConn, error) {
		p.dials.Add(1)
		return gw.ListenUDP("udp4", &net.UDPAddr{IP: gw.IP()})
	})
	t.Cleanup(func() { client.Transport.(*origin.HTTP3Transport).Close() })
	p.of = newOriginFetcher(client, newMetrics(prometheus.NewRegistry(), &App{}))
	p.url = "https://127.44.0.1:443/clip.mp4"
	return p
}

func (p *originPath) fetch(t *testing.T, off, n int64) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := p.of.fetchRange(ctx, p.url, off, n)
	if err == nil && !bytes.Equal(b, p.data[off:off+n]) {
		t.Fatalf("range %d+%d: bytes differ from the file", off, n)
	}
	return err
}

// TestOriginFetchRedialsAfterOutage: a fill stuck on a connection whose link went down gives
// up after the stall period, not the fill's 30 s timeout, and drops the connection; once the
// link is back the next fill dials a new connection and gets its bytes.
func TestOriginFetchRedialsAfterOutage(t *testing.T) {
	p := newOriginPath(t, vnet.LinkConfig{RateBps: 24e6, QueueBytes: 200_000, Delay: 10 * time.Millisecond})
	if err := p.fetch(t, 0, 64<<10); err != nil {
		t.Fatal(err)
	}
	p.gw.SetUp(false)
	start := time.Now()
	err := p.fetch(t, 64<<10, 64<<10)
	if !errors.Is(err, errOriginStalled) {
		t.Fatalf("fetch during the outage = %v, want errOriginStalled", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the stalled fetch took %v to give up: the watchdog did not fire", took)
	}
	if got := p.of.resets.Load(); got != 1 {
		t.Errorf("%d connection resets, want 1", got)
	}
	p.gw.SetUp(true)
	if err := p.fetch(t, 64<<10, 64<<10); err != nil {
		t.Fatalf("fetch after the outage: %v", err)
	}
	if got := p.dials.Load(); got != 2 {
		t.Errorf("%d connections dialled, want 2 (the dead one dropped, a new one after the outage)", got)
	}
}

// TestOriginFetchSlowIsNotStalled: a fill over a thin link that takes several stall periods
// but keeps receiving bytes runs to the end on its connection.
func TestOriginFetchSlowIsNotStalled(t *testing.T) {
	p := newOriginPath(t, vnet.LinkConfig{RateBps: 256e3, QueueBytes: 64 << 10, Delay: 10 * time.Millisecond})
	start := time.Now()
	if err := p.fetch(t, 0, 160<<10); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 2*originStall {
		t.Fatalf("the fetch took %v: the link is not thin enough to test the watchdog", took)
	}
	if got := p.of.resets.Load(); got != 0 {
		t.Errorf("%d connection resets of a slow but live connection, want 0", got)
	}
	if got := p.dials.Load(); got != 1 {
		t.Errorf("%d connections dialled, want 1", got)
	}
}
