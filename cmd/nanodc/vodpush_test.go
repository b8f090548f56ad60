package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/nanodc/nanodc/internal/testmedia"
)

// TestVodPushAndStream is the provider's and the viewer's path with real processes: publish a
// real clip, push it to two gateways spread across access nodes, add it to a third, take the
// origin down, and stream it from the third (peers only) with ffprobe and a plain GET.
func TestVodPushAndStream(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	testmedia.Require(t, "ffmpeg", "ffprobe")
	bin := buildBinary(t)
	pub := publishClip(t, bin)
	root, cat, key, want, origin, title := pub.root, pub.catalog, pub.key, pub.data, pub.origin, pub.title

	cfg := filepath.Join(root, "node.yaml")
	if err := os.WriteFile(cfg, []byte(loopbackYAML+"vod: {enabled: true, listen: \"127.0.0.1:0\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	seed := startDaemon(t, bin, cfg, "--isp", "isp-a", "--access-node", "an-1")
	var st struct {
		PeerID string   `json:"peer_id"`
		Addrs  []string `json:"addrs"`
	}
	if err := json.Unmarshal(seed.query(t, bin, "status", "--json"), &st); err != nil {
		t.Fatal(err)
	}
	_ = []*daemon{seed,
		startDaemon(t, bin, cfg, "--bootstrap", st.Addrs[0], "--isp", "isp-a", "--access-node", "an-2"),
		startDaemon(t, bin, cfg, "--bootstrap", st.Addrs[0], "--isp", "isp-b", "--access-node", "an-3"),
	}

	// Push to two gateways. Gateways announce themselves after a random delay of up to 10 s,
	// so a push right after start-up may see only part of the fleet and pick two gateways of
	// one ISP; pushing is idempotent, so retry until the choice spans both ISPs.
	var reps []replicaOut
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
		out, err := run(t, bin, nil, "vod", "push", title, "--replicas", "2", "--catalog", cat, "--key", key,
			"--bootstrap", st.Addrs[0], "--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--json", "--timeout", "60s")
		if err == nil && json.Unmarshal(out, &reps) == nil && len(reps) == 2 && reps[0].Labels.ISP != reps[1].Labels.ISP {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vod push never chose two gateways in different ISPs: %v\n%s", err, out)
		}
	}
	for _, r := range reps {
		if r.Status != "ok" || r.Bytes != int64(len(want)) {
			t.Fatalf("replica %+v", r)
		}
	}
	// The viewer's gateway joins after the push (so it cannot be a replica).
	viewer := startDaemon(t, bin, cfg, "--bootstrap", st.Addrs[0], "--isp", "isp-b", "--access-node", "an-3")
	var vst struct {
		PeerID string `json:"peer_id"`
		VOD    struct {
			Addr string `json:"addr"`
		} `json:"vod"`
	}
	if err := json.Unmarshal(viewer.query(t, bin, "status", "--json"), &vst); err != nil || vst.VOD.Addr == "" {
		t.Fatalf("viewer status: %v %+v", err, vst)
	}
	if slices.ContainsFunc(reps, func(r replicaOut) bool {
		return r.Peer == vst.PeerID
	}) {
		t.Fatal("the viewer is not meant to be a replica")
	}
	if out, err := run(t, bin, nil, "vod", "add", title, "--catalog", cat, "--data", viewer.data); err != nil {
		t.Fatalf("vod add: %v\n%s", err, out)
	}
	// The provider places the title's first second on every gateway (no new replica: the
	// viewer's gateway shares its access node with one, and could be chosen): the viewer's
	// gets it, once it has announced itself, from the replicas its lookup finds.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
		out, err := run(t, bin, nil, "vod", "push", title, "--replicas", "0", "--prefix", "1s", "--catalog", cat, "--key", key,
			"--bootstrap", st.Addrs[0], "--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--json", "--timeout", "60s")
		var placed []replicaOut
		if err == nil && json.Unmarshal(out, &placed) == nil && slices.ContainsFunc(placed, func(r replicaOut) bool {
			return r.Peer == vst.PeerID && r.Status == "ok" && r.PrefixBytes > 0 && r.Bytes >= r.PrefixBytes && r.Bytes < int64(len(want))
		}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vod push --prefix never placed the prefix on the viewer's gateway %s: %v\n%s\nviewer log:\n%s", vst.PeerID, err, out, viewer.log.String())
		}
	}

	// The origin goes away: the viewer's gateway must stream from its peers.
	_ = origin.Process.Kill()
	_ = origin.Wait()
	url := "http://" + vst.VOD.Addr + "/vod/" + title
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	info, err := testmedia.Probe(ctx, url)
	if err != nil {
		t.Fatalf("ffprobe %s: %v", url, err)
	}
	if v, ok := info.Stream("video"); !ok || v.CodecName != "h264" {
		t.Fatalf("ffprobe streams %+v", info.Streams)
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || sha256.Sum256(got) != sha256.Sum256(want) {
		t.Fatalf("GET %s: %d bytes (want %d), err %v", url, len(got), len(want), err)
	}
	if !bytes.Contains(viewer.query(t, bin, "status", "--json"), []byte(`"strategy": "nanodc"`)) {
		t.Error("status does not show the VoD strategy")
	}
}

// replicaOut is one line of `vod push --json`.
type replicaOut struct {
	Peer        string `json:"peer_id"`
	Status      string `json:"status"`
	Bytes       int64  `json:"bytes"`
	PrefixBytes int64  `json:"prefix_bytes"`
	Labels      struct {
		ISP        string `json:"isp"`
		AccessNode string `json:"access_node"`
	} `json:"labels"`
}

// startOrigin runs `nanodc vod origin` for dir on a free loopback port and waits for its
// address; the process is killed when the test ends.
func startOrigin(t *testing.T, bin, dir string) (addr string, origin *exec.Cmd, log *lockedBuffer) {
	t.Helper()
	log = &lockedBuffer{}
	origin = exec.Command(bin, "vod", "origin", "--dir", dir, "--listen", "127.0.0.1:0")
	origin.Stdout, origin.Stderr = log, log
	if err := origin.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = origin.Process.Kill(); _ = origin.Wait() })
	addrRE := regexp.MustCompile(`origin serving HTTP" addr=(127\.0\.0\.1:\d+)`)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if m := addrRE.FindStringSubmatch(log.String()); m != nil {
			return m[1], origin, log
		} else if time.Now().After(deadline) {
			t.Fatalf("origin did not report its address:\n%s", log)
		}
	}
}

