package emulator

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/multiformats/go-multihash"
	dto "github.com/prometheus/client_model/go"

	"github.com/nanodc/nanodc/emulator/vnet"
	"github.com/nanodc/nanodc/overlay"
)

// Options are a run's explicit dependencies.
type Options struct {
	OutDir    string                     // where summary.json, timeseries.csv, report.html go
	Seed      *int64                     // overrides the scenario's seed
	Workloads map[string]WorkloadFactory // by scenario type name
	Progress  io.Writer                  // live progress; nil for none
	// ProgressLines prints a line every few seconds instead of redrawing one line (for
	// logs and CI, where carriage returns are noise).
	ProgressLines bool
	Logger        *slog.Logger
	ScenarioPath  string // for the report
	// SettledProfiles maps runtime/pprof profile names ("heap", "goroutine") to writers that
	// receive that profile once the fleet has settled (after a GC): where a gateway's memory
	// and goroutines go in steady state.
	SettledProfiles map[string]io.Writer
	// OnLateSecond, when set, is called for each measured second whose scheduler or delivery
	// lateness p99 exceeded the validity threshold (a caller may snapshot a flight recorder).
	// elapsed is the time since the measured phase began.
	OnLateSecond func(elapsed, p99 time.Duration)
	// MeasuredGCPercent, when > 0, is the collector's GOGC while the workloads run (restored
	// after): start-up and settling keep the process's own, lower setting so that the heap
	// stays compact (see cmd/nanodc's tuneGC for the measurements).
	MeasuredGCPercent int

	timerFloor     *LatenessFigures // measured once per Run, before any fleet
	memoryMonitors []string         // the kernel's DAMON threads running, read once per Run
}

// Run builds the fleet, runs the scenario and writes its outputs. The returned summary is
// also in OutDir/summary.json. A run whose timing went wrong is returned with Valid false,
// not as an error: its outputs are still worth reading.
//
// A scenario with variants runs once per variant (each in OutDir/<variant>/) and the
// returned summary compares them (see runVariants).
func Run(ctx context.Context, sc *Scenario, opts Options) (*Summary, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Progress != nil {
		fmt.Fprintf(opts.Progress, "measuring this machine's timer floor (%s)\n", timerFloorWindow)
	}
	floor := machineFloor(timerFloorWindow)
	opts.timerFloor = &floor
	opts.memoryMonitors = memoryMonitors(damonRoot)
	if len(sc.Variants) > 0 {
		return runVariants(ctx, sc, opts)
	}
	sum, _, err := runOnce(ctx, sc, opts, nil)
	return sum, err
}

// runOnce is one pass of the scenario (with a variant's patch when v is not nil).
func runOnce(ctx context.Context, sc *Scenario, opts Options, v *Variant) (*Summary, *run, error) {
	seed := sc.Seed
	if opts.Seed != nil {
		seed = *opts.Seed
	}
	if opts.Workloads == nil {
		opts.Workloads = BuiltinWorkloads()
	}
	var workloads []Workload
	for i, spec := range sc.Workloads {
		factory, ok := opts.Workloads[spec.Type]
		if !ok {
			return nil, nil, fmt.Errorf("workloads[%d].type: unknown workload %q (have %s)", i, spec.Type, strings.Join(mapKeys(opts.Workloads), ", "))
		}
		w, err := factory(&spec.Params)
		if err != nil {
			return nil, nil, fmt.Errorf("workloads[%d] (%s): %w", i, spec.Type, err)
		}
		workloads = append(workloads, w)
	}
	if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
		return nil, nil, err
	}
	nodesDir, err := ScratchDir("nanodc-emulate-*")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(nodesDir)

	r := &run{sc: sc, opts: opts, seed: seed, rec: newRecorder(), workloads: workloads, log: opts.Logger, variant: v}
	r.topo = buildTopology(sc, rand.New(rand.NewPCG(uint64(seed), 1)))
	r.events, err = expandFaults(sc.Faults, r.topo, sc.Duration, rand.New(rand.NewPCG(uint64(seed), 2)))
	if err != nil {
		return nil, nil, err
	}
	r.fleet, err = newFleet(sc, r.topo, seed, nodesDir, opts.Logger)
	if err != nil {
		return nil, nil, err
	}
	if r.fleet.dials, err = newDialLog(filepath.Join(opts.OutDir, "failed-dials.csv"), slices.Concat(r.fleet.Bootstrap, r.fleet.Gateways)); err != nil {
		r.fleet.Close()
		return nil, nil, err
	}
	defer r.fleet.dials.Close() // after the fleet's: nodes may fail dials while stopping
	defer r.fleet.Close()
	r.fleet.variant = v
	for _, w := range workloads {
		if h, ok := w.(NodeStartHook); ok {
			r.fleet.onStart = append(r.fleet.onStart, h.NodeStarted)
		}
		if c, ok := w.(NodeConfigurer); ok {
			r.fleet.configure = append(r.fleet.configure, c.ConfigureNode)
		}
	}
	sum, err := r.execute(ctx)
	if err != nil {
		return nil, nil, err
	}
	if v != nil {
		sum.Variant = v.Name
	}
	if err := r.writeOutputs(sum); err != nil {
		return sum, r, err
	}
	return sum, r, nil
}

