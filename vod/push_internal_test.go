package vod

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/nanodc/nanodc/overlay"
	"github.com/nanodc/nanodc/vod/catalog"
)

func TestChooseReplicasSpreads(t *testing.T) {
	var cands []overlay.PeerInfo
	for isp := range 2 {
		for an := range 3 {
			for i := range 3 {
				cands = append(cands, overlay.PeerInfo{
					ID:     peer.ID(fmt.Sprintf("p-%d-%d-%d", isp, an, i)),
					Labels: overlay.Labels{ISP: fmt.Sprintf("isp-%d", isp), AccessNode: fmt.Sprintf("an-%d", an), Extra: map[string]string{"tier": fmt.Sprint(i % 2)}},
				})
			}
		}
	}
	got := ChooseReplicas(cands, 6, nil, nil)
	seen := map[string]bool{}
	for _, c := range got {
		key := c.Labels.ISP + "/" + c.Labels.AccessNode
		if seen[key] {
			t.Fatalf("6 replicas over 6 access nodes put two on %s: %v", key, got)
		}
		seen[key] = true
	}
	if got := ChooseReplicas(cands, 2, nil, nil); got[0].Labels.ISP == got[1].Labels.ISP {
		t.Fatalf("2 replicas should sit in different ISPs: %v", got)
	}
	sel := ChooseReplicas(cands, 100, map[string]string{"isp": "isp-1", "tier": "1"}, nil)
	if len(sel) != 3 {
		t.Fatalf("selector isp-1,tier=1 matched %d, want 3", len(sel))
	}
	for _, c := range sel {
		if c.Labels.ISP != "isp-1" || c.Labels.Extra["tier"] != "1" {
			t.Fatalf("selector let %v through", c)
		}
	}
}

// TestPrefixSourcesFor: a prefix push names the nearest prefix holders first (at most
// PrefixSources-1, so a replica stays among the sources), nearest tier first, never the
// gateway itself; and the gateways of one access node spread over its replicas instead of all
// naming the same first ones.
func TestPrefixSourcesFor(t *testing.T) {
	at := func(isp, an string, name string) overlay.PeerInfo {
		return overlay.PeerInfo{ID: peer.ID(name), Labels: overlay.Labels{ISP: isp, AccessNode: an}}
	}
	replicas := []overlay.PeerInfo{
		at("isp-a", "an-1", "r1"), at("isp-a", "an-1", "r2"), at("isp-a", "an-1", "r3"), at("isp-a", "an-1", "r4"),
		at("isp-a", "an-2", "r5"), at("isp-b", "an-3", "r6"),
	}
	me := at("isp-a", "an-1", "g0")
	got := PrefixSourcesFor(me.ID, me.Labels, replicas, nil)
	if len(got) != PrefixSources {
		t.Fatalf("no holders yet: %v, want %d replicas", got, PrefixSources)
	}
	for _, id := range got {
		if !slices.Contains([]peer.ID{"r1", "r2", "r3", "r4"}, id) {
			t.Errorf("sources %v: %s is not on the gateway's access node, which has 4 replicas", got, id)
		}
	}
	holders := []overlay.PeerInfo{at("isp-b", "an-3", "h-far"), at("isp-a", "an-2", "h-isp"), at("isp-a", "an-1", "h-local"), me}
	got = PrefixSourcesFor(me.ID, me.Labels, replicas, holders)
	if len(got) != PrefixSources || got[0] != "h-local" || got[1] != "h-isp" || !strings.HasPrefix(string(got[2]), "r") {
		t.Fatalf("with holders: %v, want h-local, h-isp, then a replica", got)
	}
	first := map[peer.ID]int{}
	for i := range 40 {
		g := at("isp-a", "an-1", fmt.Sprintf("g%d", i))
		first[PrefixSourcesFor(g.ID, g.Labels, replicas, nil)[0]]++
	}
	if len(first) < 3 {
		t.Errorf("40 gateways of an access node with 4 replicas named only %v first", first)
	}
}

