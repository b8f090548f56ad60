package vod

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/RoaringBitmap/roaring"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/nanodc/nanodc/overlay"
	"github.com/nanodc/nanodc/vod/catalog"
)

// Stats are the gateway's VoD figures.
type Stats struct {
	Strategy Strategy `json:"strategy"`
	// Bytes received by source: the origin (gap fills, pushes, webseed) and peers.
	OriginBytes  int64 `json:"origin_bytes"`
	PeerBytes    int64 `json:"peer_bytes"`
	CrossISPPeer int64 `json:"cross_isp_peer_bytes"`
	// PeerWastedBytes is title data peers sent that was not needed (duplicates, or pieces
	// completed from elsewhere meanwhile): their uplink spent for nothing.
	PeerWastedBytes int64 `json:"peer_wasted_bytes"`
	// Bytes uploaded to other gateways.
	UploadedBytes int64 `json:"uploaded_bytes"`
	CacheBytes    int64 `json:"cache_bytes"`
	CacheQuota    int64 `json:"cache_quota_bytes"`
	BannedPeers   int   `json:"banned_peers"`
	// PeerStreamsLost counts peer-wire streams that ended because their connection went away
	// under them (a peer's connection manager, a crash, a partition) rather than because
	// either side was done with them.
	PeerStreamsLost int64 `json:"peer_streams_lost"`
	// OriginResets counts the times the origin connections were dropped because a gap fill
	// received nothing for a stall period (an outage on the way to the origin).
	OriginResets int64 `json:"origin_resets"`
	// UplinkCancels counts blocks the nanodc strategy's upload queue dropped because their
	// requester cancelled them while they waited for the upload cap.
	UplinkCancels int64        `json:"uplink_cancels"`
	Titles        []TitleStats `json:"titles"`
}

// TitleStats are one title's figures on this gateway.
type TitleStats struct {
	CID             string `json:"cid"`
	Name            string `json:"name"`
	CachedBytes     int64  `json:"cached_bytes"`
	Pinned          bool   `json:"pinned"`
	PrefixBytes     int64  `json:"prefix_bytes,omitempty"` // placed by a prefix push, kept through eviction
	Plays           int    `json:"plays"`
	Streams         int64  `json:"streams"`
	Stalls          int64  `json:"stalls"`
	ServedCache     int64  `json:"served_from_cache_bytes"`
	ServedNetwork   int64  `json:"served_fetched_bytes"`
	OriginBytes     int64  `json:"origin_bytes"`
	PeerBytes       int64  `json:"peer_bytes"`
	PeerWastedBytes int64  `json:"peer_wasted_bytes"`
	UploadedBytes   int64  `json:"uploaded_bytes"`
	Peers           int    `json:"peers"`
	// UploadYields counts the times the title's upload was held back for a scarcer title's
	// (the nanodc strategy's scarce-first uplink); UploadYielding: held back now.
	UploadYields   int64 `json:"upload_yields,omitempty"`
	UploadYielding bool  `json:"upload_yielding,omitempty"`
}

