package catalog_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/nanodc/nanodc/vod/catalog"
	"github.com/nanodc/nanodc/vod/origin"
)

// TestAnacrolixFetchesFromOriginOverHTTP3 is the emulator's path end to end: a published
// entry's torrent, opened by anacrolix/torrent (the gateways' engine) with every peer source
// off, fetched from the origin's webseed over HTTP/3 on packet conns the test provides.
func TestAnacrolixFetchesFromOriginOverHTTP3(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a BitTorrent client")
	}
	media := t.TempDir()
	data := make([]byte, 1<<20+4321)
	_, _ = rand.Read(data)
	video := filepath.Join(media, "clip.mp4")
	if err := os.WriteFile(video, data, 0o644); err != nil {
		t.Fatal(err)
	}
	srv, err := origin.New(origin.Options{Dir: media})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.ServeHTTP3(ctx, pc) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("ServeHTTP3: %v", err)
		}
	}()

	key, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	// An http:// webseed URL, as a catalog for a plain HTTP origin has: the HTTP/3 transport
	// takes it as https.
	e, err := catalog.Publish(context.Background(), video, catalog.PublishOptions{
		Key: key, OriginBase: "http://" + pc.LocalAddr().String(), BitrateBps: 2_000_000, PieceLength: 64 << 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	mi, err := e.MetaInfo()
	if err != nil {
		t.Fatal(err)
	}

	rt := origin.NewHTTP3Transport(func() (net.PacketConn, error) { return net.ListenPacket("udp", "127.0.0.3:0") })
	defer rt.Close()
	cfg := torrent.NewDefaultClientConfig()
	cfg.DataDir = t.TempDir()
	cfg.NoDHT, cfg.DisableTCP, cfg.DisableUTP, cfg.DisablePEX, cfg.DisableTrackers = true, true, true, true, true
	cfg.NoDefaultPortForwarding, cfg.DisableIPv6, cfg.NoUpload, cfg.Seed = true, true, true, false
	cfg.ListenPort = 0
	cfg.WebTransport = rt
	cl, err := torrent.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	tor, err := cl.AddTorrent(mi)
	if err != nil {
		t.Fatal(err)
	}
	if tor.InfoHash() != e.InfoHashBytes() {
		t.Fatalf("anacrolix infohash %v, entry %v", tor.InfoHash(), e.InfoHashBytes())
	}
	tor.DownloadAll()
	select {
	case <-tor.Complete().On():
	case <-time.After(time.Minute):
		t.Fatalf("download incomplete after 1 min: %d of %d bytes", tor.BytesCompleted(), e.Size)
	}
	got, err := os.ReadFile(filepath.Join(cfg.DataDir, e.Name))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("downloaded file differs (%d bytes, %v)", len(got), err)
	}
	if c := srv.Stats().Clients["127.0.0.3"]; c.BytesServed < e.Size {
		t.Errorf("origin served 127.0.0.3 %d bytes, want at least %d", c.BytesServed, e.Size)
	}
}