// TestChooseReplicasAvoidsLoadedGateways: a second title of a push goes to other gateways,
// still spread, and back to the loaded ones only when the others run out.
func TestChooseReplicasAvoidsLoadedGateways(t *testing.T) {
	var cands []overlay.PeerInfo
	for isp := range 2 {
		for i := range 3 {
			cands = append(cands, overlay.PeerInfo{
				ID:     peer.ID(fmt.Sprintf("p-%d-%d", isp, i)),
				Labels: overlay.Labels{ISP: fmt.Sprintf("isp-%d", isp), AccessNode: "an-0"},
			})
		}
	}
	loaded := map[peer.ID]bool{}
	var titles [][]overlay.PeerInfo
	for range 3 {
		got := ChooseReplicas(cands, 2, nil, loaded)
		if len(got) != 2 || got[0].Labels.ISP == got[1].Labels.ISP {
			t.Fatalf("2 replicas should sit in different ISPs: %v", got)
		}
		for _, g := range got {
			if loaded[g.ID] {
				t.Fatalf("title %d went to %s, which holds an earlier title, while others were free", len(titles), g.ID)
			}
			loaded[g.ID] = true
		}
		titles = append(titles, got)
	}
	// All six hold a title now: a fourth still gets its two, from the loaded ones.
	if got := ChooseReplicas(cands, 2, nil, loaded); len(got) != 2 {
		t.Fatalf("with every gateway loaded, got %v; want 2 anyway", got)
	}
	// Partly loaded: the free ones first, then the loaded ones.
	partly := map[peer.ID]bool{"p-0-0": true, "p-0-1": true, "p-1-0": true}
	got := ChooseReplicas(cands, 4, nil, partly)
	for i, g := range got[:3] {
		if partly[g.ID] {
			t.Fatalf("choice %d is loaded %s while free ones remained: %v", i, g.ID, got)
		}
	}
	if !partly[got[3].ID] {
		t.Fatalf("the fourth should come from the loaded ones: %v", got)
	}
}

