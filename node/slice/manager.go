package slice

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/nanodc/nanodc/internal/ratelimit"
	"github.com/nanodc/nanodc/node/slice/wasm"
	"github.com/nanodc/nanodc/overlay"
)

// Shared services the core exports to slices. A slice uses one only if the operator granted
// it; grants change at run time and are checked on every use.
const (
	ServiceLogger  = "logger"  // app logs into the slice's event stream
	ServiceClock   = "clock"   // wall clock and timers
	ServiceStorage = "storage" // key/value storage in the slice
	ServicePubSub  = "pubsub"  // publish/subscribe on the slice's overlay topics
	ServiceMetrics = "metrics" // app counters in the slice's Prometheus metrics
	ServiceRouting = "content-routing"
)

// CoreServices lists what the core exports.
var CoreServices = []string{ServiceLogger, ServiceClock, ServiceStorage, ServicePubSub, ServiceMetrics, ServiceRouting}

// Instance is a running app, whatever its runtime.
type Instance interface {
	ServeHTTP(http.ResponseWriter, *http.Request)
	Stop(ctx context.Context) error
	Fault() (code, reason string) // TR-181 ExecutionFaultCode and why; "" when none
	Done() <-chan struct{}
	MemoryBytes() int64
	CPUTime() time.Duration
}

// AppEnv is what a runtime gets to start one app: everything scoped to its slice.
type AppEnv struct {
	Slice       string
	App         string
	FilesDir    string // private storage the app may use as its file system
	MemoryBytes int64  // the cap reserved for it from the slice's memory quota (WASM apps)
	Quotas      Quotas // the slice's quotas, defaults filled in (built-in kinds apply them)
	Provider    peer.ID
	// Upload and Download are the slice's bandwidth share (bytes per second token buckets,
	// shared by all its apps and adjusted when the operator changes the quota). Built-in kinds
	// draw every byte they send to or receive from the network through them.
	Upload, Download *rate.Limiter
	Host             wasm.Host
	Overlay          *overlay.Overlay
	Logger           *slog.Logger
}

// Runtime starts apps of one kind (built-in kinds are registered by the node).
type Runtime interface {
	Start(ctx context.Context, env AppEnv, u *Unit) (Instance, error)
}

// Options are the manager's dependencies.
type Options struct {
	Dir      string  // slices, their storage and the unit repository live here
	Operator peer.ID // the operator's peer ID ("" : nobody is operator remotely)
	Overlay  *overlay.Overlay
	Version  string
	Logger   *slog.Logger
	// Registerer receives the per-slice metrics (nil: a private registry).
	Registerer prometheus.Registerer
	// Runtimes adds built-in app kinds; "wasm" is always there.
	Runtimes map[string]Runtime
	// CallTimeout bounds one call into a WASM app (0: 100 ms).
	CallTimeout time.Duration
}

// Manager owns the gateway's slices and their apps.
type Manager struct {
	opts     Options
	log      *slog.Logger
	started  time.Time
	runtimes map[string]Runtime
	metrics  *metrics

	core    *eventLog
	watches watchHub

	mu      sync.Mutex // guards st, live, and the slices' records
	st      *state
	live    map[string]*liveSlice
	closing bool
	warned  map[string]time.Time // watchdog warnings last given
	wg      sync.WaitGroup
}

// liveSlice is the run-time side of a slice.
type liveSlice struct {
	events  *eventLog
	storage *storage
	apps    map[string]*liveApp // guarded by Manager.mu
	// registry is the slice's private service registry: service → app offering it
	// (guarded by Manager.mu; registry.go).
	registry map[string]string
	cpuDone  float64 // CPU seconds of instances that ended (guarded by Manager.mu)
	// Snapshots of the slice's grants and storage quota, read by apps' host calls without
	// Manager.mu (a guest's init runs while a lifecycle operation holds it).
	grants       atomic.Pointer[[]string]
	storageQuota atomic.Int64
	// The slice's bandwidth share, in place for the apps holding them.
	upload, download *rate.Limiter
}

// Bursts of the bandwidth buckets: one 16 KiB BitTorrent chunk up (a larger burst is queueing
// delay on a DSL uplink), 64 KiB down.
const uploadBurst, downloadBurst = 16 << 10, 64 << 10

