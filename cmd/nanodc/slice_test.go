package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSliceCLI is the operator's and a provider's path with real processes: the operator
// creates a slice locally, the provider packs the counter app, installs and starts it over
// the overlay with its own key, the app answers on the gateway's HTTP server, and a second
// provider is refused on the first one's slice. Every command's --json output is parsed.
func TestSliceCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	if _, err := exec.LookPath("wat2wasm"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("wat2wasm missing (scripts/install-deps.sh installs wabt)")
		}
		t.Skip("wat2wasm missing")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	wasm := filepath.Join(dir, "counter.wasm")
	if b, err := exec.Command("wat2wasm", "../../examples/wasm/counter/counter.wat", "-o", wasm).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v %s", err, b)
	}
	keyOf := func(name string) (path, id string) {
		path = filepath.Join(dir, name+".key")
		out, err := run(t, bin, nil, "vod", "keygen", "--out", path, "--json")
		if err != nil {
			t.Fatal(err)
		}
		var k struct {
			PeerID string `json:"peer_id"`
		}
		if err := json.Unmarshal(out, &k); err != nil {
			t.Fatal(err)
		}
		return path, k.PeerID
	}
	provKey, provID := keyOf("provider")
	otherKey, _ := keyOf("other")

	cfg := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(cfg, []byte(loopbackYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	gw := startDaemon(t, bin, cfg)
	var st struct {
		Addrs   []string `json:"addrs"`
		PeerID  string   `json:"peer_id"`
		Version string   `json:"version"`
	}
	if err := json.Unmarshal(gw.query(t, bin, "status", "--json"), &st); err != nil {
		t.Fatal(err)
	}
	remote := st.Addrs[0]
	if !strings.Contains(remote, "/p2p/") {
		remote += "/p2p/" + st.PeerID
	}

	// Operator, locally (api-token).
	out, err := run(t, bin, nil, "slice", "create", "energy", "--provider", provID, "--memory", "4MiB", "--storage", "1MiB",
		"--services", "storage,logger,metrics", "--data", gw.data, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		ID     string `json:"id"`
		Quotas struct {
			MemoryBytes  int64 `json:"memory_bytes"`
			StorageBytes int64 `json:"storage_bytes"`
		} `json:"quotas"`
	}
	if err := json.Unmarshal(out, &created); err != nil || created.ID != "energy" || created.Quotas.MemoryBytes != 4<<20 || created.Quotas.StorageBytes != 1<<20 {
		t.Fatalf("slice create: %v %s", err, out)
	}
	// slice set changes the quotas named and keeps the others.
	out, err = run(t, bin, nil, "slice", "set", "energy", "--download", "8M", "--streams", "30", "--data", gw.data, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var set struct {
		Quotas struct {
			MemoryBytes  int64 `json:"memory_bytes"`
			StorageBytes int64 `json:"storage_bytes"`
			DownloadBps  int64 `json:"download_bps"`
			Streams      int   `json:"streams"`
		} `json:"quotas"`
	}
	if err := json.Unmarshal(out, &set); err != nil || set.Quotas.MemoryBytes != 4<<20 || set.Quotas.StorageBytes != 1<<20 ||
		set.Quotas.DownloadBps != 8_000_000 || set.Quotas.Streams != 30 {
		t.Fatalf("slice set --download 8M --streams 30: %v %s", err, out)
	}

	// The provider packs its app and installs it remotely, with its own key.
	unit := filepath.Join(dir, "counter.unit")
	if _, err := run(t, bin, nil, "app", "pack", "--key", provKey, "--name", "counter", "--version", "1.0", "--module", wasm,
		"--requires", "storage", "--out", unit); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, bin, nil, "app", "install", "energy", unit, "--start", "--remote", remote, "--key", provKey, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var app struct {
		Name, Status, Version string
	}
	if err := json.Unmarshal(out, &app); err != nil || app.Name != "counter" || app.Status != "Active" {
		t.Fatalf("app install: %v %s", err, out)
	}
	api, _ := os.ReadFile(filepath.Join(gw.data, "api.addr"))
	for want := 1; want <= 2; want++ {
		resp, err := http.Get("http://" + strings.TrimSpace(string(api)) + "/slices/energy/apps/counter/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var c struct{ Count int }
		if json.Unmarshal(body, &c); c.Count != want {
			t.Fatalf("GET the app: %d %s, want count %d", resp.StatusCode, body, want)
		}
	}
	out, err = run(t, bin, nil, "app", "list", "energy", "--remote", remote, "--key", provKey, "--json")
	if err != nil || !strings.Contains(string(out), `"Active"`) {
		t.Fatalf("app list: %v %s", err, out)
	}
	// Another provider is refused, with the reason, and a non-zero exit.
	out, err = run(t, bin, nil, "app", "stop", "energy", "counter", "--remote", remote, "--key", otherKey)
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "not the caller's slice") {
		t.Fatalf("other provider app stop: %v %s", err, out)
	}
	// The operator's event stream has the install and the refusal.
	out, err = run(t, bin, nil, "slice", "events", "--data", gw.data)
	if err != nil || !strings.Contains(string(out), "app.installed") || !strings.Contains(string(out), "denied") {
		t.Fatalf("core events: %v\n%s", err, out)
	}
	// Stop, then the app no longer answers.
	if _, err := run(t, bin, nil, "app", "stop", "energy", "counter", "--remote", remote, "--key", provKey); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + strings.TrimSpace(string(api)) + "/slices/energy/apps/counter/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("stopped app answered %d", resp.StatusCode)
	}

	// Watching: the provider remotely and the operator locally each get the slice's probe
	// every 250 ms, one JSON line per answer, until they stop.
	for _, args := range [][]string{{"--remote", remote, "--key", provKey}, {"--data", gw.data}} {
		cmd := exec.Command(bin, append([]string{"slice", "probe", "energy", "--every", "250ms"}, args...)...)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr lockedBuffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string)
		go func() {
			sc := bufio.NewScanner(stdout)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		for i := range 3 {
			select {
			case l, ok := <-lines:
				var v struct {
					ID string `json:"id"`
				}
				if !ok || json.Unmarshal([]byte(l), &v) != nil || v.ID != "energy" {
					t.Fatalf("slice probe --every %v, answer %d: %q (open %v)\n%s", args[0], i, l, ok, stderr.String())
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("slice probe --every %v: no answer %d\n%s", args[0], i, stderr.String())
			}
		}
		_ = cmd.Process.Signal(os.Interrupt)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("slice probe --every %v did not stop cleanly on interrupt: %v\n%s", args[0], err, stderr.String())
		}
	}
}
