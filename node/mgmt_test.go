package node_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/nanodc/nanodc/node"
	"github.com/nanodc/nanodc/node/slice"
)

// post sends one management request over the local API with tok.
func post(t *testing.T, addr, tok string, req slice.Request) slice.Response {
	t.Helper()
	b, _ := json.Marshal(req)
	hreq, _ := http.NewRequest("POST", "http://"+addr+"/api/v1/mgmt", bytes.NewReader(b))
	hreq.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r slice.Response
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("%s: HTTP %d %s", req.Op, resp.StatusCode, body)
	}
	if r.Status != resp.StatusCode {
		t.Fatalf("%s: HTTP status %d but body says %d", req.Op, resp.StatusCode, r.Status)
	}
	return r
}

func readToken(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestLocalManagementTokens: the local API maps tokens to roles and applies the same matrix
// as the overlay: api-token is the operator, home-token the home admin, and a token the
// operator mints for a provider sees that provider's slices only. Core endpoints refuse
// providers; a provider's metrics scrape shows its slice alone.
func TestLocalManagementTokens(t *testing.T) {
	dir := t.TempDir()
	n := start(t, dir, loopbackConfig())
	addr := n.APIAddr()
	root, home := readToken(t, dir, node.TokenFile), readToken(t, dir, node.HomeTokenFile)

	key, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	provA, _ := peer.IDFromPrivateKey(key)
	key2, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	provB, _ := peer.IDFromPrivateKey(key2)

	if r := post(t, addr, root, slice.Request{Op: slice.OpSliceCreate, Slice: "video", Provider: provA.String(), Services: []string{"storage"}}); r.Status != 200 {
		t.Fatalf("operator slice.create: %+v", r)
	}
	if r := post(t, addr, root, slice.Request{Op: slice.OpSliceCreate, Slice: "game", Provider: provB.String()}); r.Status != 200 {
		t.Fatalf("operator slice.create: %+v", r)
	}
	if r := post(t, addr, home, slice.Request{Op: slice.OpSliceCreate, Slice: "x", Provider: provA.String()}); r.Status != http.StatusForbidden {
		t.Fatalf("home admin slice.create: %+v, want 403", r)
	}
	if r := post(t, addr, home, slice.Request{Op: slice.OpTokenCreate, Role: slice.RoleProvider, Peer: provA.String()}); r.Status != http.StatusForbidden {
		t.Fatalf("home admin token.create: %+v, want 403", r)
	}
	r := post(t, addr, root, slice.Request{Op: slice.OpTokenCreate, Role: slice.RoleProvider, Peer: provA.String()})
	if r.Status != 200 {
		t.Fatalf("token.create: %+v", r)
	}
	var minted struct{ Token string }
	if err := json.Unmarshal(r.Result, &minted); err != nil || len(minted.Token) < 32 {
		t.Fatalf("minted %s: %v", r.Result, err)
	}
	if raw, _ := os.ReadFile(filepath.Join(dir, node.TokensFile)); bytes.Contains(raw, []byte(minted.Token)) {
		t.Fatal("tokens.json stores the token itself, not its hash")
	}
	// The provider sees its slice only, and cannot touch the other.
	r = post(t, addr, minted.Token, slice.Request{Op: slice.OpSliceList})
	if r.Status != 200 || !strings.Contains(string(r.Result), `"video"`) || strings.Contains(string(r.Result), `"game"`) {
		t.Fatalf("provider slice.list: %d %s", r.Status, r.Result)
	}
	if r := post(t, addr, minted.Token, slice.Request{Op: slice.OpSliceGet, Slice: "game"}); r.Status != http.StatusForbidden {
		t.Fatalf("provider A slice.get game: %+v", r)
	}
	// Core endpoints are for the operator and the home admin.
	for tok, want := range map[string]int{root: 200, home: 200, minted.Token: http.StatusForbidden, "wrong-token-0123456789": http.StatusUnauthorized} {
		req, _ := http.NewRequest("GET", "http://"+addr+"/api/v1/status", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET /api/v1/status: %d, want %d", resp.StatusCode, want)
		}
	}
	// The provider's metrics scrape holds its slice's series only.
	req, _ := http.NewRequest("GET", "http://"+addr+"/api/v1/slices/video/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+minted.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `nanodc_slice_storage_quota_bytes{slice="video"}`) || strings.Contains(string(body), `slice="game"`) {
		t.Fatalf("provider scrape: %d\n%s", resp.StatusCode, body)
	}
	req, _ = http.NewRequest("GET", "http://"+addr+"/api/v1/slices/game/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+minted.Token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("provider A scraping B's slice: %d", resp.StatusCode)
	}
	// Bad requests name what is wrong.
	hreq, _ := http.NewRequest("POST", "http://"+addr+"/api/v1/mgmt", strings.NewReader(`{"op":"slice.create","slice":"Bad Name"}`))
	hreq.Header.Set("Authorization", "Bearer "+root)
	resp, err = http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "slice id") {
		t.Fatalf("bad slice id: %d %s", resp.StatusCode, body)
	}
}
