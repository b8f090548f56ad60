package slice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nanodc/nanodc/node/slice/wasm"

	"github.com/nanodc/nanodc/internal/atomicfile"
)

// Execution unit states and fault codes, in TR-181 SoftwareModules vocabulary
// (Device.SoftwareModules.ExecutionUnit.{i}.Status / ExecutionFaultCode).
const (
	StateIdle     = "Idle"
	StateStarting = "Starting"
	StateActive   = "Active"
	StateStopping = "Stopping"

	FaultNone               = "NoFault"
	FaultFailureOnStart     = "FailureOnStart"
	FaultFailureOnAutoStart = "FailureOnAutoStart"
	FaultFailureOnStop      = "FailureOnStop"
	FaultFailureWhileActive = "FailureWhileActive"
	FaultDependencyFailure  = "DependencyFailure"
	FaultUnStartable        = "UnStartable"
)

// AppRecord is one installed app (a deployment unit with its execution unit).
type AppRecord struct {
	Name        string    `json:"name"`
	Unit        string    `json:"unit"` // the unit's CID
	Version     string    `json:"version"`
	Kind        string    `json:"kind"`
	Requested   string    `json:"requested_state"` // what the app should be: Active or Idle
	Status      string    `json:"status"`
	Fault       string    `json:"fault"`
	FaultReason string    `json:"fault_reason,omitempty"`
	Installed   time.Time `json:"installed"`
	// Run-time figures, filled in by reads (not persisted meaningfully).
	MemoryBytes int64   `json:"memory_bytes"`
	CPUSeconds  float64 `json:"cpu_seconds"`
}

func (s *Slice) app(name string) *AppRecord {
	i := slices.IndexFunc(s.Apps, func(a *AppRecord) bool { return a.Name == name })
	if i < 0 {
		return nil
	}
	return s.Apps[i]
}

func (m *Manager) unitPath(c string) string {
	return filepath.Join(m.opts.Dir, "units", c+".unit")
}

func (m *Manager) loadUnit(c string) (*Unit, error) {
	b, err := os.ReadFile(m.unitPath(c))
	if err != nil {
		return nil, fmt.Errorf("unit %s: %w", c, err)
	}
	return DecodeUnit(b)
}

// checkUnitLocked decides whether u may run in s: signed by s's provider, of a known kind,
// needing only services the core has and the slice was granted.
func (m *Manager) checkUnitLocked(s *Slice, u *Unit) error {
	signer, err := u.SignerID()
	if err != nil {
		return err
	}
	if signer != s.Provider {
		return fmt.Errorf("unit %s is signed by %s, but slice %q belongs to %s", u.Manifest.Name, signer, s.ID, s.Provider)
	}
	if _, ok := m.runtimes[u.Manifest.Kind]; !ok {
		return fmt.Errorf("unit %s: unknown app kind %q (this gateway runs %s)", u.Manifest.Name, u.Manifest.Kind, strings.Join(m.kinds(), ", "))
	}
	var unknown []string
	for _, r := range u.Manifest.Requires {
		if !slices.Contains(CoreServices, r) {
			unknown = append(unknown, r)
		}
	}
	if len(unknown) > 0 {
		return fmt.Errorf("unit %s requires services this gateway does not export: %s", u.Manifest.Name, strings.Join(unknown, ", "))
	}
	if err := validateProvides(u); err != nil {
		return err
	}
	if miss := u.missingServices(s.Services); len(miss) > 0 {
		return fmt.Errorf("unit %s requires services slice %q was not granted: %s", u.Manifest.Name, s.ID, strings.Join(miss, ", "))
	}
	return nil
}

