package vodload

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"weak"

	"gopkg.in/yaml.v3"

	"github.com/nanodc/nanodc/emulator"
	"github.com/nanodc/nanodc/emulator/report"
)

// miniScenario is a flash crowd small enough for `make test`: 10 ADSL2+ gateways in two ISPs,
// three short titles, six viewers on one of them; cdn-only against nanodc on the same seed.
const miniScenario = `
name: vod-mini
seed: 7
duration: 45s
settle: 2s
startup_rate: 40
topology:
  isps:
    - {name: isp-a, access_nodes: 1, gateways_per_access_node: 5, profiles: {adsl2plus: 1}, access_delay: 2ms}
    - {name: isp-b, access_nodes: 1, gateways_per_access_node: 5, profiles: {adsl2plus: 1}, access_delay: 2ms}
  isp_delay: 10ms
  datacenter: {profile: datacenter, delay: 8ms, bootstrap_nodes: 1}
node: {conn_low: 8, conn_high: 16, ping_interval: 5s}
workloads:
  - type: vod
    titles: 3
    title_duration: 20s
    bitrate_bps: 800000
    arrival_rate: 0
    warmup: 20s
    flash_crowd: {at: 2s, viewers: 6, over: 6s, title: 0}
    # The crowd's title on 3 gateways with a prefix everywhere, the next title on 2 others.
    push: [{titles: 1, replicas: 3, prefix: 1s}, {titles: 1, replicas: 2}]
  - type: retention-probe
variants:
  - {name: cdn-only, node: {vod: {strategy: cdn-only}}}
  - {name: nanodc, node: {vod: {strategy: nanodc}}}
`

