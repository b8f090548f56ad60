package origin

import "github.com/prometheus/client_golang/prometheus"

// metrics are labelled by client IP: one series per gateway of a fleet (a thousand is fine
// for Prometheus), which is what shows who still leans on the origin.
type metrics struct {
	bytes    *prometheus.CounterVec
	requests *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nanodc_origin_bytes_served_total",
			Help: "Response body bytes written to clients of the origin, by client IP.",
		}, []string{"client"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nanodc_origin_requests_total",
			Help: "File requests to the origin (any method and status), by client IP.",
		}, []string{"client"}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.bytes, m.requests}
}
