package vod

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

const (
	// horizon is how far ahead of a player the scheduler looks.
	horizon = 10 * time.Second
	// guard is the margin the scheduler keeps between "the origin could still make it" and
	// the deadline: the tick period plus timer and queueing noise.
	guard = 500 * time.Millisecond
	// maxOriginPerTitle bounds concurrent gap fills per title: the access link is shared with
	// the peers that are already delivering.
	maxOriginPerTitle = 3
	// discoveryGrace is how long a new stream waits for peers (DHT, gossip, dials) before a
	// piece no connected peer holds is taken as one only the origin can send.
	discoveryGrace = 3 * time.Second
	// peerMargin is the share of a piece's slack within which the connected peers' estimated
	// time to deliver it must fall for them to keep it once the origin's turn has come. In
	// the 100-gateway flash crowd (docs/BENCHMARKS.md, session 27) a half sent 1.06-1.07×
	// what no peer could supply from the origin, three quarters 1.03-1.06× for a stall or two
	// more per crowd, and all of the slack no fewer origin bytes than three quarters but
	// twice the stalls.
	peerMargin = 0.75
)

// OriginFetch describes one gap fill, for observers (the emulator checks whether any gateway
// could have supplied the piece instead).
type OriginFetch struct {
	CID    string
	Piece  int
	Bytes  int64
	Reason string // "startup", "deadline", "push" or "prefix" (a prefix push)
	// Due is how long the piece had until its playback deadline when the fill began ("deadline"
	// fills; 0 for "startup", whose player waits for it now, and for pushes): what "in time"
	// meant for this piece.
	Due time.Duration
	// Holders are the BitTorrent peers of the title that held the piece when it was fetched
	// (the connected peers the deadline logic judged too slow, or none).
	Holders []peer.ID
}

// scheduleDeadlines runs every tick for the nanodc strategy: for each stream, the pieces due
// within the horizon that are missing, that the origin can still deliver in time, and that
// the connected peers will not, are fetched from the origin.
func (a *App) scheduleDeadlines() {
	now := time.Now()
	a.mu.Lock()
	streams := make([]*stream, 0, len(a.streams))
	for s := range a.streams {
		streams = append(streams, s)
	}
	a.mu.Unlock()
	seen := map[*title]bool{}
	for _, s := range streams {
		ti := s.title
		if ti.t == nil || ti.t.Info() == nil {
			continue
		}
		if !seen[ti] {
			seen[ti] = true
			ti.samplePeerRate(now)
		}
		a.scheduleStream(s, now)
	}
}

func (a *App) scheduleStream(s *stream, now time.Time) {
	ti := s.title
	t := ti.t
	plen := ti.entry.PieceLength
	pos := s.position()
	first := int(pos / plen)
	for i := first; i < t.NumPieces(); i++ {
		off := max(int64(i)*plen, pos)
		slack := s.deadline(off).Sub(now)
		if slack > horizon {
			break
		}
		if t.Piece(i).State().Complete || ti.inflight(i) {
			continue
		}
		size := pieceSize(ti, i)
		need := a.origin.estimate(size) + guard
		if slack > need {
			// The origin can still wait; later pieces have later deadlines. Unless no connected
			// peer holds the piece once discovery had its time: then the origin sends it
			// anyway, and sending it now rather than at the last moment keeps the stream clear
			// of the origin's delay spikes (a first viewer's stream is all origin; its gateway's
			// uplink may be busy seeding, which delays its requests).
			if now.Sub(s.created) < discoveryGrace || a.peerHolders(ti, i) > 0 {
				break
			}
		} else if float64(a.peerETA(ti, first, i)) < peerMargin*float64(slack) {
			// Peers keep the piece only when they will make it with a margin: the estimate is
			// an average over shared, bufferbloated uplinks, and a stall costs the viewer far
			// more than a piece from the origin costs the provider.
			continue
		}
		if ti.originInflight() >= maxOriginPerTitle {
			break
		}
		// Once discovery had its time, a piece the peers will not deliver in time means the
		// ISP's peers are short, and peers elsewhere are welcome. (Marking the first seconds
		// of a stream too, when its peers are still connecting, added outside peers to most
		// streams and took no byte off the origin in the demo: docs/BENCHMARKS.md session 8.)
		if now.Sub(s.created) >= discoveryGrace {
			ti.markShort(now)
		}
		a.fillFromOrigin(ti, i, "deadline", slack)
	}
}

