package slice

import (
	"bytes"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// maxAppMetrics bounds the counter names one app may create (label cardinality is memory).
const maxAppMetrics = 32

// metrics are the slices' Prometheus figures, every series labelled by slice. They live in a
// registry of their own so that a provider's scrape can be cut down to its slice, and are
// also registered with the node's registry for the operator.
type metrics struct {
	m        *Manager
	reg      *prometheus.Registry
	external prometheus.Registerer
	coll     *sliceCollector
	app      *prometheus.CounterVec
	denials  *prometheus.CounterVec

	mu    sync.Mutex
	names map[[2]string]map[string]bool // (slice, app) → counter names
}

func newMetrics(m *Manager, external prometheus.Registerer) *metrics {
	x := &metrics{m: m, reg: prometheus.NewRegistry(), external: external, names: map[[2]string]map[string]bool{}}
	x.coll = &sliceCollector{m: m}
	x.app = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nanodc_app_metric_total", Help: "Counters apps add to through the metrics service.",
	}, []string{"slice", "app", "name"})
	x.denials = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nanodc_mgmt_denials_total", Help: "Management requests refused by the access matrix.",
	}, []string{"op", "role"})
	x.reg.MustRegister(x.coll, x.app)
	if external != nil {
		for _, c := range []prometheus.Collector{x.coll, x.app, x.denials} {
			_ = external.Register(c)
		}
	}
	return x
}

func (x *metrics) unregister() {
	if x.external != nil {
		for _, c := range []prometheus.Collector{x.coll, x.app, x.denials} {
			x.external.Unregister(c)
		}
	}
}

func (x *metrics) appMetric(slice, app, name string, delta float64) {
	if ValidID("metric", name) != nil || delta < 0 {
		return // counters only go up; bad names are dropped rather than trusted into labels
	}
	x.mu.Lock()
	set := x.names[[2]string{slice, app}]
	if set == nil {
		set = map[string]bool{}
		x.names[[2]string{slice, app}] = set
	}
	if !set[name] && len(set) >= maxAppMetrics {
		x.mu.Unlock()
		return
	}
	set[name] = true
	x.mu.Unlock()
	x.app.WithLabelValues(slice, app, name).Add(delta)
}

func (x *metrics) forgetSlice(slice string) {
	x.app.DeletePartialMatch(prometheus.Labels{"slice": slice})
	x.mu.Lock()
	for k := range x.names {
		if k[0] == slice {
			delete(x.names, k)
		}
	}
	x.mu.Unlock()
}

// sliceText renders the metrics of one slice only, in Prometheus text format.
func (x *metrics) sliceText(slice string) ([]byte, error) {
	mfs, err := x.reg.Gather()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		var keep []*dto.Metric
		for _, mt := range mf.Metric {
			for _, l := range mt.Label {
				if l.GetName() == "slice" && l.GetValue() == slice {
					keep = append(keep, mt)
					break
				}
			}
		}
		if len(keep) == 0 {
			continue
		}
		mf.Metric = keep
		if err := enc.Encode(mf); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

var (
	descMemory       = prometheus.NewDesc("nanodc_slice_memory_bytes", "Linear memory of the slice's running apps.", []string{"slice"}, nil)
	descMemoryQuota  = prometheus.NewDesc("nanodc_slice_memory_quota_bytes", "The slice's memory quota.", []string{"slice"}, nil)
	descCPU          = prometheus.NewDesc("nanodc_slice_cpu_seconds_total", "Time spent in the slice's running apps.", []string{"slice"}, nil)
	descStorage      = prometheus.NewDesc("nanodc_slice_storage_bytes", "Bytes stored under the slice's directory.", []string{"slice"}, nil)
	descStorageQuota = prometheus.NewDesc("nanodc_slice_storage_quota_bytes", "The slice's storage quota.", []string{"slice"}, nil)
	descApps         = prometheus.NewDesc("nanodc_slice_apps", "The slice's apps by TR-181 status.", []string{"slice", "status"}, nil)
)

// sliceCollector reads the manager's state at scrape time.
type sliceCollector struct{ m *Manager }

func (c *sliceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMemory, descMemoryQuota, descCPU, descStorage, descStorageQuota, descApps} {
		ch <- d
	}
}

func (c *sliceCollector) Collect(ch chan<- prometheus.Metric) {
	for _, u := range c.m.usages() {
		ch <- prometheus.MustNewConstMetric(descMemory, prometheus.GaugeValue, float64(u.MemoryBytes), u.Slice)
		ch <- prometheus.MustNewConstMetric(descMemoryQuota, prometheus.GaugeValue, float64(u.Quotas.MemoryBytes), u.Slice)
		ch <- prometheus.MustNewConstMetric(descCPU, prometheus.CounterValue, u.CPUSeconds, u.Slice)
		ch <- prometheus.MustNewConstMetric(descStorage, prometheus.GaugeValue, float64(u.StorageBytes), u.Slice)
		ch <- prometheus.MustNewConstMetric(descStorageQuota, prometheus.GaugeValue, float64(u.Quotas.StorageBytes), u.Slice)
		for _, st := range []string{StateIdle, StateStarting, StateActive, StateStopping} {
			ch <- prometheus.MustNewConstMetric(descApps, prometheus.GaugeValue, float64(u.AppsByStatus[st]), u.Slice, st)
		}
	}
}
