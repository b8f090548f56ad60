package vod

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multihash"

	"github.com/nanodc/nanodc/overlay"
	"github.com/nanodc/nanodc/vod/catalog"
)

// PushProtocol is how a provider pre-places a title on a gateway: the request carries the
// signed catalog entry; the gateway fills the title completely, pins it, and answers.
const PushProtocol protocol.ID = "/nanodc/vod/push/1.0.0"

// maxPushRequest bounds a push request: one catalog entry and a little framing.
const maxPushRequest = catalog.MaxEntrySize + 4<<10

// PushTimeout bounds how long a gateway works on one push.
const PushTimeout = 15 * time.Minute

// ProtocolSet is where one VoD app meets its peers: the fleet-wide set, or a slice's.
type ProtocolSet struct {
	Peer, Push protocol.ID
	HaveTopic  string
	Gateways   cid.Cid
}

// Protocols returns the protocol set of a namespace: "" for the gateway's own VoD app, a
// slice id for the VoD app of that provider's slice (/nanodc/slice/<id>/vod/…), so that
// competing video providers on one gateway never see each other's swarms or pushes.
func Protocols(namespace string) ProtocolSet {
	if namespace == "" {
		return ProtocolSet{Peer: PeerProtocol, Push: PushProtocol, HaveTopic: HaveTopic, Gateways: GatewaysCID}
	}
	base := "/nanodc/slice/" + namespace + "/vod/"
	h, _ := multihash.Sum([]byte(base+"gateways/1"), multihash.SHA2_256, -1)
	return ProtocolSet{Peer: protocol.ID(base + "bt/1.0.0"), Push: protocol.ID(base + "push/1.0.0"),
		HaveTopic: base + "have/1", Gateways: cid.NewCidV1(cid.Raw, h)}
}

// GatewaysCID is the DHT key every gateway running the VoD app provides, so that a provider
// can find the fleet's gateways (and, from their labels, spread its replicas).
var GatewaysCID = func() cid.Cid {
	h, _ := multihash.Sum([]byte("/nanodc/vod/gateways/1"), multihash.SHA2_256, -1)
	return cid.NewCidV1(cid.Raw, h)
}()

type pushRequest struct {
	Entry json.RawMessage `json:"entry"`
	// With are the other gateways the title is pushed to (peer IDs), to trade pieces with.
	With []string `json:"with,omitempty"`
	// PrefixBytes, when set, asks for the title's first bytes only (App.PushPrefix).
	PrefixBytes int64 `json:"prefix_bytes,omitempty"`
}

// pushOrder is a decoded push request.
type pushOrder struct {
	entry  *catalog.Entry
	with   []peer.ID
	prefix int64 // 0: the whole title
}

// maxPushWith bounds the co-replicas named in one push request.
const maxPushWith = 256

// PushResult is a gateway's answer to a push.
type PushResult struct {
	OK          bool    `json:"ok"`
	Error       string  `json:"error,omitempty"`
	Bytes       int64   `json:"bytes"`        // the title's bytes now held
	OriginBytes int64   `json:"origin_bytes"` // of which fetched from the origin for this push
	Seconds     float64 `json:"seconds"`
}

func writeFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var hdr [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(hdr[:], uint64(len(b)))
	if _, err := w.Write(hdr[:n]); err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func readFrame(r *bufio.Reader, limit int) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("reading frame length: %w", err)
	}
	if n > uint64(limit) {
		return nil, fmt.Errorf("frame of %d bytes exceeds the limit of %d", n, limit)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("reading %d-byte frame: %w", n, err)
	}
	return b, nil
}