func validPushFrame(t testing.TB) []byte {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.mp4")
	if err := os.WriteFile(path, bytes.Repeat([]byte("nanodc"), 10000), 0o644); err != nil {
		t.Fatal(err)
	}
	key, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	e, err := catalog.Publish(t.Context(), path, catalog.PublishOptions{Key: key, OriginBase: "http://127.0.0.1:8080", BitrateBps: 1e6, MIME: "video/mp4"})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := e.Encode()
	var buf bytes.Buffer
	if err := writeFrame(&buf, pushRequest{Entry: raw}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDecodePushRequest(t *testing.T) {
	good := validPushFrame(t)
	if o, err := decodePushRequest(bytes.NewReader(good)); err != nil || len(o.with) != 0 || o.prefix != 0 {
		t.Fatalf("valid request: %v (%+v)", err, o)
	}
	frame := func(v any) []byte {
		var buf bytes.Buffer
		_ = writeFrame(&buf, v)
		return buf.Bytes()
	}
	var req pushRequest
	if err := json.Unmarshal(good[bytes.IndexByte(good, '{'):], &req); err != nil {
		t.Fatal(err)
	}
	coKey, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	coID, _ := peer.IDFromPrivateKey(coKey)
	co := coID.String()
	req.With = []string{co}
	if o, err := decodePushRequest(bytes.NewReader(frame(req))); err != nil || len(o.with) != 1 || o.with[0].String() != co {
		t.Fatalf("request with a co-replica: %v (with %v)", err, o.with)
	}
	prefixed := req
	prefixed.PrefixBytes = 1 << 20
	if o, err := decodePushRequest(bytes.NewReader(frame(prefixed))); err != nil || o.prefix != 1<<20 {
		t.Fatalf("prefix request: %v (prefix %d)", err, o.prefix)
	}
	negative := req
	negative.PrefixBytes = -1
	badWith := req
	badWith.With = []string{co, "not-a-peer"}
	tooMany := req
	tooMany.With = slices.Repeat([]string{co}, maxPushWith+1)
	for name, in := range map[string][]byte{
		"with a bad peer id":     frame(badWith),
		"with too many gateways": frame(tooMany),
		"negative prefix":        frame(negative),
		"empty":                  nil,
		"huge length":            {0xff, 0xff, 0xff, 0xff, 0x0f},
		"truncated":              good[:len(good)/2],
		"not json":               frame(json.RawMessage(`"x"`))[:3],
		"unknown field":          frame(map[string]any{"entry": map[string]any{}, "extra": 1}),
		"no entry":               frame(map[string]any{}),
		"bad entry":              frame(map[string]any{"entry": map[string]any{"version": 1}}),
	} {
		if _, err := decodePushRequest(bytes.NewReader(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzDecodePushRequest(f *testing.F) {
	f.Add(validPushFrame(f))
	f.Add([]byte{0x02, '{', '}'})
	f.Add([]byte{0x0c, '{', '"', 'e', 'n', 't', 'r', 'y', '"', ':', '1', '}', '}'})
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := decodePushRequest(bytes.NewReader(b))
		if err != nil {
			return
		}
		if o.entry.Verify() != nil {
			t.Fatal("accepted an entry that does not verify")
		}
		if len(o.with) > maxPushWith || o.prefix < 0 {
			t.Fatalf("accepted %d co-replicas, prefix %d", len(o.with), o.prefix)
		}
	})
}

func TestDecodeHaveAndHolders(t *testing.T) {
	good := `{"cid":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"}`
	c, l, err := decodeHave([]byte(good))
	if err != nil || c.String() != "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy" || l.ISP != "" {
		t.Fatalf("valid message without labels: %v %v %v", c, l, err)
	}
	withLabels := `{"cid":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","isp":"isp-a","access_node":"an-3"}`
	if _, l, err := decodeHave([]byte(withLabels)); err != nil || l.ISP != "isp-a" || l.AccessNode != "an-3" {
		t.Fatalf("valid message with labels: %+v %v", l, err)
	}
	for name, in := range map[string]string{
		"not json":  "x",
		"no cid":    `{}`,
		"bad cid":   `{"cid":"nope"}`,
		"dag-pb":    `{"cid":"QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"}`,
		"too long":  `{"cid":"` + string(bytes.Repeat([]byte("a"), 300)) + `"}`,
		"extra key": `{"cid":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","x":1}`,
		"bad label": `{"cid":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","isp":"\xff"}`,
	} {
		if _, _, err := decodeHave([]byte(in)); err == nil && name != "extra key" {
			t.Errorf("%s: accepted", name)
		}
	}
	var h holders
	now := time.Now()
	for i := range holdersPerCID + 10 {
		h.add("c", peer.ID(fmt.Sprint(i)), overlay.Labels{}, now)
	}
	h.add("c", peer.ID("0"), overlay.Labels{ISP: "isp-b"}, now) // again: moves, does not duplicate
	if got := h.of("c", now); len(got) != holdersPerCID || got[len(got)-1].id != "0" || got[len(got)-1].labels.ISP != "isp-b" {
		t.Fatalf("holders: %d (last %+v), want %d with the latest last", len(got), got[len(got)-1], holdersPerCID)
	}
	if got := h.of("c", now.Add(holderTTL+time.Second)); len(got) != 0 {
		t.Fatalf("expired holders still listed: %d", len(got))
	}
}

func FuzzDecodeHave(f *testing.F) {
	f.Add([]byte(`{"cid":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"}`))
	f.Add([]byte(`{"cid":""}`))
	f.Add([]byte(`{"cid":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","isp":"isp-a","access_node":"an-1"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, l, err := decodeHave(b)
		if err == nil && (!c.Defined() || c.Prefix().Codec != 0x55 || l.Validate() != nil) {
			t.Fatalf("accepted %v %+v", c, l)
		}
	})
}

func TestPushBehind(t *testing.T) {
	now := time.Now()
	ctx, cancel := context.WithDeadline(context.Background(), now.Add(23*time.Second))
	defer cancel()
	// 1 MB/s over the last 4 s, 20 s left once the margin is kept.
	recent := []pushSample{{now.Add(-4 * time.Second), 0}, {now, 4e6}}
	if pushBehind(ctx, now, 19e6, recent) {
		t.Error("19 MB missing at 1 MB/s with 20 s left: reported behind")
	}
	if !pushBehind(ctx, now, 21e6, recent) {
		t.Error("21 MB missing at 1 MB/s with 20 s left: not reported behind")
	}
	if pushBehind(ctx, now, 21e6, recent[1:]) {
		t.Error("behind without a measured rate")
	}
	if !pushBehind(ctx, now.Add(21*time.Second), 1, recent) {
		t.Error("inside the margin with bytes missing: not reported behind")
	}
	if pushBehind(context.Background(), now, 1e12, recent) {
		t.Error("a push without a deadline is never behind")
	}
}
