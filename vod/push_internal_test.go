package vod

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

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
	got := ChooseReplicas(cands, 6, nil)
	seen := map[string]bool{}
	for _, c := range got {
		key := c.Labels.ISP + "/" + c.Labels.AccessNode
		if seen[key] {
			t.Fatalf("6 replicas over 6 access nodes put two on %s: %v", key, got)
		}
		seen[key] = true
	}
	if got := ChooseReplicas(cands, 2, nil); got[0].Labels.ISP == got[1].Labels.ISP {
		t.Fatalf("2 replicas should sit in different ISPs: %v", got)
	}
	sel := ChooseReplicas(cands, 100, map[string]string{"isp": "isp-1", "tier": "1"})
	if len(sel) != 3 {
		t.Fatalf("selector isp-1,tier=1 matched %d, want 3", len(sel))
	}
	for _, c := range sel {
		if c.Labels.ISP != "isp-1" || c.Labels.Extra["tier"] != "1" {
			t.Fatalf("selector let %v through", c)
		}
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
	if _, err := decodePushRequest(bytes.NewReader(good)); err != nil {
		t.Fatalf("valid request: %v", err)
	}
	frame := func(v any) []byte {
		var buf bytes.Buffer
		_ = writeFrame(&buf, v)
		return buf.Bytes()
	}
	for name, in := range map[string][]byte{
		"empty":         nil,
		"huge length":   {0xff, 0xff, 0xff, 0xff, 0x0f},
		"truncated":     good[:len(good)/2],
		"not json":      frame(json.RawMessage(`"x"`))[:3],
		"unknown field": frame(map[string]any{"entry": map[string]any{}, "extra": 1}),
		"no entry":      frame(map[string]any{}),
		"bad entry":     frame(map[string]any{"entry": map[string]any{"version": 1}}),
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
		e, err := decodePushRequest(bytes.NewReader(b))
		if err == nil && e.Verify() != nil {
			t.Fatal("accepted an entry that does not verify")
		}
	})
}
