package wasm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/sys"
)

// Fault codes, from the TR-181 SoftwareModules ExecutionUnit ExecutionFaultCode vocabulary.
const (
	FaultWhileActive = "FailureWhileActive" // the app trapped, ran past its call timeout, or exited non-zero
	FaultOnStop      = "FailureOnStop"      // a guest call did not end before Stop's context did
)

var (
	// ErrStopped is returned for calls into an app that was stopped or whose module exited.
	ErrStopped = errors.New("wasm: app stopped")
	// ErrFaulted wraps the reason for calls into an app that faulted.
	ErrFaulted = errors.New("wasm: app faulted")
	// ErrNoHandler is returned by Deliver when the app does not export on_message.
	ErrNoHandler = errors.New("wasm: app does not export on_message")
)

type state int

const (
	running state = iota
	stopped       // by Stop
	exited        // the module exited with code 0 (a WASI command that ran to completion)
	faulted
)

// App is one running instance of a module in a slice.
type App struct {
	r           *Runtime
	name        string
	host        Host
	logger      *slog.Logger
	comp        *compiled
	mod         api.Module
	root        *os.Root
	mem         *linearMemory
	callTimeout time.Duration
	stdout      *lineLog
	stderr      *lineLog

	handleHTTP, onTimer, onMessage api.Function

	// sem admits one guest call at a time: a wasm instance is single-threaded. A channel rather
	// than a mutex so that waiters can give up when their request goes away or the app ends.
	sem chan struct{}
	// base is the parent of every call's context; Stop cancels it to end a call in flight.
	base   context.Context
	cancel context.CancelFunc
	// deadline of the call in flight (unix ns), so WASI sleeps end with it.
	deadline atomic.Int64

	mu          sync.Mutex // guards what follows
	st          state
	faultCode   string
	faultReason string
	timer       *time.Timer
	timerPeriod time.Duration
	timerGen    uint64 // bumped by every timer_set so a stale timer does nothing
	timerFiring bool

	done     chan struct{}
	teardown sync.Once

	cpu   atomic.Int64
	calls atomic.Int64
}

// Start compiles the module (once per distinct module), instantiates it for one slice and runs
// its start-up: a reactor's _initialize or a command's _start, then the optional init export.
// A command whose _start exits with code 0 has run to completion: Start returns it already done.
func (r *Runtime) Start(ctx context.Context, cfg Config) (*App, error) {
	a, err := r.start(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("wasm: app %q: %w", cfg.Name, err)
	}
	return a, nil
}