// published is a provider's title as the CLI makes it: a real clip, a provider key, the
// origin serving the clip (killed when the test ends) and the catalog entry.
type published struct {
	root, catalog, key, provider string // provider: the key's peer ID
	title                        string
	data                         []byte
	origin                       *exec.Cmd
}

// publishClip generates an 8 s clip at 500 kbit/s and publishes it with `vod keygen`, `vod
// origin` and `vod publish`.
func publishClip(t *testing.T, bin string) *published {
	t.Helper()
	root := t.TempDir()
	p := &published{root: root, catalog: filepath.Join(root, "catalog"), key: filepath.Join(root, "provider.key")}
	media := filepath.Join(root, "media")
	if err := os.Mkdir(media, 0o755); err != nil {
		t.Fatal(err)
	}
	clip, err := testmedia.Generate(media, testmedia.Options{Duration: 8 * time.Second, BitrateBps: 500_000})
	if err != nil {
		t.Fatal(err)
	}
	if p.data, err = os.ReadFile(clip); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, bin, nil, "vod", "keygen", "--out", p.key, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		PeerID string `json:"peer_id"`
	}
	if err := json.Unmarshal(out, &k); err != nil || k.PeerID == "" {
		t.Fatalf("vod keygen: %v %s", err, out)
	}
	p.provider = k.PeerID
	var addr string
	addr, p.origin, _ = startOrigin(t, bin, media)
	if _, err := run(t, bin, nil, "vod", "publish", clip, "--key", p.key, "--origin", "http://"+addr+"/", "--catalog", p.catalog); err != nil {
		t.Fatal(err)
	}
	p.title = filepath.Base(clip)
	return p
}
