package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nanodc/nanodc/internal/testmedia"
	"github.com/nanodc/nanodc/node"
	"github.com/nanodc/nanodc/vod"
)

// TestVodPushToSlice is the video provider's path when the VoD app runs in its slice, with
// real processes: three gateways without the node-level VoD app, the operator creates the
// provider's slice on each and installs the provider's signed `vod` unit, the provider pushes
// a title to two of them with --slice, the title is complete in those slices' apps (and the
// node-level path serves nothing), then the origin goes away and the third gateway's slice
// app gets the title from the two replicas only and streams it (whole and by range).
func TestVodPushToSlice(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	testmedia.Require(t, "ffmpeg", "ffprobe")
	bin := buildBinary(t)
	pub := publishClip(t, bin)
	root, cat, key, provID, want, origin, title := pub.root, pub.catalog, pub.key, pub.provider, pub.data, pub.origin, pub.title

	// The provider packs its VoD app: a unit of the built-in kind, no module.
	unit := filepath.Join(root, "vod.unit")
	if out, err := run(t, bin, nil, "app", "pack", "--key", key, "--name", "vod", "--version", "1.0", "--kind", "vod",
		"--config", `{"strategy":"nanodc"}`, "--out", unit); err != nil {
		t.Fatalf("app pack --kind vod: %v\n%s", err, out)
	}

	// Three gateways with no node-level VoD app: only the slice's app can serve the title.
	cfg := filepath.Join(root, "node.yaml")
	if err := os.WriteFile(cfg, []byte(loopbackYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	type gateway struct {
		*daemon
		id, api, token string
		isp, an        string
	}
	var bootstrap string
	addGateway := func(isp, an string) *gateway {
		args := []string{"--isp", isp, "--access-node", an}
		if bootstrap != "" {
			args = append(args, "--bootstrap", bootstrap)
		}
		d := startDaemon(t, bin, cfg, args...)
		raw := d.query(t, bin, "status", "--json")
		var st struct {
			PeerID string          `json:"peer_id"`
			Addrs  []string        `json:"addrs"`
			VOD    json.RawMessage `json:"vod"`
		}
		if err := json.Unmarshal(raw, &st); err != nil || len(st.Addrs) == 0 {
			t.Fatalf("status: %v %s", err, raw)
		}
		if st.VOD != nil {
			t.Fatalf("the node-level VoD app runs although vod.enabled is false: %s", raw)
		}
		if bootstrap == "" {
			bootstrap = st.Addrs[0]
		}
		api, err := os.ReadFile(filepath.Join(d.data, node.APIAddrFile))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := os.ReadFile(filepath.Join(d.data, node.TokenFile))
		if err != nil {
			t.Fatal(err)
		}
		return &gateway{daemon: d, id: st.PeerID, api: strings.TrimSpace(string(api)),
			token: strings.TrimSpace(string(tok)), isp: isp, an: an}
	}
	// The operator, locally (api-token), creates the provider's slice and installs the
	// provider's unit in it.
	installSlice := func(g *gateway) {
		out, err := run(t, bin, nil, "slice", "create", "video", "--provider", provID, "--storage", "64MiB",
			"--data", g.data, "--json")
		if err != nil {
			t.Fatalf("slice create on %s: %v\n%s", g.an, err, out)
		}
		var created struct {
			ID       string `json:"id"`
			Provider string `json:"provider"`
			Quotas   struct {
				StorageBytes int64 `json:"storage_bytes"`
			} `json:"quotas"`
		}
		if err := json.Unmarshal(out, &created); err != nil || created.ID != "video" || created.Provider != provID || created.Quotas.StorageBytes != 64<<20 {
			t.Fatalf("slice create on %s: %v %s", g.an, err, out)
		}
		out, err = run(t, bin, nil, "app", "install", "video", unit, "--start", "--data", g.data, "--json")
		if err != nil {
			t.Fatalf("app install on %s: %v\n%s", g.an, err, out)
		}
		var app struct{ Name, Kind, Status string }
		if err := json.Unmarshal(out, &app); err != nil || app.Name != "vod" || app.Kind != "vod" || app.Status != "Active" {
			t.Fatalf("app install on %s: %v %s", g.an, err, out)
		}
	}
	var gws []*gateway
	for _, l := range []struct{ isp, an string }{{"isp-a", "an-1"}, {"isp-a", "an-2"}, {"isp-b", "an-3"}} {
		g := addGateway(l.isp, l.an)
		installSlice(g)
		gws = append(gws, g)
	}

	get := func(url string, hdr map[string]string) (int, http.Header, []byte) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s: reading the body: %v", url, err)
		}
		return resp.StatusCode, resp.Header, body
	}
	appURL := func(g *gateway, path string) string { return "http://" + g.api + "/slices/video/apps/vod" + path }
	type titleItem struct {
		Name   string `json:"name"`
		Size   int64  `json:"size"`
		Cached int64  `json:"cached_bytes"`
		Pinned bool   `json:"pinned"`
	}
	titleOn := func(g *gateway) (titleItem, bool) {
		code, _, body := get(appURL(g, "/api/v1/vod/titles"), nil)
		var items []titleItem
		if code != http.StatusOK || json.Unmarshal(body, &items) != nil {
			t.Fatalf("titles of the slice app on %s: %d %s", g.an, code, body)
		}
		i := slices.IndexFunc(items, func(it titleItem) bool { return it.Name == title })
		if i < 0 {
			return titleItem{}, false
		}
		return items[i], true
	}

	// Each slice app announces itself in the slice's namespace after a random delay of up to
	// 10 s: wait until the DHT knows all three, so that the push sees the whole fleet and its
	// choice (one per access node, ISPs interleaved) is the one asserted below.
	gatewaysCID := vod.Protocols("video").Gateways.String()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		seen := map[string]bool{}
		for _, g := range gws {
			out, err := run(t, bin, nil, "node", "providers", gatewaysCID, "--json", "--data", g.data)
			var ps []struct {
				PeerID string `json:"peer_id"`
			}
			if err == nil && json.Unmarshal(out, &ps) == nil {
				for _, p := range ps {
					seen[p.PeerID] = true
				}
			}
		}
		if !slices.ContainsFunc(gws, func(g *gateway) bool { return !seen[g.id] }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slice apps' gateway records in the DHT: %v, want all of %s, %s, %s", seen, gws[0].id, gws[1].id, gws[2].id)
		}
	}

	type replica struct {
		Peer        string `json:"peer_id"`
		Status      string `json:"status"`
		Error       string `json:"error"`
		Bytes       int64  `json:"bytes"`
		OriginBytes int64  `json:"origin_bytes"`
		Labels      struct {
			ISP        string `json:"isp"`
			AccessNode string `json:"access_node"`
		} `json:"labels"`
	}
	push := func(n int, selector ...string) ([]replica, []byte, error) {
		args := []string{"vod", "push", title, "--replicas", fmt.Sprint(n), "--slice", "video", "--catalog", cat, "--key", key,
			"--bootstrap", bootstrap, "--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--json", "--timeout", "50s"}
		for _, s := range selector {
			args = append(args, "--selector", s)
		}
		out, err := run(t, bin, nil, args...)
		var reps []replica
		if err == nil {
			err = json.Unmarshal(out, &reps)
		}
		return reps, out, err
	}

	// The provider pushes to two gateways' slice apps. Every gateway that ever got the title
	// is recorded, so that the viewer below is surely not one of them even after a retry.
	pushed := map[string]bool{}
	var reps []replica
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
		var out []byte
		var err error
		reps, out, err = push(2)
		for _, r := range reps {
			if r.Status == "ok" {
				pushed[r.Peer] = true
			}
		}
		if err == nil && len(reps) == 2 && reps[0].Labels.ISP != reps[1].Labels.ISP {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vod push --slice never placed two replicas in different ISPs: %v\n%s", err, out)
		}
	}
	var replicas []*gateway
	for _, r := range reps {
		if r.Status != "ok" || r.Bytes != int64(len(want)) || r.Error != "" {
			t.Fatalf("replica %+v, want ok with %d bytes", r, len(want))
		}
		i := slices.IndexFunc(gws, func(g *gateway) bool { return g.id == r.Peer })
		if i < 0 {
			t.Fatalf("replica %s is none of the test's gateways", r.Peer)
		}
		if g := gws[i]; r.Labels.ISP != g.isp || r.Labels.AccessNode != g.an {
			t.Fatalf("replica %s labelled %+v, want %s/%s", r.Peer, r.Labels, g.isp, g.an)
		}
		replicas = append(replicas, gws[i])
	}
	vi := slices.IndexFunc(gws, func(g *gateway) bool { return !pushed[g.id] })
	if vi < 0 {
		t.Fatalf("every gateway got the title (pushes retried): %v", pushed)
	}
	viewer := gws[vi]

	// The replicas' slice apps hold the whole title, pinned; the node-level path serves
	// nothing; the slice's storage usage counts the cache (the watchdog rescans every 5 s).
	for _, g := range replicas {
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			it, ok := titleOn(g)
			if ok && it.Size == int64(len(want)) && it.Cached == it.Size && it.Pinned {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("title on replica %s's slice app: %+v (listed %v), want %d bytes cached and pinned", g.an, it, ok, len(want))
			}
		}
		auth := map[string]string{"Authorization": "Bearer " + g.token}
		if code, _, body := get("http://"+g.api+"/vod/"+title, auth); code != http.StatusNotFound {
			t.Fatalf("node-level /vod/%s on %s: %d %s, want 404", title, g.an, code, body)
		}
		if code, _, body := get("http://"+g.api+"/api/v1/vod/titles", auth); code != http.StatusNotFound {
			t.Fatalf("node-level /api/v1/vod/titles on %s: %d %s, want 404 (vod.enabled is false)", g.an, code, body)
		}
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			out, err := run(t, bin, nil, "slice", "get", "video", "--data", g.data, "--json")
			var v struct {
				Usage struct {
					StorageBytes int64 `json:"storage_bytes"`
				} `json:"usage"`
			}
			if err == nil && json.Unmarshal(out, &v) == nil && v.Usage.StorageBytes >= int64(len(want)) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("slice usage on %s does not count the VoD cache: %v %s", g.an, err, out)
			}
		}
	}
	// The viewer's gateway is no replica: its slice app does not know the title.
	if _, ok := titleOn(viewer); ok {
		t.Fatalf("the viewer's gateway %s lists the title before any push to it", viewer.an)
	}
	if code, _, body := get(appURL(viewer, "/vod/"+title), nil); code != http.StatusNotFound {
		t.Fatalf("the viewer's slice app served an unknown title: %d %.200s", code, body)
	}

	// The origin goes away, and the provider pushes the title to the viewer's gateway: it must
	// fill it from the replicas' slice apps only, none of it from the dead origin, and the push
	// must succeed the first time (a push waits for peers before it asks the origin, and goes
	// on with peers when the origin fails).
	_ = origin.Process.Kill()
	_ = origin.Wait()
	var fromOrigin int64
	vreps, out, err := push(1, "isp="+viewer.isp, "access_node="+viewer.an)
	for _, r := range vreps {
		if r.Peer != viewer.id {
			t.Fatalf("push with the viewer's labels went to %s, not the viewer %s:\n%s", r.Peer, viewer.id, out)
		}
		fromOrigin += r.OriginBytes
	}
	if err != nil || len(vreps) != 1 || vreps[0].Status != "ok" || vreps[0].Bytes != int64(len(want)) {
		t.Fatalf("push to the viewer's gateway with the origin down: %v\n%s", err, out)
	}
	if fromOrigin != 0 {
		t.Fatalf("the viewer's gateway fetched %d bytes from a dead origin", fromOrigin)
	}
	if it, ok := titleOn(viewer); !ok || it.Cached != int64(len(want)) || !it.Pinned {
		t.Fatalf("title on the viewer's slice app: %+v (listed %v)", it, ok)
	}

	url := appURL(viewer, "/vod/"+title)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	info, err := testmedia.Probe(ctx, url)
	if err != nil {
		t.Fatalf("ffprobe %s: %v", url, err)
	}
	if v, ok := info.Stream("video"); !ok || v.CodecName != "h264" {
		t.Fatalf("ffprobe streams %+v", info.Streams)
	}
	code, hdr, got := get(url, nil)
	if code != http.StatusOK || sha256.Sum256(got) != sha256.Sum256(want) {
		t.Fatalf("GET %s: %d, %d bytes (want %d), content differs: %v", url, code, len(got), len(want),
			sha256.Sum256(got) != sha256.Sum256(want))
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "video/") {
		t.Errorf("GET %s: Content-Type %q", url, ct)
	}
	from, to := int64(len(want)/3), int64(len(want)/3+64<<10-1)
	code, hdr, got = get(url, map[string]string{"Range": fmt.Sprintf("bytes=%d-%d", from, to)})
	if code != http.StatusPartialContent || !bytes.Equal(got, want[from:to+1]) {
		t.Fatalf("GET %s Range bytes=%d-%d: %d, %d bytes, want 206 with %d bytes of the file", url, from, to, code, len(got), to-from+1)
	}
	if cr, wantCR := hdr.Get("Content-Range"), fmt.Sprintf("bytes %d-%d/%d", from, to, len(want)); cr != wantCR {
		t.Fatalf("Content-Range %q, want %q", cr, wantCR)
	}
	// Still nothing at the viewer's node level.
	if code, _, body := get("http://"+viewer.api+"/vod/"+title, map[string]string{"Authorization": "Bearer " + viewer.token}); code != http.StatusNotFound {
		t.Fatalf("node-level /vod/%s on the viewer: %d %.200s, want 404", title, code, body)
	}

	// A home gateway that was never pushed the title (it joins now): its player learns the
	// title with `vod add --slice` (the provider-signed catalog entry), and streams it on
	// demand from the slice apps that hold it, the origin still down.
	home := addGateway("isp-b", "an-4")
	installSlice(home)
	if out, err := run(t, bin, nil, "vod", "add", title, "--catalog", cat, "--data", home.data, "--slice", "video"); err != nil {
		t.Fatalf("vod add --slice: %v\n%s", err, out)
	}
	homeURL := appURL(home, "/vod/"+title)
	if code, _, got := get(homeURL, nil); code != http.StatusOK || sha256.Sum256(got) != sha256.Sum256(want) {
		t.Fatalf("GET %s on the home gateway: %d, %d bytes (want %d)", homeURL, code, len(got), len(want))
	}
	// A slice that does not exist has no app to take the title.
	if out, err := run(t, bin, nil, "vod", "add", title, "--catalog", cat, "--data", home.data, "--slice", "nosuch"); err == nil {
		t.Fatalf("vod add to a slice that does not exist succeeded:\n%s", out)
	}
}