// syncLimitsLocked applies the slice's record after it changed: grants, storage quota,
// bandwidth share and the overlay's resource-manager limits, all at once for running apps.
func (m *Manager) syncLimitsLocked(ls *liveSlice, s *Slice) {
	g := slices.Clone(s.Services)
	ls.grants.Store(&g)
	q := s.Quotas.withDefaults()
	ls.storageQuota.Store(q.StorageBytes)
	ls.upload.SetLimit(ratelimit.Limit(q.UploadBps))
	ls.download.SetLimit(ratelimit.Limit(q.DownloadBps))
	if m.opts.Overlay != nil {
		m.opts.Overlay.SetSliceLimit(s.ID, q.streamLimits())
	}
}

// forgetLimitsLocked drops a slice's resource-manager limits when it goes away.
func (m *Manager) forgetLimitsLocked(id string) {
	if m.opts.Overlay != nil {
		m.opts.Overlay.RemoveSliceLimit(id)
	}
}

type liveApp struct {
	inst     Instance
	memory   int64 // reserved cap
	stopping bool
	subs     []func()
}

// New loads the slices from opts.Dir and starts the apps that were running.
func New(ctx context.Context, opts Options) (*Manager, error) {
	if opts.Dir == "" {
		return nil, errors.New("slice: no directory")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.CallTimeout == 0 {
		opts.CallTimeout = 100 * time.Millisecond
	}
	for _, d := range []string{opts.Dir, filepath.Join(opts.Dir, "units"), filepath.Join(opts.Dir, "slices")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("slice: %w", err)
		}
	}
	st, err := loadState(filepath.Join(opts.Dir, "slices.json"))
	if err != nil {
		return nil, err
	}
	m := &Manager{opts: opts, log: opts.Logger, started: time.Now(), st: st,
		live: map[string]*liveSlice{}, core: newEventLog(1024)}
	m.runtimes = map[string]Runtime{KindWASM: &wasmRuntime{m: m, callTimeout: opts.CallTimeout}}
	for k, r := range opts.Runtimes {
		m.runtimes[k] = r
	}
	m.metrics = newMetrics(m, opts.Registerer)
	for _, s := range st.Slices {
		if _, err := m.openSlice(s); err != nil {
			_ = m.Close()
			return nil, err
		}
	}
	// Restart what was running; a failure is a fault on that app, not on the gateway.
	for _, s := range st.Slices {
		for _, a := range s.Apps {
			if a.Requested == StateActive {
				m.mu.Lock()
				err := m.startLocked(ctx, s, a, FaultFailureOnAutoStart)
				m.mu.Unlock()
				if err != nil {
					m.log.Warn("app did not restart", "slice", s.ID, "app", a.Name, "err", err)
				}
			}
		}
	}
	return m, nil
}

func (m *Manager) openSlice(s *Slice) (*liveSlice, error) {
	ls := &liveSlice{events: newEventLog(512), apps: map[string]*liveApp{}, registry: map[string]string{},
		upload: ratelimit.New(0, uploadBurst), download: ratelimit.New(0, downloadBurst)}
	m.syncLimitsLocked(ls, s)
	stor, err := newStorage(sliceDir(filepath.Join(m.opts.Dir, "slices"), s.ID), ls.storageQuota.Load)
	if err != nil {
		return nil, fmt.Errorf("slice %s storage: %w", s.ID, err)
	}
	ls.storage = stor
	m.live[s.ID] = ls
	return ls, nil
}

// Close stops every app (their requested states persist, so they restart with the node).
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closing = true
	var insts []Instance
	for _, ls := range m.live {
		for _, la := range ls.apps {
			la.stopping = true
			for _, unsub := range la.subs {
				unsub()
			}
			insts = append(insts, la.inst)
		}
	}
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, in := range insts {
		_ = in.Stop(ctx)
	}
	m.wg.Wait()
	m.metrics.unregister()
	return m.runtimes[KindWASM].(*wasmRuntime).close(ctx)
}

