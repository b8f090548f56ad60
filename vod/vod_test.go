package vod_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/nanodc/nanodc/emulator/vnet"
	"github.com/nanodc/nanodc/overlay"
	"github.com/nanodc/nanodc/vod"
	"github.com/nanodc/nanodc/vod/catalog"
)

// fixture is a small fleet of real gateways on the virtual network, an origin on loopback
// HTTP that can be switched off, and one published title.
type fixture struct {
	t      *testing.T
	vn     *vnet.Network
	nodes  []*gateway
	origin *httptest.Server
	up     atomic.Bool // origin answers when true
	served atomic.Int64
	file   []byte
	entry  *catalog.Entry
	key    crypto.PrivKey
}

type gateway struct {
	ov     *overlay.Overlay
	app    *vod.App
	dir    string
	http   *httptest.Server
	cancel context.CancelFunc
	done   chan struct{}
	opts   vod.Options
}

func newFixture(t *testing.T, size int, bitrate int64) *fixture {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	return newFixtureFile(t, data, bitrate)
}

// newFixtureFile publishes data (at bitrate) as the title "clip.mp4".
func newFixtureFile(t *testing.T, data []byte, bitrate int64) *fixture {
	t.Helper()
	size := len(data)
	f := &fixture{t: t, vn: vnet.New(vnet.Options{Seed: 7}), file: data}
	t.Cleanup(func() { f.vn.Close() })
	f.up.Store(true)
	dir := t.TempDir()
	path := filepath.Join(dir, "clip.mp4")
	if err := os.WriteFile(path, f.file, 0o644); err != nil {
		t.Fatal(err)
	}
	f.origin = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !f.up.Load() {
			http.Error(w, "origin down", http.StatusServiceUnavailable)
			return
		}
		cw := &countingWriter{ResponseWriter: w, n: &f.served}
		http.ServeFile(cw, r, path)
	}))
	t.Cleanup(f.origin.Close)
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f.key = key
	f.entry, err = catalog.Publish(context.Background(), path, catalog.PublishOptions{
		Key: key, OriginBase: f.origin.URL, BitrateBps: bitrate, MIME: "video/mp4",
		Duration:    time.Duration(float64(size*8) / float64(bitrate) * float64(time.Second)),
		PieceLength: 64 << 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w *countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n.Add(int64(n))
	return n, err
}

// addGateway starts a gateway in isp-a, access node an-1, behind a 20 Mbit/s, 5 ms link.
func (f *fixture) addGateway(opts vod.Options) *gateway {
	f.t.Helper()
	return f.addGatewayAt(opts, overlay.Labels{ISP: "isp-a", AccessNode: "an-1"}, 5*time.Millisecond, 20e6, 20e6)
}

// addGatewayAt starts a gateway with these labels behind a link of this delay and these
// rates (bit/s).
func (f *fixture) addGatewayAt(opts vod.Options, labels overlay.Labels, delay time.Duration, up, down int64) *gateway {
	t := f.t
	t.Helper()
	i := len(f.nodes)
	ip := net.IPv4(127, 43, 0, byte(i+1))
	upLink := vnet.LinkConfig{RateBps: up, QueueBytes: 200_000, Delay: delay}
	downLink := upLink
	downLink.RateBps = down
	h, err := f.vn.AddHost(vnet.HostConfig{IP: ip, Site: labels.AccessNode, Up: upLink, Down: downLink})
	if err != nil {
		t.Fatal(err)
	}
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cfg := overlay.Config{
		PrivKey:       priv,
		PingInterval:  time.Second,
		PacketNetwork: h,
		ListenAddrs:   []ma.Multiaddr{ma.StringCast(fmt.Sprintf("/ip4/%s/udp/4001/quic-v1", ip))},
		Labels:        labels,
	}
	if i > 0 {
		cfg.Bootstrap = []peer.AddrInfo{{ID: f.nodes[0].ov.ID(), Addrs: f.nodes[0].ov.Addrs()}}
	}
	g := &gateway{dir: t.TempDir()}
	g.ov, err = overlay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go g.ov.Serve(ctx)
	t.Cleanup(func() { cancel(); g.ov.Close() })
	opts.Overlay, opts.Dir = g.ov, g.dir
	if opts.AnnounceJitter == 0 {
		opts.AnnounceJitter = -1
	}
	g.opts = opts
	f.nodes = append(f.nodes, g)
	f.startApp(g)
	return g
}

func (f *fixture) startApp(g *gateway) {
	t := f.t
	t.Helper()
	app, err := vod.New(g.opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := app.AddTitle(f.entry); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.app, g.cancel, g.done = app, cancel, make(chan struct{})
	go func() { app.Serve(ctx); close(g.done) }()
	g.http = httptest.NewServer(app.Handler())
	t.Cleanup(func() { f.stopApp(g) })
}

func (f *fixture) stopApp(g *gateway) {
	if g.app == nil {
		return
	}
	g.http.Close()
	g.cancel()
	<-g.done
	if err := g.app.Close(); err != nil {
		f.t.Errorf("closing app: %v", err)
	}
	g.app = nil
}

func (f *fixture) waitRoutable() {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, g := range f.nodes {
		if err := g.ov.WaitRoutable(ctx); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *fixture) push(g *gateway) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := g.app.Push(ctx, f.entry); err != nil {
		f.t.Fatal(err)
	}
}

// openStream starts a GET of a byte range (or all, when rng is "") of the title on a gateway,
// for the caller to read within timeout; the body is closed when the test ends.
func openStream(t *testing.T, g *gateway, ref, rng string, timeout time.Duration) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.http.URL+"/vod/"+ref, nil)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// get fetches a byte range (or all, when rng is "") of the title from a gateway.
func get(t *testing.T, g *gateway, ref, rng string) (*http.Response, []byte) {
	t.Helper()
	resp := openStream(t, g, ref, rng, 60*time.Second)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s %s: %v", ref, rng, err)
	}
	return resp, body
}

