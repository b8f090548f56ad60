package overlay

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	reg        prometheus.Registerer
	collectors []prometheus.Collector
	rtt        prometheus.Histogram
	ops        *prometheus.HistogramVec
	opErrors   *prometheus.CounterVec
}

// newMetrics registers the overlay's collectors on reg; with reg nil they are kept but
// not exported (the emulator runs many nodes and reads figures directly).
func newMetrics(reg prometheus.Registerer, o *Overlay) *metrics {
	m := &metrics{
		reg: reg,
		rtt: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "nanodc_overlay_peer_rtt_seconds",
			Help:    "Round-trip times measured by ping to connected peers.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		ops: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nanodc_overlay_routing_seconds",
			Help:    "Duration of content routing operations.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}, []string{"op"}),
		opErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nanodc_overlay_routing_errors_total",
			Help: "Content routing operations that failed.",
		}, []string{"op"}),
	}
	m.collectors = []prometheus.Collector{
		m.rtt, m.ops, m.opErrors,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "nanodc_overlay_connected_peers",
			Help: "Peers with an open connection.",
		}, func() float64 { return float64(len(o.host.Network().Peers())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "nanodc_overlay_dht_routing_table_peers",
			Help: "Peers in the DHT routing table.",
		}, func() float64 { return float64(o.dht.RoutingTable().Size()) }),
	}
	if reg != nil {
		for _, c := range m.collectors {
			reg.MustRegister(c)
		}
	}
	return m
}

func (m *metrics) observeOp(op string, start time.Time, err error) {
	m.ops.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		m.opErrors.WithLabelValues(op).Inc()
	}
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}