// Stats returns the current figures.
func (a *App) Stats() Stats {
	st := Stats{Strategy: a.opts.Strategy, OriginBytes: a.origin.bytes.Load(), CacheQuota: a.opts.CacheBytes}
	a.mu.Lock()
	for _, pc := range a.peers {
		st.PeerBytes += pc.bytes
		if pc.locality == 2 {
			st.CrossISPPeer += pc.bytes
		}
	}
	titles := make([]*title, 0, len(a.titles))
	for _, ti := range a.titles {
		titles = append(titles, ti)
	}
	states := map[string]titleState{}
	for c, s := range a.state.Titles {
		states[c] = *s
	}
	a.mu.Unlock()
	for _, ti := range titles {
		state := states[ti.entry.CID]
		ts := TitleStats{
			CID: ti.entry.CID, Name: ti.entry.Name,
			Pinned: state.Pinned, PrefixBytes: state.Prefix, Plays: state.Plays,
			Streams: ti.counters.streams.Load(), Stalls: ti.counters.stalls.Load(),
			ServedCache: ti.counters.servedCache.Load(), ServedNetwork: ti.counters.servedNetwork.Load(),
			OriginBytes:  ti.counters.originBytes.Load(),
			UploadYields: ti.counters.uploadYields.Load(), UploadYielding: ti.counters.uploadYielding.Load(),
		}
		if t := ti.t; t != nil {
			ts.CachedBytes = t.BytesCompleted()
			s := t.Stats()
			ts.PeerBytes = s.PeerConns.BytesReadData.Int64()
			ts.PeerWastedBytes = ts.PeerBytes - s.PeerConns.BytesReadUsefulData.Int64()
			ts.UploadedBytes = s.PeerConns.BytesWrittenData.Int64()
			ts.Peers = len(t.PeerConns())
		}
		st.CacheBytes += ts.CachedBytes
		st.UploadedBytes += ts.UploadedBytes
		st.PeerWastedBytes += ts.PeerWastedBytes
		st.Titles = append(st.Titles, ts)
	}
	slices.SortFunc(st.Titles, func(x, y TitleStats) int { return cmpString(x.Name, y.Name) })
	if a.client != nil {
		st.BannedPeers = len(a.client.BadPeerIPs())
		st.PeerStreamsLost = a.streamsLost.Load()
	}
	if a.origin != nil {
		st.OriginResets = a.origin.resets.Load()
	}
	if a.upq != nil {
		st.UplinkCancels = a.upq.cancelled.Load()
	}
	return st
}

func (a *App) sampleMetrics() {
	st := a.Stats()
	a.metrics.uploaded.Set(float64(st.UploadedBytes))
	a.metrics.cacheBytes.Set(float64(st.CacheBytes))
	a.metrics.banned.Set(float64(st.BannedPeers))
}

// Push pre-places a title on this gateway ahead of demand (NaDa-style): the title is added,
// pinned (eviction never takes it) and filled completely, from peers where they have pieces
// and from the origin for the rest. with names the gateways the provider pushes the same
// title to (this one may be among them): they trade pieces, and each takes from the origin only what none of its
// peers can give it, so N replicas cost about one copy from the origin instead of N. It
// returns when the title is complete or ctx ends.
func (a *App) Push(ctx context.Context, e *catalog.Entry, with ...peer.ID) error {
	return a.preplace(ctx, e, 0, with)
}

// PushPrefix places the first prefix bytes of a title (whole pieces) on this gateway: prefix
// caching (Sen, Rexford and Towsley, INFOCOM'99). A viewer of the title then starts from the
// gateway's own disk, with no origin round trip and no new peer connection before the first
// frame, and the prefix's seconds of playback give the stream's peer discovery its time. The
// prefix comes from peers (with: replicas the provider names, usually the nearest ones), and
// from the origin only the pieces no connected peer holds: unlike a whole push, it does not
// turn to the origin to beat ctx's deadline or a slow peer. The prefix survives eviction:
// the rest of the title may go, the prefix is fetched again.
func (a *App) PushPrefix(ctx context.Context, e *catalog.Entry, prefix int64, with ...peer.ID) error {
	if prefix <= 0 {
		return fmt.Errorf("vod: prefix push %q: the prefix must be positive, not %d bytes", e.Name, prefix)
	}
	return a.preplace(ctx, e, prefix, with)
}

// PrefixBytes is how many bytes hold d of a title's playback, at least one (a prefix shorter
// than a piece still places the first piece): what `vod push --prefix d` asks for.
func PrefixBytes(e *catalog.Entry, d time.Duration) int64 {
	return max(1, int64(d.Seconds()*float64(e.BitrateBps)/8))
}