// TestFlashCrowdVariants runs the workload on a real emulated fleet and checks what it
// reports: every viewer's session is accounted for, cdn-only takes every byte from the origin,
// nanodc serves the crowd mostly from peers, and the figures agree with each other.
func TestFlashCrowdVariants(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two 10-gateway emulations (~2 min)")
	}
	sc, err := emulator.ParseScenario([]byte(miniScenario))
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	sum, byVariant, probe := runScenario(t, sc, out)
	cdn, nano := byVariant["cdn-only"], byVariant["nanodc"]
	if cdn.Strategy != "cdn-only" || nano.Strategy != "nanodc" {
		t.Fatalf("variants %v: want cdn-only and nanodc sections", keys(byVariant))
	}
	for name, s := range byVariant {
		if s.Sessions != 6 {
			t.Errorf("%s: %d sessions, want the 6 flash-crowd viewers", name, s.Sessions)
		}
		if len(s.Viewers) != s.Sessions {
			t.Errorf("%s: %d viewer records for %d sessions", name, len(s.Viewers), s.Sessions)
		}
		if s.FailedSessions != 0 {
			t.Errorf("%s: %d failed sessions: %v", name, s.FailedSessions, s.FailReasons)
		}
		if s.StartupS.P50 <= 0 || s.StartupS.P95 < s.StartupS.P50 || s.StartupS.Max < s.StartupS.P95 {
			t.Errorf("%s: startup percentiles %+v are not ordered positive values", name, s.StartupS)
		}
		if s.WatchSeconds <= 0 {
			t.Errorf("%s: no watch time recorded", name)
		}
		if s.UploadBoundOffload < 0 || s.UploadBoundOffload > 1 || s.OffloadRatio < 0 || s.OffloadRatio > 1 {
			t.Errorf("%s: ratios out of [0,1]: offload %v bound %v", name, s.OffloadRatio, s.UploadBoundOffload)
		}
	}
	if cdn.PeerBytes != 0 || cdn.OffloadRatio != 0 || cdn.OriginBytes == 0 {
		t.Errorf("cdn-only: peer %d origin %d offload %v; want every byte from the origin", cdn.PeerBytes, cdn.OriginBytes, cdn.OffloadRatio)
	}
	if cdn.PushOriginBytes != 0 {
		t.Errorf("cdn-only pushed %d bytes; only nanodc pushes", cdn.PushOriginBytes)
	}
	if nano.PushOriginBytes == 0 {
		t.Error("nanodc: the push of the popular title fetched nothing from the origin")
	}
	// Each tier's titles on their own replicas, on gateways that hold no other pushed title.
	if len(nano.Pushed) != 2 || len(nano.Pushed[0].Replicas) != 3 || len(nano.Pushed[1].Replicas) != 2 {
		t.Fatalf("pushed %+v: want title 0 on 3 replicas, title 1 on 2", nano.Pushed)
	}
	for _, pt := range nano.Pushed {
		if !pt.Whole {
			t.Errorf("title %d not whole on its replicas %v by the end of the warm-up (errors %v)", pt.Title, pt.Replicas, nano.PushErrors)
		}
	}
	for _, g := range nano.Pushed[1].Replicas {
		if slices.Contains(nano.Pushed[0].Replicas, g) {
			t.Errorf("%s holds both pushed titles (%+v): want them on different gateways", g, nano.Pushed)
		}
	}
	// The 7 gateways that are not replicas get the title's first second from the replicas,
	// none of it from the origin, in the last quarter of the warm-up (or once the replicas
	// are in place, if sooner).
	if nano.PrefixPushes != 7 || nano.PrefixesPlaced != 7 || nano.PrefixOriginBytes != 0 {
		t.Errorf("nanodc prefixes: %d of %d placed, %d bytes from the origin (errors %v); want 7 of 7 from the replicas", nano.PrefixesPlaced, nano.PrefixPushes, nano.PrefixOriginBytes, nano.PushErrors)
	}
	t.Logf("nanodc: replicas in place at %.1f s, prefixes at %.1f s", nano.PushSeconds, nano.PrefixPushSeconds)
	if nano.PushSeconds <= 0 || nano.PrefixPushSeconds <= 0 || nano.PrefixPushSeconds > 20 {
		t.Errorf("replicas in place at %.1f s, prefixes at %.1f s: want both within the 20 s warm-up", nano.PushSeconds, nano.PrefixPushSeconds)
	}
	// Six viewers of one title, three replicas holding it: peers carry most of the crowd.
	if nano.OffloadRatio < 0.5 || nano.PeerBytes == 0 {
		t.Errorf("nanodc offload %.2f (peer %d, origin %d); want most bytes from peers", nano.OffloadRatio, nano.PeerBytes, nano.OriginBytes)
	}
	if nano.OriginBytes >= cdn.OriginBytes {
		t.Errorf("nanodc took %d origin bytes, cdn-only %d: peers saved nothing", nano.OriginBytes, cdn.OriginBytes)
	}
	if nano.GapFillBytes > nano.OriginBytes+nano.PushOriginBytes {
		t.Errorf("gap fills %d exceed origin bytes %d", nano.GapFillBytes, nano.OriginBytes)
	}
	// The origin account adds up: per title, and no-holder ⊆ unavoidable ⊆ gap fills.
	var byTitle int64
	for _, b := range nano.GapFillByTitle {
		byTitle += b
	}
	if byTitle != nano.GapFillBytes {
		t.Errorf("gap fills by title sum to %d, total %d", byTitle, nano.GapFillBytes)
	}
	if nano.NoHolderBytes > nano.UnavoidableBytes || nano.UnavoidableBytes > nano.GapFillBytes {
		t.Errorf("no holder %d, unavoidable %d, gap fills %d: want each part of the next", nano.NoHolderBytes, nano.UnavoidableBytes, nano.GapFillBytes)
	}
	// Whole blocks from each holder's own spare uplink is the stricter test of "in time".
	if nano.UnavoidableBytes > nano.UnavoidableWholeBlocksBytes || nano.UnavoidableWholeBlocksBytes > nano.GapFillBytes {
		t.Errorf("unavoidable %d, in whole blocks %d, gap fills %d: want each part of the next", nano.UnavoidableBytes, nano.UnavoidableWholeBlocksBytes, nano.GapFillBytes)
	}
	if b := nano.UnavoidableWholeBlocksBytes; b > 0 && nano.OriginPerUnavoidableWholeBlocks != float64(nano.OriginBytes)/float64(b) {
		t.Errorf("origin per unavoidable in whole blocks %.3f, want %.3f", nano.OriginPerUnavoidableWholeBlocks, float64(nano.OriginBytes)/float64(b))
	}
	if nano.NoHolderBytes > nano.UnavoidableByRateBytes || nano.UnavoidableByRateBytes > nano.GapFillBytes {
		t.Errorf("no holder %d, unavoidable by rate %d, gap fills %d: want each part of the next", nano.NoHolderBytes, nano.UnavoidableByRateBytes, nano.GapFillBytes)
	}
	if want := float64(nano.OriginBytes) / float64(nano.UnavoidableBytes); nano.UnavoidableBytes > 0 && nano.OriginPerUnavoidable != want || cdn.OriginPerUnavoidable != 0 {
		t.Errorf("origin per unavoidable: nanodc %.3f (want %.3f), cdn-only %.3f (want none)", nano.OriginPerUnavoidable, want, cdn.OriginPerUnavoidable)
	}
	var avoidable, avoidableByHolder int64
	for _, b := range nano.AvoidableByReason {
		avoidable += b
	}
	for _, b := range nano.AvoidableByHolder {
		avoidableByHolder += b
	}
	if avoidable != nano.GapFillBytes-nano.UnavoidableBytes || avoidableByHolder != avoidable {
		t.Errorf("avoidable by reason %d, by holder %d; gap fills %d - unavoidable %d", avoidable, avoidableByHolder, nano.GapFillBytes, nano.UnavoidableBytes)
	}
	// Every byte the players got was checked against the piece hashes, and none was corrupt.
	for name, v := range map[string]Summary{"cdn-only": cdn, "nanodc": nano} {
		var received int64
		for _, vf := range v.Viewers {
			received += vf.Received
		}
		if v.CorruptPieces != 0 || received == 0 || v.CheckedBytes != received {
			t.Errorf("%s: %d corrupt pieces; %d of %d received bytes checked", name, v.CorruptPieces, v.CheckedBytes, received)
		}
	}
	if nano.PeerWastedBytes > nano.PeerBytes || nano.LocalBytes < 0 {
		t.Errorf("wasted %d of %d peer bytes, local %d", nano.PeerWastedBytes, nano.PeerBytes, nano.LocalBytes)
	}
	// A finished variant leaves nothing of its fleet in the heap: what it kept reachable
	// pinned pages under the next variants, which then ran on more memory (and page faults)
	// than the first.
	if len(probe.survivors) != 1 || probe.survivors[0] != 0 {
		t.Errorf("nodes and VoD apps of the first variant still in the heap when the second started: %v (want [0])", probe.survivors)
	}
	if len(sum.VariantOrder) != 2 {
		t.Errorf("combined summary lists variants %v", sum.VariantOrder)
	}
	// The warm-up (pushes, no viewers) is reported apart and left out of the verdict.
	for name, v := range sum.Variants {
		if v.LatenessWarmup == nil || v.WarmupSeconds < 20 || v.LatenessWarmup.Scheduler.Count == 0 {
			t.Errorf("%s: warm-up lateness %+v over %.0f s; want the 20 s warm-up measured apart", name, v.LatenessWarmup, v.WarmupSeconds)
		}
		if v.Lateness.Scheduler.Count == 0 {
			t.Errorf("%s: no lateness measured after the warm-up", name)
		}
	}
	// The comparison table is built after every variant's fleet stopped: the gateways' own
	// figures in it are those of the end of each run (it printed 0 streams lost and redials
	// before session 23, whatever the runs had).
	if len(sum.Comparison) != 1 {
		t.Fatalf("%d comparison tables, want 1", len(sum.Comparison))
	}
	cmpRows := map[string][]string{}
	for _, r := range sum.Comparison[0].Rows {
		cmpRows[r[0]] = r[1:]
	}
	for i, name := range sum.VariantOrder {
		v := byVariant[name]
		for row, want := range map[string]int64{"peer streams lost": v.PeerStreamsLost, "origin redials": v.OriginResets} {
			if got := cmpRows[row]; len(got) <= i || got[i] != fmt.Sprint(want) {
				t.Errorf("comparison %q for %s = %v, want %d as in its summary", row, name, got, want)
			}
		}
	}
	for _, f := range []string{"report.html", "cdn-only/summary.json", "nanodc/timeseries.csv"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("output %s: %v", f, err)
		}
	}
}