func (f *fixture) checkWhole(g *gateway) {
	f.t.Helper()
	resp, body := get(f.t, g, f.entry.CID, "")
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("GET status %s", resp.Status)
	}
	if got, want := sha256.Sum256(body), sha256.Sum256(f.file); got != want {
		for i := range min(len(body), len(f.file)) {
			if body[i] != f.file[i] {
				f.t.Errorf("first difference at byte %d (piece %d)", i, int64(i)/f.entry.PieceLength)
				break
			}
		}
		f.t.Fatalf("streamed %d bytes with sha256 %x, want %d bytes %x", len(body), got[:8], len(f.file), want[:8])
	}
}

func (f *fixture) checkSeeks(g *gateway) {
	f.t.Helper()
	n := int64(len(f.file))
	for _, r := range [][2]int64{{n / 2, n/2 + 99_999}, {10, 20}, {n - 1000, n - 1}, {n / 3, n/3 + 70_000}, {0, 0}} {
		resp, body := get(f.t, g, f.entry.Name, fmt.Sprintf("bytes=%d-%d", r[0], r[1]))
		if resp.StatusCode != http.StatusPartialContent {
			f.t.Fatalf("range %v: status %s", r, resp.Status)
		}
		if want := fmt.Sprintf("bytes %d-%d/%d", r[0], r[1], n); resp.Header.Get("Content-Range") != want {
			f.t.Fatalf("Content-Range %q, want %q", resp.Header.Get("Content-Range"), want)
		}
		if !bytes.Equal(body, f.file[r[0]:r[1]+1]) {
			f.t.Fatalf("range %v: bytes differ from the file", r)
		}
	}
}

// TestSwarmStreamsFromPeers: a title pushed to one gateway streams to the others from peers,
// byte for byte, including after seeks, and keeps streaming with the origin down.
func TestSwarmStreamsFromPeers(t *testing.T) {
	f := newFixture(t, 3<<20, 4e6)
	seed := f.addGateway(vod.Options{})
	a := f.addGateway(vod.Options{})
	b := f.addGateway(vod.Options{})
	f.waitRoutable()
	f.push(seed)
	pushed := f.served.Load()
	if pushed < int64(len(f.file)) {
		t.Fatalf("push read %d bytes from the origin, want the whole title (%d)", pushed, len(f.file))
	}
	f.up.Store(false) // peers have the data: playback must not need the origin
	f.checkWhole(a)
	f.checkSeeks(b)
	f.checkWhole(b)
	for name, g := range map[string]*gateway{"a": a, "b": b} {
		st := g.app.Stats()
		if st.PeerBytes < int64(len(f.file)) {
			t.Errorf("gateway %s: %d bytes from peers, want at least the title (%d)", name, st.PeerBytes, len(f.file))
		}
		if st.OriginBytes != 0 {
			t.Errorf("gateway %s: %d bytes from the origin while it was down", name, st.OriginBytes)
		}
	}
	if f.served.Load() != pushed {
		t.Errorf("origin served %d bytes after the push", f.served.Load()-pushed)
	}

	// 404 JSON for unknown titles, 416 for ranges past the end, HEAD.
	resp, body := get(t, a, "no-such-title", "")
	if resp.StatusCode != http.StatusNotFound || !bytes.Contains(body, []byte(`"error"`)) {
		t.Errorf("unknown title: %s %s", resp.Status, body)
	}
	resp, _ = get(t, a, f.entry.CID, fmt.Sprintf("bytes=%d-", len(f.file)+10))
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("range past the end: %s, want 416", resp.Status)
	}
	hr, err := http.Head(a.http.URL + "/vod/" + f.entry.CID)
	if err != nil {
		t.Fatal(err)
	}
	hr.Body.Close()
	if hr.StatusCode != 200 || hr.ContentLength != int64(len(f.file)) || hr.Header.Get("Content-Type") != "video/mp4" || hr.Header.Get("Accept-Ranges") != "bytes" {
		t.Errorf("HEAD: %s length %d type %q ranges %q", hr.Status, hr.ContentLength, hr.Header.Get("Content-Type"), hr.Header.Get("Accept-Ranges"))
	}
}

// TestStreamsFromOwnISP: holders in the viewer's ISP sit behind slow links, those of another
// ISP behind fast ones, so by RTT the other ISP looks nearer; the viewer still streams from
// its own ISP and no byte crosses ISPs.
func TestStreamsFromOwnISP(t *testing.T) {
	st, title := streamNearerElsewhere(t, vod.LocalityISP)
	if st.PeerBytes < title {
		t.Fatalf("viewer got %d bytes from peers, want at least the title (%d)", st.PeerBytes, title)
	}
	if st.CrossISPPeer != 0 {
		t.Errorf("%d of %d peer bytes crossed ISPs while the viewer's ISP held the title three times", st.CrossISPPeer, st.PeerBytes)
	}
}

// TestLocalityRTTStreamsFromNearest: with vod.locality rtt the same viewer streams from the
// holders nearest by RTT, the other ISP's.
func TestLocalityRTTStreamsFromNearest(t *testing.T) {
	st, title := streamNearerElsewhere(t, vod.LocalityRTT)
	if st.CrossISPPeer*2 < title {
		t.Errorf("%d of %d peer bytes crossed ISPs (title %d): want most, the other ISP's holders are the nearest", st.CrossISPPeer, st.PeerBytes, title)
	}
}