// prefixSpan is the whole pieces that hold the first prefix bytes of a title, as a count and
// in bytes (the whole title for 0, or a prefix beyond its end).
func prefixSpan(e *catalog.Entry, prefix int64) (pieces int, bytes int64) {
	n := e.NumPieces()
	if prefix > 0 && prefix < e.Size {
		n = min(n, (prefix+e.PieceLength-1)/e.PieceLength)
	}
	return int(n), min(n*e.PieceLength, e.Size)
}

// completedBelow is how many bytes of pieces [0, upto) this gateway holds.
func completedBelow(ti *title, upto int) int64 {
	t := ti.t
	if upto == t.NumPieces() {
		return t.BytesCompleted()
	}
	var n int64
	for i := range upto {
		n += pieceSize(ti, i) - t.PieceBytesMissing(i)
	}
	return n
}

// preplace fills a title (prefix 0) or its first prefix bytes; see Push and PushPrefix.
func (a *App) preplace(ctx context.Context, e *catalog.Entry, prefix int64, with []peer.ID) (err error) {
	if a.client == nil {
		return fmt.Errorf("vod: push %q: the %s strategy keeps no cache", e.Name, a.opts.Strategy)
	}
	if err := a.AddTitle(e); err != nil {
		return err
	}
	ti, _ := a.lookup(e.CID)
	a.mu.Lock()
	t, err := a.torrentLocked(ti)
	if err != nil {
		a.mu.Unlock()
		return err
	}
	upto, want := prefixSpan(e, prefix)
	whole := upto == t.NumPieces()
	st := a.state.title(e.CID)
	if whole {
		st.Pinned = true
	} else {
		st.Prefix = max(st.Prefix, prefix)
	}
	st.LastUsed = time.Now()
	ti.pushing = true
	saveErr := a.state.save()
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		ti.pushing = false
		a.mu.Unlock()
	}()
	if saveErr != nil {
		return fmt.Errorf("vod: push %q: %w", e.Name, saveErr)
	}
	a.enforceQuota()
	placed := func() bool { return completedBelow(ti, upto) == want }
	reason := "push"
	if !whole {
		reason = "prefix"
	}
	t.DownloadPieces(0, upto)
	defer func() {
		if err != nil {
			// A push that ends unfinished (its "in place by" passed) stops asking peers for
			// the rest: what arrived stays, a stream still fetches what it reads, and a push
			// again picks up where this one stopped.
			t.CancelPieces(0, upto)
		}
	}()
	if len(with) > 0 {
		co := make([]overlay.PeerInfo, 0, len(with))
		for _, id := range with {
			co = append(co, overlay.PeerInfo{ID: id})
		}
		a.addPeers(t, co)
	}
	// A prefix push with named sources looks for others only if they give nothing: a fleet's
	// prefix pushes all at once would otherwise add a lookup and its dials each.
	discovered := whole || len(with) == 0
	if discovered {
		a.discover(ti)
	}
	// Peers first: the origin is asked only after a short grace for the lookup to connect
	// peers, and then only while the peers leave this gateway starved (none holds a piece it
	// lacks, or none delivered for pushStarved) or behind schedule (ctx has a deadline, the
	// provider's "in place by", that the peers' current rate would miss), one piece at a
	// time (a push is not urgent, and the access link is shared with the household). The
	// piece is a random one that no connected peer holds: gateways pushed together then take
	// different pieces from the origin and trade them, instead of all taking piece 0, then
	// piece 1... An origin that fails is left alone for a while and the push goes on with
	// peers; it fails only when neither has delivered a piece for pushStallLimit.
	originAfter := time.Now().Add(pushPeerGrace)
	if !whole {
		// A prefix's sources may still be connecting (their handshakes queue behind the
		// household's traffic on an ADSL uplink); the origin can wait for them longer.
		originAfter = time.Now().Add(prefixPeerGrace)
	}
	var originErr error
	done, lastProgress := completedBelow(ti, upto), time.Now()
	var recent []pushSample
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if placed() {
			return nil
		}
		now := time.Now()
		if n := completedBelow(ti, upto); n > done {
			done, lastProgress = n, now
		}
		recent = append(slices.DeleteFunc(recent, func(x pushSample) bool { return now.Sub(x.at) > pushRateWindow }), pushSample{now, done})
		if originErr != nil && time.Since(lastProgress) > pushStallLimit {
			return fmt.Errorf("vod: push %q: no peer delivered for %v and the origin failed: %w", e.Name, pushStallLimit, originErr)
		}
		if ctx.Err() == nil && !time.Now().Before(originAfter) {
			unheld, anyMissing, peersCanGive := a.pushOriginPiece(ti, upto)
			if !peersCanGive && !discovered {
				// The named sources hold nothing this gateway lacks: look for others first.
				discovered, originAfter = true, now.Add(prefixPeerGrace)
				a.discover(ti)
				continue
			}
			i := -1
			switch {
			case !peersCanGive:
				i = unheld
			case !whole:
				// A prefix pays off only if it costs the origin less than the startup fills it
				// saves (one piece per viewer who comes), so it never races a deadline or a
				// slow peer with the origin: it waits for the peers that hold it.
			case time.Since(lastProgress) >= pushStarved || pushBehind(ctx, now, want-done, recent):
				i = unheld
				if i < 0 {
					i = anyMissing // peers hold what is missing but do not deliver it
				}
			}
			if i >= 0 && ti.startInflight(i) {
				err := a.fetchPiece(ctx, ti, i, reason, 0)
				ti.endInflight(i)
				if err != nil && ctx.Err() == nil {
					a.log.Debug("push: origin failed; going on with peers", "title", e.Name, "piece", i, "err", err)
					originErr, originAfter = err, time.Now().Add(pushOriginBackoff)
					a.discover(ti)
				}
				continue
			}
		}
		select {
		case <-ctx.Done():
			if originErr != nil {
				return fmt.Errorf("vod: push %q: %w (origin: %v)", e.Name, ctx.Err(), originErr)
			}
			return fmt.Errorf("vod: push %q: %w", e.Name, ctx.Err())
		case <-t.Complete().On():
			return nil
		case <-tick.C:
		}
	}
}

