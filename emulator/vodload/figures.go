package vodload

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/nanodc/nanodc/emulator"
	"github.com/nanodc/nanodc/emulator/report"
)

// Summary is the workload's section of summary.json (one per strategy in a comparison).
type Summary struct {
	Strategy string `json:"strategy"`
	// OffloadRatio is useful peer bytes / (useful peer + origin bytes) while viewers watch:
	// of what gateways fetched over the network, the share peers supplied. Wasted peer bytes
	// (duplicates) offload nothing and are left out; pushes (made before the viewers arrive,
	// off-peak in a real deployment) and reads of a gateway's own cache are reported apart.
	OffloadRatio float64 `json:"offload_ratio"`
	// UploadBoundOffload is the best offload the gateways' upload capacity allows for this
	// workload, on the same bytes: the origin must at least send one copy of each watched
	// title that was not pushed in full beforehand, and whatever the network demand exceeds
	// the fleet's usable upload capacity (line rates × upload_share) by.
	UploadBoundOffload float64 `json:"upload_bound_offload"`
	StartupS           struct {
		P50 float64 `json:"p50"`
		P95 float64 `json:"p95"`
		Max float64 `json:"max"`
	} `json:"startup_s"`
	RebufferRatio  float64        `json:"rebuffer_ratio"` // stall time / watch time
	Stalls         int            `json:"stalls"`
	StallSeconds   float64        `json:"stall_s"`
	WatchSeconds   float64        `json:"watch_s"`
	Sessions       int            `json:"sessions"`
	FailedSessions int            `json:"failed_sessions"`
	FailReasons    map[string]int `json:"fail_reasons,omitempty"`
	// CheckedBytes are the bytes players received that were hashed against the torrent's
	// piece hashes (all of them), and CorruptPieces the pieces that did not match: the issue's
	// "no corrupted byte ever reaches a player", checked for every viewer (must be 0).
	CheckedBytes  int64 `json:"checked_bytes"`
	CorruptPieces int   `json:"corrupt_pieces"`
	OriginBytes   int64 `json:"origin_bytes"`
	PeerBytes     int64 `json:"peer_bytes"`
	CrossISPBytes int64 `json:"cross_isp_bytes"`
	// PeerWastedBytes came from peers but were not needed (a duplicate, or a piece the origin
	// filled meanwhile): peer uplink spent for nothing. Part of PeerBytes.
	PeerWastedBytes int64 `json:"peer_wasted_bytes"`
	PushOriginBytes int64 `json:"push_origin_bytes"`
	// UploadYields counts the times a gateway held a title's upload back for a scarcer one
	// (the nanodc strategy's scarce-first uplink), summed over the apps running at the end.
	UploadYields int64 `json:"upload_yields,omitempty"`
	// PeerStreamsLost counts peer-wire streams cut by their connection going away under them
	// (vod.Stats), summed over the gateways: connection churn under the streams.
	PeerStreamsLost int64 `json:"peer_streams_lost"`
	// OriginResets counts the gap fills given up for receiving nothing (vod.Stats), summed
	// over the gateways: outages on the way to the origin.
	OriginResets int64 `json:"origin_resets"`
	// UplinkCancels counts blocks gateways' upload queues dropped for their requester's
	// cancel (vod.Stats), summed over the gateways: uplink not spent on unwanted data.
	UplinkCancels int64 `json:"uplink_cancels"`
	// Pushed says where each pushed title was placed, and whether every replica's push
	// completed before the viewers came.
	Pushed []PushedTitle `json:"pushed,omitempty"`
	// PrefixOriginBytes is the part of PushOriginBytes prefix pushes took (push.prefix), and
	// PushSeconds / PrefixPushSeconds when the replicas, then the prefixes, were in place
	// (seconds from the workload's start; the warm-up is the time they had).
	PrefixOriginBytes int64   `json:"prefix_origin_bytes,omitempty"`
	PushSeconds       float64 `json:"push_seconds,omitempty"`
	PrefixPushSeconds float64 `json:"prefix_push_seconds,omitempty"`
	// PrefixPushes gateways were asked for a prefix; PrefixesPlaced had it in place before
	// the warm-up ended (the others hold part of it).
	PrefixPushes   int `json:"prefix_pushes,omitempty"`
	PrefixesPlaced int `json:"prefixes_placed,omitempty"`
	// LocalBytes were read by viewers from their own gateway's cache (pushed replicas).
	LocalBytes int64 `json:"local_bytes"`
	// GapFillBytes are the nanodc strategy's deadline fetches from the origin, and
	// UnavoidableBytes those of them that no peers could have supplied in time: by the
	// piece's deadline (the startup goal, 1 s, for a stream's first piece), the uplink the
	// holders left unused in the last second, all of it and with no time to connect, would
	// not have carried the piece. UnavoidableByRateBytes is the earlier, deadline-blind
	// figure: no holder had a bitrate's worth of spare uplink.
	GapFillBytes           int64 `json:"gap_fill_bytes"`
	UnavoidableBytes       int64 `json:"unavoidable_origin_bytes"`
	UnavoidableByRateBytes int64 `json:"unavoidable_origin_bytes_by_rate"`
	// OriginPerUnavoidable is the origin goal as one figure (<= 1.05): origin bytes
	// while viewing ÷ UnavoidableBytes (0 when nothing was unavoidable, as for the baselines,
	// whose fetches are not gap fills).
	OriginPerUnavoidable float64 `json:"origin_per_unavoidable,omitempty"`
	// UnavoidableWholeBlocksBytes is the same judgement with the unit peers send: a holder
	// helps only with the whole 16 KiB blocks its own spare uplink carries by the deadline
	// (UnavoidableBytes adds up every holder's spare bytes, however thin on each); and
	// OriginPerUnavoidableWholeBlocks the origin's bytes while viewing against it.
	UnavoidableWholeBlocksBytes     int64   `json:"unavoidable_origin_bytes_whole_blocks"`
	OriginPerUnavoidableWholeBlocks float64 `json:"origin_per_unavoidable_whole_blocks,omitempty"`
	// NoHolderBytes are gap fills no other gateway held at all (busy holders aside), and
	// GapFillByTitle the gap-fill bytes per title, most popular first: where the origin's
	// bytes went, and whether placement or uplink capacity was short.
	NoHolderBytes int64 `json:"no_holder_origin_bytes"`
	// AvoidableByReason splits the gap fills a holder with spare uplink could have served
	// by why they were fetched ("startup", "deadline"): which mechanism to sharpen.
	AvoidableByReason map[string]int64 `json:"avoidable_origin_bytes_by_reason,omitempty"`
	// AvoidableByHolder splits them by fetch reason and where the nearest holder with spare
	// uplink was ("deadline/0-torrent-peer": a peer of the title's swarm; "1-neighbour-…": an
	// overlay neighbour outside it; "2-same-isp", "3-other-isp": not connected): whether
	// using peers better or finding more of them would help.
	AvoidableByHolder map[string]int64 `json:"avoidable_origin_bytes_by_holder,omitempty"`
	GapFillByTitle    []int64          `json:"gap_fill_bytes_by_title,omitempty"`
	OriginServerBytes int64            `json:"origin_server_bytes"` // what the origin itself counted, pushes included
	PushErrors        []string         `json:"push_errors,omitempty"`
	// Each viewer, for a closer look.
	Viewers []ViewerFigures `json:"viewers"`
}

