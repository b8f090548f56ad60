package vnet

import (
	"math"
	"sync"
	"time"
)

// event is a packet arriving at the downlink of dst at network time at.
type event struct {
	at  int64
	seq uint64 // FIFO among equal times
	pkt *packet
	dst *Host
}

func (e *event) before(o *event) bool {
	return e.at < o.at || (e.at == o.at && e.seq < o.seq)
}

// shard is one scheduler: a min-heap of events and the goroutine that fires
// them. Every host belongs to one shard, so its downlink sees its arrivals in
// time order.
type shard struct {
	n    *Network
	wake chan struct{} // capacity 1

	mu   sync.Mutex
	heap []event
	seq  uint64
	// sleepUntil is when the goroutine will next look at the heap:
	// MinInt64 while it is running, MaxInt64 while idle.
	sleepUntil int64
}

func newShard(n *Network) *shard {
	return &shard{n: n, wake: make(chan struct{}, 1), sleepUntil: math.MinInt64}
}

// push schedules p to arrive at dst's downlink at network time at.
func (s *shard) push(at int64, p *packet, dst *Host) {
	s.mu.Lock()
	s.seq++
	s.heap = append(s.heap, event{at: at, seq: s.seq, pkt: p, dst: dst})
	s.up(len(s.heap) - 1)
	wake := at-s.n.slack < s.sleepUntil
	if wake {
		s.sleepUntil = math.MinInt64
	}
	s.mu.Unlock()
	if wake {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

func (s *shard) up(i int) {
	h := s.heap
	for i > 0 {
		p := (i - 1) / 2
		if !h[i].before(&h[p]) {
			return
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (s *shard) pop() event {
	h := s.heap
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h[last] = event{}
	h = h[:last]
	for i := 0; ; {
		l := 2*i + 1
		if l >= len(h) {
			break
		}
		m := l
		if r := l + 1; r < len(h) && h[r].before(&h[l]) {
			m = r
		}
		if !h[m].before(&h[i]) {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	s.heap = h
	return top
}

// run fires due events until the network closes. Events due within the
// timer slack are fired early: Go timers are late rather than early, so this
// centres the error.
func (s *shard) run() {
	n := s.n
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var batch []event
	for {
		s.mu.Lock()
		now := n.now()
		for len(s.heap) > 0 && s.heap[0].at <= now+n.slack {
			batch = append(batch, s.pop())
		}
		if len(batch) == 0 {
			wait := time.Duration(-1)
			s.sleepUntil = math.MaxInt64
			if len(s.heap) > 0 {
				s.sleepUntil = s.heap[0].at - n.slack
				wait = time.Duration(s.sleepUntil - now)
			}
			s.mu.Unlock()
			if wait < 0 {
				select {
				case <-s.wake:
				case <-n.done:
					return
				}
				continue
			}
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-s.wake:
				timer.Stop()
			case <-n.done:
				timer.Stop()
				return
			}
			continue
		}
		s.sleepUntil = math.MinInt64
		s.mu.Unlock()
		for i := range batch {
			n.schedLate.record(now - batch[i].at)
			n.arrive(&batch[i], now)
			batch[i] = event{}
		}
		batch = batch[:0]
		select {
		case <-n.done:
			return
		default:
		}
	}
}

// arrive runs a packet through its destination's downlink and hands it to the
// listening conn with the time it is due.
func (n *Network) arrive(ev *event, now int64) {
	dst, p := ev.dst, ev.pkt
	if !dst.isUp.Load() {
		n.drop(p, dropDown)
		return
	}
	readyAt, reason, ok := dst.down.send(ev.at, wireSize(len(p.buf)))
	if !ok {
		n.drop(p, reason)
		return
	}
	c := dst.conn(p.dstPort)
	if c == nil {
		n.drop(p, dropNoListener)
		return
	}
	c.enqueue(p, readyAt, now)
}
