// Package wasm runs providers' WebAssembly apps inside slices with wazero.
//
// One Runtime per node holds the wazero runtime, the nanodc host module, WASI preview 1, and
// compiled modules keyed by the SHA-256 of their bytes, so deploying the same app to many slices
// compiles it once. Start instantiates a module as an App for one slice. An App sees only what
// its slice hands it: a Host (kv, pub/sub, logs, metrics) and one directory through WASI. Its
// linear memory is capped, every guest call has a wall-clock bound, and a fault in it (a trap, a
// runaway loop, running out of memory) ends that App alone, records a TR-181 style fault code,
// and leaves the Runtime and the other apps serving. The guest ABI is documented in ABI.md.
package wasm

import (
	"container/list"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// Defaults and bounds for Config.
const (
	DefaultMemoryLimit = 16 << 20
	DefaultCallTimeout = 100 * time.Millisecond
	// MaxRequestBody bounds the HTTP request body handed to a guest.
	MaxRequestBody = 1 << 20
	// initTimeoutFloor: start-up (a language runtime's _initialize plus the app's init) gets
	// ten call timeouts but at least this, so a busy machine does not fail a healthy deploy.
	initTimeoutFloor = time.Second
	// maxIdleModules compiled modules no app uses are kept for a redeploy; older ones are freed.
	maxIdleModules = 8
	wasiModule     = wasi_snapshot_preview1.ModuleName
)

// ErrClosed is returned by Start after Runtime.Close.
var ErrClosed = errors.New("wasm: runtime closed")

// Host is what the slice gives an app: all of it is scoped to that slice by the caller.
type Host interface {
	Log(level slog.Level, msg string)
	KVGet(key string) (val []byte, ok bool, err error)
	KVPut(key string, val []byte) error // the host enforces the slice's storage quota
	KVDelete(key string) error
	Publish(topic string, data []byte) error // topic is relative to the slice
	Metric(name string, delta float64)       // adds to a per-app counter
	// CallService sends body to path of the service name offered by another app of the
	// slice, and returns the answer's status and body; ErrNoService when no app offers it.
	CallService(ctx context.Context, name, path string, body []byte) (status int, resp []byte, err error)
}

// ErrNoService is what Host.CallService returns for a service nobody offers in the slice.
var ErrNoService = errors.New("no such service in the slice")

// Config describes one app to start.
type Config struct {
	Name             string
	Module           []byte        // the .wasm bytes
	MemoryLimitBytes int64         // hard cap on linear memory (rounded down to 64 KiB pages; 0 = 16 MiB)
	CallTimeout      time.Duration // wall-clock bound on any one guest call (0 = 100ms); runaway code is stopped
	FSDir            string        // the slice's private storage, the only directory WASI sees (mounted at "/"); "" = none
	Host             Host
}

// Runtime is one per node: the shared wazero runtime and its compiled-module cache.
type Runtime struct {
	logger *slog.Logger
	rt     wazero.Runtime

	mu      sync.Mutex
	closed  bool
	modules map[[32]byte]*compiled
	idle    *list.List // of *compiled with no app, oldest first
	apps    map[*App]struct{}
}

// compiled is one module compiled once and shared by every app started from the same bytes.
type compiled struct {
	key   [32]byte
	ready chan struct{} // closed when mod or err is set
	mod   wazero.CompiledModule
	err   error
	refs  int
	idle  *list.Element
}

// NewRuntime creates the node's runtime. The context is only used while setting it up.
func NewRuntime(ctx context.Context, logger *slog.Logger) (*Runtime, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// Memory caps are per app (see linearMemory), so the runtime-wide limit stays at the
	// default. Closing on context done is what lets a call's deadline stop runaway code.
	cfg := wazero.NewRuntimeConfig().WithCloseOnContextDone(true)
	rt := wazero.NewRuntimeWithConfig(ctx, cfg)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		_ = rt.Close(ctx)
		return nil, fmt.Errorf("wasm: instantiate WASI: %w", err)
	}
	if err := instantiateABI(ctx, rt); err != nil {
		_ = rt.Close(ctx)
		return nil, fmt.Errorf("wasm: instantiate host module: %w", err)
	}
	return &Runtime{
		logger:  logger,
		rt:      rt,
		modules: make(map[[32]byte]*compiled),
		idle:    list.New(),
		apps:    make(map[*App]struct{}),
	}, nil
}

// Close stops every app still running and frees the runtime.
func (r *Runtime) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	apps := make([]*App, 0, len(r.apps))
	for a := range r.apps {
		apps = append(apps, a)
	}
	r.mu.Unlock()
	var errs []error
	for _, a := range apps {
		if err := a.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, r.rt.Close(ctx))
	return errors.Join(errs...)
}