// streamNearerElsewhere streams a title to a viewer whose ISP's three holders sit behind
// slow links while another ISP's three sit behind fast ones (nearer by RTT), the origin down,
// and returns the viewer's figures and the title's size.
func streamNearerElsewhere(t *testing.T, locality vod.Locality) (vod.Stats, int64) {
	f := newFixture(t, 2<<20, 4e6)
	ours := f.addPlaced("isp-a", 3, 30*time.Millisecond, 20e6)
	theirs := f.addPlaced("isp-b", 3, time.Millisecond, 20e6)
	viewer := f.addGatewayAt(vod.Options{MaxPeers: 3, Locality: locality}, overlay.Labels{ISP: "isp-a", AccessNode: "an-v"}, 5*time.Millisecond, 20e6, 20e6)
	f.waitRoutable()
	for _, g := range append(ours, theirs...) {
		f.push(g)
	}
	// The viewer has measured every holder: the other ISP's are nearer by RTT.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var near, far time.Duration
		for _, g := range ours {
			far = max(far, viewer.ov.PeerInfo(g.ov.ID()).RTT)
		}
		near = time.Hour
		for _, g := range theirs {
			near = min(near, viewer.ov.PeerInfo(g.ov.ID()).RTT)
		}
		if near > 0 && near < time.Hour && far > near {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("viewer's RTTs never measured: other ISP nearest %v, ours farthest %v", near, far)
		}
		time.Sleep(200 * time.Millisecond)
	}
	f.up.Store(false)
	f.checkWhole(viewer)
	return viewer.app.Stats(), int64(len(f.file))
}

// TestTrimsOtherISPs: a viewer whose ISP holds nothing streams from another ISP; once holders
// of its own ISP appear mid-stream it switches to them, and the rest of the stream stays in
// the ISP.
func TestTrimsOtherISPs(t *testing.T) {
	f := newFixture(t, 2<<20, 400e3)
	theirs := f.addPlaced("isp-b", 3, time.Millisecond, 20e6)
	ours := f.addPlaced("isp-a", 3, 30*time.Millisecond, 20e6)
	// A 1.2 Mbit/s downlink: the stream lasts about 14 s, long enough for holders to appear
	// during it. (Not a DownloadLimiter: anacrolix opens no connection while one is drained.)
	viewer := f.addGatewayAt(vod.Options{MaxPeers: 4}, overlay.Labels{ISP: "isp-a", AccessNode: "an-v"}, 5*time.Millisecond, 20e6, 1.2e6)
	f.waitRoutable()
	for _, g := range theirs {
		f.push(g)
	}
	done := make(chan struct{})
	go func() { defer close(done); f.checkWhole(viewer) }()
	waitFor(t, 20*time.Second, "the viewer streaming from the other ISP", func() bool { return viewer.app.Stats().CrossISPPeer > 200e3 })
	for _, g := range ours {
		f.push(g)
	}
	time.Sleep(6 * time.Second) // a discovery round (every 2 s, at most every 3 s) and a trim
	before := viewer.app.Stats()
	<-done
	after := viewer.app.Stats()
	got, cross := after.PeerBytes-before.PeerBytes, after.CrossISPPeer-before.CrossISPPeer
	if got < 300e3 {
		t.Fatalf("only %d bytes came from peers after our ISP's holders appeared: the test needs a longer stream", got)
	}
	if cross*10 > got {
		t.Errorf("after our ISP's holders appeared, %d of %d peer bytes still crossed ISPs", cross, got)
	}
}

// TestOutsidePeersBeforeOrigin: the viewer's ISP holds the title on two thin uplinks that
// cannot carry its bitrate, another ISP on fast ones. Once the stream needs the origin for
// want of peers, the viewer takes peers from the other ISP too: the origin is outside the
// ISP as well, and only fills what no peer could.
func TestOutsidePeersBeforeOrigin(t *testing.T) {
	f := newFixture(t, 4<<20, 1.6e6) // 20 s of video at 200 kB/s
	// 600 kbit/s up: together 150 kB/s of a 200 kB/s title.
	ours := f.addPlaced("isp-a", 2, 5*time.Millisecond, 600e3)
	theirs := f.addPlaced("isp-b", 3, 5*time.Millisecond, 20e6)
	viewer := f.addGatewayAt(vod.Options{MaxPeers: 4}, overlay.Labels{ISP: "isp-a", AccessNode: "an-v"}, 5*time.Millisecond, 20e6, 20e6)
	f.waitRoutable()
	for _, g := range theirs {
		f.push(g)
	}
	for _, g := range ours {
		f.push(g)
	}
	before := f.served.Load()
	f.checkWhole(viewer)
	st := viewer.app.Stats()
	origin := f.served.Load() - before
	if st.CrossISPPeer == 0 {
		t.Errorf("no byte came from the other ISP's peers; the origin sent %d of %d", origin, len(f.file))
	}
	// Our ISP's peers alone would leave a quarter of every second to the origin from the
	// start; with peers from elsewhere once short, the origin covers the first seconds only.
	if origin*5 > int64(len(f.file)) {
		t.Errorf("the origin sent %d of %d bytes (%d from the other ISP's peers)", origin, len(f.file), st.CrossISPPeer)
	}
}

// addPlaced starts n gateways in an ISP, each at its own access node, behind links of this
// delay and uplink rate (20 Mbit/s down).
func (f *fixture) addPlaced(isp string, n int, delay time.Duration, up int64) []*gateway {
	f.t.Helper()
	var gs []*gateway
	for i := range n {
		gs = append(gs, f.addGatewayAt(vod.Options{}, overlay.Labels{ISP: isp, AccessNode: fmt.Sprintf("%s-an%d", isp, i)}, delay, up, 20e6))
	}
	return gs
}

// waitFor polls cond until it holds or the time is up.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestOriginFillsWhenNoPeers: a gateway alone streams the title from the origin through the
// deadline scheduler.
func TestOriginFillsWhenNoPeers(t *testing.T) {
	f := newFixture(t, 2<<20, 4e6)
	g := f.addGateway(vod.Options{})
	f.checkWhole(g)
	st := g.app.Stats()
	if st.OriginBytes < int64(len(f.file)) {
		t.Errorf("origin bytes %d, want the whole title %d", st.OriginBytes, len(f.file))
	}
	// Now cached: streaming again needs nothing from the network.
	before := f.served.Load()
	f.checkSeeks(g)
	if f.served.Load() != before {
		t.Errorf("origin served %d bytes for a cached title", f.served.Load()-before)
	}
}

