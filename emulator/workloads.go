package emulator

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	ma "github.com/multiformats/go-multiaddr"
	"gopkg.in/yaml.v3"

	"github.com/nanodc/nanodc/emulator/report"
	"github.com/nanodc/nanodc/internal/yamlstrict"
	"github.com/nanodc/nanodc/overlay"
)

// pair is a source and destination gateway chosen by a workload.
type pair struct {
	src, dst *Gateway
	class    string // same-access-node, same-isp, cross-isp
}

func classOf(a, b *Gateway) string {
	switch overlay.Locality(overlay.Labels{ISP: a.ISP, AccessNode: a.AccessNode}, overlay.Labels{ISP: b.ISP, AccessNode: b.AccessNode}) {
	case 0:
		return "same-access-node"
	case 1:
		return "same-isp"
	}
	return "cross-isp"
}

var pairClasses = []string{"same-access-node", "same-isp", "cross-isp"}

func pickPairs(env *Env, n int) []pair {
	gws := env.Fleet.Gateways
	out := make([]pair, 0, n)
	for range n {
		s := env.Rand.IntN(len(gws))
		d := env.Rand.IntN(len(gws) - 1)
		if d >= s {
			d++
		}
		out = append(out, pair{src: gws[s], dst: gws[d], class: classOf(gws[s], gws[d])})
	}
	return out
}

func addrInfoOf(g *Gateway) (peer.AddrInfo, bool) {
	o := g.Overlay()
	if o == nil {
		return peer.AddrInfo{}, false
	}
	return peer.AddrInfo{ID: o.ID(), Addrs: []ma.Multiaddr{ma.StringCast(fmt.Sprintf("/ip4/%s/udp/4001/quic-v1", g.IP))}}, true
}

// ---- ping: RTT between chosen pairs, against the RTT the topology says they should see.

type pingParams struct {
	Pairs    int           `yaml:"pairs"`
	Interval time.Duration `yaml:"interval"`
}

type pingWorkload struct {
	p     pingParams
	pairs []pair
	wg    sync.WaitGroup

	mu       sync.Mutex
	second   map[string][]float64 // RTT ms by class, this second
	all      map[string][]float64 // RTT ms by class, whole run
	excess   []float64            // measured − configured path RTT, ms
	failures int
}

func newPingWorkload(params *yaml.Node) (Workload, error) {
	p := pingParams{Pairs: 20, Interval: time.Second}
	if err := yamlstrict.DecodeNode(params, &p); err != nil {
		return nil, err
	}
	if p.Pairs < 1 || p.Interval < 100*time.Millisecond {
		return nil, errors.New("pairs must be >= 1 and interval >= 100ms")
	}
	return &pingWorkload{p: p, second: map[string][]float64{}, all: map[string][]float64{}}, nil
}

func (w *pingWorkload) Start(ctx context.Context, env *Env) error {
	w.pairs = pickPairs(env, w.p.Pairs)
	for _, pr := range w.pairs {
		want := configuredRTT(env, pr.src, pr.dst)
		w.wg.Go(func() { w.run(ctx, pr, want) })
	}
	return nil
}

// configuredRTT is the RTT the topology gives a small packet: four last-mile delays, the
// backbone both ways, and serialisation of ~100-byte packets on each link.
func configuredRTT(env *Env, a, b *Gateway) time.Duration {
	pa, pb := env.Fleet.scenario.Profiles[a.Profile], env.Fleet.scenario.Profiles[b.Profile]
	ser := func(rate int64) time.Duration {
		if rate <= 0 {
			return 0
		}
		return time.Duration(100 * 8 * float64(time.Second) / float64(rate))
	}
	backbone := env.Fleet.siteDelay(a.AccessNode, b.AccessNode)
	return pa.Up.Delay + pb.Down.Delay + pb.Up.Delay + pa.Down.Delay + 2*backbone +
		ser(pa.Up.RateBps) + ser(pb.Down.RateBps) + ser(pb.Up.RateBps) + ser(pa.Down.RateBps)
}

func (w *pingWorkload) run(ctx context.Context, pr pair, want time.Duration) {
	tick := time.NewTicker(w.p.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		rtt, err := w.pingOnce(ctx, pr)
		if ctx.Err() != nil {
			return
		}
		w.mu.Lock()
		if err != nil {
			w.failures++
		} else {
			ms := float64(rtt) / 1e6
			w.second[pr.class] = append(w.second[pr.class], ms)
			w.all[pr.class] = append(w.all[pr.class], ms)
			w.excess = append(w.excess, float64(rtt-want)/1e6)
		}
		w.mu.Unlock()
	}
}