func (r *Runtime) start(ctx context.Context, cfg Config) (*App, error) {
	if cfg.Host == nil {
		return nil, errors.New("no Host given")
	}
	limit := cfg.MemoryLimitBytes
	switch {
	case limit == 0:
		limit = DefaultMemoryLimit
	case limit < pageSize:
		return nil, fmt.Errorf("memory limit of %d bytes is below one 64 KiB page", limit)
	case limit > 1<<32:
		limit = 1 << 32 // wasm32 cannot address more
	}
	limitBytes := uint64(limit) / pageSize * pageSize
	timeout := cfg.CallTimeout
	switch {
	case timeout == 0:
		timeout = DefaultCallTimeout
	case timeout < 0:
		return nil, fmt.Errorf("negative call timeout %v", timeout)
	}

	c, err := r.acquire(ctx, cfg.Module)
	if err != nil {
		if errors.Is(err, ErrClosed) || ctx.Err() != nil {
			return nil, err
		}
		return nil, fmt.Errorf("bad module: %w", err)
	}
	if err := validate(c.mod, limitBytes); err != nil {
		r.release(c)
		return nil, err
	}
	var root *os.Root
	if cfg.FSDir != "" {
		if root, err = os.OpenRoot(cfg.FSDir); err != nil {
			r.release(c)
			return nil, fmt.Errorf("storage: %w", err)
		}
	}

	a := &App{
		r:           r,
		name:        cfg.Name,
		host:        cfg.Host,
		logger:      r.logger.With("app", cfg.Name),
		comp:        c,
		root:        root,
		mem:         &linearMemory{limit: limitBytes},
		callTimeout: timeout,
		stdout:      &lineLog{host: cfg.Host, level: slog.LevelInfo},
		stderr:      &lineLog{host: cfg.Host, level: slog.LevelWarn},
		sem:         make(chan struct{}, 1),
		done:        make(chan struct{}),
	}
	// Detached from ctx: the app outlives the request that started it.
	a.base, a.cancel = context.WithCancel(context.Background())

	argv0 := cfg.Name
	if argv0 == "" {
		argv0 = "app"
	}
	// No env, no sockets, no host directories but FSDir: WASI gets clocks, randomness and
	// stdout/stderr (which go to the slice log) and nothing else of the host.
	mcfg := wazero.NewModuleConfig().
		WithName(""). // anonymous: no other module can import from it, and names may repeat
		WithStartFunctions().
		WithArgs(argv0).
		WithSysWalltime().
		WithSysNanotime().
		WithNanosleep(a.nanosleep).
		WithRandSource(rand.Reader).
		WithStdout(a.stdout).
		WithStderr(a.stderr)
	if root != nil {
		mcfg = mcfg.WithFSConfig(wazero.NewFSConfig().(sysfs.FSConfig).WithSysFSMount(&rootFS{root: root}, "/"))
	}
	ictx := experimental.WithMemoryAllocator(context.WithValue(ctx, callKey{}, &callState{app: a}), a.mem.allocator())
	mod, err := r.rt.InstantiateModule(ictx, c.mod, mcfg)
	if err != nil {
		if root != nil {
			_ = root.Close()
		}
		r.release(c)
		return nil, fmt.Errorf("instantiate: %w", err)
	}
	a.mod = mod
	a.handleHTTP = mod.ExportedFunction("handle_http")
	a.onTimer = mod.ExportedFunction("on_timer")
	a.onMessage = mod.ExportedFunction("on_message")
	if !r.addApp(a) {
		a.end()
		return nil, ErrClosed
	}

	entry := ""
	switch {
	case mod.ExportedFunction("_initialize") != nil:
		entry = "_initialize"
	case mod.ExportedFunction("_start") != nil:
		entry = "_start"
	}
	initTimeout := max(10*timeout, initTimeoutFloor)
	for _, n := range []string{entry, "init"} {
		fn := mod.ExportedFunction(n)
		if n == "" || fn == nil {
			continue
		}
		err := a.call(ctx, fn, n, initTimeout, &callState{})
		if a.state() == exited {
			a.logger.Info("app ran to completion", "entry", n)
			return a, nil
		}
		if err != nil {
			a.end()
			if _, reason := a.Fault(); reason != "" {
				return nil, fmt.Errorf("init: %s", reason)
			}
			return nil, fmt.Errorf("init: %w", err)
		}
	}
	a.logger.Info("app started", "memory_limit", limitBytes, "call_timeout", timeout)
	return a, nil
}

// call runs one guest function with the app's call discipline: one at a time, bounded by
// timeout, accounted, and classified when it fails. wait bounds only the wait for the instance
// (a client that goes away); it never reaches the guest, whose call is stopped only by its own
// deadline or by Stop, so a dropped connection cannot fault an app.
func (a *App) call(wait context.Context, fn api.Function, name string, timeout time.Duration, cs *callState) error {
	select {
	case a.sem <- struct{}{}:
	case <-a.done:
		return a.endErr()
	case <-wait.Done():
		return wait.Err()
	}
	defer func() { <-a.sem }()
	if err := a.endErr(); err != nil {
		return err
	}
	cs.app = a
	ctx, cancel := context.WithTimeout(a.base, timeout)
	defer cancel()
	dl, _ := ctx.Deadline()
	a.deadline.Store(dl.UnixNano())
	start := time.Now()
	_, err := fn.Call(context.WithValue(ctx, callKey{}, cs))
	a.cpu.Add(int64(time.Since(start)))
	a.calls.Add(1)
	if err == nil && (a.mod.IsClosed() || !time.Now().Before(dl)) {
		// The deadline hit while the guest was in a host function (a sleep cut short, say)
		// and it returned without running more code, so wazero had no chance to stop it.
		// The outcome must not depend on that race: past the deadline is past the deadline.
		err = sys.NewExitError(sys.ExitCodeDeadlineExceeded)
	}
	if err == nil {
		return nil
	}
	return a.callFailed(name, timeout, err)
}

