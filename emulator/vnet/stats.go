package vnet

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// dropReason says why a packet never reached a reader.
type dropReason int

const (
	dropQueue dropReason = iota
	dropLoss
	dropDown
	dropPartition
	dropMTU
	dropNoListener
	dropReadBuffer
	dropClosed
	numDropReasons
)

// Drops counts dropped packets by reason.
type Drops struct {
	Queue      uint64 // a link's drop-tail queue was full
	Loss       uint64 // random loss on a link
	Down       uint64 // sending or receiving host, or a site uplink on the path, was down
	Partition  uint64 // the sites were partitioned
	MTU        uint64 // payload + HeaderBytes exceeded the MTU
	NoListener uint64 // no host or no conn at the destination address
	ReadBuffer uint64 // the receiving conn's read buffer was full (reader too slow)
	Closed     uint64 // the receiving conn closed before the packet was read
}

// Total is the sum over all reasons.
func (d Drops) Total() uint64 {
	return d.Queue + d.Loss + d.Down + d.Partition + d.MTU + d.NoListener + d.ReadBuffer + d.Closed
}

// Lateness summarises how late (actual − scheduled time) the network acted.
// Early actions, up to Options.TimerSlack, count as zero. Quantiles come from
// a log-linear histogram with about 6 % resolution.
type Lateness struct {
	Count uint64
	Mean  time.Duration
	P50   time.Duration
	P99   time.Duration
	Max   time.Duration
}

// Stats is a snapshot of network-wide counters. Sent − Delivered −
// Dropped.Total() is the number of packets still in flight.
type Stats struct {
	Sent      uint64 // WriteTo calls that accepted a packet
	Delivered uint64 // packets returned by ReadFrom
	Dropped   Drops
	// Scheduler is the lateness of downlink-arrival events, measured for
	// every event. It only harms fidelity when it exceeds the downlink's
	// serialisation plus delay, but it shows CPU starvation first.
	Scheduler Lateness
	// Reader is ReadFrom's return time minus the packet's due time, for every
	// packet read. It is the timing error the application sees (including
	// time the reader spent elsewhere before calling ReadFrom).
	Reader Lateness
}

// Stats returns a snapshot of the network's counters.
func (n *Network) Stats() Stats {
	s := Stats{
		Sent:      n.sent.Load(),
		Delivered: n.delivered.Load(),
		Scheduler: n.schedLate.summary(),
		Reader:    n.readLate.summary(),
	}
	ld := func(r dropReason) uint64 { return n.drops[r].Load() }
	s.Dropped = Drops{
		Queue: ld(dropQueue), Loss: ld(dropLoss), Down: ld(dropDown), Partition: ld(dropPartition),
		MTU: ld(dropMTU), NoListener: ld(dropNoListener), ReadBuffer: ld(dropReadBuffer), Closed: ld(dropClosed),
	}
	return s
}

// TakeLateness returns the scheduler and reader lateness recorded since its previous call
// (or since New) and starts a new interval: the emulator's per-second validity figures.
func (n *Network) TakeLateness() (scheduler, reader Lateness) {
	return n.schedLate.interval.take(), n.readLate.interval.take()
}

// ResetLateness restarts the run-long lateness figures of Stats, e.g. once start-up is over,
// and returns what they were.
func (n *Network) ResetLateness() (scheduler, reader Lateness) {
	return n.schedLate.run.take(), n.readLate.run.take()
}

// lateness keeps two histograms: one for the whole run, one per interval.
type lateness struct{ run, interval histogram }

func (l *lateness) record(v int64) {
	l.run.record(v)
	l.interval.record(v)
}

func (l *lateness) summary() Lateness { return l.run.summary() }

// LinkStats reports one host's access link, per direction.
type LinkStats struct {
	Up   DirStats // host → network
	Down DirStats // network → host
}

// DirStats reports one direction of an access link.
type DirStats struct {
	Packets    uint64 // packets that crossed the link
	Bytes      uint64 // their wire bytes (payload + HeaderBytes)
	Dropped    uint64 // packets dropped by this link's queue or random loss
	QueueBytes int    // bytes queued now, including the one being serialised
}

// histogram is a lock-free log-linear histogram of non-negative nanosecond
// values: 16 sub-buckets per power of two, so a fixed 4.7 KB whatever the
// number of samples.
type histogram struct {
	counts [histBuckets]atomic.Uint64
	sum    atomic.Int64
	max    atomic.Int64
}

const (
	histSub     = 16
	histSubBits = 4
	histMaxExp  = 40 // values are clamped below 2^40 ns ≈ 18 min
	histBuckets = (histMaxExp - histSubBits + 1) * histSub
)

func bucketOf(v int64) int {
	if v < histSub {
		return int(max(v, 0))
	}
	e := bits.Len64(uint64(v)) - 1
	if e >= histMaxExp {
		return histBuckets - 1
	}
	sub := int(uint64(v)>>(e-histSubBits)) & (histSub - 1)
	return (e-histSubBits+1)*histSub + sub
}

// bucketMid is a representative value for bucket i (its midpoint).
func bucketMid(i int) int64 {
	if i < 2*histSub {
		return int64(i)
	}
	e := i/histSub + histSubBits - 1
	low := int64(histSub+i%histSub) << (e - histSubBits)
	return low + int64(1)<<(e-histSubBits)/2
}

func (h *histogram) record(v int64) {
	v = max(v, 0)
	h.counts[bucketOf(v)].Add(1)
	h.sum.Add(v)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

func (h *histogram) summary() Lateness { return h.summarise(false) }

// take summarises and empties the histogram, for per-interval figures. A sample recorded
// while it runs may land in either interval.
func (h *histogram) take() Lateness { return h.summarise(true) }

func (h *histogram) summarise(reset bool) Lateness {
	var counts [histBuckets]uint64
	var total uint64
	for i := range counts {
		if reset {
			counts[i] = h.counts[i].Swap(0)
		} else {
			counts[i] = h.counts[i].Load()
		}
		total += counts[i]
	}
	sum, mx := h.sum.Load(), h.max.Load()
	if reset {
		sum, mx = h.sum.Swap(0), h.max.Swap(0)
	}
	l := Lateness{Count: total, Max: time.Duration(mx)}
	if total == 0 {
		return l
	}
	l.Mean = time.Duration(sum / int64(total))
	quantile := func(q float64) time.Duration {
		rank := uint64(math.Ceil(q * float64(total)))
		var cum uint64
		for i, c := range counts {
			cum += c
			if cum >= rank {
				return min(time.Duration(bucketMid(i)), l.Max)
			}
		}
		return l.Max
	}
	l.P50 = quantile(0.50)
	l.P99 = quantile(0.99)
	return l
}