// TestGapFillTakesOnlyMissingBlocks: a piece that peers have partly delivered costs the origin
// only the rest; a bad block kept from a peer costs one refetch of the whole piece, and no bad
// byte reaches the player.
func TestGapFillTakesOnlyMissingBlocks(t *testing.T) {
	f := newFixture(t, 1<<20, 2e6) // 64 KiB pieces: 4 blocks of 16 KiB
	g := f.addGateway(vod.Options{})
	ref := f.entry.CID
	if err := g.app.OpenTitleForTest(ref); err != nil {
		t.Fatal(err)
	}
	const plen, block = 64 << 10, 16 << 10
	blockOf := func(piece, b int) []byte {
		off := piece*plen + b*block
		return bytes.Clone(f.file[off : off+block])
	}
	fill := func(piece int) int64 {
		t.Helper()
		before := f.served.Load()
		if err := g.app.FillFromOriginForTest(ref, piece); err != nil {
			t.Fatalf("piece %d: %v", piece, err)
		}
		if !g.app.PieceCompleteForTest(ref, piece) {
			t.Fatalf("piece %d not complete after the fill", piece)
		}
		return f.served.Load() - before
	}

	// Peers delivered blocks 0 and 2 of piece 3: the origin sends blocks 1 and 3.
	for _, b := range []int{0, 2} {
		if err := g.app.WritePeerBlockForTest(ref, 3, int64(b*block), blockOf(3, b)); err != nil {
			t.Fatal(err)
		}
	}
	if got := fill(3); got != 2*block {
		t.Errorf("piece 3 with 2 of 4 blocks from peers: origin sent %d bytes, want %d", got, 2*block)
	}

	// A hostile peer's block 1 of piece 5: the partial fill fails its hash check, the whole
	// piece comes from the origin.
	bad := blockOf(5, 1)
	bad[100] ^= 0xff
	if err := g.app.WritePeerBlockForTest(ref, 5, block, bad); err != nil {
		t.Fatal(err)
	}
	if got := fill(5); got != 3*block+plen {
		t.Errorf("piece 5 with a bad peer block: origin sent %d bytes, want %d (3 blocks, then the piece)", got, 3*block+plen)
	}
	f.checkWhole(g)
}

// TestOriginPiecesNobodyHoldsComeEarly: a gateway alone, its viewer playing at the bitrate:
// no peer will ever hold the coming pieces, so once discovery had its grace the origin fills
// the whole horizon ahead of the player, not just the next deadline.
func TestOriginPiecesNobodyHoldsComeEarly(t *testing.T) {
	const bitrate = 2e6 // 250 kB/s
	f := newFixture(t, 4<<20, bitrate)
	g := f.addGateway(vod.Options{})
	resp := openStream(t, g, f.entry.CID, "", 30*time.Second)
	// Play 6 s at the bitrate (the stream is then past its 3 s discovery grace).
	var played int64
	buf := make([]byte, bitrate/8/10)
	for start := time.Now(); time.Since(start) < 6*time.Second; time.Sleep(100 * time.Millisecond) {
		n, err := io.ReadFull(resp.Body, buf)
		played += int64(n)
		if err != nil {
			t.Fatalf("after %d bytes: %v", played, err)
		}
	}
	// The scheduler looks 10 s ahead; the old last-moment rule held about 1 s ahead.
	want := played + 5*bitrate/8
	var cached int64
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if cached = g.app.Stats().CacheBytes; cached >= want {
			return
		}
	}
	t.Errorf("played %d bytes, cached %d: want at least %d (5 s of video ahead)", played, cached, want)
}

// TestHostilePeerIsBanned: a gateway serving corrupted pieces never gets a corrupt byte to the
// player; it is banned and the pieces come from elsewhere.
func TestHostilePeerIsBanned(t *testing.T) {
	f := newFixture(t, 2<<20, 4e6)
	bad := f.addGateway(vod.Options{})
	// The victim's origin answers only once it has banned somebody (or after 30 s): otherwise
	// it could fill every piece from the origin before the hostile peer sent one, and the
	// test would prove nothing (it flaked that way on a loaded machine).
	opened := make(chan struct{})
	victim := f.addGateway(vod.Options{OriginClient: &http.Client{Transport: gatedTransport{opened, http.DefaultTransport}}})
	go func() {
		defer close(opened)
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if len(victim.app.BannedPeers()) > 0 {
				return
			}
		}
	}()
	f.waitRoutable()
	f.push(bad)
	f.corruptCopy(bad)
	f.startApp(bad)
	f.checkWhole(victim)
	banned := victim.app.BannedPeers()
	if len(banned) != 1 || banned[0] != bad.ov.ID() {
		t.Fatalf("victim banned %v, want the hostile gateway %s", banned, bad.ov.ID())
	}
}

// corruptCopy flips a byte in every 64 KiB of a gateway's title data behind its back (its
// app stopped; the caller starts it again): its piece completion still says complete, so it
// serves the bad bytes to peers.
func (f *fixture) corruptCopy(g *gateway) {
	t := f.t
	t.Helper()
	f.stopApp(g)
	corrupted := 0
	filepath.WalkDir(filepath.Join(g.dir, "data"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for i := 1000; i < len(data); i += 64 << 10 {
			data[i] ^= 0xff
		}
		corrupted++
		return os.WriteFile(p, data, 0o644)
	})
	if corrupted == 0 {
		t.Fatal("found no data file to corrupt")
	}
}

// TestPushReplicas: a provider node finds the VoD gateways through the DHT, pushes a title to
// two of them spread across access nodes, and a gateway refuses a push from anyone else.
func TestPushReplicas(t *testing.T) {
	f := newFixture(t, 1<<20, 2e6)
	var gws []*gateway
	for range 4 {
		gws = append(gws, f.addGateway(vod.Options{}))
	}
	f.waitRoutable()
	provider := f.providerNode()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	reps := pushReplicas(ctx, t, provider, f.entry, 2)
	for _, r := range reps {
		if r.Status != "ok" || r.Bytes != int64(len(f.file)) {
			t.Fatalf("replica %s: %+v", r.Peer, r)
		}
	}
	pinned := 0
	for _, g := range gws {
		for _, ts := range g.app.Stats().Titles {
			if ts.Pinned && ts.CachedBytes == int64(len(f.file)) {
				pinned++
			}
		}
	}
	if pinned != 2 {
		t.Fatalf("%d gateways hold the pinned title, want 2", pinned)
	}
	// A gateway pushing someone else's title is refused, with the reason.
	res, err := vod.PushTo(ctx, gws[0].ov.Host(), gws[1].ov.ID(), f.entry)
	if err != nil || res.OK || !strings.Contains(res.Error, "may only push its own titles") {
		t.Fatalf("foreign push: %+v, %v", res, err)
	}
}