// decodePushRequest reads a push request from an untrusted peer: the entry, the other
// gateways the title goes to, and how much of it (the whole title, or a prefix).
func decodePushRequest(r io.Reader) (pushOrder, error) {
	b, err := readFrame(bufio.NewReader(r), maxPushRequest)
	if err != nil {
		return pushOrder{}, fmt.Errorf("push request: %w", err)
	}
	var req pushRequest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return pushOrder{}, fmt.Errorf("push request: %w", err)
	}
	if len(req.Entry) == 0 {
		return pushOrder{}, errors.New("push request: entry: missing")
	}
	if len(req.With) > maxPushWith {
		return pushOrder{}, fmt.Errorf("push request: with: %d gateways, at most %d", len(req.With), maxPushWith)
	}
	if req.PrefixBytes < 0 {
		return pushOrder{}, fmt.Errorf("push request: prefix_bytes: %d is negative", req.PrefixBytes)
	}
	with := make([]peer.ID, 0, len(req.With))
	for i, s := range req.With {
		id, err := peer.Decode(s)
		if err != nil {
			return pushOrder{}, fmt.Errorf("push request: with[%d]: %q is not a peer ID: %w", i, s, err)
		}
		with = append(with, id)
	}
	e, err := catalog.Decode(req.Entry)
	if err != nil {
		return pushOrder{}, fmt.Errorf("push request: %w", err)
	}
	return pushOrder{entry: e, with: with, prefix: req.PrefixBytes}, nil
}

// handlePush serves PushProtocol: only a trusted provider may push, and only its own titles
// (the secure channel proves the remote peer ID; the entry's signature proves the title).
func (a *App) handlePush(s network.Stream) {
	if err := a.opts.StreamScope(s); err != nil {
		_ = s.Reset()
		return
	}
	defer s.Close()
	remote := s.Conn().RemotePeer()
	_ = s.SetReadDeadline(time.Now().Add(30 * time.Second))
	order, err := decodePushRequest(s)
	e := order.entry
	_ = s.SetReadDeadline(time.Time{})
	res := PushResult{}
	switch {
	case err != nil:
		res.Error = err.Error()
	case e.Provider != remote.String():
		res.Error = fmt.Sprintf("push refused: %s may only push its own titles, %q is %s's", remote, e.Name, e.Provider)
	case len(a.opts.Providers) > 0 && !containsPeer(a.opts.Providers, remote):
		res.Error = fmt.Sprintf("push refused: provider %s is not trusted on this gateway", remote)
	default:
		start := time.Now()
		before := a.origin.bytes.Load()
		ctx, cancel := context.WithTimeout(a.ctx, PushTimeout)
		err = a.preplace(ctx, e, order.prefix, order.with)
		cancel()
		res.Seconds = time.Since(start).Seconds()
		res.OriginBytes = a.origin.bytes.Load() - before
		if err != nil {
			res.Error = err.Error()
		} else {
			res.OK = true
		}
		if ti, ok := a.lookup(e.CID); ok {
			a.mu.Lock()
			if ti.t != nil {
				res.Bytes = ti.t.BytesCompleted()
			}
			a.mu.Unlock()
		}
	}
	if !res.OK {
		a.log.Warn("vod: push", "from", remote, "err", res.Error)
	}
	_ = s.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_ = writeFrame(s, res)
}