// TestFlashCrowdInProviderSlice runs the same crowd with the VoD app where production puts
// it: in the video provider's slice on every gateway (the operator creates the slice, the
// provider installs its signed unit, the slice's quotas carry the upload share and cache).
func TestFlashCrowdInProviderSlice(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 10-gateway emulation (~1 min)")
	}
	const push = "    push: [{titles: 1, replicas: 3, prefix: 1s}, {titles: 1, replicas: 2}]\n"
	if !strings.Contains(miniScenario, push) {
		t.Fatal("the mini scenario's push line changed: update this test")
	}
	sc, err := emulator.ParseScenario([]byte(strings.Replace(miniScenario, push, push+"    slice: video\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	sc.Variants = sc.Variants[1:] // nanodc only
	_, byVariant, _ := runScenario(t, sc, t.TempDir())
	nano, ok := byVariant["nanodc"]
	if !ok || nano.Strategy != "nanodc" {
		t.Fatalf("no nanodc section from the slices' apps: %+v", byVariant)
	}
	if len(nano.PushErrors) > 0 {
		t.Fatalf("slice set-up or push failed: %v", nano.PushErrors)
	}
	if nano.Sessions != 6 || nano.FailedSessions != 0 {
		t.Fatalf("%d sessions, %d failed (%v); want 6, none failed", nano.Sessions, nano.FailedSessions, nano.FailReasons)
	}
	if nano.PrefixesPlaced != 7 {
		t.Fatalf("%d of %d prefixes placed in the slices' apps; want 7", nano.PrefixesPlaced, nano.PrefixPushes)
	}
	if nano.PushOriginBytes == 0 || nano.OffloadRatio < 0.5 {
		t.Fatalf("push fetched %d bytes, offload %.2f: want the pushed title served mostly by peers' slice apps", nano.PushOriginBytes, nano.OffloadRatio)
	}
}

// TestPushPlanErrors: a bad push plan is refused at parse time with the tier named.
func TestPushPlanErrors(t *testing.T) {
	for _, tc := range []struct{ push, want string }{
		{"{titles: 1, replicas: 3}", "push"}, // a tier, not a list of tiers
		{"[{titles: 1, replicas: 0}]", "push[0]"},
		{"[{titles: 1, replicas: 2}, {titles: 0, replicas: 2}]", "push[1]"},
		{"[{titles: 1, replicas: 2, prefix: -1s}]", "push[0]"},
		{"[{titles: 2, replicas: 2}, {titles: 2, replicas: 1}]", "4 titles in all, more than the catalog's 3"},
		{"[{titles: 1, replicas: 2, prefx: 1s}]", "prefx"},
	} {
		var n yaml.Node
		if err := yaml.Unmarshal([]byte("titles: 3\npush: "+tc.push+"\n"), &n); err != nil {
			t.Fatal(err)
		}
		_, err := New(n.Content[0])
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("push: %s: got %v, want an error naming %q", tc.push, err, tc.want)
		}
	}
}

// TestShippedScenariosDecode: every vod workload in the shipped scenarios decodes (the
// emulator's own scenario test leaves workloads of other packages out).
func TestShippedScenariosDecode(t *testing.T) {
	files, _ := filepath.Glob("../scenarios/*.yaml")
	n := 0
	for _, f := range files {
		sc, err := emulator.LoadScenario(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		for i, wl := range sc.Workloads {
			if wl.Type != "vod" {
				continue
			}
			n++
			if _, err := New(&wl.Params); err != nil {
				t.Errorf("%s: workloads[%d]: %v", f, i, err)
			}
		}
	}
	if n < 3 {
		t.Errorf("%d vod workloads in the shipped scenarios; want the flash crowd, its VDSL2 version and the demo", n)
	}
}

// runScenario runs sc with the vod workload into out and returns the combined summary and
// summary.json's vod sections by variant.
func runScenario(t *testing.T, sc *emulator.Scenario, out string) (*emulator.Summary, map[string]Summary, *probeState) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	probe := &probeState{}
	factories := map[string]emulator.WorkloadFactory{
		"vod":             New,
		"retention-probe": func(*yaml.Node) (emulator.Workload, error) { return &retentionProbe{probe}, nil },
	}
	sum, err := emulator.Run(ctx, sc, emulator.Options{OutDir: out, Workloads: factories})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(out, "summary.json"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Workloads map[string]map[string]Summary `json:"workloads"`
	}
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatalf("summary.json: %v", err)
	}
	return sum, file.Workloads["vod"], probe
}