func (a *App) callFailed(name string, timeout time.Duration, err error) error {
	if a.state() == stopped {
		return ErrStopped // Stop cancelled the call: not the app's fault
	}
	reason := ""
	var ee *sys.ExitError
	if errors.As(err, &ee) {
		switch code := ee.ExitCode(); code {
		case 0:
			a.finish(exited, "", "")
			return fmt.Errorf("%w: module exited", ErrStopped)
		case sys.ExitCodeDeadlineExceeded:
			reason = fmt.Sprintf("%s ran longer than %v and was stopped", name, timeout)
		case sys.ExitCodeContextCanceled:
			reason = name + " was cancelled" // only Stop cancels, handled above; kept for safety
		default:
			reason = fmt.Sprintf("%s exited with code %d", name, code)
		}
	}
	if reason == "" {
		msg, trace, _ := strings.Cut(err.Error(), "\n")
		a.logger.Debug("guest trap", "func", name, "err", msg, "trace", trace)
		reason = fmt.Sprintf("%s trapped: %s", name, msg)
	}
	a.finish(faulted, FaultWhileActive, reason)
	return a.endErr()
}

// finish records how a running app ended and releases it. Only the first ending counts.
func (a *App) finish(st state, code, reason string) {
	a.mu.Lock()
	if a.st != running {
		a.mu.Unlock()
		return
	}
	a.st, a.faultCode, a.faultReason = st, code, reason
	a.mu.Unlock()
	if code != "" {
		a.logger.Warn("app faulted", "code", code, "reason", reason)
	}
	a.end()
}

// end frees everything the app holds and closes Done. The caller holds the call slot (or gave
// up waiting for it), so no guest code runs while the module closes.
func (a *App) end() {
	a.teardown.Do(func() {
		a.mu.Lock()
		if a.st == running {
			a.st = stopped
		}
		if a.timer != nil {
			a.timer.Stop()
			a.timer = nil
		}
		a.timerPeriod = 0
		a.timerGen++
		a.mu.Unlock()
		a.cancel()
		if a.mod != nil {
			_ = a.mod.Close(context.Background())
		}
		a.stdout.flush()
		a.stderr.flush()
		if a.root != nil {
			_ = a.root.Close()
		}
		a.r.release(a.comp)
		a.r.removeApp(a)
		close(a.done)
	})
}

func (a *App) state() state {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st
}

// endErr is nil while the app runs, else why it does not.
func (a *App) endErr() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch a.st {
	case running:
		return nil
	case faulted:
		return fmt.Errorf("%w: %s", ErrFaulted, a.faultReason)
	case exited:
		return fmt.Errorf("%w: module exited", ErrStopped)
	}
	return ErrStopped
}

// Stop ends the app: a guest call in flight is cancelled, the instance closed and its memory
// freed. If a call does not return before ctx is done (it can only be stuck in a host function),
// the app is torn down anyway and the fault FailureOnStop recorded.
func (a *App) Stop(ctx context.Context) error {
	a.mu.Lock()
	if a.st == running {
		a.st = stopped
	}
	a.mu.Unlock()
	a.cancel()
	select {
	case a.sem <- struct{}{}:
		a.end()
		<-a.sem
		return nil
	case <-a.done:
		return nil
	case <-ctx.Done():
		a.mu.Lock()
		if a.faultCode == "" {
			a.faultCode, a.faultReason = FaultOnStop, "a guest call did not end before the stop deadline"
		}
		a.mu.Unlock()
		a.end()
		return ctx.Err()
	}
}

// Fault returns the fault code and reason, or "" when there is none.
func (a *App) Fault() (code string, reason string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.faultCode, a.faultReason
}

// Done is closed when the app stopped, exited or faulted.
func (a *App) Done() <-chan struct{} { return a.done }

// MemoryBytes is the current size of the app's linear memory (0 once it ended).
func (a *App) MemoryBytes() int64 { return a.mem.size.Load() }

// CPUTime is the total wall-clock time spent inside guest calls, host functions included.
func (a *App) CPUTime() time.Duration { return time.Duration(a.cpu.Load()) }

// Calls is the number of guest calls made, start-up included.
func (a *App) Calls() int64 { return a.calls.Load() }

