package emulator_test

import (
	"context"
	"crypto/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"gopkg.in/yaml.v3"

	"github.com/nanodc/nanodc/emulator"
	"github.com/nanodc/nanodc/emulator/report"
	"github.com/nanodc/nanodc/node"
	"github.com/nanodc/nanodc/node/slice"
	"github.com/nanodc/nanodc/overlay"
)

// deployScenario: 20 gateways in two ISPs; two of isp-a's gateways die after announcing themselves and stay down.
const deployScenario = `
name: fleet-deploy
seed: 3
duration: 40s
settle: 2s
startup_rate: 40
topology:
  isps:
    - {name: isp-a, access_nodes: 2, gateways_per_access_node: 5, profiles: {vdsl2: 1}, access_delay: 2ms}
    - {name: isp-b, access_nodes: 2, gateways_per_access_node: 5, profiles: {vdsl2: 1}, access_delay: 2ms}
  isp_delay: 10ms
  datacenter: {profile: datacenter, delay: 8ms, bootstrap_nodes: 1}
node: {conn_low: 8, conn_high: 16, ping_interval: 5s}
workloads:
  - type: deploy
faults:
  - {at: 12s, action: kill, target: "gateway:1"}
  - {at: 12s, action: kill, target: "gateway:7"}
`

// deployWorkload is the operator: it joins the emulated fleet from the datacenter over the
// shaped network and deploys a slice with an app to every gateway of isp-a.
type deployWorkload struct {
	opKey    crypto.PrivKey
	provider peer.ID
	unit     []byte

	wg      sync.WaitGroup
	ov      *overlay.Overlay
	results []slice.FleetResult
	holders map[string]bool // gateway name → has the slice with the app Active
	isp     map[peer.ID]string
	down    map[peer.ID]bool
	err     error
}

func (w *deployWorkload) ConfigureNode(_ *emulator.Gateway, opts *node.Options) {
	id, _ := peer.IDFromPrivateKey(w.opKey)
	opts.Config.Operator = id.String()
}

func (w *deployWorkload) Start(ctx context.Context, env *emulator.Env) error {
	ip := net.IPv4(127, 255, 3, 1)
	host, err := env.Fleet.AddDatacenterHost(ip)
	if err != nil {
		return err
	}
	var boot []peer.AddrInfo
	for _, b := range env.Fleet.Bootstrap {
		if o := b.Overlay(); o != nil {
			boot = append(boot, peer.AddrInfo{ID: o.ID(), Addrs: o.Host().Addrs()})
		}
	}
	w.ov, err = overlay.New(overlay.Config{PrivKey: w.opKey, PacketNetwork: host, Bootstrap: boot, DHTMode: overlay.DHTClient,
		ListenAddrs: []ma.Multiaddr{ma.StringCast("/ip4/127.255.3.1/udp/4001/quic-v1")}})
	if err != nil {
		return err
	}
	w.isp, w.down = map[peer.ID]string{}, map[peer.ID]bool{}
	for _, g := range env.Fleet.Gateways {
		w.isp[peerOf(g)] = g.ISP
	}
	w.wg.Go(func() { _ = w.ov.Serve(ctx) })
	w.wg.Go(func() {
		// Gateways announce themselves within 10 s of starting.
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(env.Start.Add(16 * time.Second))):
		}
		for _, g := range env.Fleet.Gateways {
			if g.Node() == nil {
				w.down[peerOf(g)] = true
			}
		}
		dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		targets, err := slice.FindTargets(dctx, w.ov, map[string]string{"isp": "isp-a"})
		if err != nil {
			w.err = err
			return
		}
		w.results = slice.Deploy(dctx, w.ov, targets, []slice.Request{
			{Op: slice.OpSliceCreate, Slice: "energy", Provider: w.provider.String(), Services: []string{slice.ServiceStorage}},
			{Op: slice.OpAppInstall, Slice: "energy", Unit: w.unit, Start: true},
		}, 8)
		w.holders = map[string]bool{}
		for _, g := range env.Fleet.Gateways {
			n := g.Node()
			if n == nil {
				continue
			}
			res, err := n.Slices().Do(ctx, slice.Principal{Role: slice.RoleOperator}, slice.Request{Op: slice.OpAppList, Slice: "energy"})
			if err == nil {
				apps := res.([]*slice.AppRecord)
				w.holders[g.ISP+"/"+g.Name] = len(apps) == 1 && apps[0].Status == slice.StateActive
			}
		}
	})
	return nil
}

