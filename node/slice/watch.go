package slice

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Watching instead of polling. A provider (or the operator) that wants its probe every second
// sends the request once with EveryMs set; the gateway answers at once and then again every
// EveryMs on the same stream until the caller goes away. Polling pays, per answer, a stream
// open, a request and its acknowledgements, and wakes the gateway once per caller; a watch
// pays one write, and all watches with the same period are served by one timer, one wake-up.
// BenchmarkProbePollingGatewaySide measures both (docs/BENCHMARKS.md).

// Watchable ops are the read-only ones worth repeating.
var watchableOps = []Op{OpProbeCore, OpProbeSlice, OpSliceGet, OpSliceList, OpAppList}

// Watch periods allowed.
const (
	MinWatchEvery = 250 * time.Millisecond
	MaxWatchEvery = time.Hour
)

func validateWatch(req Request) error {
	if req.EveryMs == 0 {
		return nil
	}
	if !slices.Contains(watchableOps, req.Op) {
		return fmt.Errorf("request: every_ms: %s cannot be watched (only %v)", req.Op, watchableOps)
	}
	if d := time.Duration(req.EveryMs) * time.Millisecond; d < MinWatchEvery || d > MaxWatchEvery {
		return fmt.Errorf("request: every_ms must be in [%d, %d]", MinWatchEvery.Milliseconds(), MaxWatchEvery.Milliseconds())
	}
	return nil
}

// Watch answers req for p now and then every req.EveryMs through send, until ctx ends, send
// fails (the caller is gone) or an answer is not 200 (access withdrawn, slice removed): that
// last answer is sent, and the watch ends. Each answer is checked against the access matrix
// as a fresh request would be.
func (m *Manager) Watch(ctx context.Context, p Principal, req Request, send func(Response) error) error {
	if err := validateWatch(req); err != nil {
		return badRequest("%v", err)
	}
	if req.EveryMs == 0 {
		return badRequest("watch needs every_ms")
	}
	every := time.Duration(req.EveryMs) * time.Millisecond
	once := req
	once.EveryMs = 0
	first := m.Respond(ctx, p, once)
	if err := send(first); err != nil || first.Status != http.StatusOK {
		return err
	}
	w := &watcher{p: p, req: once, send: send, done: make(chan error, 1)}
	g := m.watches.join(m, every, w)
	defer g.leave(w)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-w.done:
		if errors.Is(err, errWatchEnded) {
			return nil
		}
		return err
	}
}

type watcher struct {
	p    Principal
	req  Request
	send func(Response) error
	done chan error // one value: why the watch ended (nil: the last answer was not 200)
}

// watchHub groups the gateway's watches by period.
type watchHub struct {
	mu     sync.Mutex
	groups map[time.Duration]*watchGroup
}

type watchGroup struct {
	hub      *watchHub
	every    time.Duration
	mu       sync.Mutex
	watchers []*watcher
	stop     chan struct{}
}

func (h *watchHub) join(m *Manager, every time.Duration, w *watcher) *watchGroup {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.groups == nil {
		h.groups = map[time.Duration]*watchGroup{}
	}
	g := h.groups[every]
	if g == nil {
		g = &watchGroup{hub: h, every: every, stop: make(chan struct{})}
		h.groups[every] = g
		go g.run(m)
	}
	g.mu.Lock()
	g.watchers = append(g.watchers, w)
	g.mu.Unlock()
	return g
}

// leave removes w; the last one out stops the group's timer.
func (g *watchGroup) leave(w *watcher) {
	g.hub.mu.Lock()
	defer g.hub.mu.Unlock()
	g.mu.Lock()
	g.watchers = slices.DeleteFunc(g.watchers, func(x *watcher) bool { return x == w })
	empty := len(g.watchers) == 0
	g.mu.Unlock()
	if empty && g.hub.groups[g.every] == g {
		delete(g.hub.groups, g.every)
		close(g.stop)
	}
}

// run answers every watcher of the group once per period. A watcher whose send fails or
// whose answer is not 200 is told to end; the others go on.
func (g *watchGroup) run(m *Manager) {
	tick := time.NewTicker(g.every)
	defer tick.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-tick.C:
		}
		g.mu.Lock()
		ws := slices.Clone(g.watchers)
		g.mu.Unlock()
		for _, w := range ws {
			resp := m.Respond(context.Background(), w.p, w.req)
			err := w.send(resp)
			if err == nil && resp.Status != http.StatusOK {
				err = errWatchEnded
			}
			if err != nil {
				g.mu.Lock()
				g.watchers = slices.DeleteFunc(g.watchers, func(x *watcher) bool { return x == w })
				g.mu.Unlock()
				select {
				case w.done <- err:
				default:
				}
			}
		}
	}
}

var errWatchEnded = errors.New("watch ended: the last answer was not 200")
