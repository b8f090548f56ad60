package vod

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's VoD figures in Prometheus form; Stats has the same per title.
type metrics struct {
	reg           prometheus.Registerer
	received      *prometheus.CounterVec // bytes into the gateway by source
	served        *prometheus.CounterVec // bytes to players, from cache or fetched
	uploaded      prometheus.Gauge
	streams       prometheus.Counter
	stalls        prometheus.Counter
	startup       prometheus.Histogram
	originFetches *prometheus.CounterVec
	originErrors  prometheus.Counter
	banned        prometheus.Gauge
	cacheBytes    prometheus.Gauge
	collectors    []prometheus.Collector
}

func newMetrics(reg prometheus.Registerer, a *App) *metrics {
	m := &metrics{
		reg: reg,
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nanodc_vod_received_bytes_total",
			Help: "Title bytes received, by source (origin, or peers by locality).",
		}, []string{"source"}),
		served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nanodc_vod_served_bytes_total",
			Help: "Bytes streamed to home players, from the local cache or fetched for the stream.",
		}, []string{"from"}),
		uploaded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nanodc_vod_uploaded_bytes",
			Help: "Title bytes uploaded to other gateways since start.",
		}),
		streams: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nanodc_vod_streams_total", Help: "HTTP streams started by home players.",
		}),
		stalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nanodc_vod_stalls_total",
			Help: "Times a stream delivered data later than a player at the title's bitrate needed it.",
		}),
		startup: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "nanodc_vod_startup_seconds",
			Help:    "Time from a stream's request to its first byte.",
			Buckets: []float64{.05, .1, .2, .3, .5, .75, 1, 1.5, 2, 3, 5, 10},
		}),
		originFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nanodc_vod_origin_fetches_total",
			Help: "Pieces fetched from the origin, by reason (startup: a stream's first piece no connected peer held; deadline: gap fill; push; prefix: a prefix push).",
		}, []string{"reason"}),
		originErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nanodc_vod_origin_errors_total", Help: "Origin fetches that failed.",
		}),
		banned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nanodc_vod_banned_peers", Help: "Peers banned for sending data that failed a hash check.",
		}),
		cacheBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nanodc_vod_cache_bytes", Help: "Verified title bytes held in the cache.",
		}),
	}
	lost := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "nanodc_vod_peer_streams_lost_total",
		Help: "Peer-wire streams that ended because their connection went away under them.",
	}, func() float64 { return float64(a.streamsLost.Load()) })
	resets := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "nanodc_vod_origin_resets_total",
		Help: "Times the origin connections were dropped and redialled because no byte came for a stall period (an outage on the way to the origin).",
	}, func() float64 {
		if a.origin == nil {
			return 0
		}
		return float64(a.origin.resets.Load())
	})
	m.collectors = []prometheus.Collector{m.received, m.served, m.uploaded, m.streams, m.stalls,
		m.startup, m.originFetches, m.originErrors, m.banned, m.cacheBytes, lost, resets}
	if reg != nil {
		for _, c := range m.collectors {
			if err := reg.Register(c); err != nil {
				// A second app in one process (tests, the emulator) shares the registry.
				continue
			}
		}
	}
	return m
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}
