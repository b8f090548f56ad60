package slice

import (
	"context"
	"sync"
	"time"
)

// Event is one entry of an event stream: the remote logger of the multiservice-gateway
// design. The core stream holds what the operator must see (slice changes, denials, the
// watchdog); each slice's stream holds what its provider must see (its apps' logs, states,
// faults, and the watchdog's actions on it).
type Event struct {
	Seq   uint64            `json:"seq"`
	Time  time.Time         `json:"time"`
	Kind  string            `json:"kind"` // e.g. "slice.created", "denied", "app.state", "app.log", "watchdog"
	Slice string            `json:"slice,omitempty"`
	App   string            `json:"app,omitempty"`
	Msg   string            `json:"msg"`
	Attrs map[string]string `json:"attrs,omitempty"`
}

// eventLog is a bounded in-memory stream with sequence numbers, so readers can poll with
// "since" and follow without missing entries (unless they fall more than cap behind).
type eventLog struct {
	mu     sync.Mutex
	buf    []Event
	cap    int
	next   uint64
	notify chan struct{} // closed and replaced on every append
}

func newEventLog(capacity int) *eventLog {
	return &eventLog{cap: capacity, next: 1, notify: make(chan struct{})}
}

func (l *eventLog) add(e Event) Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	e.Seq = l.next
	l.next++
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if len(l.buf) == l.cap {
		copy(l.buf, l.buf[1:])
		l.buf = l.buf[:l.cap-1]
	}
	l.buf = append(l.buf, e)
	close(l.notify)
	l.notify = make(chan struct{})
	return e
}

// since returns the events after seq (at most limit), waiting up to wait for the first one.
func (l *eventLog) since(ctx context.Context, seq uint64, limit int, wait time.Duration) []Event {
	var timer <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timer = t.C
	}
	for {
		l.mu.Lock()
		var out []Event
		for _, e := range l.buf {
			if e.Seq > seq {
				out = append(out, e)
				if limit > 0 && len(out) == limit {
					break
				}
			}
		}
		notify := l.notify
		l.mu.Unlock()
		if len(out) > 0 || timer == nil {
			return out
		}
		select {
		case <-notify:
		case <-timer:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}