type run struct {
	variant   *Variant
	sc        *Scenario
	opts      Options
	seed      int64
	log       *slog.Logger
	topo      *topology
	fleet     *Fleet
	events    []event
	rec       *Recorder
	workloads []Workload
	progress  *progress

	applied []appliedEvent
	mu      sync.Mutex
}

// phase names a progress phase, with the variant when there is one.
func (r *run) phase(name string) string {
	if r.variant != nil {
		return r.variant.Name + ": " + name
	}
	return name
}

type appliedEvent struct {
	event
	AtSeconds float64 `json:"at_s"`
	Error     string  `json:"error,omitempty"`
}

func (r *run) execute(ctx context.Context) (*Summary, error) {
	sum := &Summary{
		Scenario: r.sc.Name, Description: r.sc.Description, Seed: r.seed,
		Gateways: len(r.fleet.Gateways), BootstrapNodes: len(r.fleet.Bootstrap),
		DurationSeconds: r.sc.Duration.Seconds(), GoVersion: runtime.Version(), CPUs: runtime.NumCPU(),
		MachineTimerFloor: r.opts.timerFloor, MachineMemoryMonitors: r.opts.memoryMonitors,
	}
	r.progress = newProgress(r.opts.Progress, r.opts.ProgressLines)
	defer r.progress.done()
	// The baseline is measured as the figures it is subtracted from (after a GC, without the
	// heap's free pages): a run after another in one process (--repeat, variants) starts with
	// the last fleet's freed heap still resident, and raw RSS then made its per-node figures
	// negative.
	runtime.GC()
	rss0 := rssInUseMB()
	use0 := readUsage()
	t0 := use0.at

	// Start-up: bootstrap nodes first, then gateways at the scenario's pace.
	for i, w := range r.workloads {
		if p, ok := w.(Preparer); ok {
			env := &Env{Fleet: r.fleet, Rand: rand.New(rand.NewPCG(uint64(r.seed), uint64(200+i)))}
			if err := p.Prepare(ctx, env); err != nil {
				return nil, fmt.Errorf("workloads[%d]: %w", i, err)
			}
		}
	}
	t0 = time.Now()
	for _, b := range r.fleet.Bootstrap {
		if err := r.fleet.Start(b); err != nil {
			return nil, err
		}
	}
	limit := r.sc.Validity.MaxLatenessP99
	err := r.fleet.startPaced(ctx, r.fleet.Gateways, r.sc.StartupRate, limit, 3*time.Minute, func(n int, held bool) {
		state := ""
		if held {
			state = "  (holding: CPU busy)"
		}
		r.progress.show(r.phase("start-up"), time.Since(t0), 0, fmt.Sprintf("gateways %d/%d%s", n, len(r.fleet.Gateways), state))
	})
	if err != nil {
		return nil, err
	}
	sum.StartupSeconds = time.Since(t0).Seconds()
	// Memory the fleet needs once started: after a GC, without the free pages the heap
	// keeps, so that the start-up peak (reported apart) does not count. Done before settling,
	// so that the pause is not measured. The free pages are not returned to the OS
	// (debug.FreeOSMemory): the heap would fault them back in during the measured phase,
	// and on virtual machines whose page faults cost 15-20 µs each (seen on Firecracker)
	// those faults alone made the runs invalid (docs/decisions.md).
	nodes := float64(len(r.fleet.Gateways) + len(r.fleet.Bootstrap))
	sum.Memory.PeakRSSMB = procStatusMB("VmHWM:")
	runtime.GC()
	var msSettled runtime.MemStats
	runtime.ReadMemStats(&msSettled)
	sum.Memory.RSSAfterStartMB = rssInUseMB()
	sum.Memory.PerGatewayMB = (sum.Memory.RSSAfterStartMB - rss0) / nodes
	sum.Memory.LiveHeapPerGatewayMB = float64(msSettled.HeapAlloc) / (1 << 20) / nodes
	sum.Memory.GoroutinesPerGateway = float64(runtime.NumGoroutine()) / nodes
	// Settle for at least Settle, then until three seconds in a row ran on time (at most a
	// minute more): measuring while start-up still echoes would only measure start-up.
	settleStart, calm := time.Now(), 0
	r.fleet.Net.TakeLateness()
	for ctx.Err() == nil {
		sleepCtx(ctx, time.Second)
		sched, reader := r.fleet.Net.TakeLateness()
		if max(sched.P99, reader.P99) <= limit {
			calm++
		} else {
			calm = 0
		}
		waited := time.Since(settleStart)
		if waited >= r.sc.Settle && calm >= 3 || waited >= r.sc.Settle+time.Minute {
			break
		}
		st := r.peerStats()
		r.progress.show(r.phase("settle"), time.Since(t0), 0, fmt.Sprintf("peers min/avg %d/%.1f  lateness p99 %.1f ms", st.min, st.avg, ms(max(sched.P99, reader.P99))))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sum.SettleSeconds = time.Since(settleStart).Seconds()
	if len(r.opts.SettledProfiles) > 0 {
		runtime.GC()
		for name, w := range r.opts.SettledProfiles {
			p := pprof.Lookup(name)
			if p == nil {
				return nil, fmt.Errorf("no runtime profile named %q", name)
			}
			if err := p.WriteTo(w, 0); err != nil {
				return nil, fmt.Errorf("%s profile: %w", name, err)
			}
		}
	}
	sum.Handshakes.Startup = r.handshakes()

	// Measured phase.
	restoreGC := func() {}
	if r.opts.MeasuredGCPercent > 0 {
		prev := debug.SetGCPercent(r.opts.MeasuredGCPercent)
		restoreGC = func() { debug.SetGCPercent(prev) }
	}
	defer restoreGC() // on early returns; the normal path restores it as the phase ends
	r.fleet.Net.ResetLateness()
	r.fleet.Net.TakeLateness()
	use1 := readUsage()
	start := use1.at
	canary := startTimerCanary()
	defer canary.finish() // on early returns
	mctx, cancel := context.WithTimeout(ctx, r.sc.Duration)
	defer cancel()
	var wg sync.WaitGroup
	for i, w := range r.workloads {
		env := &Env{Fleet: r.fleet, Rand: rand.New(rand.NewPCG(uint64(r.seed), uint64(100+i))), Duration: r.sc.Duration, Start: start}
		if err := w.Start(mctx, env); err != nil {
			cancel()
			return nil, fmt.Errorf("workloads[%d]: %w", i, err)
		}
	}
	wg.Go(func() { r.runFaults(mctx, start) })
	r.sample(mctx, start, sum, canary)
	for _, w := range r.workloads {
		w.Wait()
	}
	wg.Wait()
	measured := readUsage().since(use1)
	sum.TimerCanary = canary.finish()
	sum.CPU.CoresUsed, sum.CPU.PageFaultsPerSecond, sum.CPU.GCCycles = measured.cores, measured.faultsPerSecond, measured.gcCycles
	sum.CPU.RunQueueWaitP99Ms = ms(measured.runQueueWaitP99)
	restoreGC()
	sum.CPU.StartupCoresUsed = use1.since(use0).cores
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	// Validity over the measured phase (after the workloads' warm-up).
	st := r.fleet.Net.Stats()
	sum.Lateness.Scheduler, sum.Lateness.Reader = latenessOf(st.Scheduler), latenessOf(st.Reader)
	sum.Network = networkOf(st)
	sum.Valid = true
	for name, l := range map[string]vnet.Lateness{"scheduler": st.Scheduler, "delivery": st.Reader} {
		if l.P99 > limit {
			sum.Valid = false
			sum.InvalidReasons = append(sum.InvalidReasons, fmt.Sprintf("%s lateness p99 %.2f ms > %.2f ms: the CPU could not keep up, timing figures are wrong%s%s", name, ms(l.P99), ms(limit), floorNote(r.opts.timerFloor), memoryMonitorNote(r.opts.memoryMonitors)))
		}
	}
	slices.Sort(sum.InvalidReasons)

	// End state: connectivity and a DHT round trip.
	ps := r.peerStats()
	sum.Peers = PeersSummary{Min: ps.min, Median: ps.median, Max: ps.max, Avg: ps.avg, GatewaysBelow8: ps.below8, RoutingTableMedian: ps.rtMedian}
	// The steady state, measured like the state after start-up (the phase is over, so the GC
	// pause no longer matters) and before the DHT check's lookups open connections of their own.
	runtime.GC()
	sum.Memory.RSSEndMB = rssInUseMB()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	sum.Memory.GoHeapMB = float64(ms.HeapInuse) / (1 << 20)
	sum.Memory.EndPerGatewayMB = (sum.Memory.RSSEndMB - rss0) / nodes
	sum.Memory.EndLiveHeapPerGatewayMB = float64(ms.HeapAlloc) / (1 << 20) / nodes
	sum.Memory.EndGoroutinesPerGateway = float64(runtime.NumGoroutine()) / nodes
	sum.Memory.EndClassesPerGatewayMB = memoryClasses(rssMB(), nodes)
	sum.DHT = r.dhtCheck(ctx)
	sum.Handshakes.Total = r.handshakes()
	sum.Memory.PeakRSSMB = max(sum.Memory.PeakRSSMB, procStatusMB("VmHWM:"))
	sum.Goroutines = runtime.NumGoroutine()
	r.mu.Lock()
	sum.Faults = append([]appliedEvent(nil), r.applied...)
	r.mu.Unlock()
	sum.Workloads = map[string]any{}
	for i, w := range r.workloads {
		sum.Workloads[workloadKey(r.sc.Workloads, i)] = w.Summary()
	}
	return sum, nil
}

func workloadKey(specs []WorkloadSpec, i int) string {
	n := 0
	for _, s := range specs[:i] {
		if s.Type == specs[i].Type {
			n++
		}
	}
	if n == 0 {
		return specs[i].Type
	}
	return specs[i].Type + "#" + strconv.Itoa(n+1)
}

// sample records the per-second series until ctx ends.
func (r *run) sample(ctx context.Context, start time.Time, sum *Summary, canary *timerCanary) {
	type classTotals struct{ up, down, queueMs, hosts float64 }
	last := map[*Gateway]vnet.LinkStats{}
	for _, g := range r.fleet.Gateways {
		last[g] = g.Host.Stats()
	}
	lastUse := readUsage()
	var warmup time.Duration
	for _, w := range r.workloads {
		if wu, ok := w.(Warmer); ok {
			warmup = max(warmup, wu.Warmup())
		}
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		el := time.Since(start)
		if warmup > 0 && el >= warmup && sum.LatenessWarmup == nil {
			sched, reader := r.fleet.Net.ResetLateness()
			sum.LatenessWarmup = &LatenessSummary{Scheduler: latenessOf(sched), Reader: latenessOf(reader)}
			sum.WarmupSeconds = el.Seconds()
		}
		r.rec.row(float64(int(el.Round(time.Second).Seconds())))
		classes := map[string]*classTotals{}
		for _, g := range r.fleet.Gateways {
			s := g.Host.Stats()
			c := classes[g.Profile]
			if c == nil {
				c = &classTotals{}
				classes[g.Profile] = c
			}
			p := r.sc.Profiles[g.Profile]
			c.up += float64(s.Up.Bytes - last[g].Up.Bytes)
			c.down += float64(s.Down.Bytes - last[g].Down.Bytes)
			if p.Up.RateBps > 0 {
				c.queueMs += float64(s.Up.QueueBytes*8) / float64(p.Up.RateBps) * 1000
			}
			c.hosts++
			last[g] = s
		}
		for name, c := range classes {
			r.rec.Set("up_mbps."+name, c.up*8/1e6)
			r.rec.Set("down_mbps."+name, c.down*8/1e6)
			r.rec.Set("uplink_queue_ms_avg."+name, c.queueMs/c.hosts)
		}
		sched, reader := r.fleet.Net.TakeLateness()
		r.rec.Set("lateness_ms_p99.scheduler", ms(sched.P99))
		r.rec.Set("lateness_ms_p99.delivery", ms(reader.P99))
		if late := max(sched.P99, reader.P99); late > r.sc.Validity.MaxLatenessP99 && r.opts.OnLateSecond != nil {
			r.opts.OnLateSecond(el, late)
		}
		// What held the processors this second: a late second with a GC cycle or a burst of
		// page faults has its cause in the process, one without it in the fleet or the machine.
		use := readUsage()
		d := use.since(lastUse)
		r.rec.Set("cpu_cores", d.cores)
		r.rec.Set("page_faults_per_s", d.faultsPerSecond)
		r.rec.Set("gc_cycles", float64(d.gcCycles))
		r.rec.Set("run_queue_wait_ms_p99", ms(d.runQueueWaitP99))
		canaryP99, canaryMax := canary.take()
		r.rec.Set("timer_canary_ms_p99", canaryP99)
		r.rec.Set("timer_canary_ms_max", canaryMax)
		lastUse = use
		ps := r.peerStats()
		r.rec.Set("gateways_up", float64(ps.up))
		r.rec.Set("peers_avg", ps.avg)
		r.rec.Set("peers_min", float64(ps.min))
		for _, w := range r.workloads {
			w.Sample(r.rec)
		}
		r.progress.show(r.phase("run"), el, r.sc.Duration, fmt.Sprintf("up %d/%d  peers avg %.1f  lateness p99 %.1f ms", ps.up, len(r.fleet.Gateways), ps.avg, ms(max(sched.P99, reader.P99))))
	}
}

type peerStats struct {
	up, min, max, median, below8, rtMedian int
	avg                                    float64
}

func (r *run) peerStats() peerStats {
	var peers, rts []int
	for _, g := range r.fleet.Gateways {
		if o := g.Overlay(); o != nil {
			peers = append(peers, len(o.Host().Network().Peers()))
			rts = append(rts, o.RoutingTableSize())
		}
	}
	st := peerStats{up: len(peers)}
	if len(peers) == 0 {
		return st
	}
	slices.Sort(peers)
	slices.Sort(rts)
	st.min, st.max, st.median, st.rtMedian = peers[0], peers[len(peers)-1], peers[len(peers)/2], rts[len(rts)/2]
	total := 0
	for _, p := range peers {
		total += p
		if p < 8 {
			st.below8++
		}
	}
	st.avg = float64(total) / float64(len(peers))
	return st
}

// runFaults applies the expanded fault schedule at its times.
func (r *run) runFaults(ctx context.Context, start time.Time) {
	cut := map[string]bool{}
	for _, ev := range r.events {
		if !sleepCtx(ctx, time.Until(start.Add(ev.At))) {
			return
		}
		var err error
		switch ev.Kind {
		case "kill":
			err = r.fleet.Kill(r.fleet.Gateways[ev.Gateway])
		case "restart":
			err = r.fleet.Start(r.fleet.Gateways[ev.Gateway])
		case "link-down", "link-up":
			r.fleet.Gateways[ev.Gateway].Host.SetUp(ev.Kind == "link-up")
		case "access-down", "access-up":
			r.fleet.Net.SetSiteUp(ev.Target, ev.Kind == "access-up")
		case "partition", "heal":
			cut[ev.Target] = ev.Kind == "partition"
			snapshot := maps.Clone(cut)
			r.fleet.Net.SetPartition(func(a, b string) bool {
				ia, ib := ispOfSite(a), ispOfSite(b)
				return ia != ib && (snapshot[ia] || snapshot[ib])
			})
		}
		ae := appliedEvent{event: ev, AtSeconds: time.Since(start).Seconds()}
		if err != nil {
			ae.Error = err.Error()
			r.log.Warn("fault", "kind", ev.Kind, "target", ev.Target, "err", err)
		}
		r.mu.Lock()
		r.applied = append(r.applied, ae)
		r.mu.Unlock()
	}
}

func ispOfSite(site string) string {
	if i := strings.IndexByte(site, '/'); i >= 0 {
		return site[:i]
	}
	return site // the datacenter
}

// dhtCheck provides a fresh CID from one live gateway and looks it up from others.
func (r *run) dhtCheck(ctx context.Context) DHTSummary {
	var live []*Gateway
	for _, g := range r.fleet.Gateways {
		if g.Overlay() != nil {
			live = append(live, g)
		}
	}
	if len(live) < 2 {
		return DHTSummary{}
	}
	rng := rand.New(rand.NewPCG(uint64(r.seed), 3))
	provider := live[rng.IntN(len(live))]
	h, _ := multihash.Sum([]byte(fmt.Sprintf("dht-check-%d", r.seed)), multihash.SHA2_256, -1)
	c := cid.NewCidV1(cid.Raw, h)
	out := DHTSummary{Provider: provider.Name}
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	start := time.Now()
	if err := provider.Overlay().Provide(pctx, c); err != nil {
		out.ProvideError = err.Error()
		return out
	}
	out.ProvideSeconds = time.Since(start).Seconds()
	lookups := live
	if n := r.sc.DHTCheckLookups; len(lookups) > n {
		rng.Shuffle(len(lookups), func(i, j int) { lookups[i], lookups[j] = lookups[j], lookups[i] })
		lookups = lookups[:n]
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		times []float64
	)
	sem := make(chan struct{}, r.sc.DHTCheckConcurrency)
	for _, g := range lookups {
		if g == provider {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			t := time.Now()
			o := g.Overlay()
			if o == nil {
				return
			}
			pid := provider.Overlay().ID()
			wasConnected := o.Host().Network().Connectedness(pid) == network.Connected
			found, err := o.FindProviders(lctx, c, 1)
			if !wasConnected {
				// FindProviders connects to the provider it found (to measure its RTT), for
				// a caller that will use it; this one will not. Left to the connection
				// manager's grace period, the connections of 999 checks exceed the one
				// provider's inbound limit (589 refusals measured at 1000 gateways): a load
				// no holder of a real title sees, as viewers spread over its many holders.
				_ = o.Host().Network().ClosePeer(pid)
			}
			mu.Lock()
			defer mu.Unlock()
			out.Lookups++
			if err == nil && slices.ContainsFunc(found, func(p overlay.PeerInfo) bool { return p.ID == pid }) {
				out.Found++
				times = append(times, time.Since(t).Seconds())
			}
		})
	}
	wg.Wait()
	out.LookupSecondsP50 = nanToNil(quantile(times, .5))
	out.LookupSecondsP95 = nanToNil(quantile(times, .95))
	return out
}