func (m *Manager) kinds() []string {
	var out []string
	for k := range m.runtimes {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (m *Manager) storeUnit(u *Unit) (string, error) {
	b, err := u.Encode()
	if err != nil {
		return "", err
	}
	c := u.CID().String()
	p := m.unitPath(c)
	if _, err := os.Stat(p); err == nil {
		return c, nil
	}
	return c, atomicfile.WriteFile(p, b, 0o600)
}

// install adds u to slice s (Idle, or started when start is set).
func (m *Manager) install(ctx context.Context, s *Slice, u *Unit, start bool) (*AppRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.checkUnitLocked(s, u); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if s.app(u.Manifest.Name) != nil {
		return nil, badRequest("app %q is already installed in slice %q (use app update)", u.Manifest.Name, s.ID)
	}
	if q := s.Quotas.withDefaults().MaxApps; len(s.Apps) >= q {
		return nil, badRequest("slice %q already has %d apps, its quota", s.ID, q)
	}
	c, err := m.storeUnit(u)
	if err != nil {
		return nil, fmt.Errorf("storing unit: %w", err)
	}
	a := &AppRecord{Name: u.Manifest.Name, Unit: c, Version: u.Manifest.Version, Kind: u.Manifest.Kind,
		Requested: StateIdle, Status: StateIdle, Fault: FaultNone, Installed: time.Now().UTC()}
	s.Apps = append(s.Apps, a)
	if err := m.persistLocked(); err != nil {
		s.Apps = s.Apps[:len(s.Apps)-1]
		return nil, err
	}
	m.event(Event{Kind: "app.installed", Slice: s.ID, App: a.Name, Msg: fmt.Sprintf("installed %s %s (%s)", a.Name, a.Version, c)}, true)
	if start {
		if err := m.startLocked(ctx, s, a, FaultFailureOnStart); err != nil {
			return a, err
		}
	}
	return a, nil
}

// startLocked starts a's execution unit; a failure is recorded as fault.
func (m *Manager) startLocked(ctx context.Context, s *Slice, a *AppRecord, faultCode string) error {
	ls := m.live[s.ID]
	if la := ls.apps[a.Name]; la != nil && !la.stopping {
		return nil // already running
	}
	a.Requested = StateActive
	defer func() { _ = m.persistLocked() }()
	fail := func(code string, err error) error {
		a.Status, a.Fault, a.FaultReason = StateIdle, code, err.Error()
		m.event(Event{Kind: "app.fault", Slice: s.ID, App: a.Name, Msg: err.Error(), Attrs: map[string]string{"fault": code}}, true)
		return err
	}
	u, err := m.loadUnit(a.Unit)
	if err != nil {
		return fail(FaultUnStartable, err)
	}
	// Grants can have been withdrawn since install.
	if err := m.checkUnitLocked(s, u); err != nil {
		return fail(FaultDependencyFailure, err)
	}
	if n := len(ls.apps); n >= s.Quotas.withDefaults().MaxApps {
		return fail(faultCode, fmt.Errorf("slice %q already runs %d apps, its quota", s.ID, n))
	}
	// Linear memory is reserved for WASM apps only: Go code of built-in kinds cannot be
	// metered per slice (docs/slices.md).
	free := s.Quotas.withDefaults().MemoryBytes - m.reservedMemoryLocked(s.ID)
	mem := u.Manifest.MemoryBytes
	if mem == 0 {
		mem = min(free, 16<<20)
	}
	if err := ls.registerLocked(a.Name, u); err != nil {
		return fail(faultCode, err)
	}
	if u.Manifest.Kind != KindWASM {
		mem = 0
	} else if mem > free || mem < 64<<10 {
		return fail(faultCode, fmt.Errorf("app %s needs %d bytes of memory; slice %q has %d of its %d-byte quota free",
			a.Name, mem, s.ID, max(free, 0), s.Quotas.withDefaults().MemoryBytes))
	}
	a.Status = StateStarting
	env := AppEnv{Slice: s.ID, App: a.Name, FilesDir: ls.storage.filesDir(a.Name), MemoryBytes: mem,
		Quotas: s.Quotas.withDefaults(), Provider: s.Provider, Upload: ls.upload, Download: ls.download,
		Host: &sliceHost{m: m, ls: ls, slice: s.ID, app: a.Name}, Overlay: m.opts.Overlay,
		Logger: m.log.With("slice", s.ID, "app", a.Name)}
	if err := os.MkdirAll(env.FilesDir, 0o700); err != nil {
		return fail(faultCode, err)
	}
	// Starting runs guest code (init) for at most a few call timeouts: holding the lock
	// meanwhile keeps lifecycle operations on this gateway strictly ordered.
	inst, err := m.runtimes[u.Manifest.Kind].Start(ctx, env, u)
	if err != nil {
		ls.unregisterLocked(a.Name)
		return fail(faultCode, err)
	}
	la := &liveApp{inst: inst, memory: mem}
	ls.apps[a.Name] = la
	a.Status, a.Fault, a.FaultReason = StateActive, FaultNone, ""
	la.subs = m.subscribeLocked(s.ID, a.Name, u.Manifest.Topics, inst)
	m.event(Event{Kind: "app.state", Slice: s.ID, App: a.Name, Msg: "Active", Attrs: map[string]string{"version": a.Version}}, false)
	m.wg.Go(func() { m.watch(s.ID, a.Name, la) })
	return nil
}

// watch records an app's end: a fault while active (trap, runaway call, memory over its cap)
// ends that app only.
func (m *Manager) watch(sid, name string, la *liveApp) {
	<-la.inst.Done()
	m.mu.Lock()
	defer m.mu.Unlock()
	ls := m.live[sid]
	if ls == nil || ls.apps[name] != la {
		return
	}
	ls.dropLocked(name, la)
	if la.stopping || m.closing {
		return
	}
	s := m.st.find(sid)
	if s == nil {
		return
	}
	a := s.app(name)
	if a == nil {
		return
	}
	code, reason := la.inst.Fault()
	if code == "" {
		code, reason = FaultFailureWhileActive, "the app ended on its own"
	}
	a.Status, a.Fault, a.FaultReason = StateIdle, code, reason
	_ = m.persistLocked()
	m.event(Event{Kind: "app.fault", Slice: sid, App: name, Msg: reason, Attrs: map[string]string{"fault": code}}, true)
}

// dropLocked forgets an app that ended: its subscriptions, its services, its CPU time kept.
func (ls *liveSlice) dropLocked(name string, la *liveApp) {
	delete(ls.apps, name)
	ls.cpuDone += la.inst.CPUTime().Seconds()
	for _, unsub := range la.subs {
		unsub()
	}
	la.subs = nil
	ls.unregisterLocked(name)
}

// stopLocked stops a's execution unit and waits for it (bounded by ctx).
func (m *Manager) stopLocked(ctx context.Context, s *Slice, a *AppRecord, requested string) error {
	a.Requested = requested
	ls := m.live[s.ID]
	la := ls.apps[a.Name]
	if la == nil {
		a.Status = StateIdle
		return m.persistLocked()
	}
	la.stopping = true
	a.Status = StateStopping
	ls.unregisterLocked(a.Name) // callers see "no such service" from now on
	err := la.inst.Stop(ctx)
	ls.dropLocked(a.Name, la)
	a.Status = StateIdle
	if err != nil {
		a.Fault, a.FaultReason = FaultFailureOnStop, err.Error()
	}
	m.event(Event{Kind: "app.state", Slice: s.ID, App: a.Name, Msg: "Idle"}, false)
	return errors.Join(err, m.persistLocked())
}

// update replaces a's unit by u, hot: the old instance stops, the new one starts, other apps
// and slices keep running. If the new unit fails to start, the old one is started again.
func (m *Manager) update(ctx context.Context, s *Slice, u *Unit) (*AppRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := s.app(u.Manifest.Name)
	if a == nil {
		return nil, fmt.Errorf("%w: app %q is not installed in slice %q", ErrNotFound, u.Manifest.Name, s.ID)
	}
	if err := m.checkUnitLocked(s, u); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	c, err := m.storeUnit(u)
	if err != nil {
		return nil, fmt.Errorf("storing unit: %w", err)
	}
	wasActive := a.Requested == StateActive
	if err := m.stopLocked(ctx, s, a, a.Requested); err != nil {
		return a, err
	}
	old := *a
	a.Unit, a.Version, a.Kind = c, u.Manifest.Version, u.Manifest.Kind
	if wasActive {
		if err := m.startLocked(ctx, s, a, FaultFailureOnStart); err != nil {
			a.Unit, a.Version, a.Kind = old.Unit, old.Version, old.Kind
			rerr := m.startLocked(ctx, s, a, FaultFailureOnStart)
			m.event(Event{Kind: "app.update.rollback", Slice: s.ID, App: a.Name,
				Msg: fmt.Sprintf("update to %s failed (%v); back on %s", u.Manifest.Version, err, old.Version)}, true)
			return a, errors.Join(fmt.Errorf("update failed, rolled back: %w", err), rerr)
		}
	}
	m.removeUnitIfUnused(old.Unit)
	m.event(Event{Kind: "app.updated", Slice: s.ID, App: a.Name, Msg: fmt.Sprintf("%s → %s", old.Version, a.Version)}, true)
	return a, m.persistLocked()
}

// uninstall stops and removes a with its storage.
func (m *Manager) uninstall(ctx context.Context, s *Slice, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := s.app(name)
	if a == nil {
		return fmt.Errorf("%w: app %q is not installed in slice %q", ErrNotFound, name, s.ID)
	}
	stopErr := m.stopLocked(ctx, s, a, StateIdle)
	s.Apps = slices.DeleteFunc(s.Apps, func(x *AppRecord) bool { return x == a })
	_ = m.live[s.ID].storage.removeApp(name)
	m.removeUnitIfUnused(a.Unit)
	m.event(Event{Kind: "app.uninstalled", Slice: s.ID, App: name, Msg: "uninstalled " + name}, true)
	return errors.Join(stopErr, m.persistLocked())
}

func (m *Manager) removeUnitIfUnused(c string) {
	for _, s := range m.st.Slices {
		for _, a := range s.Apps {
			if a.Unit == c {
				return
			}
		}
	}
	_ = os.Remove(m.unitPath(c))
}

// fillRunTime copies live figures into the records (callers hold m.mu).
func (m *Manager) fillRunTimeLocked(s *Slice) {
	ls := m.live[s.ID]
	for _, a := range s.Apps {
		a.MemoryBytes, a.CPUSeconds = 0, 0
		if la := ls.apps[a.Name]; la != nil {
			a.MemoryBytes = la.inst.MemoryBytes()
			a.CPUSeconds = la.inst.CPUTime().Seconds()
		}
	}
}

// wasmRuntime runs kind "wasm" units with node/slice/wasm. The wazero runtime is made on
// the first start: most gateways (and every emulated one) may never run a WASM app.
type wasmRuntime struct {
	m           *Manager
	callTimeout time.Duration
	once        sync.Once
	rt          *wasm.Runtime
	err         error
}

func (w *wasmRuntime) Start(ctx context.Context, env AppEnv, u *Unit) (Instance, error) {
	w.once.Do(func() { w.rt, w.err = wasm.NewRuntime(context.Background(), w.m.log.With("component", "wasm")) })
	if w.err != nil {
		return nil, w.err
	}
	return w.rt.Start(ctx, wasm.Config{
		Name: env.Slice + "/" + env.App, Module: u.Module, MemoryLimitBytes: env.MemoryBytes,
		CallTimeout: w.callTimeout, FSDir: env.FilesDir, Host: env.Host,
	})
}

func (w *wasmRuntime) close(ctx context.Context) error {
	w.once.Do(func() {}) // no runtime is made after close
	if w.rt == nil {
		return nil
	}
	return w.rt.Close(ctx)
}

// sliceHost is what one app of one slice reaches of the core: every call checks the slice's
// grants at that moment.
type sliceHost struct {
	m          *Manager
	ls         *liveSlice
	slice, app string
}

// ErrNotGranted is returned when an app uses a service its slice was not granted.
var ErrNotGranted = errors.New("service not granted to the slice")

func (h *sliceHost) granted(svc string) (*liveSlice, error) {
	if g := h.ls.grants.Load(); g == nil || !slices.Contains(*g, svc) {
		return nil, fmt.Errorf("%w: %s", ErrNotGranted, svc)
	}
	return h.ls, nil
}

func (h *sliceHost) Log(level slog.Level, msg string) {
	ls, err := h.granted(ServiceLogger)
	if err != nil {
		return
	}
	if len(msg) > 4096 {
		msg = msg[:4096]
	}
	ls.events.add(Event{Kind: "app.log", Slice: h.slice, App: h.app, Msg: msg, Attrs: map[string]string{"level": level.String()}})
}

func (h *sliceHost) KVGet(key string) ([]byte, bool, error) {
	ls, err := h.granted(ServiceStorage)
	if err != nil {
		return nil, false, err
	}
	return ls.storage.get(h.app, key)
}

func (h *sliceHost) KVPut(key string, val []byte) error {
	ls, err := h.granted(ServiceStorage)
	if err != nil {
		return err
	}
	return ls.storage.put(h.app, key, val)
}

func (h *sliceHost) KVDelete(key string) error {
	ls, err := h.granted(ServiceStorage)
	if err != nil {
		return err
	}
	return ls.storage.delete(h.app, key)
}

func (h *sliceHost) Publish(topic string, data []byte) error {
	if _, err := h.granted(ServicePubSub); err != nil {
		return err
	}
	if err := ValidID("topic", topic); err != nil {
		return err
	}
	if h.m.opts.Overlay == nil {
		return errors.New("pubsub: no overlay")
	}
	t, err := h.m.opts.Overlay.Topic(TopicName(h.slice, topic))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return t.Publish(ctx, data)
}

func (h *sliceHost) Metric(name string, delta float64) {
	if _, err := h.granted(ServiceMetrics); err != nil {
		return
	}
	h.m.metrics.appMetric(h.slice, h.app, name, delta)
}

// TopicName is a slice topic's name on the overlay: the slice's private namespace.
func TopicName(slice, topic string) string { return "/nanodc/slice/" + slice + "/" + topic }

// deliverer is what runtimes that take pub/sub messages implement.
type deliverer interface {
	Deliver(topic string, data []byte) error
}

// subscribeLocked subscribes the app to its topics; the returned funcs unsubscribe.
func (m *Manager) subscribeLocked(sid, app string, topics []string, inst Instance) []func() {
	d, ok := inst.(deliverer)
	if !ok || m.opts.Overlay == nil || len(topics) == 0 {
		return nil
	}
	s := m.st.find(sid)
	if s == nil || !slices.Contains(s.Services, ServicePubSub) {
		return nil
	}
	var out []func()
	for _, topic := range topics {
		t, err := m.opts.Overlay.Topic(TopicName(sid, topic))
		if err != nil {
			continue
		}
		sub, err := t.Subscribe()
		if err != nil {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		m.wg.Go(func() {
			for {
				msg, err := sub.Next(ctx)
				if err != nil {
					return
				}
				if err := d.Deliver(topic, msg.Data); err != nil {
					m.log.Debug("deliver", "slice", sid, "app", app, "err", err)
				}
			}
		})
		out = append(out, func() { cancel(); sub.Cancel() })
	}
	return out
}