// firstFillWait bounds how long a new stream's peer discovery waits for the origin to send
// the piece the player needs first (uncongested, a fill takes ~0.1 s in the flash crowd).
const firstFillWait = 300 * time.Millisecond

// startPlayback runs when a stream is about to read its first byte. The piece the player
// needs first comes from the origin at once when no connected peer holds it: no peer can send
// it sooner, for a new peer connection costs handshakes over a thin uplink (0.5-0.8 s in the
// flash crowd, docs/BENCHMARKS.md session 9). And the stream's peer discovery waits for that
// fill: its lookups and dials put ~100 KB on an ADSL uplink in the first 0.3 s, and the fill's
// handshake, request and acknowledgements would queue behind them (fills took 0.5-1 s so).
func (a *App) startPlayback(s *stream) {
	ti := s.title
	var first <-chan struct{}
	if a.opts.Strategy == StrategyNanodc && ti.t.Info() != nil {
		if i := int(s.position() / ti.entry.PieceLength); i < ti.t.NumPieces() &&
			!ti.t.Piece(i).State().Complete && a.peerHolders(ti, i) == 0 {
			first = a.fillFromOrigin(ti, i, "startup", 0)
		}
	}
	a.discoverAfter(ti, first)
}

// peerHolders counts the connected peers that hold piece i.
func (a *App) peerHolders(ti *title, i int) int {
	n := 0
	for _, pc := range ti.t.PeerConns() {
		if pc.PeerPieces().Contains(uint32(i)) {
			n++
		}
	}
	return n
}

