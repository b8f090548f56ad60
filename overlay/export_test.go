package overlay

import (
	"context"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TransportRTT exposes transportRTT to the external tests.
var TransportRTT = transportRTT

// Learn runs the measurement a newly identified peer gets.
func (o *Overlay) Learn(ctx context.Context, id peer.ID) { o.prox.learn(ctx, id, true) }

// MeasureAll runs one round of the periodic measurement.
func (o *Overlay) MeasureAll(ctx context.Context) { o.prox.measureAll(ctx) }