func (w *pingWorkload) pingOnce(ctx context.Context, pr pair) (time.Duration, error) {
	src := pr.src.Overlay()
	dst, ok := addrInfoOf(pr.dst)
	if src == nil || !ok {
		return 0, errors.New("gateway down")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := src.Connect(ctx, dst); err != nil {
		return 0, err
	}
	res := <-ping.Ping(ctx, src.Host(), dst.ID)
	return res.RTT, res.Error
}

func (w *pingWorkload) Wait() { w.wg.Wait() }

func (w *pingWorkload) Sample(rec *Recorder) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for class, v := range w.second {
		if len(v) > 0 {
			rec.Set("ping_rtt_ms_p50."+class, quantile(v, 0.5))
		}
		w.second[class] = v[:0]
	}
}

type rttSummary struct {
	Samples int     `json:"samples"`
	P50     float64 `json:"p50_ms"`
	P95     float64 `json:"p95_ms"`
	P99     float64 `json:"p99_ms"`
}

func (w *pingWorkload) Summary() any {
	w.mu.Lock()
	defer w.mu.Unlock()
	classes := map[string]rttSummary{}
	for class, v := range w.all {
		v := append([]float64(nil), v...)
		classes[class] = rttSummary{Samples: len(v), P50: quantile(v, .5), P95: quantile(v, .95), P99: quantile(v, .99)}
	}
	ex := append([]float64(nil), w.excess...)
	return map[string]any{
		"pairs":                  len(w.pairs),
		"failures":               w.failures,
		"rtt_by_class":           classes,
		"rtt_excess_ms_p50":      nanToNil(quantile(ex, .5)),
		"rtt_excess_ms_p95":      nanToNil(quantile(ex, .95)),
		"rtt_excess_explanation": "measured libp2p ping RTT minus the RTT configured by the topology (idle links, ~100-byte packets)",
	}
}

func (w *pingWorkload) Report(rec *Recorder) (report.Table, []report.Plot) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t := report.Table{Title: "ping", Columns: []string{"pair class", "samples", "RTT p50 (ms)", "p95 (ms)", "p99 (ms)"}}
	cdf := report.Plot{Title: "Ping RTT by pair class", Kind: report.CDF, XLabel: "RTT (ms)", YLabel: "fraction of pings", LogX: true}
	line := report.Plot{Title: "Ping RTT over time (median per second)", Kind: report.Line, XLabel: "time (s)", YLabel: "RTT (ms)"}
	for _, class := range pairClasses {
		v := append([]float64(nil), w.all[class]...)
		if len(v) == 0 {
			continue
		}
		t.Rows = append(t.Rows, []string{class, fmt.Sprint(len(v)), f2(quantile(v, .5)), f2(quantile(v, .95)), f2(quantile(v, .99))})
		cdf.Series = append(cdf.Series, report.Series{Name: class, Values: v})
		x, y := rec.Series("ping_rtt_ms_p50." + class)
		line.Series = append(line.Series, report.Series{Name: class, X: x, Y: y})
	}
	ex := append([]float64(nil), w.excess...)
	exPlot := report.Plot{Title: "Measured minus configured RTT", Kind: report.CDF, XLabel: "excess RTT (ms)", YLabel: "fraction of pings",
		Series:  []report.Series{{Name: "all pairs", Values: ex}},
		Caption: "How far the emulated network plus libp2p add to the RTT the topology prescribes; near 0 means the emulator is faithful."}
	return t, []report.Plot{cdf, line, exPlot}
}

// ---- throughput: bulk transfers between chosen pairs over libp2p streams.

// BulkProtocol is the emulator's bulk-transfer protocol, served by every gateway.
const BulkProtocol = "/nanodc/emulator/bulk/1.0.0"

type throughputParams struct {
	Pairs int `yaml:"pairs"`
	// Bytes per transfer; each pair repeats transfers back to back until the end.
	Bytes int64 `yaml:"bytes"`
	// Start delays the first transfers into the measured phase.
	Start time.Duration `yaml:"start"`
}

type transfer struct {
	class      string
	bottleneck float64 // configured Mbit/s: min(sender uplink, receiver downlink)
	mbps       float64
}

type throughputWorkload struct {
	p        throughputParams
	pairs    []pair
	wg       sync.WaitGroup
	received atomic.Int64 // bytes read by receivers, for the per-second series

	mu        sync.Mutex
	transfers []transfer
	failures  int
}

func newThroughputWorkload(params *yaml.Node) (Workload, error) {
	p := throughputParams{Pairs: 5, Bytes: 2 << 20}
	if err := yamlstrict.DecodeNode(params, &p); err != nil {
		return nil, err
	}
	if p.Pairs < 1 || p.Bytes < 1 || p.Start < 0 {
		return nil, errors.New("pairs and bytes must be >= 1, start >= 0")
	}
	return &throughputWorkload{p: p}, nil
}

// NodeStarted serves the bulk protocol: read everything, count it, answer with the count.
func (w *throughputWorkload) NodeStarted(g *Gateway) {
	o := g.Overlay()
	if o == nil {
		return
	}
	o.Host().SetStreamHandler(BulkProtocol, func(s network.Stream) {
		defer s.Close()
		buf := make([]byte, 32<<10)
		var n int64
		for {
			k, err := s.Read(buf)
			n += int64(k)
			w.received.Add(int64(k))
			if err == io.EOF {
				break
			}
			if err != nil {
				_ = s.Reset()
				return
			}
		}
		var ack [8]byte
		binary.BigEndian.PutUint64(ack[:], uint64(n))
		_, _ = s.Write(ack[:])
	})
}