// handshakes reads go-libp2p's connection metrics, shared by every node of the fleet:
// completed handshakes, and failed dials by error kind. Dials the application cancelled
// (a simultaneous dial won, a lookup ended) are counted apart: nothing failed.
func (r *run) handshakes() HandshakeFigures {
	h := HandshakeFigures{ByKind: map[string]float64{}, Blocked: map[string]float64{}}
	for what, n := range r.fleet.refused.snapshot() {
		h.Blocked["rcmgr "+what] = n
	}
	mfs, err := r.fleet.libp2pReg.Gather()
	if err != nil {
		h.Failed = -1
		return h
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "libp2p_swarm_handshake_latency_seconds":
			for _, m := range mf.GetMetric() {
				h.Completed += float64(m.GetHistogram().GetSampleCount())
			}
		case "libp2p_swarm_dial_errors_total":
			for _, m := range mf.GetMetric() {
				v := counterValue(m)
				for _, l := range m.GetLabel() {
					if l.GetName() == "error" {
						h.ByKind[l.GetValue()] += v
						if l.GetValue() == "application canceled" {
							h.Canceled += v
						} else {
							h.Failed += v
						}
					}
				}
			}
		}
	}
	return h
}

func counterValue(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return 0
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// sleepCtx sleeps d or until ctx ends; it reports whether the full time passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func mapKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func rssMB() float64 { return procStatusMB("VmRSS:") }

// ScratchDir makes a directory for emulated state: the gateways' data directories, a
// provider's files. It is in memory (tmpfs /dev/shm) when the machine has one and TMPDIR does
// not say otherwise: an emulated gateway's disk must not stall the process that runs the
// whole fleet. On a disk, the piece-completion database's fsyncs and the torrent storage's
// msyncs held a processor for up to 9 ms at a time, and the packet scheduler waited behind
// them (docs/decisions.md).
func ScratchDir(pattern string) (string, error) {
	if os.Getenv("TMPDIR") == "" {
		if dir, err := os.MkdirTemp("/dev/shm", pattern); err == nil {
			return dir, nil
		}
	}
	return os.MkdirTemp("", pattern)
}

// memoryClasses splits the resident memory, in MB per node, into what the Go runtime
// says it holds: heap objects (live, right after a GC), span fragmentation ("heap unused"),
// goroutine stacks, the runtime's metadata (spans, GC bitmaps, per-P caches), free heap
// pages it keeps, and the rest of the RSS (program text, data, C): the numbers say which
// part a smaller gateway has to come from.
func memoryClasses(rss, nodes float64) map[string]float64 {
	mb := func(names ...string) float64 {
		var b uint64
		for _, n := range names {
			b += uint64Metric("/memory/classes/" + n + ":bytes")
		}
		return float64(b) / (1 << 20)
	}
	c := map[string]float64{
		"heap_objects":  mb("heap/objects"),
		"heap_unused":   mb("heap/unused"),
		"heap_free":     mb("heap/free"),
		"stacks":        mb("heap/stacks", "os-stacks"),
		"metadata":      mb("metadata/mcache/inuse", "metadata/mcache/free", "metadata/mspan/inuse", "metadata/mspan/free", "metadata/other"),
		"runtime_other": mb("other", "profiling/buckets"),
	}
	goResident := mb("total") - mb("heap/released")
	c["outside_go"] = max(0, rss-goResident)
	for k, v := range c {
		c[k] = v / nodes
	}
	return c
}

// uint64Metric reads one of the runtime's uint64 metrics (0 if this Go has no such metric).
func uint64Metric(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// rssInUseMB is the resident set without the heap's free pages not yet returned to the OS:
// what the RSS would be after debug.FreeOSMemory, without returning them (see its caller).
func rssInUseMB() float64 {
	return rssMB() - float64(uint64Metric("/memory/classes/heap/free:bytes"))/(1<<20)
}

// procStatusMB reads a kB figure of /proc/self/status (VmRSS, VmHWM) in MB.
func procStatusMB(field string) float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}

// usage is what the process has used up to a moment: CPU time, page faults (minor and major:
// on a virtual machine a fault can cost 15-20 µs, during which a goroutine holds its
// processor), completed GC cycles, and the Go scheduler's record of how long runnable
// goroutines waited for a processor.
type usage struct {
	at        time.Time
	cpu       float64 // user+system seconds
	faults    float64
	gc        uint64
	runQueue  []uint64 // cumulative counts of /sched/latencies:seconds
	waitEdges []float64
}

// runQueueMetric is the runtime's histogram of the time goroutines spent runnable before
// they ran (sampled by the runtime, cumulative since the process started).
const runQueueMetric = "/sched/latencies:seconds"

func readUsage() usage {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: runQueueMetric}}
	metrics.Read(s)
	u := usage{at: time.Now()}
	if s[0].Value.Kind() == metrics.KindUint64 {
		u.gc = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == metrics.KindFloat64Histogram {
		h := s[1].Value.Float64Histogram()
		u.runQueue, u.waitEdges = slices.Clone(h.Counts), h.Buckets
	}
	if f := procStat(); len(f) >= 13 {
		minor, _ := strconv.ParseFloat(f[7], 64)
		major, _ := strconv.ParseFloat(f[9], 64)
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		u.faults = minor + major
		u.cpu = (ut + st) / 100 // USER_HZ is 100 on Linux
	}
	return u
}

