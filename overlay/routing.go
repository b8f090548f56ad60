package overlay

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Provide announces in the DHT that this node holds c.
func (o *Overlay) Provide(ctx context.Context, c cid.Cid) error {
	start := time.Now()
	o.lookups.begin(o.minNeighbours())
	err := o.dht.Provide(ctx, c, true)
	o.lookups.end()
	o.metrics.observeOp("provide", start, err)
	if err != nil {
		return fmt.Errorf("provide %s: %w", c, err)
	}
	return nil
}

// FindProviders looks up to limit providers of c in the DHT and returns them nearest first.
// Providers whose RTT is unknown are pinged (in parallel, for at most Config.ProbeTimeout)
// so that the order reflects the network as it is, not as it was last seen.
func (o *Overlay) FindProviders(ctx context.Context, c cid.Cid, limit int) ([]PeerInfo, error) {
	start := time.Now()
	var ids []peer.ID
	o.lookups.begin(o.minNeighbours())
	for ai := range o.dht.FindProvidersAsync(ctx, c, limit) {
		if ai.ID == o.host.ID() || slices.Contains(ids, ai.ID) {
			continue
		}
		ids = append(ids, ai.ID)
	}
	o.lookups.end(ids...)
	if err := ctx.Err(); err != nil {
		o.metrics.observeOp("find_providers", start, err)
		return nil, fmt.Errorf("find providers of %s: %w", c, err)
	}
	o.probeUnknown(ctx, ids)
	out := make([]PeerInfo, 0, len(ids))
	for _, id := range ids {
		out = append(out, o.prox.info(id))
	}
	slices.SortFunc(out, Closer)
	o.metrics.observeOp("find_providers", start, nil)
	return out, nil
}

// NearestProviders is FindProviders cut to the k nearest.
func (o *Overlay) NearestProviders(ctx context.Context, c cid.Cid, k int) ([]PeerInfo, error) {
	all, err := o.FindProviders(ctx, c, max(k*4, 20))
	if err != nil {
		return nil, err
	}
	return all[:min(k, len(all))], nil
}

func (o *Overlay) probeUnknown(ctx context.Context, ids []peer.ID) {
	ctx, cancel := context.WithTimeout(ctx, o.cfg.ProbeTimeout)
	defer cancel()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, id := range ids {
		if o.host.Peerstore().LatencyEWMA(id) > 0 && o.prox.hasLabels(id) {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, err := o.MeasureRTT(ctx, id); err != nil {
				o.log.Debug("probe provider", "peer", id, "err", err)
			}
		})
	}
	wg.Wait()
}
