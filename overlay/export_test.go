package overlay

import (
	"context"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TransportRTT exposes transportRTT to the external tests.
var TransportRTT = transportRTT

// Learn runs the measurement a newly identified peer gets.
func (o *Overlay) Learn(ctx context.Context, id peer.ID) { o.prox.learn(ctx, id, true) }

// MeasureAll runs one round of the periodic measurement.
func (o *Overlay) MeasureAll(ctx context.Context) { o.prox.measureAll(ctx) }

// BucketPeers are the routing table's peers whose IDs share exactly cpl leading bits with
// ours (bucket cpl, short of the last bucket).
func (o *Overlay) BucketPeers(cpl int) []peer.ID {
	self := kb.ConvertPeerID(o.ID())
	var out []peer.ID
	for _, p := range o.dht.RoutingTable().ListPeers() {
		if kb.CommonPrefixLen(self, kb.ConvertPeerID(p)) == cpl {
			out = append(out, p)
		}
	}
	return out
}

// RefreshesBegun is how many periodic refreshes the node has begun.
func (o *Overlay) RefreshesBegun() int { return o.refreshes.count() }

// LastRefresh is when the latest periodic refresh began and ended (zero while it runs).
func (o *Overlay) LastRefresh() (began, ended time.Time) {
	r := o.refreshes.last()
	return r.began, r.ended
}