// PushedTitle is one title of the push plan: its replicas (gateway names) and whether all of
// them held it whole by the end of the warm-up.
type PushedTitle struct {
	Title    int      `json:"title"`
	Replicas []string `json:"replicas"`
	Whole    bool     `json:"whole"`
}

// ViewerFigures are one session's figures.
type ViewerFigures struct {
	Title    int     `json:"title"`
	Gateway  string  `json:"gateway"`
	ArrivalS float64 `json:"arrival_s"`
	StartupS float64 `json:"startup_s"`
	Stalls   int     `json:"stalls"`
	StallS   float64 `json:"stall_s"`
	WatchedS float64 `json:"watched_s"`
	Received int64   `json:"received_bytes"`
	Failed   string  `json:"failed,omitempty"`
	// StallsAtS are when the stalls began (seconds into the measured phase, the first
	// maxStallTimes), to set beside the fault schedule and the time series.
	StallsAtS []float64 `json:"stalls_at_s,omitempty"`
}

// Sample records the per-second series: offload, origin and peer rates, viewers, demand
// against upload capacity.
func (w *workload) Sample(rec *emulator.Recorder) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.env == nil {
		return
	}
	c := w.counters()
	o, p := c.origin, c.peer-c.wasted // useful peer bytes, as in the summary
	if !w.baseTaken && !time.Now().Before(w.viewingFrom) {
		w.baseTaken = true
		w.base, w.basePush = c, w.pushBytes
	}
	dO, dP := float64(o-w.lastOrigin), float64(p-w.lastPeer)
	w.lastOrigin, w.lastPeer = o, p
	rec.Set("vod.origin_mbps", dO*8/1e6)
	rec.Set("vod.peer_mbps", dP*8/1e6)
	off := math.NaN()
	if dO+dP > 0 {
		off = dP / (dO + dP)
	}
	rec.Set("vod.offload", off)
	active, receiving := 0, 0
	for _, s := range w.sessions {
		s.mu.Lock()
		if s.active {
			active++
		}
		if s.receiving && !w.replicas[s.title][s.gw] {
			receiving++ // a viewer on a replica reads locally: no network demand
		}
		s.mu.Unlock()
	}
	rate := float64(w.p.BitrateBps) / 8
	capacity := 0.0
	if w.spareUp == nil {
		w.spareUp, w.lastUp = map[*emulator.Gateway]float64{}, map[*emulator.Gateway]uint64{}
	}
	for _, g := range w.env.Fleet.Gateways {
		// What the gateway may upload: its line rate times the upload share it is configured
		// with (the rest is kept for the home's own traffic).
		up := float64(w.env.Fleet.Profile(g.Profile).Up.RateBps) / 8 * w.p.UploadShare
		sent := g.Host.Stats().Up.Bytes
		w.spareUp[g] = up - float64(sent-w.lastUp[g])
		w.lastUp[g] = sent
		if g.Node() != nil {
			capacity += up
		}
	}
	demand := float64(receiving) * rate
	w.excessBytes += max(0, demand-capacity)
	rec.Set("vod.viewers", float64(active))
	rec.Set("vod.demand_mbps", demand*8/1e6)
	rec.Set("vod.upload_capacity_mbps", capacity*8/1e6)
}