func (w *throughputWorkload) Start(ctx context.Context, env *Env) error {
	for _, g := range env.Fleet.Gateways {
		w.NodeStarted(g)
	}
	w.pairs = pickPairs(env, w.p.Pairs)
	for _, pr := range w.pairs {
		ps, pd := env.Fleet.scenario.Profiles[pr.src.Profile], env.Fleet.scenario.Profiles[pr.dst.Profile]
		bottleneck := float64(min(ps.Up.RateBps, pd.Down.RateBps)) / 1e6
		w.wg.Go(func() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(w.p.Start):
			}
			for ctx.Err() == nil {
				mbps, err := w.send(ctx, pr)
				if ctx.Err() != nil {
					return // cut short by the end of the run: not a result
				}
				w.mu.Lock()
				if err != nil {
					w.failures++
				} else {
					w.transfers = append(w.transfers, transfer{class: pr.class, bottleneck: bottleneck, mbps: mbps})
				}
				w.mu.Unlock()
				if err != nil {
					time.Sleep(time.Second)
				}
			}
		})
	}
	return nil
}

func (w *throughputWorkload) send(ctx context.Context, pr pair) (float64, error) {
	src := pr.src.Overlay()
	dst, ok := addrInfoOf(pr.dst)
	if src == nil || !ok {
		return 0, errors.New("gateway down")
	}
	if err := src.Connect(ctx, dst); err != nil {
		return 0, err
	}
	s, err := src.Host().NewStream(ctx, dst.ID, BulkProtocol)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	start := time.Now()
	buf := make([]byte, 32<<10)
	for left := w.p.Bytes; left > 0; {
		k, err := s.Write(buf[:min(int64(len(buf)), left)])
		if err != nil {
			return 0, err
		}
		left -= int64(k)
	}
	if err := s.CloseWrite(); err != nil {
		return 0, err
	}
	var ack [8]byte
	if _, err := io.ReadFull(s, ack[:]); err != nil {
		return 0, err
	}
	if got := int64(binary.BigEndian.Uint64(ack[:])); got != w.p.Bytes {
		return 0, fmt.Errorf("receiver got %d bytes of %d", got, w.p.Bytes)
	}
	return float64(w.p.Bytes*8) / time.Since(start).Seconds() / 1e6, nil
}

func (w *throughputWorkload) Wait() { w.wg.Wait() }

func (w *throughputWorkload) Sample(rec *Recorder) {
	rec.Set("throughput_goodput_mbps", float64(w.received.Swap(0)*8)/1e6)
}

func (w *throughputWorkload) Summary() any {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ratios, mbps []float64
	for _, t := range w.transfers {
		ratios = append(ratios, t.mbps/t.bottleneck)
		mbps = append(mbps, t.mbps)
	}
	return map[string]any{
		"pairs":                     len(w.pairs),
		"transfers":                 len(w.transfers),
		"failures":                  w.failures,
		"bytes_per_transfer":        w.p.Bytes,
		"goodput_mbps_p50":          nanToNil(quantile(mbps, .5)),
		"goodput_to_bottleneck_p50": nanToNil(quantile(ratios, .5)),
		"goodput_to_bottleneck_p10": nanToNil(quantile(ratios, .1)),
	}
}

func (w *throughputWorkload) Report(rec *Recorder) (report.Table, []report.Plot) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t := report.Table{Title: "throughput", Columns: []string{"pair class", "transfers", "goodput p50 (Mbit/s)", "goodput / bottleneck p50"}}
	ratio := report.Plot{Title: "Transfer goodput relative to the configured bottleneck", Kind: report.CDF, XLabel: "goodput / min(sender up, receiver down)", YLabel: "fraction of transfers"}
	for _, class := range pairClasses {
		var m, r []float64
		for _, tr := range w.transfers {
			if tr.class == class {
				m, r = append(m, tr.mbps), append(r, tr.mbps/tr.bottleneck)
			}
		}
		if len(m) == 0 {
			continue
		}
		t.Rows = append(t.Rows, []string{class, fmt.Sprint(len(m)), f2(quantile(m, .5)), f2(quantile(r, .5))})
		ratio.Series = append(ratio.Series, report.Series{Name: class, Values: r})
	}
	x, y := rec.Series("throughput_goodput_mbps")
	line := report.Plot{Title: "Bulk goodput, all pairs", Kind: report.Line, XLabel: "time (s)", YLabel: "goodput (Mbit/s)",
		Series: []report.Series{{Name: "received", X: x, Y: y}}}
	return t, []report.Plot{line, ratio}
}

func f2(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.2f", v)
}

// nanToNil keeps NaN (no samples) out of JSON, which cannot encode it.
func nanToNil(v float64) any {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return v
}