type pushSample struct {
	at   time.Time
	done int64
}

// pushBehind tells whether a push with a deadline will miss it at the rate it progressed over
// the recent samples (oldest first), keeping pushDeadlineMargin in hand.
func pushBehind(ctx context.Context, now time.Time, missing int64, recent []pushSample) bool {
	dl, ok := ctx.Deadline()
	if !ok {
		return false
	}
	left := dl.Sub(now) - pushDeadlineMargin
	if left <= 0 {
		return true
	}
	if len(recent) == 0 || now.Sub(recent[0].at) < pushRateWindow/2 {
		return false // not measured yet
	}
	rate := float64(recent[len(recent)-1].done-recent[0].done) / now.Sub(recent[0].at).Seconds()
	return float64(missing) > rate*left.Seconds()
}

// pushOriginPiece picks what a push of pieces [0, upto) would take from the origin: a random
// missing piece that no connected peer holds and a random missing piece at all (-1 when there
// is none that is not already being fetched), and whether connected peers hold any piece this
// gateway lacks.
func (a *App) pushOriginPiece(ti *title, upto int) (unheldPick, anyPick int, peersCanGive bool) {
	t := ti.t
	held := roaring.New()
	for _, pc := range t.PeerConns() {
		held.Or(pc.PeerPieces())
	}
	var unheld, missing []int
	for i := range upto {
		if t.Piece(i).State().Complete || ti.inflight(i) {
			continue
		}
		missing = append(missing, i)
		if held.ContainsInt(i) {
			peersCanGive = true
		} else {
			unheld = append(unheld, i)
		}
	}
	pick := func(from []int) int {
		if len(from) == 0 {
			return -1
		}
		return from[rand.IntN(len(from))]
	}
	return pick(unheld), pick(missing), peersCanGive
}