// Summary computes the figures.
func (w *workload) Summary() any {
	w.mu.Lock()
	defer w.mu.Unlock()
	var s Summary
	if w.env == nil {
		return s
	}
	live := false
	for _, g := range w.env.Fleet.Gateways {
		if app := w.app(g.Node()); app != nil {
			s.Strategy = string(app.Strategy())
			live = true
			break
		}
	}
	if !live && w.lastSummary != nil {
		// The fleet has stopped (Compare runs after every variant's fleet is gone): the
		// gateways' own figures went with it, so the summary taken at the end of the run stands.
		return *w.lastSummary
	}
	c := w.counters()
	if !w.baseTaken {
		w.base, w.basePush = c, w.pushBytes
	}
	viewing := c.minus(w.base)
	s.PushOriginBytes = w.pushBytes
	s.PrefixOriginBytes = w.prefixPushBytes
	s.PushSeconds, s.PrefixPushSeconds = w.pushedAt.Seconds(), w.prefixesPlacedAt.Seconds()
	s.PrefixPushes, s.PrefixesPlaced = w.prefixPushes, w.prefixesDone
	s.OriginBytes = viewing.origin - (w.pushBytes - w.basePush)
	s.PeerBytes = viewing.peer
	s.CrossISPBytes = viewing.cross
	s.PeerWastedBytes = viewing.wasted
	useful := s.PeerBytes - s.PeerWastedBytes
	network := useful + s.OriginBytes
	if network > 0 {
		s.OffloadRatio = float64(useful) / float64(network)
	}
	s.GapFillBytes, s.UnavoidableBytes, s.NoHolderBytes = w.gapFills, w.unavoidable, w.noHolder
	s.UnavoidableByRateBytes = w.unavoidableByRate
	s.UnavoidableWholeBlocksBytes = w.unavoidableBlocks
	s.OriginPerUnavoidable = originPer(s.OriginBytes, s.UnavoidableBytes)
	s.OriginPerUnavoidableWholeBlocks = originPer(s.OriginBytes, s.UnavoidableWholeBlocksBytes)
	s.AvoidableByReason = maps.Clone(w.avoidableByReason)
	s.AvoidableByHolder = maps.Clone(w.avoidableByHolder)
	if w.gapFills > 0 {
		s.GapFillByTitle = make([]int64, len(w.entries))
		for i, e := range w.entries {
			s.GapFillByTitle[i] = w.gapFillsByCID[e.CID]
		}
	}
	if w.srv != nil {
		s.OriginServerBytes = w.srv.Stats().BytesServed
	}
	s.PushErrors = w.pushErrors
	for _, g := range w.env.Fleet.Gateways {
		if app := w.app(g.Node()); app != nil {
			st := app.Stats()
			for _, ts := range st.Titles {
				s.UploadYields += ts.UploadYields
			}
			s.PeerStreamsLost += st.PeerStreamsLost
			s.OriginResets += st.OriginResets
			s.UplinkCancels += st.UplinkCancels
		}
	}
	for _, t := range slices.Sorted(maps.Keys(w.replicas)) {
		pt := PushedTitle{Title: t, Whole: w.pushedWhole[t]}
		for g := range w.replicas[t] {
			pt.Replicas = append(pt.Replicas, g.Name)
		}
		slices.Sort(pt.Replicas)
		s.Pushed = append(s.Pushed, pt)
	}
	var startups []float64
	firstCopy := map[int]int64{}
	var received int64
	s.FailReasons = map[string]int{}
	for _, ss := range w.sessions {
		ss.mu.Lock()
		if ss.active || ss.received > 0 || ss.failed != "" || ss.started {
			s.Sessions++
		}
		if ss.failed != "" {
			s.FailedSessions++
			s.FailReasons[ss.failed]++
		}
		if ss.started {
			startups = append(startups, ss.startup.Seconds())
		}
		s.Stalls += ss.stalls
		s.StallSeconds += ss.stall.Seconds()
		s.WatchSeconds += ss.watched.Seconds()
		firstCopy[ss.title] = max(firstCopy[ss.title], ss.received)
		if ss.active || ss.received > 0 || ss.failed != "" || ss.started {
			s.Viewers = append(s.Viewers, ViewerFigures{Title: ss.title, Gateway: ss.gw.Name, ArrivalS: ss.arrival.Seconds(),
				StartupS: ss.startup.Seconds(), Stalls: ss.stalls, StallS: ss.stall.Seconds(), WatchedS: ss.watched.Seconds(),
				Received: ss.received, Failed: ss.failed, StallsAtS: slices.Clone(ss.stallsAt)})
		}
		received += ss.received
		s.CheckedBytes += ss.checked
		s.CorruptPieces += ss.corrupt
		ss.mu.Unlock()
	}
	if len(s.FailReasons) == 0 {
		s.FailReasons = nil
	}
	slices.Sort(startups)
	s.StartupS.P50, s.StartupS.P95 = quantile(startups, 0.5), quantile(startups, 0.95)
	if len(startups) > 0 {
		s.StartupS.Max = startups[len(startups)-1]
	}
	if s.WatchSeconds > 0 {
		s.RebufferRatio = s.StallSeconds / s.WatchSeconds
	}
	s.LocalBytes = max(0, received-network)
	var first int64
	for t, b := range firstCopy {
		if !w.pushedWhole[t] {
			first += b
		}
	}
	if network > 0 {
		minOrigin := max(float64(first), w.excessBytes)
		s.UploadBoundOffload = max(0, 1-minOrigin/float64(network))
	}
	if live {
		w.lastSummary = &s
	}
	return s
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// Report is the workload's part of a single run's report.
func (w *workload) Report(rec *emulator.Recorder) (report.Table, []report.Plot) {
	s := w.Summary().(Summary)
	tab := report.Table{Title: "Video on demand (" + s.Strategy + ")", Columns: []string{"figure", "value"}, Rows: rowsOf(s)}
	line := func(title, ylabel string, names ...string) report.Plot {
		p := report.Plot{Title: title, Kind: report.Line, XLabel: "time (s)", YLabel: ylabel}
		for _, n := range names {
			t, y := rec.Series(n)
			p.Series = append(p.Series, report.Series{Name: n, X: t, Y: y})
		}
		return p
	}
	return tab, []report.Plot{
		line("Offload (peer share of video bytes, per second)", "offload", "vod.offload"),
		line("Video bytes into gateways", "Mbit/s", "vod.origin_mbps", "vod.peer_mbps"),
		line("Demand against the fleet's upload capacity", "Mbit/s", "vod.demand_mbps", "vod.upload_capacity_mbps"),
		line("Viewers", "viewers", "vod.viewers"),
		{Title: "Startup delay", Kind: report.CDF, XLabel: "startup (s)", Series: []report.Series{{Name: s.Strategy, Values: w.startups()}}},
	}
}

func (w *workload) startups() []float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []float64
	for _, ss := range w.sessions {
		ss.mu.Lock()
		if ss.started {
			out = append(out, ss.startup.Seconds())
		}
		ss.mu.Unlock()
	}
	return out
}

