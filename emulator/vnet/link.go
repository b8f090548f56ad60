package vnet

import (
	"errors"
	"math/rand/v2"
	"sync"
	"time"
)

// LinkConfig shapes one direction of an access link. The zero value is an
// ideal link: unlimited rate, no queue limit, no delay, no loss.
type LinkConfig struct {
	// RateBps is the serialisation rate in bits per second, counting
	// HeaderBytes per packet. 0 means unlimited (no serialisation delay).
	RateBps int64
	// QueueBytes is the drop-tail limit on wire bytes waiting for or in
	// serialisation; a packet that would exceed it is dropped. 0 means
	// unlimited. Under load the queueing delay approaches QueueBytes*8/RateBps.
	QueueBytes int
	// Delay is the one-way delay added after serialisation.
	Delay time.Duration
	// Jitter adds a uniformly distributed offset in [-Jitter, +Jitter] to
	// Delay (the total is clamped at zero). Unless Reorder is set, a packet
	// never leaves the link before the one ahead of it, which raises the mean
	// delay slightly when packets are closer together than the jitter.
	Jitter time.Duration
	// Loss is the probability, 0 to 1, that a packet is lost on the line
	// after it has been serialised (so it still used the link's capacity).
	Loss float64
	// Reorder lets jitter reorder packets.
	Reorder bool
}

func (c LinkConfig) validate() error {
	switch {
	case c.RateBps < 0:
		return errors.New("vnet: negative RateBps")
	case c.QueueBytes < 0:
		return errors.New("vnet: negative QueueBytes")
	case c.Delay < 0 || c.Jitter < 0:
		return errors.New("vnet: negative Delay or Jitter")
	case !(c.Loss >= 0 && c.Loss <= 1):
		return errors.New("vnet: Loss outside [0, 1]")
	}
	return nil
}

// link is one direction of an access link. Its state is analytic: the time the
// last accepted packet finishes serialisation determines the backlog, so no
// per-packet timer or goroutine is needed. Callers must present packets in
// (roughly) non-decreasing time order, which the uplink gets from the sender's
// clock and the downlink from the scheduler.
type link struct {
	mu        sync.Mutex
	cfg       LinkConfig
	rng       *rand.Rand
	busyUntil int64 // network time when the last accepted packet is fully serialised
	lastExit  int64 // exit time of the last packet, to keep order
	packets   uint64
	bytes     uint64
	dropped   uint64
}

func newLink(cfg LinkConfig, seed int64, id uint64) *link {
	return &link{cfg: cfg, rng: rand.New(rand.NewPCG(uint64(seed), id))}
}

// send offers a packet of wire bytes to the link at network time t and
// returns the time it leaves the far end, or the reason it was dropped.
func (l *link) send(t int64, wire int) (int64, dropReason, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cfg := &l.cfg
	dep := t
	if cfg.RateBps > 0 {
		if l.busyUntil > t {
			if cfg.QueueBytes > 0 && l.backlogLocked(t)+wire > cfg.QueueBytes {
				l.dropped++
				return 0, dropQueue, false
			}
			dep = l.busyUntil
		}
		dep += int64(wire) * 8e9 / cfg.RateBps
		l.busyUntil = dep
	}
	if cfg.Loss > 0 && l.rng.Float64() < cfg.Loss {
		l.dropped++
		return 0, dropLoss, false
	}
	delay := int64(cfg.Delay)
	if cfg.Jitter > 0 {
		j := int64(cfg.Jitter)
		delay = max(delay+l.rng.Int64N(2*j+1)-j, 0)
	}
	exit := dep + delay
	if !cfg.Reorder {
		exit = max(exit, l.lastExit)
	}
	l.lastExit = max(l.lastExit, exit)
	l.packets++
	l.bytes += uint64(wire)
	return exit, 0, true
}

// backlogLocked is the number of wire bytes queued at time t, including the
// rest of the packet being serialised.
func (l *link) backlogLocked(t int64) int {
	if l.cfg.RateBps <= 0 || l.busyUntil <= t {
		return 0
	}
	return int(float64(l.busyUntil-t) * float64(l.cfg.RateBps) / 8e9)
}

func (l *link) setConfig(cfg LinkConfig) {
	l.mu.Lock()
	l.cfg = cfg
	l.mu.Unlock()
}

func (l *link) stats(now int64) DirStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return DirStats{Packets: l.packets, Bytes: l.bytes, Dropped: l.dropped, QueueBytes: l.backlogLocked(now)}
}
