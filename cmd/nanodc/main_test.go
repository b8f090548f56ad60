package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildBinary compiles nanodc once per test run; the tests drive it as a user would.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nanodc")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

const loopbackYAML = `listen: ["/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/0"]
mdns: false
nat: {port_map: false, hole_punching: false, relay_client: false, autonat: false}
api: {listen: "127.0.0.1:0"}
ping_interval: 1s
`

type daemon struct {
	cmd  *exec.Cmd
	data string
	log  *bytes.Buffer
}

func startDaemon(t *testing.T, bin, cfg string, args ...string) *daemon {
	t.Helper()
	d := &daemon{data: t.TempDir(), log: &bytes.Buffer{}}
	d.cmd = exec.Command(bin, append([]string{"node", "--data", d.data, "--config", cfg}, args...)...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.cmd.Process.Kill(); _ = d.cmd.Wait() })
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(d.data, "api.addr")); err == nil {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not start:\n%s", d.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *daemon) query(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(bin, append(append([]string{"node"}, args...), "--data", d.data)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nanodc node %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestDaemonsFindEachOther runs three real daemons on loopback, drives them with the CLI,
// and stops them with SIGINT as an init system would.
func TestDaemonsFindEachOther(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	cfg := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(cfg, []byte(loopbackYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	seed := startDaemon(t, bin, cfg, "--isp", "isp-a", "--access-node", "dslam-1")
	var st struct {
		PeerID string   `json:"peer_id"`
		Addrs  []string `json:"addrs"`
		RT     int      `json:"routing_table_size"`
	}
	if err := json.Unmarshal(seed.query(t, bin, "status", "--json"), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Addrs) == 0 || !strings.Contains(st.Addrs[0], "/quic-v1/p2p/"+st.PeerID) {
		t.Fatalf("seed addresses %v: want QUIC first with the peer ID", st.Addrs)
	}
	a := startDaemon(t, bin, cfg, "--bootstrap", st.Addrs[0], "--isp", "isp-a", "--access-node", "dslam-1")
	b := startDaemon(t, bin, cfg, "--bootstrap", st.Addrs[0], "--isp", "isp-b", "--access-node", "dslam-9")

	deadline := time.Now().Add(20 * time.Second)
	for {
		var s struct {
			RT int `json:"routing_table_size"`
		}
		_ = json.Unmarshal(a.query(t, bin, "status", "--json"), &s)
		if s.RT >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node a routing table stayed at %d", s.RT)
		}
		time.Sleep(100 * time.Millisecond)
	}

	const cid = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
	b.query(t, bin, "provide", cid)
	var provs []struct {
		PeerID   string `json:"peer_id"`
		Locality string `json:"locality"`
	}
	if err := json.Unmarshal(a.query(t, bin, "providers", cid, "--json"), &provs); err != nil {
		t.Fatal(err)
	}
	var bs struct {
		PeerID string `json:"peer_id"`
	}
	_ = json.Unmarshal(b.query(t, bin, "status", "--json"), &bs)
	if len(provs) != 1 || provs[0].PeerID != bs.PeerID || provs[0].Locality != "remote" {
		t.Fatalf("providers = %+v, want node b (%s) in another ISP", provs, bs.PeerID)
	}
	table := string(a.query(t, bin, "peers"))
	if !strings.Contains(table, "RTT") || !strings.Contains(table, "same-access-node") {
		t.Fatalf("peers table lacks the seed on the same access node:\n%s", table)
	}

	for name, d := range map[string]*daemon{"seed": seed, "a": a, "b": b} {
		if err := d.cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- d.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s exited with %v after SIGINT:\n%s", name, err, d.log)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not stop within 10s of SIGINT", name)
		}
		if !strings.Contains(d.log.String(), "node stopped") {
			t.Errorf("%s log lacks the clean shutdown line:\n%s", name, d.log)
		}
	}
}

func TestCLIErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(bad, []byte("dht: {mode: boss}\n"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"node", "--data", dir, "--config", bad}, "dht.mode"},
		{[]string{"node", "--data", dir, "--config", filepath.Join(dir, "missing.yaml")}, "no such file"},
		{[]string{"node", "status", "--data", dir}, "is the node running?"},
		{[]string{"node", "providers", "--data", dir}, "accepts 1 arg"},
		{[]string{"emulate", "--scenario", "../../emulator/scenarios/smoke.yaml", "--repeat", "0"}, "--repeat 0: want at least 1 run"},
		{[]string{"emulate", "--scenario", "../../emulator/scenarios/smoke.yaml", "--repeat", "2", "--memprofile", filepath.Join(dir, "m")}, "without --repeat"},
	} {
		out, err := exec.Command(bin, tc.args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("nanodc %v: err=%v output=%q, want failure mentioning %q", tc.args, err, out, tc.want)
		}
	}
}