func (w *workload) stallShares() []float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []float64
	for _, ss := range w.sessions {
		ss.mu.Lock()
		if ss.watched > 0 {
			out = append(out, ss.stall.Seconds()/ss.watched.Seconds())
		}
		ss.mu.Unlock()
	}
	return out
}

func rowsOf(s Summary) [][]string {
	mb := func(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }
	return [][]string{
		{"offload ratio", fmt.Sprintf("%.3f (upload bound %.3f)", s.OffloadRatio, s.UploadBoundOffload)},
		{"startup p50 / p95 / max", fmt.Sprintf("%.2f / %.2f / %.2f s", s.StartupS.P50, s.StartupS.P95, s.StartupS.Max)},
		{"rebuffer ratio", fmt.Sprintf("%.4f (%d stalls, %.1f s of %.0f s watched)", s.RebufferRatio, s.Stalls, s.StallSeconds, s.WatchSeconds)},
		{"sessions / failed", fmt.Sprintf("%d / %d", s.Sessions, s.FailedSessions)},
		{"corrupt pieces at players (of bytes checked)", fmt.Sprintf("%d (%s)", s.CorruptPieces, mb(s.CheckedBytes))},
		{"origin / peer / cross-ISP bytes", mb(s.OriginBytes) + " / " + mb(s.PeerBytes) + " / " + mb(s.CrossISPBytes)},
		{"peer bytes wasted (duplicates)", mb(s.PeerWastedBytes)},
		{"peer streams lost (connection gone under them)", fmt.Sprint(s.PeerStreamsLost)},
		{"origin connections redialled (fills that received nothing)", fmt.Sprint(s.OriginResets)},
		{"upload blocks dropped for a cancel before they were sent", fmt.Sprint(s.UplinkCancels)},
		{"push origin bytes (of which prefixes)", mb(s.PushOriginBytes) + " (" + mb(s.PrefixOriginBytes) + ")"},
		{"titles pushed (whole) / replicas / prefixes in place after", fmt.Sprintf("%d (%d) / %.1f / %.1f s (%d of %d prefixes whole)",
			len(s.Pushed), wholeTitles(s.Pushed), s.PushSeconds, s.PrefixPushSeconds, s.PrefixesPlaced, s.PrefixPushes)},
		{"read from the gateway's own cache", mb(s.LocalBytes)},
		{"gap fills / no peers could send in time (by rate alone) / no holder at all", mb(s.GapFillBytes) + " / " + mb(s.UnavoidableBytes) + " (" + mb(s.UnavoidableByRateBytes) + ") / " + mb(s.NoHolderBytes)},
		{"origin ÷ no peers could send in time (goal <= 1.05)", ratioText(s.OriginPerUnavoidable)},
		{"the same, holders sending whole blocks of their own spare uplink", ratioText(s.OriginPerUnavoidableWholeBlocks, s.UnavoidableWholeBlocksBytes)},
		{"avoidable gap fills by reason", avoidableText(s.AvoidableByReason)},
		{"avoidable gap fills by nearest spare holder", avoidableText(s.AvoidableByHolder)},
	}
}