// TestCoPushTakesOneCopyFromOrigin: a title pushed to four gateways at once costs the origin
// far less than four copies: each replica learns the others from the push, they trade
// pieces, and each takes from the origin only pieces none of its peers holds.
func TestCoPushTakesOneCopyFromOrigin(t *testing.T) {
	f := newFixture(t, 4<<20, 2e6)
	for range 4 {
		f.addGateway(vod.Options{})
	}
	f.waitRoutable()
	provider := f.providerNode()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	reps := pushReplicas(ctx, t, provider, f.entry, 4)
	var fromOrigin int64
	for _, r := range reps {
		if r.Status != "ok" || r.Bytes != int64(len(f.file)) {
			t.Fatalf("replica %s: %+v", r.Peer, r)
		}
		fromOrigin += r.OriginBytes
	}
	copies := float64(f.served.Load()) / float64(len(f.file))
	t.Logf("4 replicas: origin served %.2f copies (replicas counted %d bytes)", copies, fromOrigin)
	if copies > 2 {
		t.Fatalf("the origin served %.2f copies of the title for 4 replicas pushed together; want at most 2", copies)
	}
}

// TestPushFleetSpreadsTitles: two titles pushed together to two replicas each land on four
// different gateways, each title in both ISPs, and each replica holds its title whole.
func TestPushFleetSpreadsTitles(t *testing.T) {
	f := newFixture(t, 256<<10, 2e6)
	second, _ := f.publishOther(len(f.file), 2e6)
	for _, l := range []overlay.Labels{{ISP: "isp-a", AccessNode: "an-1"}, {ISP: "isp-a", AccessNode: "an-2"}, {ISP: "isp-b", AccessNode: "an-3"}, {ISP: "isp-b", AccessNode: "an-4"}} {
		f.addGatewayAt(vod.Options{}, l, 5*time.Millisecond, 20e6, 20e6)
	}
	f.waitRoutable()
	provider := f.providerNode()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var (
		reps []vod.Replica
		err  error
	)
	for ctx.Err() == nil { // the gateways may still be announcing themselves
		if reps, err = vod.PushFleet(ctx, provider, []*catalog.Entry{f.entry, second}, vod.PushPlan{Replicas: 2}); err == nil && len(reps) == 4 && len(distinctPeers(reps)) == 4 {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if len(reps) != 4 || len(distinctPeers(reps)) != 4 {
		t.Fatalf("pushed %+v: want 2 titles on 4 different gateways", reps)
	}
	isps := map[string]map[string]bool{}
	for _, r := range reps {
		if r.Status != "ok" || r.Bytes != int64(len(f.file)) {
			t.Fatalf("push of %s to %s: %+v", r.Title, r.Peer, r)
		}
		if isps[r.Title] == nil {
			isps[r.Title] = map[string]bool{}
		}
		isps[r.Title][r.Labels.ISP] = true
	}
	for _, name := range []string{f.entry.Name, second.Name} {
		if len(isps[name]) != 2 {
			t.Errorf("%s placed in ISPs %v: want both", name, isps[name])
		}
	}
}

func distinctPeers(reps []vod.Replica) map[peer.ID]bool {
	out := map[peer.ID]bool{}
	for _, r := range reps {
		out[r.Peer] = true
	}
	return out
}

// TestPrefixPush: a provider places one whole copy and the title's prefix on every other
// gateway. The prefixes come from the replica, not the origin; a prefix gateway holds exactly
// the prefix's pieces and plays them with the origin and every peer gone; the prefix survives
// a restart, and cache eviction takes the rest of a watched title but places the prefix again.
func TestPrefixPush(t *testing.T) {
	f := newFixture(t, 1<<20, 2e6) // 16 pieces of 64 KiB
	for _, an := range []string{"an-1", "an-1", "an-2", "an-2"} {
		f.addGatewayAt(vod.Options{}, overlay.Labels{ISP: "isp-a", AccessNode: an}, 5*time.Millisecond, 20e6, 20e6)
	}
	f.waitRoutable()
	provider := f.providerNode()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const prefix = 100_000 // two pieces: 0.4 s at 2 Mbit/s
	const prefixTime = 400 * time.Millisecond
	const prefixHeld = 2 * 64 << 10
	var reps []vod.Replica
	for ctx.Err() == nil { // the gateways may still be announcing themselves
		var err error
		if reps, err = vod.PushFleet(ctx, provider, []*catalog.Entry{f.entry}, vod.PushPlan{Replicas: 1, Prefix: prefixTime}); err == nil && len(reps) == 4 {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if len(reps) != 4 {
		t.Fatalf("pushed to %d gateways, want 4: %+v", len(reps), reps)
	}
	if reps[0].PrefixBytes != 0 || reps[0].Status != "ok" || reps[0].Bytes != int64(len(f.file)) {
		t.Fatalf("the whole copy comes first: %+v", reps[0])
	}
	for _, r := range reps[1:] {
		if r.Status != "ok" || r.PrefixBytes != prefix || r.Bytes != prefixHeld {
			t.Fatalf("prefix push to %s: %+v; want ok, %d bytes held", r.Peer, r, prefixHeld)
		}
		if r.OriginBytes != 0 {
			t.Errorf("prefix push to %s took %d bytes from the origin while the replica held the title", r.Peer, r.OriginBytes)
		}
	}
	var prefixed []*gateway // ChooseReplicas picks the replica; the others got the prefix
	for _, g := range f.nodes {
		if g.ov.ID() != reps[0].Peer {
			prefixed = append(prefixed, g)
		}
	}
	for _, g := range prefixed {
		ts := titleStats(t, g, f.entry.CID)
		if ts.CachedBytes != prefixHeld || ts.PrefixBytes != prefix || ts.Pinned {
			t.Fatalf("prefix gateway: %+v; want %d bytes cached, prefix %d, not pinned", ts, prefixHeld, prefix)
		}
	}

	// A prefix holder does not announce itself as a holder of the title (it cannot send past
	// the first seconds); the replica does.
	for _, g := range prefixed {
		waitFor(t, 10*time.Second, "the replica's announcement", func() bool {
			return slices.Contains(g.app.GossipHoldersForTest(f.entry.CID), reps[0].Peer)
		})
		for _, o := range prefixed {
			if slices.Contains(g.app.GossipHoldersForTest(f.entry.CID), o.ov.ID()) {
				t.Errorf("a gateway lists prefix holder %s as a holder of the title", o.ov.ID())
			}
		}
	}

	// The origin and the replica go away: the prefix still plays, from the gateway's disk.
	f.up.Store(false)
	for _, g := range f.nodes {
		if g.ov.ID() == reps[0].Peer {
			f.stopApp(g)
		}
	}
	g := prefixed[0]
	resp, body := get(t, g, f.entry.CID, fmt.Sprintf("bytes=0-%d", prefixHeld-1))
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, f.file[:prefixHeld]) {
		t.Fatalf("prefix with origin and replica gone: status %s, %d bytes (equal %v)", resp.Status, len(body), bytes.Equal(body, f.file[:prefixHeld]))
	}

	// After a restart the prefix is still there; with a quota of little more than the prefix,
	// watching the whole title (origin back) leaves the prefix placed again, and only it.
	f.up.Store(true)
	f.stopApp(g)
	g.opts.CacheBytes = prefixHeld + 1000
	f.startApp(g)
	waitFor(t, 10*time.Second, "the prefix to be held after a restart", func() bool {
		ts := titleStats(t, g, f.entry.CID)
		return ts.CachedBytes == prefixHeld && ts.PrefixBytes == prefix
	})
	f.checkWhole(g)
	waitFor(t, 30*time.Second, "eviction to leave the prefix only", func() bool {
		ts := titleStats(t, g, f.entry.CID)
		return ts.CachedBytes == prefixHeld && ts.PrefixBytes == prefix
	})
}

func titleStats(t *testing.T, g *gateway, cid string) vod.TitleStats {
	t.Helper()
	for _, ts := range g.app.Stats().Titles {
		if ts.CID == cid {
			return ts
		}
	}
	t.Fatalf("gateway does not list %s", cid)
	return vod.TitleStats{}
}

// pushReplicas pushes e to n gateways found through the DHT, retrying while the gateways
// are still announcing themselves.
func pushReplicas(ctx context.Context, t *testing.T, provider *overlay.Overlay, e *catalog.Entry, n int) []vod.Replica {
	t.Helper()
	var reps []vod.Replica
	for ctx.Err() == nil {
		var err error
		reps, err = vod.PushFleet(ctx, provider, []*catalog.Entry{e}, vod.PushPlan{Replicas: n})
		if err == nil && len(reps) == n {
			return reps
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("pushed to %d gateways, want %d", len(reps), n)
	return nil
}

// providerNode is an overlay node holding the provider's key (the identity a push proves).
func (f *fixture) providerNode() *overlay.Overlay {
	t := f.t
	t.Helper()
	ip := net.IPv4(127, 43, 1, 1)
	link := vnet.LinkConfig{RateBps: 100e6, QueueBytes: 200_000, Delay: 2 * time.Millisecond}
	h, err := f.vn.AddHost(vnet.HostConfig{IP: ip, Site: "datacenter", Up: link, Down: link})
	if err != nil {
		t.Fatal(err)
	}
	o, err := overlay.New(overlay.Config{
		PrivKey:       f.key,
		PacketNetwork: h,
		ListenAddrs:   []ma.Multiaddr{ma.StringCast(fmt.Sprintf("/ip4/%s/udp/4001/quic-v1", ip))},
		Bootstrap:     []peer.AddrInfo{{ID: f.nodes[0].ov.ID(), Addrs: f.nodes[0].ov.Addrs()}},
		DHTMode:       overlay.DHTClient,
		PingInterval:  time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go o.Serve(ctx)
	t.Cleanup(func() { cancel(); o.Close() })
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := o.WaitRoutable(wctx); err != nil {
		t.Fatal(err)
	}
	return o
}

// TestCacheSurvivesRestartAndQuota: a watched title is still cached after a restart (it plays
// with the origin down and no peers), and the quota evicts unpinned titles but never pinned
// ones.
func TestCacheSurvivesRestartAndQuota(t *testing.T) {
	f := newFixture(t, 1<<20, 8e6)
	g := f.addGateway(vod.Options{})
	f.checkWhole(g) // from the origin
	f.stopApp(g)
	f.up.Store(false)
	f.startApp(g)
	f.checkWhole(g)
	if st := g.app.Stats(); st.OriginBytes != 0 || st.CacheBytes != int64(len(f.file)) {
		t.Fatalf("after restart: %d origin bytes, %d cached; want 0 and the whole title", st.OriginBytes, st.CacheBytes)
	}

	// A second title pushed (pinned) on a gateway whose quota fits one title: the watched
	// one goes, the pinned one stays.
	f.up.Store(true)
	f.stopApp(g)
	g.opts.CacheBytes = int64(len(f.file)) + 1000
	f.startApp(g)
	other, _ := f.publishOther(2<<20, 8e6)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := g.app.Push(ctx, other); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := g.app.Stats()
		var first, second vod.TitleStats
		for _, ts := range st.Titles {
			switch ts.CID {
			case f.entry.CID:
				first = ts
			case other.CID:
				second = ts
			}
		}
		if first.CachedBytes == 0 && second.CachedBytes == other.Size && second.Pinned {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("quota %d: watched title holds %d, pinned title holds %d (pinned %v)", g.opts.CacheBytes, first.CachedBytes, second.CachedBytes, second.Pinned)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The evicted title still streams (fetched again).
	f.checkWhole(g)
}

// TestPartlyWatchedTitleSurvivesRestart: the pieces of a title watched in part are still
// cached after a restart and play with the origin down (anacrolix's ".part" files used to
// lose them: it marks every piece of a part file incomplete when it opens a torrent).
func TestPartlyWatchedTitleSurvivesRestart(t *testing.T) {
	f := newFixture(t, 1<<20, 2e6) // 16 pieces of 64 KiB
	g := f.addGateway(vod.Options{})
	const watched = 2 * 64 << 10
	if resp, body := get(t, g, f.entry.CID, fmt.Sprintf("bytes=0-%d", watched-1)); resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, f.file[:watched]) {
		t.Fatalf("first two pieces: status %s", resp.Status)
	}
	waitFor(t, 10*time.Second, "the watched pieces to be cached", func() bool { return titleStats(t, g, f.entry.CID).CachedBytes >= watched })
	f.stopApp(g)
	f.up.Store(false)
	f.startApp(g)
	waitFor(t, 10*time.Second, "the watched pieces to be cached after a restart", func() bool { return titleStats(t, g, f.entry.CID).CachedBytes >= watched })
	if resp, body := get(t, g, f.entry.CID, fmt.Sprintf("bytes=0-%d", watched-1)); resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, f.file[:watched]) {
		t.Fatalf("watched pieces after a restart, origin down: status %s, %d bytes", resp.Status, len(body))
	}
}

// publishOther publishes a second title of size random bytes (other content, so another
// CID) at this bitrate, from an origin of its own that is up while the fixture's is, and
// returns it with its bytes.
func (f *fixture) publishOther(size int, bitrate int64) (*catalog.Entry, []byte) {
	t := f.t
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	path := filepath.Join(t.TempDir(), "other.mp4")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !f.up.Load() {
			http.Error(w, "origin down", http.StatusServiceUnavailable)
			return
		}
		http.ServeFile(w, r, path)
	}))
	t.Cleanup(srv.Close)
	e, err := catalog.Publish(context.Background(), path, catalog.PublishOptions{
		Key: f.key, OriginBase: srv.URL, BitrateBps: bitrate, MIME: "video/mp4", PieceLength: 64 << 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e, data
}

// TestStandardClientFetchesFromGateway: with the TCP BitTorrent listener on, an ordinary
// BitTorrent client (a plain anacrolix client on loopback TCP, no webseed, no DHT) downloads
// a title from a gateway.
func TestStandardClientFetchesFromGateway(t *testing.T) {
	f := newFixture(t, 1<<20, 8e6)
	g := f.addGateway(vod.Options{BitTorrentListen: "127.0.0.1:0"})
	f.push(g)
	cfg := torrent.NewDefaultClientConfig()
	cfg.DataDir = t.TempDir()
	cfg.ListenHost = func(string) string { return "127.0.0.1" }
	cfg.ListenPort = 0
	cfg.NoDHT, cfg.DisableTrackers, cfg.DisableUTP, cfg.DisableWebseeds, cfg.DisablePEX = true, true, true, true, true
	cfg.NoDefaultPortForwarding, cfg.DisableIPv6 = true, true
	cl, err := torrent.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	mi, err := f.entry.MetaInfo()
	if err != nil {
		t.Fatal(err)
	}
	tor, err := cl.AddTorrent(mi)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := net.ResolveTCPAddr("tcp", g.app.BitTorrentAddr())
	if err != nil {
		t.Fatal(err)
	}
	tor.AddPeers([]torrent.PeerInfo{{Addr: addr, Trusted: true}})
	tor.DownloadAll()
	select {
	case <-tor.Complete().On():
	case <-time.After(30 * time.Second):
		t.Fatalf("standard client got %d of %d bytes from the gateway", tor.BytesCompleted(), len(f.file))
	}
	r := tor.NewReader()
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, f.file) {
		t.Fatalf("standard client's copy differs (%d bytes, %v)", len(got), err)
	}
}

// gatedTransport holds every request until open is closed.
type gatedTransport struct {
	open <-chan struct{}
	rt   http.RoundTripper
}

func (g gatedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	select {
	case <-g.open:
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
	return g.rt.RoundTrip(r)
}

// TestSameContentUnderAnotherTorrentIsRefused: titles are keyed by their content's CID, so the
// same bytes published under another name (another torrent) are refused with an error naming
// both, and the title the gateway had keeps streaming.
func TestSameContentUnderAnotherTorrentIsRefused(t *testing.T) {
	f := newFixture(t, 256<<10, 2e6)
	g := f.addGateway(vod.Options{})
	path := filepath.Join(t.TempDir(), "clip-copy.mp4")
	if err := os.WriteFile(path, f.file, 0o644); err != nil {
		t.Fatal(err)
	}
	copyEntry, err := catalog.Publish(context.Background(), path, catalog.PublishOptions{
		Key: f.key, OriginBase: f.origin.URL, BitrateBps: 2e6, MIME: "video/mp4", PieceLength: 64 << 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	if copyEntry.CID != f.entry.CID || copyEntry.InfoHash == f.entry.InfoHash {
		t.Fatalf("the copy should share the CID and not the infohash: %s %s / %s %s", copyEntry.CID, copyEntry.InfoHash, f.entry.CID, f.entry.InfoHash)
	}
	err = g.app.AddTitle(copyEntry)
	if err == nil || !strings.Contains(err.Error(), "same content") || !strings.Contains(err.Error(), copyEntry.Name) || !strings.Contains(err.Error(), f.entry.Name) {
		t.Fatalf("AddTitle of the same content under another name: %v; want an error naming both titles", err)
	}
	if resp, _ := get(t, g, copyEntry.Name, ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET by the refused title's name: %s, want 404", resp.Status)
	}
	f.checkWhole(g)
}

// TestPrefixFromPrefixHolder: a gateway that holds only a title's prefix is a source for
// another gateway's prefix push (PrefixSourcesFor chains them), with the replica and the
// origin gone.
func TestPrefixFromPrefixHolder(t *testing.T) {
	f := newFixture(t, 1<<20, 2e6) // 16 pieces of 64 KiB
	replica := f.addGateway(vod.Options{})
	holder, next := f.addGateway(vod.Options{}), f.addGateway(vod.Options{})
	f.waitRoutable()
	f.push(replica)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const prefix = 3 * 64 << 10
	if err := holder.app.PushPrefix(ctx, f.entry, prefix, replica.ov.ID()); err != nil {
		t.Fatal(err)
	}
	f.up.Store(false)
	f.stopApp(replica)
	if err := next.app.PushPrefix(ctx, f.entry, prefix, holder.ov.ID()); err != nil {
		t.Fatalf("prefix push from a prefix holder: %v", err)
	}
	ts := titleStats(t, next, f.entry.CID)
	if ts.CachedBytes != prefix || ts.OriginBytes != 0 || ts.PeerBytes < prefix {
		t.Fatalf("prefix from a prefix holder: %+v; want %d bytes cached, all from the peer", ts, prefix)
	}
	resp, body := get(t, next, f.entry.CID, fmt.Sprintf("bytes=0-%d", prefix-1))
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, f.file[:prefix]) {
		t.Fatalf("the chained prefix: status %s, %d bytes, equal %v", resp.Status, len(body), bytes.Equal(body, f.file[:prefix]))
	}
}

// TestOriginMoves: the provider re-publishes a title with its file on another origin; the
// gateway takes the new entry at once, and with the old origin gone it streams from the new
// one.
func TestOriginMoves(t *testing.T) {
	f := newFixture(t, 512<<10, 2e6)
	g := f.addGateway(vod.Options{})
	path := filepath.Join(t.TempDir(), "clip.mp4") // same name, same bytes: the same torrent
	if err := os.WriteFile(path, f.file, 0o644); err != nil {
		t.Fatal(err)
	}
	var served atomic.Int64
	moved := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(&countingWriter{ResponseWriter: w, n: &served}, r, path)
	}))
	t.Cleanup(moved.Close)
	again, err := catalog.Publish(context.Background(), path, catalog.PublishOptions{
		Key: f.key, OriginBase: moved.URL, BitrateBps: 2e6, MIME: "video/mp4", PieceLength: 64 << 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	if again.InfoHash != f.entry.InfoHash || again.Origin == f.entry.Origin {
		t.Fatalf("want the same torrent on another origin: %s %s / %s %s", again.InfoHash, again.Origin, f.entry.InfoHash, f.entry.Origin)
	}
	if err := g.app.AddTitle(again); err != nil {
		t.Fatal(err)
	}
	f.up.Store(false)
	f.checkWhole(g)
	if served.Load() < int64(len(f.file)) {
		t.Fatalf("the new origin served %d bytes, want the whole title (%d): the old one is down", served.Load(), len(f.file))
	}
}

// TestPeerStreamsKeepTheirConnection: while a viewer streams from two replicas, its
// connections to them are protected from the connection manager (which trims by count, and a
// replica serving a crowd is far above its high watermark); a connection that goes away
// anyway shows in PeerStreamsLost, and the stream carries on from the other replica with the
// file's bytes; once the viewer's app has stopped, nothing is held.
//
// (Whether the manager trims a protected connection is go-libp2p's contract. A trimming test
// would prove nothing here: in so small a fleet every peer is in GossipSub's mesh, which
// protects its mesh peers on its own.)
func TestPeerStreamsKeepTheirConnection(t *testing.T) {
	f := newFixture(t, 3<<20, 4e6)
	// The first gateway is everybody's bootstrap peer, which the overlay protects on its own:
	// the replicas are other ones, on 2 Mbit/s uplinks (the title takes ~6 s from both).
	f.addGateway(vod.Options{})
	var seeds []*gateway
	for range 2 {
		seeds = append(seeds, f.addGatewayAt(vod.Options{}, overlay.Labels{ISP: "isp-a", AccessNode: "an-1"}, 5*time.Millisecond, 2e6, 20e6))
	}
	viewer := f.addGateway(vod.Options{})
	f.waitRoutable()
	for _, g := range seeds {
		f.push(g)
	}
	f.up.Store(false) // only the replicas have the data

	resp := openStream(t, viewer, f.entry.CID, "", 60*time.Second)
	head := make([]byte, 128<<10)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatal(err)
	}
	cm := viewer.ov.Host().ConnManager()
	for deadline := time.Now().Add(15 * time.Second); viewer.app.Stats().Titles[0].Peers < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the viewer did not connect to both replicas")
		}
	}
	for i, g := range seeds {
		if !cm.IsProtected(g.ov.ID(), vod.KeepTag) {
			t.Errorf("the connection to replica %d is not protected while it streams", i)
		}
	}
	if n := viewer.app.Stats().PeerStreamsLost; n != 0 {
		t.Fatalf("%d peer-wire streams lost before any connection closed", n)
	}
	if err := viewer.ov.Host().Network().ClosePeer(seeds[0].ov.ID()); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sha256.Sum256(append(head, rest...)), sha256.Sum256(f.file); got != want {
		t.Fatalf("streamed %d bytes that are not the file (%d bytes)", len(head)+len(rest), len(f.file))
	}
	if n := viewer.app.Stats().PeerStreamsLost; n < 1 {
		t.Errorf("PeerStreamsLost = %d after the connection to a replica was closed under its stream", n)
	}
	f.stopApp(viewer)
	for i, g := range seeds {
		if cm.IsProtected(g.ov.ID(), vod.KeepTag) {
			t.Errorf("the connection to replica %d is still protected after the viewer's app stopped", i)
		}
	}
}