// retentionProbe is a workload that only watches: it keeps weak pointers to every node and
// VoD app its variant started, and when the next variant prepares, counts how many of them
// the garbage collector could not free.
type retentionProbe struct{ *probeState }

type probeState struct {
	mu        sync.Mutex
	started   []func() bool // reports whether the object is still in the heap
	survivors []int         // per variant after the first
}

func (p *retentionProbe) NodeStarted(g *emulator.Gateway) {
	n := g.Node()
	if n == nil {
		return
	}
	wn, wa := weak.Make(n), weak.Make(n.VOD())
	p.mu.Lock()
	defer p.mu.Unlock()
	p.started = append(p.started, func() bool { return wn.Value() != nil }, func() bool { return wa.Value() != nil })
}

func (p *retentionProbe) Prepare(context.Context, *emulator.Env) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.started) == 0 {
		return nil
	}
	// A stopped client's pending timers may hold it a few seconds more.
	alive := 0
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		runtime.GC()
		alive = 0
		for _, isAlive := range p.started {
			if isAlive() {
				alive++
			}
		}
		if alive == 0 || time.Now().After(deadline) {
			break
		}
	}
	p.survivors = append(p.survivors, alive)
	p.started = nil
	return nil
}

func (p *retentionProbe) Start(context.Context, *emulator.Env) error { return nil }
func (p *retentionProbe) Wait()                                      {}
func (p *retentionProbe) Sample(*emulator.Recorder)                  {}
func (p *retentionProbe) Summary() any                               { return nil }
func (p *retentionProbe) Report(*emulator.Recorder) (report.Table, []report.Plot) {
	return report.Table{}, nil
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