// ratioText formats an origin ratio, "–" where there were no gap fills to judge (0), and
// after it the unavoidable bytes it rests on when those are given.
func ratioText(ratio float64, unavoidable ...int64) string {
	if ratio == 0 {
		return "–"
	}
	text := fmt.Sprintf("%.3f×", ratio)
	for _, b := range unavoidable {
		text += fmt.Sprintf(" (%.1f MB not in time)", float64(b)/1e6)
	}
	return text
}

// originPer is origin ÷ unavoidable, 0 when nothing was unavoidable (nothing to judge).
func originPer(origin, unavoidable int64) float64 {
	if unavoidable <= 0 {
		return 0
	}
	return float64(origin) / float64(unavoidable)
}

// avoidableText lists the avoidable gap-fill bytes by reason, largest first.
func avoidableText(by map[string]int64) string {
	if len(by) == 0 {
		return "none"
	}
	reasons := slices.SortedFunc(maps.Keys(by), func(a, b string) int { return cmp.Compare(by[b], by[a]) })
	parts := make([]string, len(reasons))
	for i, r := range reasons {
		parts[i] = fmt.Sprintf("%s %.1f MB", r, float64(by[r])/1e6)
	}
	return strings.Join(parts, ", ")
}

// Compare puts the strategies side by side.
func (w *workload) Compare(variants []string, runs []emulator.Workload, recs []*emulator.Recorder) (report.Table, []report.Plot) {
	tab := report.Table{Title: "Video on demand: strategies compared", Columns: append([]string{"figure"}, variants...)}
	sums := make([]Summary, len(runs))
	for i, r := range runs {
		sums[i] = r.(*workload).Summary().(Summary)
	}
	row := func(name string, f func(Summary) string) {
		r := []string{name}
		for _, s := range sums {
			r = append(r, f(s))
		}
		tab.Rows = append(tab.Rows, r)
	}
	row("offload ratio", func(s Summary) string { return fmt.Sprintf("%.3f", s.OffloadRatio) })
	row("upload-bound offload", func(s Summary) string { return fmt.Sprintf("%.3f", s.UploadBoundOffload) })
	row("startup p50 (s)", func(s Summary) string { return fmt.Sprintf("%.2f", s.StartupS.P50) })
	row("startup p95 (s)", func(s Summary) string { return fmt.Sprintf("%.2f", s.StartupS.P95) })
	row("rebuffer ratio", func(s Summary) string { return fmt.Sprintf("%.4f", s.RebufferRatio) })
	row("stalls", func(s Summary) string { return fmt.Sprint(s.Stalls) })
	row("sessions / failed", func(s Summary) string { return fmt.Sprintf("%d / %d", s.Sessions, s.FailedSessions) })
	row("corrupt pieces at players", func(s Summary) string { return fmt.Sprint(s.CorruptPieces) })
	row("origin MB", func(s Summary) string { return fmt.Sprintf("%.1f", float64(s.OriginBytes)/1e6) })
	row("peer MB", func(s Summary) string { return fmt.Sprintf("%.1f", float64(s.PeerBytes)/1e6) })
	row("peer MB wasted", func(s Summary) string { return fmt.Sprintf("%.1f", float64(s.PeerWastedBytes)/1e6) })
	row("peer streams lost", func(s Summary) string { return fmt.Sprint(s.PeerStreamsLost) })
	row("origin redials", func(s Summary) string { return fmt.Sprint(s.OriginResets) })
	row("cross-ISP MB", func(s Summary) string { return fmt.Sprintf("%.1f", float64(s.CrossISPBytes)/1e6) })
	row("push origin MB", func(s Summary) string { return fmt.Sprintf("%.1f", float64(s.PushOriginBytes)/1e6) })
	row("local cache MB", func(s Summary) string { return fmt.Sprintf("%.1f", float64(s.LocalBytes)/1e6) })
	row("gap fills MB (not in time / no holder)", func(s Summary) string {
		return fmt.Sprintf("%.1f (%.1f / %.1f)", float64(s.GapFillBytes)/1e6, float64(s.UnavoidableBytes)/1e6, float64(s.NoHolderBytes)/1e6)
	})
	row("origin ÷ not in time", func(s Summary) string { return ratioText(s.OriginPerUnavoidable) })
	offload := report.Plot{Title: "Offload over time", Kind: report.Line, XLabel: "time (s)", YLabel: "peer share of video bytes"}
	origin := report.Plot{Title: "Origin traffic over time", Kind: report.Line, XLabel: "time (s)", YLabel: "Mbit/s"}
	startup := report.Plot{Title: "Startup delay", Kind: report.CDF, XLabel: "startup (s)"}
	stalls := report.Plot{Title: "Rebuffering per session (stall time / watch time)", Kind: report.CDF, XLabel: "rebuffer ratio"}
	for i, v := range variants {
		t, y := recs[i].Series("vod.offload")
		offload.Series = append(offload.Series, report.Series{Name: v, X: t, Y: y})
		t, y = recs[i].Series("vod.origin_mbps")
		origin.Series = append(origin.Series, report.Series{Name: v, X: t, Y: y})
		wl := runs[i].(*workload)
		startup.Series = append(startup.Series, report.Series{Name: v, Values: wl.startups()})
		stalls.Series = append(stalls.Series, report.Series{Name: v, Values: wl.stallShares()})
	}
	return tab, []report.Plot{offload, origin, startup, stalls}
}

func wholeTitles(pushed []PushedTitle) int {
	n := 0
	for _, p := range pushed {
		if p.Whole {
			n++
		}
	}
	return n
}