func (w *deployWorkload) Wait() {
	w.wg.Wait()
	if w.ov != nil {
		w.ov.Close()
	}
}
func (w *deployWorkload) Sample(*emulator.Recorder) {}
func (w *deployWorkload) Summary() any              { return w.results }
func (w *deployWorkload) Report(*emulator.Recorder) (report.Table, []report.Plot) {
	return report.Table{}, nil
}

// peerOf and mustPub read a gateway's identity from its data directory's key file, which the
// fleet writes before starting it (so it works for a gateway that is down).
func peerOf(g *emulator.Gateway) peer.ID {
	id, _ := peer.IDFromPublicKey(mustPub(g))
	return id
}

func mustPub(g *emulator.Gateway) crypto.PubKey {
	raw, err := os.ReadFile(filepath.Join(g.DataDir(), node.IdentityFile))
	if err != nil {
		return nil
	}
	k, err := crypto.UnmarshalPrivateKey(raw)
	if err != nil {
		return nil
	}
	return k.GetPublic()
}

// TestFleetDeployToLabelSubset: the operator deploys a slice and an app to the gateways of one
// ISP in a 20-gateway emulated fleet, over the shaped network. Every live gateway of that
// ISP ends up with the app running, none of the other ISP does, and the two dead gateways of
// that ISP are reported unreachable rather than silently missing.
func TestFleetDeployToLabelSubset(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 20-gateway emulation (~50 s)")
	}
	if _, err := exec.LookPath("wat2wasm"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("wat2wasm missing (scripts/install-deps.sh installs wabt)")
		}
		t.Skip("wat2wasm missing")
	}
	wasmPath := filepath.Join(t.TempDir(), "counter.wasm")
	if b, err := exec.Command("wat2wasm", "../examples/wasm/counter/counter.wat", "-o", wasmPath).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v %s", err, b)
	}
	module, _ := os.ReadFile(wasmPath)
	opKey, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	provKey, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	prov, _ := peer.IDFromPrivateKey(provKey)
	u, err := slice.Pack(provKey, slice.Manifest{Name: "meter", Version: "1", Kind: slice.KindWASM, Requires: []string{slice.ServiceStorage}}, module)
	if err != nil {
		t.Fatal(err)
	}
	unit, _ := u.Encode()
	w := &deployWorkload{opKey: opKey, provider: prov, unit: unit}

	sc, err := emulator.ParseScenario([]byte(deployScenario))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	_, err = emulator.Run(ctx, sc, emulator.Options{OutDir: t.TempDir(), Workloads: map[string]emulator.WorkloadFactory{
		"deploy": func(*yaml.Node) (emulator.Workload, error) { return w, nil },
	}})
	if err != nil {
		t.Fatal(err)
	}
	if w.err != nil {
		t.Fatal(w.err)
	}
	ok, unreachable := 0, 0
	for _, r := range w.results {
		isp := w.isp[r.Peer]
		switch {
		case isp == "isp-b":
			t.Errorf("deployed to %s of isp-b: %+v", r.Peer, r)
		case r.Status == "ok":
			ok++
			if w.down[r.Peer] {
				t.Errorf("dead gateway %s reported ok", r.Peer)
			}
		case r.Status == "unreachable":
			unreachable++
			if !w.down[r.Peer] {
				t.Errorf("live gateway %s unreachable: %s", r.Peer, r.Error)
			}
		default:
			t.Errorf("gateway %s: %s %s", r.Peer, r.Status, r.Error)
		}
	}
	if ok != 8 || unreachable != 2 {
		t.Errorf("%d ok and %d unreachable, want 8 and 2: %+v", ok, unreachable, w.results)
	}
	running := 0
	for name, active := range w.holders {
		if active {
			running++
			if name[:5] != "isp-a" {
				t.Errorf("%s runs the app", name)
			}
		}
	}
	if running != 8 {
		t.Errorf("%d gateways run the app, want the 8 live ones of isp-a: %v", running, w.holders)
	}
}