// holderIDs lists the connected peers that hold piece i.
func (a *App) holderIDs(ti *title, i int) []peer.ID {
	var ids []peer.ID
	for _, pc := range ti.t.PeerConns() {
		if pc.PeerPieces().Contains(uint32(i)) {
			if id, err := a.tr.peerOf(pc.RemoteAddr.String()); err == nil {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// peerETA estimates when the connected peers will have completed piece `to`, pieces from
// `from` on being fetched first (the reader's priorities make them so).
func (a *App) peerETA(ti *title, from, to int) time.Duration {
	t := ti.t
	holders := a.peerHolders(ti, to)
	if holders == 0 {
		return time.Duration(math.MaxInt64)
	}
	var missing int64
	for j := from; j <= to; j++ {
		if !ti.inflight(j) {
			missing += t.PieceBytesMissing(j)
		}
	}
	// The measured rate is what the peers deliver now (their uplinks are shared with every
	// other downloader); the guess only stands in before there is a measurement.
	rate := ti.peerRate()
	if rate < 1 {
		rate = float64(holders) * a.opts.PeerRateGuess * 0.25
	}
	return time.Duration(float64(missing) / rate * float64(time.Second))
}

func pieceSize(ti *title, i int) int64 {
	plen := ti.entry.PieceLength
	return min(plen, ti.entry.Size-int64(i)*plen)
}

// fillFromOrigin fetches piece i from the origin in the background, writes it into the
// torrent's storage and has anacrolix hash-check it: a piece from the origin is verified like
// any other before a player or a peer sees it. The returned channel closes when the fill
// ends (nil when a fill of the piece already runs).
func (a *App) fillFromOrigin(ti *title, i int, reason string, due time.Duration) <-chan struct{} {
	if !ti.startInflight(i) {
		return nil
	}
	done := make(chan struct{})
	a.wg.Go(func() {
		defer close(done)
		defer ti.endInflight(i)
		if err := a.fetchPiece(a.ctx, ti, i, reason, due); err != nil && a.ctx.Err() == nil {
			a.log.Warn("vod: origin gap fill", "title", ti.entry.Name, "piece", i, "err", err)
			a.metrics.originErrors.Inc()
		}
	})
	return done
}

// maxFillRanges bounds the requests one gap fill makes to the origin.
const maxFillRanges = 4

// errFillHash is a gap fill whose piece failed its hash check.
var errFillHash = errors.New("failed its hash check")

// fetchPiece fills piece i from the origin: only the blocks no peer has written yet, and the
// whole piece when that fails its hash check (a peer's block kept from before the fill was bad).
func (a *App) fetchPiece(ctx context.Context, ti *title, i int, reason string, due time.Duration) error {
	size := pieceSize(ti, i)
	ranges := a.storage.missing(pieceKey{ti.t.InfoHash(), i}, size, maxFillRanges)
	if len(ranges) == 0 {
		return nil // every block is written: anacrolix is checking the piece
	}
	err := a.fillPiece(ctx, ti, i, reason, due, ranges)
	if errors.Is(err, errFillHash) && (len(ranges) > 1 || ranges[0].len() < size) {
		err = a.fillPiece(ctx, ti, i, reason, due, []byteRange{{0, size}})
	}
	return err
}

func (a *App) fillPiece(ctx context.Context, ti *title, i int, reason string, due time.Duration, ranges []byteRange) error {
	t := ti.t
	var want int64
	for _, r := range ranges {
		want += r.len()
	}
	var fetched func(int64)
	if hook := a.opts.OnOriginFetch; hook != nil {
		fetched = hook(OriginFetch{CID: ti.entry.CID, Piece: i, Bytes: want, Reason: reason, Due: due, Holders: a.holderIDs(ti, i)})
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	base := int64(i) * ti.entry.PieceLength
	parts := make([][]byte, len(ranges))
	errs := make([]error, len(ranges))
	var wg sync.WaitGroup
	for k, r := range ranges {
		wg.Go(func() { parts[k], errs[k] = a.origin.fetchRange(ctx, ti.originURL(), base+r.Off, r.len()) })
	}
	wg.Wait()
	a.metrics.originFetches.WithLabelValues(reason).Inc()
	var got int64
	for _, b := range parts {
		got += int64(len(b))
	}
	ti.counters.originBytes.Add(got)
	if fetched != nil {
		fetched(got)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	p := t.Piece(i)
	key := pieceKey{t.InfoHash(), i}
	if !a.storage.startFill(key) {
		return nil // another fill of this piece runs
	}
	verified := false
	defer func() { a.storage.endFill(key, verified) }()
	if p.State().Complete {
		return nil // a peer was faster after all
	}
	gp, ok := p.Storage().PieceImpl.(*guardedPiece)
	if !ok {
		return fmt.Errorf("piece %d: storage is not guarded", i)
	}
	for k, r := range ranges {
		if _, err := gp.writeFill(parts[k], r.Off); err != nil {
			return fmt.Errorf("writing piece %d: %w", i, err)
		}
	}
	if err := p.VerifyDataContext(ctx); err != nil {
		return fmt.Errorf("verifying piece %d: %w", i, err)
	}
	// VerifyData returns before the verdict is recorded: wait for the piece state to settle.
	for {
		st := p.State()
		switch {
		case st.Complete:
			verified = true
			return nil
		case !st.Checking && !st.Marking:
			return fmt.Errorf("piece %d from the origin: %w", i, errFillHash)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("verifying piece %d: %w", i, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// HasPiece tells whether this gateway holds a verified copy of a title's piece.
func (a *App) HasPiece(cid string, i int) bool {
	a.mu.Lock()
	ti := a.titles[cid]
	a.mu.Unlock()
	if ti == nil || ti.t == nil || ti.t.Info() == nil || i >= ti.t.NumPieces() {
		return false
	}
	return ti.t.Piece(i).State().Complete
}