func containsPeer(ids []peer.ID, id peer.ID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// PushTo asks gateway id to pre-place e, and waits for its answer. with are the gateways e
// is pushed to at the same time (they trade pieces; see App.Push); id may be among them.
func PushTo(ctx context.Context, h host.Host, id peer.ID, e *catalog.Entry, with ...peer.ID) (PushResult, error) {
	return PushToNamespace(ctx, h, id, "", e, 0, with...)
}

// PushToNamespace pushes to the VoD app of a provider's slice (namespace = the slice id;
// "" is the gateway's own VoD app, as PushTo): the whole title (prefix 0) or its first prefix
// bytes (App.PushPrefix).
func PushToNamespace(ctx context.Context, h host.Host, id peer.ID, namespace string, e *catalog.Entry, prefix int64, with ...peer.ID) (PushResult, error) {
	raw, err := e.Encode()
	if err != nil {
		return PushResult{}, err
	}
	s, err := h.NewStream(ctx, id, Protocols(namespace).Push)
	if err != nil {
		return PushResult{}, fmt.Errorf("unreachable: %w", err)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	req := pushRequest{Entry: raw, PrefixBytes: prefix}
	for _, w := range with {
		req.With = append(req.With, w.String())
	}
	if err := writeFrame(s, req); err != nil {
		_ = s.Reset()
		return PushResult{}, fmt.Errorf("sending push: %w", err)
	}
	_ = s.CloseWrite()
	b, err := readFrame(bufio.NewReader(s), 64<<10)
	if err != nil {
		return PushResult{}, fmt.Errorf("push answer: %w", err)
	}
	var res PushResult
	if err := json.Unmarshal(b, &res); err != nil {
		return PushResult{}, fmt.Errorf("push answer: %w", err)
	}
	return res, nil
}

// Replica is one gateway's outcome of a fleet push.
type Replica struct {
	Title  string         `json:"title"`
	Peer   peer.ID        `json:"peer_id"`
	Labels overlay.Labels `json:"labels"`
	// PrefixBytes is set for a gateway that got the title's prefix, not the whole title.
	PrefixBytes int64   `json:"prefix_bytes,omitempty"`
	Status      string  `json:"status"` // ok, failed, unreachable
	Error       string  `json:"error,omitempty"`
	Bytes       int64   `json:"bytes"`
	OriginBytes int64   `json:"origin_bytes"`
	Seconds     float64 `json:"seconds"`
}

// PushPlan is what a provider places across the fleet for each title of a push.
type PushPlan struct {
	// Namespace is the slice id whose VoD apps get the title ("" for the gateways' own).
	Namespace string
	// Replicas gateways, spread across access nodes, get the whole title.
	Replicas int
	// Prefix > 0: every other matching gateway gets the first Prefix of the title's playback
	// (PrefixBytes at its bitrate), from its nearest replicas and the nearest gateways whose
	// prefix is already in place (PrefixSourcesFor, App.PushPrefix), once the replicas are in
	// place or at PrefixesFrom, whichever comes first.
	Prefix time.Duration
	// Selector limits the candidates to gateways with these labels.
	Selector map[string]string
}

// PrefixPushesAtOnce bounds the gateways a provider pushes prefixes to concurrently: a fleet
// may be thousands, and each push is a connection and a stream on the provider's node.
const PrefixPushesAtOnce = 32

// PrefixSources is how many peers a prefix push names to its gateway (PrefixSourcesFor): the
// nearest ones, enough that one slow or busy uplink does not hold the prefix up.
const PrefixSources = 3

// PrefixesFrom is when a push that also places prefixes, and must be done by deadline,
// starts them at the latest: two thirds of the way there. Whole copies use all the time
// they are given (a whole push meets its deadline by taking from the origin what its peers
// would not deliver in time, so hurrying them costs the origin: with the replicas due at 3/4
// of the flash crowd's warm-up, their pushes took 102 MB from the origin instead of 44), so
// the prefixes do not wait for them to finish: by then the replicas hold most pieces, and
// the prefixes share their uplinks for the last third. Only the first prefixes come from
// the replicas; the later ones come from the gateways placed before them (PrefixSourcesFor).
// At three quarters, 60-66 of the flash crowd's 75 prefixes were in place in time
// (docs/BENCHMARKS.md session 15).
func PrefixesFrom(now, deadline time.Time) time.Time {
	return now.Add(deadline.Sub(now) * 2 / 3)
}

// PushFleet finds the fleet's VoD gateways (those of plan.Namespace) and pushes each of
// titles to plan.Replicas of them spread across access nodes (matching plan.Selector), each
// title on gateways that hold no other of these titles while enough others match, all in
// parallel; then, with plan.Prefix, each title's prefix to every other matching gateway. It
// returns one Replica per title and gateway pushed to, title by title, whole copies first.
func PushFleet(ctx context.Context, ov *overlay.Overlay, titles []*catalog.Entry, plan PushPlan) ([]Replica, error) {
	found, err := ov.FindProviders(ctx, Protocols(plan.Namespace).Gateways, 0)
	if err != nil {
		return nil, fmt.Errorf("finding gateways: %w", err)
	}
	// One title's pushes: its replicas, then the gateways that get its prefix.
	type titlePushes struct {
		e            *catalog.Entry
		chosen, rest []overlay.PeerInfo
		out          []Replica
	}
	loaded := map[peer.ID]bool{}
	batches := make([]*titlePushes, len(titles))
	for i, e := range titles {
		b := &titlePushes{e: e, chosen: ChooseReplicas(found, plan.Replicas, plan.Selector, loaded)}
		whole := map[peer.ID]bool{}
		for _, g := range b.chosen {
			whole[g.ID], loaded[g.ID] = true, true
		}
		if plan.Prefix > 0 {
			for _, g := range found {
				if !whole[g.ID] && g.Labels.Matches(plan.Selector) {
					b.rest = append(b.rest, g)
				}
			}
		}
		if len(b.chosen)+len(b.rest) == 0 {
			return nil, fmt.Errorf("no gateway matches (found %d running the VoD app)", len(found))
		}
		b.out = make([]Replica, len(b.chosen)+len(b.rest))
		batches[i] = b
	}
	push := func(ctx context.Context, r *Replica, e *catalog.Entry, g overlay.PeerInfo, prefix int64, with []peer.ID) {
		*r = Replica{Title: e.Name, Peer: g.ID, Labels: g.Labels, PrefixBytes: prefix}
		res, err := PushToNamespace(ctx, ov.Host(), g.ID, plan.Namespace, e, prefix, with...)
		switch {
		case err != nil:
			r.Status, r.Error = "unreachable", err.Error()
		case !res.OK:
			r.Status, r.Error = "failed", res.Error
		default:
			r.Status = "ok"
		}
		r.Bytes, r.OriginBytes, r.Seconds = res.Bytes, res.OriginBytes, res.Seconds
	}
	var startPrefixes chan struct{} // nil: each title's prefixes wait for its replicas
	if dl, ok := ctx.Deadline(); ok && plan.Prefix > 0 {
		startPrefixes = make(chan struct{}) // closed: every title's goroutine sees it
		defer time.AfterFunc(time.Until(PrefixesFrom(time.Now(), dl)), func() { close(startPrefixes) }).Stop()
	}
	sem := make(chan struct{}, PrefixPushesAtOnce) // shared by every title's prefixes
	var all sync.WaitGroup
	for _, b := range batches {
		ids := make([]peer.ID, len(b.chosen))
		for i, g := range b.chosen {
			ids[i] = g.ID
		}
		var wg sync.WaitGroup
		for i, g := range b.chosen {
			wg.Go(func() { push(ctx, &b.out[i], b.e, g, 0, ids) })
		}
		all.Go(func() {
			replicasDone := make(chan struct{})
			go func() { wg.Wait(); close(replicasDone) }()
			defer func() { <-replicasDone }()
			if len(b.rest) == 0 {
				return
			}
			placed := b.chosen
			select {
			case <-replicasDone:
				placed = nil
				for i, g := range b.chosen {
					if b.out[i].Status == "ok" {
						placed = append(placed, g)
					}
				}
			case <-startPrefixes: // the replicas hold most of the title by now
			}
			prefix := PrefixBytes(b.e, plan.Prefix)
			tree := NewPrefixTree(placed)
			var pwg sync.WaitGroup
			for i, g := range b.rest {
				sem <- struct{}{}
				sources := tree.Sources(g)
				pwg.Go(func() {
					defer func() { <-sem }()
					r := &b.out[len(b.chosen)+i]
					push(ctx, r, b.e, g, prefix, sources)
					if r.Status == "ok" {
						tree.Placed(g)
					}
				})
			}
			pwg.Wait()
		})
	}
	all.Wait()
	var out []Replica
	for _, b := range batches {
		out = append(out, b.out...)
	}
	return out, nil
}

// announceGateway provides GatewaysCID once the overlay can, and again every few hours (DHT
// provider records expire).
func (a *App) announceGateway() {
	// A random start spreads a fleet's announcements (after a mass reboot, or in the
	// emulator) instead of sending every gateway to the same DHT nodes at once.
	select {
	case <-a.ctx.Done():
		return
	case <-time.After(time.Duration(rand.Int64N(int64(a.opts.AnnounceJitter) + 1))):
	}
	for {
		ctx, cancel := context.WithTimeout(a.ctx, 30*time.Second)
		err := a.ov.Provide(ctx, a.protos.Gateways)
		cancel()
		wait := 6 * time.Hour
		if err != nil {
			wait = 5 * time.Second
		}
		select {
		case <-a.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