// ServeHTTP hands the request to the guest's handle_http. The body is read first (up to
// MaxRequestBody) so the guest can ask for it by length.
func (a *App) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if err := a.endErr(); err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if a.handleHTTP == nil {
		writeError(w, http.StatusNotImplemented, "app does not handle HTTP")
		return
	}
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(http.MaxBytesReader(w, req.Body, MaxRequestBody))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", MaxRequestBody))
			} else {
				writeError(w, http.StatusBadRequest, "reading request body: "+err.Error())
			}
			return
		}
		body = b
	}
	cs := &callState{req: &request{method: req.Method, uri: req.URL.RequestURI(), body: body}}
	if err := a.call(req.Context(), a.handleHTTP, "handle_http", a.callTimeout, cs); err != nil {
		if req.Context().Err() != nil {
			return // the client is gone
		}
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if cs.resp == nil {
		writeError(w, http.StatusBadGateway, "app did not respond")
		return
	}
	h := w.Header()
	h.Set("Content-Type", cs.resp.ctype)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(cs.resp.body)))
	w.WriteHeader(cs.resp.status)
	_, _ = w.Write(cs.resp.body)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// Deliver hands a pub/sub message to the guest's on_message and waits for it to be handled.
func (a *App) Deliver(topic string, data []byte) error {
	if err := a.endErr(); err != nil {
		return err
	}
	if a.onMessage == nil {
		return ErrNoHandler
	}
	// Bounded wait for the instance: messages queue behind other calls, but a caller is never
	// blocked for good (say, a host that delivered to the app from inside one of its calls).
	wait := max(10*a.callTimeout, initTimeoutFloor)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	err := a.call(ctx, a.onMessage, "on_message", a.callTimeout, &callState{msg: &message{topic: topic, data: data}})
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("wasm: app busy for %v, message dropped: %w", wait, err)
	}
	return err
}

// setTimer is timer_set: a period of 0 cancels. It runs inside a guest call, so it only arms a
// time.AfterFunc; the timer fires on_timer, and re-arms only after that call has returned, so
// a slow on_timer never piles up calls or goroutines.
func (a *App) setTimer(d time.Duration) {
	if a.onTimer == nil {
		a.logger.Debug("timer_set ignored: app does not export on_timer")
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st != running {
		return
	}
	a.timerGen++
	a.timerPeriod = d
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
	if d > 0 && !a.timerFiring {
		a.armLocked()
	}
}

func (a *App) armLocked() {
	gen := a.timerGen
	a.timer = time.AfterFunc(a.timerPeriod, func() { a.fire(gen) })
}

func (a *App) fire(gen uint64) {
	a.mu.Lock()
	if gen != a.timerGen || a.st != running {
		a.mu.Unlock()
		return
	}
	a.timer = nil
	a.timerFiring = true
	a.mu.Unlock()
	err := a.call(context.Background(), a.onTimer, "on_timer", a.callTimeout, &callState{})
	a.mu.Lock()
	a.timerFiring = false
	if err == nil && a.st == running && a.timerPeriod > 0 {
		a.armLocked()
	}
	a.mu.Unlock()
}

// nanosleep is WASI's sleep: real, but never past the deadline of the call in flight, so a
// sleeping guest is stopped on time like a spinning one.
func (a *App) nanosleep(ns int64) {
	d := time.Duration(ns)
	if rem := time.Until(time.Unix(0, a.deadline.Load())); rem < d {
		d = rem
	}
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-a.base.Done():
	}
}

// lineLog turns a guest's stdout or stderr into log lines of the slice.
type lineLog struct {
	mu    sync.Mutex
	host  Host
	level slog.Level
	buf   []byte
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.buf = append(l.buf, p...)
			if len(l.buf) >= maxLogLen {
				l.emitLocked()
			}
			break
		}
		l.buf = append(l.buf, p[:i]...)
		l.emitLocked()
		p = p[i+1:]
	}
	return n, nil
}

func (l *lineLog) emitLocked() {
	line := l.buf
	if len(line) > maxLogLen {
		line = line[:maxLogLen]
	}
	l.host.Log(l.level, strings.ToValidUTF8(string(line), "\uFFFD"))
	l.buf = l.buf[:0]
}

func (l *lineLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.emitLocked()
	}
}
