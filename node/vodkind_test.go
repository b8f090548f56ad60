package node_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/nanodc/nanodc/node"
	"github.com/nanodc/nanodc/node/slice"
	"github.com/nanodc/nanodc/vod"
	"github.com/nanodc/nanodc/vod/catalog"
)

// TestVODInProviderSlice: the video provider's VoD app runs as the built-in kind "vod" in its
// slice. The provider pushes a title over the overlay, the gateway's home side streams it
// from under the slice's path, the cache sits in the slice's storage and counts in its
// usage, and a competitor's title is refused; the competitor runs its own VoD app in its own
// slice and namespace on the same gateway.
func TestVODInProviderSlice(t *testing.T) {
	dir := t.TempDir()
	n := start(t, dir, loopbackConfig())
	root := readToken(t, dir, node.TokenFile)
	addr := n.APIAddr()

	provKey, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	prov, _ := peer.IDFromPrivateKey(provKey)
	const downloadBps = 4_000_000 // the slice's download share: 500 kB/s
	if r := post(t, addr, root, slice.Request{Op: slice.OpSliceCreate, Slice: "video", Provider: prov.String(),
		Quotas: &slice.Quotas{StorageBytes: 64 << 20, UploadBps: 2_000_000, DownloadBps: downloadBps}}); r.Status != 200 {
		t.Fatalf("slice.create: %+v", r)
	}
	u, err := slice.Pack(provKey, slice.Manifest{Name: "vod", Version: "1", Kind: node.KindVOD, Config: json.RawMessage(`{"strategy":"nanodc"}`)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := u.Encode()
	// The provider installs it with a token the operator minted for it.
	r := post(t, addr, root, slice.Request{Op: slice.OpTokenCreate, Role: slice.RoleProvider, Peer: prov.String()})
	var tok struct{ Token string }
	_ = json.Unmarshal(r.Result, &tok)
	if r := post(t, addr, tok.Token, slice.Request{Op: slice.OpAppInstall, Slice: "video", Unit: raw, Start: true}); r.Status != 200 {
		t.Fatalf("install vod: %+v", r)
	}

	// The provider's title: 1 MiB published with its key, origin on loopback.
	data := make([]byte, 1<<20)
	rand.Read(data)
	media := t.TempDir()
	if err := os.WriteFile(filepath.Join(media, "film.mp4"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	origin := httptest.NewServer(http.FileServer(http.Dir(media)))
	defer origin.Close()
	publish := func(key crypto.PrivKey) *catalog.Entry {
		e, err := catalog.Publish(context.Background(), filepath.Join(media, "film.mp4"), catalog.PublishOptions{
			Key: key, OriginBase: origin.URL, BitrateBps: 1_000_000, Duration: 8 * time.Second, MIME: "video/mp4", PieceLength: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	entry := publish(provKey)

	// Push from the provider's own host, over the overlay.
	h, err := libp2p.New(libp2p.Identity(provKey), libp2p.NoListenAddrs, libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ov := n.Overlay()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.Connect(ctx, peer.AddrInfo{ID: ov.ID(), Addrs: ov.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	pushed := time.Now()
	res, err := vod.PushToNamespace(ctx, h, ov.ID(), "video", entry, 0)
	if err != nil || !res.OK {
		t.Fatalf("push: %v %+v", err, res)
	}

	// The home side: /slices/video/apps/vod/vod/film.mp4, no token, full bytes and ranges.
	base := "http://" + addr + "/slices/video/apps/vod/vod/film.mp4"
	resp, err := http.Get(base)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, data) {
		t.Fatalf("GET: %d, %d bytes equal=%v", resp.StatusCode, len(got), bytes.Equal(got, data))
	}
	// Every byte came from the origin through the slice's download share: not faster than it
	// allows (lower bound only; a loaded machine may be slower).
	if d, least := time.Since(pushed), time.Duration(float64(len(data)-(64<<10))/(downloadBps/8)*float64(time.Second)); d < least*9/10 {
		t.Fatalf("the title arrived in %v; the slice's %d bit/s download share allows no less than %v", d, downloadBps, least)
	}
	req, _ := http.NewRequest("GET", base, nil)
	req.Header.Set("Range", "bytes=1000-1999")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, data[1000:2000]) {
		t.Fatalf("Range: %d %d bytes", resp.StatusCode, len(got))
	}

	// The cache is in the slice's storage and counts there.
	files, _ := filepath.Glob(filepath.Join(dir, "slices", "slices", "video", "files", "vod", "data", "*", "film.mp4"))
	if len(files) != 1 {
		t.Fatalf("cached file under the slice: %v", files)
	}
	// The watchdog's storage rescan (every 5 s) counts the cache in the slice's usage.
	for deadline := time.Now().Add(12 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		sv := post(t, addr, root, slice.Request{Op: slice.OpProbeSlice, Slice: "video"})
		var view struct {
			Usage struct {
				StorageBytes int64 `json:"storage_bytes"`
			} `json:"usage"`
		}
		_ = json.Unmarshal(sv.Result, &view)
		if view.Usage.StorageBytes >= int64(len(data)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slice storage usage %d, want at least the cached title's %d", view.Usage.StorageBytes, len(data))
		}
	}

	// A competitor's title is not accepted by this slice's app.
	otherKey, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	h2, err := libp2p.New(libp2p.Identity(otherKey), libp2p.NoListenAddrs, libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	if err := h2.Connect(ctx, peer.AddrInfo{ID: ov.ID(), Addrs: ov.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	otherProv, _ := peer.IDFromPrivateKey(otherKey)
	otherEntry := publish(otherKey)
	if res, err := vod.PushToNamespace(ctx, h2, ov.ID(), "video", otherEntry, 0); err == nil && res.OK {
		t.Fatal("a competitor pushed a title into the video provider's slice")
	} else if err == nil && res.Error == "" {
		t.Fatal("the refused push gave no reason")
	}

	// A competing video provider gets its own VoD app in its own slice on the same gateway,
	// in its own namespace: its push reaches its app, its title streams from its path, and the
	// first provider's app still does not know it.
	if r := post(t, addr, root, slice.Request{Op: slice.OpSliceCreate, Slice: "video2", Provider: otherProv.String()}); r.Status != 200 {
		t.Fatal(r.Error)
	}
	u2, _ := slice.Pack(otherKey, slice.Manifest{Name: "vod", Kind: node.KindVOD}, nil)
	raw2, _ := u2.Encode()
	if r := post(t, addr, root, slice.Request{Op: slice.OpAppInstall, Slice: "video2", Unit: raw2, Start: true}); r.Status != 200 {
		t.Fatalf("second provider's vod app: %+v", r)
	}
	if res, err := vod.PushToNamespace(ctx, h2, ov.ID(), "video2", otherEntry, 0); err != nil || !res.OK {
		t.Fatalf("push into video2: %v %+v", err, res)
	}
	for _, c := range []struct {
		path string
		want int
	}{{"/slices/video2/apps/vod/vod/film.mp4", 200}, {"/slices/video/apps/vod/vod/film.mp4", 200}} {
		resp, err := http.Get("http://" + addr + c.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want || !bytes.Equal(body, data) {
			t.Fatalf("GET %s: %d, %d bytes", c.path, resp.StatusCode, len(body))
		}
	}
	// One VoD app per slice.
	u3, _ := slice.Pack(otherKey, slice.Manifest{Name: "vod2", Kind: node.KindVOD}, nil)
	raw3, _ := u3.Encode()
	if r := post(t, addr, root, slice.Request{Op: slice.OpAppInstall, Slice: "video2", Unit: raw3, Start: true}); r.Status == 200 ||
		!bytes.Contains([]byte(r.Error), []byte("one VoD app per slice")) {
		t.Fatalf("second vod app in one slice: %+v", r)
	}
}
