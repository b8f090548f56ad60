package node_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nanodc/nanodc/node"
)

// loopbackConfig keeps every packet on loopback: no mDNS, UPnP or relays.
func loopbackConfig() node.Config {
	cfg := node.DefaultConfig()
	cfg.Listen = []string{"/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/0"}
	cfg.MDNS = false
	cfg.NAT = node.NATConfig{}
	cfg.API.Listen = "127.0.0.1:0"
	return cfg
}

type running struct {
	*node.Node
	stop func() error
}

func start(t *testing.T, dataDir string, cfg node.Config) *running {
	t.Helper()
	n, err := node.New(node.Options{Config: cfg, DataDir: dataDir, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Serve(ctx) }()
	r := &running{Node: n}
	stopped := false
	r.stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		err := <-done
		if cerr := n.Close(); err == nil {
			err = cerr
		}
		return err
	}
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("stopping node: %v", err)
		}
	})
	return r
}

func TestRestartKeepsPeerIDAndCleanShutdown(t *testing.T) {
	opts := []goleak.Option{goleak.IgnoreCurrent()}
	dir := t.TempDir()
	a := start(t, dir, loopbackConfig())
	id := a.Overlay().ID()
	if _, err := os.Stat(filepath.Join(dir, node.APIAddrFile)); err != nil {
		t.Fatalf("API address file not written: %v", err)
	}
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, node.APIAddrFile)); !os.IsNotExist(err) {
		t.Errorf("API address file left behind after shutdown: %v", err)
	}
	// Every goroutine the node started has ended.
	goleak.VerifyNone(t, opts...)

	b := start(t, dir, loopbackConfig())
	if got := b.Overlay().ID(); got != id {
		t.Fatalf("peer ID after restart = %s, want %s", got, id)
	}
	fi, err := os.Stat(filepath.Join(dir, node.IdentityFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("identity file mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestCorruptIdentityFails(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content []byte
		want    string
	}{
		{"garbage", []byte("not a key at all"), "not a valid libp2p private key"},
		{"empty", nil, "not a valid libp2p private key"},
		{"truncated", []byte{0x08, 0x01, 0x12, 0x40, 0x01, 0x02}, "not a valid libp2p private key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, node.IdentityFile)
			if err := os.WriteFile(path, tc.content, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := node.New(node.Options{Config: loopbackConfig(), DataDir: dir})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("err = %v, want it to name %s and say %q", err, path, tc.want)
			}
			// The damaged key is left for the user to recover, never overwritten.
			got, _ := os.ReadFile(path)
			if string(got) != string(tc.content) {
				t.Errorf("identity file was modified")
			}
		})
	}
}

func TestUnreadableIdentityFails(t *testing.T) {
	dir := t.TempDir()
	// A directory where the key file should be: unreadable as a file even for root.
	if err := os.Mkdir(filepath.Join(dir, node.IdentityFile), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := node.New(node.Options{Config: loopbackConfig(), DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), "identity file") {
		t.Fatalf("err = %v, want an identity file error", err)
	}
}

func TestBadConfigNamesField(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown field", "listne: []\n", "field listne not found"},
		{"wrong type", "connmgr:\n  low: lots\n", "connmgr.low"},
		{"wrong type in list", "listen:\n  - [1]\n", "listen[0]"},
		{"bad duration", "ping_interval: soon\n", "ping_interval"},
		{"bad multiaddr", "listen: [\"/ip9/1.2.3.4\"]\n", "listen[0]"},
		{"bootstrap without peer id", "bootstrap: [\"/ip4/127.0.0.1/udp/1/quic-v1\"]\n", "bootstrap[0]"},
		{"watermarks", "connmgr: {low: 50, high: 10}\n", "connmgr.high"},
		{"dht mode", "dht: {mode: boss}\n", "dht.mode"},
		{"dht refresh", "dht: {refresh_interval: 5s}\n", "dht.refresh_interval"},
		{"dht bucket size", "dht: {bucket_size: 2}\n", "dht.bucket_size"},
		{"gossip heartbeat", "gossipsub: {heartbeat: 2h}\n", "gossipsub.heartbeat"},
		{"vod readahead", "vod: {readahead: 5m}\n", "vod.readahead"},
		{"vod upload limit", "vod: {upload_limit_bps: -1}\n", "vod.upload_limit_bps"},
		{"api not loopback", "api: {listen: \"0.0.0.0:7780\"}\n", "api.listen"},
		{"log level", "log: {level: loud}\n", "log.level"},
		{"label too long", "labels: {isp: " + strings.Repeat("x", 80) + "}\n", "labels.isp"},
		{"not yaml", "listen: [\n", "yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "node.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := node.LoadConfig(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("err = %v, want it to name %s and %q", err, path, tc.want)
			}
		})
	}
}

func TestConfigFileOverDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.yaml")
	yaml := "labels: {isp: orange, access_node: dslam-7}\nconnmgr: {low: 10, high: 20}\nping_interval: 5s\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := node.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	want := node.DefaultConfig()
	want.Labels.ISP, want.Labels.AccessNode = "orange", "dslam-7"
	want.ConnMgr.Low, want.ConnMgr.High = 10, 20
	want.PingInterval = 5 * time.Second
	if got, _ := json.Marshal(cfg); string(got) != string(must(json.Marshal(want))) {
		t.Fatalf("config = %s\nwant     %s", got, must(json.Marshal(want)))
	}
	if empty := filepath.Join(t.TempDir(), "empty.yaml"); os.WriteFile(empty, nil, 0o600) == nil {
		if _, err := node.LoadConfig(empty); err != nil {
			t.Errorf("empty config file: %v", err)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestManagementAPI(t *testing.T) {
	dir := t.TempDir()
	n := start(t, dir, loopbackConfig())
	tok := strings.TrimSpace(string(must(os.ReadFile(filepath.Join(dir, node.TokenFile)))))
	base := "http://" + n.APIAddr()

	call := func(method, path, token, body string) (int, map[string]any, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			_ = json.Unmarshal(raw, &m)
		}
		return resp.StatusCode, m, raw
	}

	for _, tc := range []struct {
		name, method, path, token, body string
		status                          int
		errorHas                        string
	}{
		{"no token", "GET", "/api/v1/status", "", "", 401, "missing bearer token"},
		{"wrong token", "GET", "/api/v1/status", "0123456789abcdef0123", "", 401, "invalid bearer token"},
		{"metrics need token", "GET", "/metrics", "", "", 401, "missing bearer token"},
		{"unknown endpoint", "GET", "/api/v1/nope", tok, "", 404, "no such endpoint"},
		{"wrong method", "DELETE", "/api/v1/status", tok, "", 405, "method DELETE not allowed"},
		{"provide bad json", "POST", "/api/v1/dht/provide", tok, "{", 400, "request body"},
		{"provide unknown field", "POST", "/api/v1/dht/provide", tok, `{"cid":"x","evil":1}`, 400, "unknown field"},
		{"provide bad cid", "POST", "/api/v1/dht/provide", tok, `{"cid":"zzz"}`, 400, "is not a CID"},
		{"providers bad cid", "GET", "/api/v1/dht/providers/zzz", tok, "", 400, "is not a CID"},
		{"providers bad limit", "GET", "/api/v1/dht/providers/bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy?limit=-1", tok, "", 400, "limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, m, raw := call(tc.method, tc.path, tc.token, tc.body)
			if status != tc.status {
				t.Fatalf("status %d, want %d (%s)", status, tc.status, raw)
			}
			if msg, _ := m["error"].(string); !strings.Contains(msg, tc.errorHas) {
				t.Fatalf("error %q, want it to contain %q (body %s)", msg, tc.errorHas, raw)
			}
		})
	}

	status, m, raw := call("GET", "/api/v1/status", tok, "")
	if status != 200 || m["peer_id"] != n.Overlay().ID().String() || m["version"] != "test" {
		t.Fatalf("status: %d %s", status, raw)
	}
	if status, _, raw := call("GET", "/metrics", tok, ""); status != 200 || !strings.Contains(string(raw), "nanodc_overlay_connected_peers") {
		t.Fatalf("metrics: %d, missing nanodc_overlay_connected_peers", status)
	}
	if status, _, raw := call("GET", "/api/v1/peers", tok, ""); status != 200 || strings.TrimSpace(string(raw)) != "[]" {
		t.Fatalf("peers of a lone node: %d %s", status, raw)
	}
}