// A push waits pushPeerGrace for peers before it asks the origin, asks it while peers give
// nothing for pushStarved (or too little for the push's deadline), leaves a failed origin alone
// for pushOriginBackoff, and gives up after pushStallLimit without a piece from anybody.
const (
	pushPeerGrace = 2 * time.Second
	// prefixPeerGrace is a prefix push's wait for its sources, and then for discovered
	// peers, before it takes pieces none of them holds from the origin.
	prefixPeerGrace = 10 * time.Second
	pushStarved     = 2 * time.Second
	// A push with a deadline measures its progress over pushRateWindow and plans to be done
	// pushDeadlineMargin early.
	pushRateWindow     = 4 * time.Second
	pushDeadlineMargin = 3 * time.Second
	pushOriginBackoff  = 5 * time.Second
	pushStallLimit     = 30 * time.Second
)

// Unpin lets eviction take a pushed title again.
func (a *App) Unpin(ref string) error {
	ti, ok := a.lookup(ref)
	if !ok {
		return fmt.Errorf("vod: unknown title %q", ref)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.state.title(ti.entry.CID).Pinned = false
	return a.state.save()
}

// enforceQuota evicts whole titles until the cache fits its quota. Titles being streamed or
// pinned stay; of the rest, the lowest score goes first, where the score is popularity (plays)
// decayed by the time since the title was last used.
func (a *App) enforceQuota() {
	if a.client == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var total int64
	type cand struct {
		ti    *title
		bytes int64
		score float64
	}
	var cands []cand
	busy := map[*title]bool{}
	for s := range a.streams {
		busy[s.title] = true
	}
	for c, ti := range a.titles {
		if ti.t == nil {
			continue
		}
		n := ti.t.BytesCompleted()
		total += n
		st := a.state.title(c)
		if st.Pinned || busy[ti] || ti.pushing || n == 0 {
			continue
		}
		var keep int64 // a placed prefix comes back after an eviction
		if st.Prefix > 0 {
			pieces, _ := prefixSpan(ti.entry, st.Prefix)
			keep = completedBelow(ti, pieces)
		}
		if n <= keep {
			continue
		}
		age := time.Since(st.LastUsed).Hours()
		cands = append(cands, cand{ti, n - keep, float64(st.Plays+1) / (1 + age)})
	}
	if total <= a.opts.CacheBytes {
		return
	}
	slices.SortFunc(cands, func(x, y cand) int {
		switch {
		case x.score < y.score:
			return -1
		case x.score > y.score:
			return 1
		}
		return cmpString(x.ti.entry.Name, y.ti.entry.Name)
	})
	for _, c := range cands {
		if total <= a.opts.CacheBytes {
			break
		}
		a.evictLocked(c.ti)
		total -= c.bytes
		a.log.Info("vod: evicted", "title", c.ti.entry.Name, "bytes", c.bytes)
		if prefix := a.state.title(c.ti.entry.CID).Prefix; prefix > 0 {
			e := c.ti.entry
			a.wg.Go(func() {
				ctx, cancel := context.WithTimeout(a.ctx, PushTimeout)
				defer cancel()
				if err := a.PushPrefix(ctx, e, prefix); err != nil && a.ctx.Err() == nil {
					a.log.Warn("vod: placing an evicted title's prefix again", "title", e.Name, "err", err)
				}
			})
		}
	}
}

// evictLocked drops a title's torrent and its data; the catalog entry stays, so it can be
// streamed (and cached) again.
func (a *App) evictLocked(ti *title) {
	t := ti.t
	for i := 0; i < t.NumPieces(); i++ {
		_ = t.Piece(i).Storage().MarkNotComplete()
	}
	t.Drop()
	a.storage.forget(t.InfoHash())
	ti.t = nil
	ti.provided = false
	_ = os.RemoveAll(filepath.Join(a.opts.Dir, "data", t.InfoHash().HexString()))
	st := a.state.title(ti.entry.CID)
	st.Plays = 0
	_ = a.state.save()
}