// acquire returns the compiled module for these bytes, compiling it at most once even when many
// slices deploy it at the same moment.
func (r *Runtime) acquire(ctx context.Context, bin []byte) (*compiled, error) {
	key := sha256.Sum256(bin)
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, ErrClosed
	}
	c, ok := r.modules[key]
	if ok {
		c.refs++
		if c.idle != nil {
			r.idle.Remove(c.idle)
			c.idle = nil
		}
		r.mu.Unlock()
		select {
		case <-c.ready:
		case <-ctx.Done():
			r.release(c)
			return nil, ctx.Err()
		}
		if c.err != nil {
			r.release(c)
			return nil, c.err
		}
		return c, nil
	}
	c = &compiled{key: key, ready: make(chan struct{}), refs: 1}
	r.modules[key] = c
	r.mu.Unlock()

	c.mod, c.err = r.rt.CompileModule(ctx, bin)
	close(c.ready)
	if c.err != nil {
		r.mu.Lock()
		delete(r.modules, key) // a later deploy may fix its context or the runtime may differ
		r.mu.Unlock()
		return nil, c.err
	}
	return c, nil
}

// release drops an app's hold on a compiled module; the least recently used idle ones beyond
// maxIdleModules are freed.
func (r *Runtime) release(c *compiled) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c.refs--
	if c.refs > 0 || c.err != nil || r.modules[c.key] != c {
		return
	}
	c.idle = r.idle.PushBack(c)
	for r.idle.Len() > maxIdleModules {
		old := r.idle.Remove(r.idle.Front()).(*compiled)
		old.idle = nil
		delete(r.modules, old.key)
		// Closed under the lock: wazero's engine keys compiled code by module hash, so a
		// recompile of the same bytes must not start before this one is gone.
		_ = old.mod.Close(context.Background())
	}
}

// validate checks a compiled module against what Start can give it, so the error names the
// problem instead of surfacing as a link or allocation failure inside wazero.
func validate(mod wazero.CompiledModule, limit uint64) error {
	for _, def := range mod.ImportedFunctions() {
		m, n, _ := def.Import()
		switch m {
		case wasiModule:
		case hostModule:
			f, ok := abiSignature[n]
			if !ok {
				return fmt.Errorf("imports %s.%s, which the nanodc ABI does not have", m, n)
			}
			if !sameTypes(def.ParamTypes(), f.params) || !sameTypes(def.ResultTypes(), f.results) {
				return fmt.Errorf("imports %s.%s with type %s, want %s", m, n,
					sig(def.ParamTypes(), def.ResultTypes()), sig(f.params, f.results))
			}
		default:
			return fmt.Errorf("imports %s.%s: only %q and %q are provided", m, n, hostModule, wasiModule)
		}
	}
	for _, def := range mod.ImportedMemories() {
		m, n, _ := def.Import()
		return fmt.Errorf("imports memory %s.%s: an app must define and export its own", m, n)
	}
	mem, ok := mod.ExportedMemories()["memory"]
	if !ok {
		return errors.New(`missing export "memory"`)
	}
	if minBytes := uint64(mem.Min()) * pageSize; minBytes > limit {
		return fmt.Errorf("initial memory %s (%d pages) is over the cap of %s (%d pages)",
			bytesString(minBytes), mem.Min(), bytesString(limit), limit/pageSize)
	}
	for n, def := range mod.ExportedFunctions() {
		switch n {
		case "_start", "_initialize", "init", "handle_http", "on_timer", "on_message":
			if len(def.ParamTypes()) != 0 || len(def.ResultTypes()) != 0 {
				return fmt.Errorf("export %q has type %s, want () -> ()", n, sig(def.ParamTypes(), def.ResultTypes()))
			}
		}
	}
	return nil
}

func sameTypes(a, b []api.ValueType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func sig(params, results []api.ValueType) string {
	s := func(ts []api.ValueType) string {
		out := "("
		for i, t := range ts {
			if i > 0 {
				out += ", "
			}
			out += api.ValueTypeName(t)
		}
		return out + ")"
	}
	return s(params) + " -> " + s(results)
}

func bytesString(n uint64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

func (r *Runtime) addApp(a *App) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.apps[a] = struct{}{}
	return true
}

func (r *Runtime) removeApp(a *App) {
	r.mu.Lock()
	delete(r.apps, a)
	r.mu.Unlock()
}

// ensure App satisfies http.Handler: the slice manager mounts it directly.
var _ http.Handler = (*App)(nil)
