package slice

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multihash"

	"github.com/nanodc/nanodc/overlay"
)

// GatewaysCID is the DHT key every gateway provides so that the operator's fleet tools can
// find the fleet.
var GatewaysCID = func() cid.Cid {
	h, _ := multihash.Sum([]byte("/nanodc/gateways/1"), multihash.SHA2_256, -1)
	return cid.NewCidV1(cid.Raw, h)
}()

// Announce provides GatewaysCID after a random delay of up to jitter (spreading a fleet's
// announcements after a mass reboot), and again every few hours; it returns when ctx ends.
func Announce(ctx context.Context, ov *overlay.Overlay, jitter time.Duration) {
	wait := time.Duration(rand.Int64N(int64(max(jitter, 0)) + 1))
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := ov.Provide(pctx, GatewaysCID)
		cancel()
		wait = 6 * time.Hour
		if err != nil {
			wait = 5 * time.Second
		}
	}
}

// Target is one gateway a fleet operation is aimed at.
type Target struct {
	Peer   peer.ID        `json:"peer"`
	Labels overlay.Labels `json:"labels"`
	// LabelsKnown is false for a gateway the DHT lists but that did not answer in time to
	// say where it is; it is reported (as unreachable) rather than silently skipped.
	LabelsKnown bool `json:"labels_known"`
}

// FleetResult is one gateway's outcome.
type FleetResult struct {
	Target
	Status string          `json:"status"` // ok, failed or unreachable
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// FindTargets lists the fleet's gateways matching selector (label=value pairs: isp,
// access_node or an extra label). Gateways whose labels could not be learned are returned
// with LabelsKnown false whatever the selector.
func FindTargets(ctx context.Context, ov *overlay.Overlay, selector map[string]string) ([]Target, error) {
	found, err := ov.FindProviders(ctx, GatewaysCID, 0)
	if err != nil {
		return nil, err
	}
	var out []Target
	for _, p := range found {
		known := p.Version != "" // the info exchange answered
		if known && !p.Labels.Matches(selector) {
			continue
		}
		out = append(out, Target{Peer: p.ID, Labels: p.Labels, LabelsKnown: known})
	}
	slices.SortFunc(out, func(a, b Target) int { return strings.Compare(a.Peer.String(), b.Peer.String()) })
	return out, nil
}

// Deploy runs reqs, in order, on every target (parallel at a time), stopping at a gateway's
// first failure. A request answered "already exists" by slice.create counts as done, so a
// deploy can be rerun to reach the gateways that were unreachable the first time.
func Deploy(ctx context.Context, ov *overlay.Overlay, targets []Target, reqs []Request, parallel int) []FleetResult {
	if parallel <= 0 {
		parallel = 16
	}
	out := make([]FleetResult, len(targets))
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			out[i] = deployOne(ctx, ov, t, reqs)
		})
	}
	wg.Wait()
	return out
}

func deployOne(ctx context.Context, ov *overlay.Overlay, t Target, reqs []Request) FleetResult {
	r := FleetResult{Target: t, Status: "ok"}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := ov.Host().Connect(cctx, peer.AddrInfo{ID: t.Peer}); err != nil {
		r.Status, r.Error = "unreachable", err.Error()
		return r
	}
	for _, req := range reqs {
		resp, err := Call(cctx, ov.Host(), t.Peer, req)
		switch {
		case err == nil:
			r.Result = resp.Result
		case resp.Status == 0:
			r.Status, r.Error = "unreachable", err.Error()
			return r
		case req.Op == OpSliceCreate && resp.Status == http.StatusBadRequest && strings.Contains(resp.Error, "already exists"):
			// Idempotent reruns.
		case req.Op == OpAppInstall && resp.Status == http.StatusBadRequest && strings.Contains(resp.Error, "already installed"):
			up := req
			up.Op = OpAppUpdate
			resp, err = Call(cctx, ov.Host(), t.Peer, up)
			if err != nil {
				r.Status, r.Error = "failed", err.Error()
				return r
			}
			r.Result = resp.Result
		default:
			r.Status, r.Error = "failed", err.Error()
			return r
		}
	}
	return r
}