// event records e in the core stream, in its slice's stream too when it names one, and in the
// node's log.
func (m *Manager) event(e Event, alsoCore bool) {
	if e.Slice != "" {
		if ls := m.live[e.Slice]; ls != nil {
			ls.events.add(e)
		}
	}
	if e.Slice == "" || alsoCore {
		m.core.add(e)
	}
	m.log.Info("slice event", "kind", e.Kind, "slice", e.Slice, "app", e.App, "msg", e.Msg)
}

// persistLocked writes the state; callers hold m.mu.
func (m *Manager) persistLocked() error {
	return m.st.save(filepath.Join(m.opts.Dir, "slices.json"))
}

// reservedMemoryLocked is the memory already reserved by the slice's running apps.
func (m *Manager) reservedMemoryLocked(id string) int64 {
	var n int64
	if ls := m.live[id]; ls != nil {
		for _, la := range ls.apps {
			n += la.memory
		}
	}
	return n
}

// AppHandler serves /{slice}/{app}/... to the slice's apps (mounted by the node under
// /slices/ on the home-side HTTP server).
func (m *Manager) AppHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sid, aid := r.PathValue("slice"), r.PathValue("app")
		m.mu.Lock()
		var inst Instance
		if ls := m.live[sid]; ls != nil {
			if la := ls.apps[aid]; la != nil && !la.stopping {
				inst = la.inst
			}
		}
		m.mu.Unlock()
		if inst == nil {
			writeJSONError(w, http.StatusNotFound, fmt.Sprintf("no running app %q in slice %q", aid, sid))
			return
		}
		inst.ServeHTTP(w, r)
	})
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, "{\"error\":%q}\n", msg)
}

// ProtocolID is a protocol in slice id's private namespace on the overlay.
func ProtocolID(id, proto string) protocol.ID {
	return protocol.ID("/nanodc/slice/" + id + "/" + proto)
}

// Handle serves proto in the app's slice namespace (/nanodc/slice/<id>/<proto>). Every
// stream is first attached to the slice's resource-manager scope, so a slice that runs out
// of streams or stream memory runs out alone. The returned func removes the handler.
func (e AppEnv) Handle(proto string, h network.StreamHandler) (remove func(), err error) {
	if e.Overlay == nil {
		return nil, errors.New("slice: no overlay")
	}
	if err := ValidID("protocol", proto); err != nil {
		return nil, err
	}
	pid := ProtocolID(e.Slice, proto)
	host := e.Overlay.Host()
	host.SetStreamHandler(pid, func(s network.Stream) {
		if err := e.ScopeStream(s); err != nil {
			_ = s.Reset() // over the slice's limits: refused inside its own scope
			return
		}
		h(e.paced(s))
	})
	return func() { host.RemoveStreamHandler(pid) }, nil
}

// NewStream opens a stream to another gateway's instance of the same slice's proto, in the
// slice's resource-manager scope.
func (e AppEnv) NewStream(ctx context.Context, p peer.ID, proto string) (network.Stream, error) {
	if e.Overlay == nil {
		return nil, errors.New("slice: no overlay")
	}
	s, err := e.Overlay.Host().NewStream(ctx, p, ProtocolID(e.Slice, proto))
	if err != nil {
		return nil, err
	}
	if err := e.ScopeStream(s); err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("slice %s: %w", e.Slice, err)
	}
	return e.paced(s), nil
}

// ScopeStream attaches s to the slice's resource-manager scope; it fails when the slice is
// at its streams or stream-memory limit. Built-in kinds that open streams of their own (the
// VoD app's peer wire) call it on each.
func (e AppEnv) ScopeStream(s network.Stream) error {
	return s.Scope().SetService(overlay.SliceServicePrefix + e.Slice)
}

// paced draws the stream's bytes from the slice's bandwidth share.
func (e AppEnv) paced(s network.Stream) network.Stream {
	if e.Upload == nil && e.Download == nil {
		return s
	}
	return pacedStream{Stream: s, r: ratelimit.Reader(s, e.Download), w: ratelimit.Writer(s, e.Upload)}
}

type pacedStream struct {
	network.Stream
	r io.Reader
	w io.Writer
}

func (p pacedStream) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p pacedStream) Write(b []byte) (int, error) { return p.w.Write(b) }