// usageDelta is what was used between two moments.
type usageDelta struct {
	cores, faultsPerSecond float64
	gcCycles               uint64
	// runQueueWaitP99 is the p99 of the time runnable goroutines waited for a processor:
	// when the packet scheduler is late by about as much, it was waiting its turn (the
	// processors were busy, or an idle one was slow to wake); when it is late by far more,
	// its timer fired late.
	runQueueWaitP99 time.Duration
}

// since is the use between earlier and u.
func (u usage) since(earlier usage) usageDelta {
	d := usageDelta{gcCycles: u.gc - earlier.gc, runQueueWaitP99: histogramQuantile(earlier.runQueue, u.runQueue, u.waitEdges, 0.99)}
	if dt := u.at.Sub(earlier.at).Seconds(); dt > 0 {
		d.cores, d.faultsPerSecond = (u.cpu-earlier.cpu)/dt, (u.faults-earlier.faults)/dt
	}
	return d
}

// histogramQuantile is the q-quantile of the samples a cumulative runtime histogram gained
// between before and after (edges: its bucket boundaries, one more than counts), as the upper
// edge of the bucket it falls in (the lower one for the open last bucket); 0 without samples.
func histogramQuantile(before, after []uint64, edges []float64, q float64) time.Duration {
	if len(after) == 0 || len(edges) != len(after)+1 {
		return 0
	}
	delta := make([]uint64, len(after))
	var total uint64
	for i, c := range after {
		if i < len(before) && before[i] <= c {
			c -= before[i]
		}
		delta[i] = c
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i, c := range delta {
		seen += c
		if seen >= rank {
			edge := edges[i+1]
			if math.IsInf(edge, 1) {
				edge = edges[i]
			}
			return time.Duration(edge * float64(time.Second))
		}
	}
	return 0
}

// procStat is /proc/self/stat's fields after the command name, from the state on.
func procStat() []string {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return nil
	}
	// The command name may contain spaces; the fields start after ") ".
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return nil
	}
	return strings.Fields(s[i+2:])
}
