// Package vnet is an in-memory, shaped UDP packet network for the emulator.
//
// It lets hundreds of real go-libp2p nodes run in one process, each behind an
// emulated DSL access link, by handing them [net.PacketConn]s that never touch
// a socket (plug [Host.ListenUDP] into quicreuse.OverrideListenUDP). Every
// host has an IPv4 address in 127.0.0.0/8, so nothing can ever leave the
// machine, and sits behind an access node (a site). A packet from host A to
// host B travels
//
//	A uplink (drop-tail queue, serialisation, delay, jitter, loss)
//	→ backbone delay between A's site and B's site
//	→ B downlink (drop-tail queue, serialisation, delay, jitter, loss)
//	→ B's conn.
//
// Serialisation counts the wire size: UDP payload plus [HeaderBytes] of IPv4
// and UDP header. Queues are measured in bytes and drop the arriving packet
// when full, so bufferbloat is reproduced: under load the queueing delay
// approaches QueueBytes*8/RateBps. Jitter is uniform and keeps packet order
// unless [LinkConfig.Reorder] is set; loss and jitter come from per-link
// generators seeded by [Options.Seed]. Packets between two conns of the same
// host bypass the access link, as the kernel's loopback does. Drops are
// silent, as on a real network, and counted by reason.
//
// The uplink is computed analytically when the packet is written. The
// downlink must see packets in arrival order, so arrivals go through a
// time-ordered scheduler (a min-heap per shard, one goroutine per shard). The
// receiving conn gets each packet with the time it is due and ReadFrom waits
// for that time, so delivery costs no scheduler event. There is no goroutine
// per packet or per link.
//
// The model runs in real time, and Go timers fire late when the CPUs are busy
// (and round sub-millisecond sleeps up to a millisecond on Linux). Events and
// deliveries are therefore allowed to happen up to [Options.TimerSlack] early,
// which centres the timing error around zero, and the network measures its
// own lateness ([Network.Stats]) so that a run whose timing went wrong can be
// flagged instead of trusted.
package vnet

import (
	"errors"
	"fmt"
	"math"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// HeaderBytes is the IPv4 (20) plus UDP (8) header size added to every
// payload on the wire; it counts for serialisation, queues and the MTU.
const HeaderBytes = 28

// Defaults for zero-valued [Options] fields.
const (
	DefaultMTU             = 1500
	DefaultReadBufferBytes = 512 << 10
	DefaultTimerSlack      = 500 * time.Microsecond
)

// Options configure a [Network]. The zero value is usable.
type Options struct {
	// Seed seeds the per-link random number generators used for loss and
	// jitter. Link i gets a stream derived from Seed and the order in which
	// hosts were added, so the same Seed, hosts and per-link packet sequence
	// give the same losses.
	Seed int64
	// MTU is the largest IP packet (payload + HeaderBytes) a link carries;
	// larger ones are dropped. 0 means DefaultMTU.
	MTU int
	// DefaultBackboneDelay is the one-way backbone delay between two
	// different sites that have no SetSiteDelay entry.
	DefaultBackboneDelay time.Duration
	// ReadBufferBytes bounds the payload bytes a conn holds that are due but
	// not yet read, like a socket receive buffer; arrivals beyond it are
	// dropped. 0 means DefaultReadBufferBytes.
	ReadBufferBytes int
	// TimerSlack is how early the scheduler and readers may act on an event
	// to offset timer lateness. 0 means DefaultTimerSlack; negative means none.
	TimerSlack time.Duration
	// Shards is the number of scheduler goroutines; hosts are spread over
	// them. 0 means GOMAXPROCS.
	Shards int
}

// Network is an in-memory UDP network of shaped hosts. Create one with
// [New], add hosts with [Network.AddHost], and Close it when done. All methods
// are safe for concurrent use.
type Network struct {
	mtu      int
	rcvBuf   int
	slack    int64
	seed     int64
	defDelay int64
	epoch    time.Time
	pool     sync.Pool

	mu     sync.RWMutex
	closed bool
	hosts  map[[4]byte]*Host
	order  []*Host
	sites  map[string]*site
	delays map[sitePair]int64

	blocked atomic.Pointer[func(a, b string) bool]

	shards []*shard
	done   chan struct{}
	wg     sync.WaitGroup

	sent      atomic.Uint64
	delivered atomic.Uint64
	drops     [numDropReasons]atomic.Uint64
	schedLate lateness
	readLate  lateness
}

// site is an access node: the hosts behind it share its uplink to the
// backbone.
type site struct {
	name string
	id   int
	down atomic.Bool
}

// sitePair keys the backbone delay table, lower site id first.
type sitePair struct{ a, b int }

// New returns a running network. Close it to stop its goroutines.
func New(opts Options) *Network {
	n := &Network{
		mtu:      opts.MTU,
		rcvBuf:   opts.ReadBufferBytes,
		slack:    int64(opts.TimerSlack),
		seed:     opts.Seed,
		defDelay: max(int64(opts.DefaultBackboneDelay), 0),
		epoch:    time.Now(),
		hosts:    make(map[[4]byte]*Host),
		sites:    make(map[string]*site),
		delays:   make(map[sitePair]int64),
		done:     make(chan struct{}),
	}
	if n.mtu <= 0 {
		n.mtu = DefaultMTU
	}
	if n.rcvBuf <= 0 {
		n.rcvBuf = DefaultReadBufferBytes
	}
	switch {
	case n.slack == 0:
		n.slack = int64(DefaultTimerSlack)
	case n.slack < 0:
		n.slack = 0
	}
	bufSize := max(n.mtu-HeaderBytes, 0)
	n.pool.New = func() any { return &packet{buf: make([]byte, 0, bufSize)} }
	shards := opts.Shards
	if shards <= 0 {
		shards = runtime.GOMAXPROCS(0)
	}
	for range shards {
		s := newShard(n)
		n.shards = append(n.shards, s)
		n.wg.Go(s.run)
	}
	return n
}

// now is the network clock: monotonic nanoseconds since New.
func (n *Network) now() int64 { return int64(time.Since(n.epoch)) }

// netTime converts a deadline to the network clock; the zero time means none.
func (n *Network) netTime(t time.Time) int64 {
	if t.IsZero() {
		return math.MaxInt64
	}
	return int64(t.Sub(n.epoch))
}

// siteLocked returns the named site, creating it. n.mu must be held for writing.
func (n *Network) siteLocked(name string) *site {
	s, ok := n.sites[name]
	if !ok {
		s = &site{name: name, id: len(n.sites)}
		n.sites[name] = s
	}
	return s
}

// SetSiteDelay sets the one-way backbone delay between sites a and b, in both
// directions. Hosts in the same site see no backbone delay; pairs never set
// use Options.DefaultBackboneDelay. Negative delays count as zero.
func (n *Network) SetSiteDelay(a, b string, oneWay time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	sa, sb := n.siteLocked(a), n.siteLocked(b)
	if sa == sb {
		return
	}
	n.delays[pairOf(sa, sb)] = max(int64(oneWay), 0)
}

func pairOf(a, b *site) sitePair {
	if a.id > b.id {
		a, b = b, a
	}
	return sitePair{a.id, b.id}
}

// backbone returns the one-way delay between two sites.
func (n *Network) backbone(a, b *site) int64 {
	if a == b {
		return 0
	}
	n.mu.RLock()
	d, ok := n.delays[pairOf(a, b)]
	n.mu.RUnlock()
	if !ok {
		return n.defDelay
	}
	return d
}

// SetSiteUp takes a site's uplink to the backbone down or back up. While it
// is down, packets between its hosts and other sites are dropped; traffic
// inside the site still flows.
func (n *Network) SetSiteUp(name string, up bool) {
	n.mu.Lock()
	s := n.siteLocked(name)
	n.mu.Unlock()
	s.down.Store(!up)
}

// SetPartition installs a function that reports whether traffic between two
// different sites is blocked (it must be symmetric and fast: it runs for every
// packet that crosses sites). nil removes the partition.
func (n *Network) SetPartition(blocked func(siteA, siteB string) bool) {
	if blocked == nil {
		n.blocked.Store(nil)
		return
	}
	n.blocked.Store(&blocked)
}

// Host returns the host with the given IP, or nil.
func (n *Network) Host(ip net.IP) *Host {
	key, ok := ipKey(ip)
	if !ok {
		return nil
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.hosts[key]
}

// ErrNetworkClosed is returned by AddHost and ListenUDP after Network.Close.
var ErrNetworkClosed = errors.New("vnet: network closed")

// Close stops the scheduler goroutines and closes every conn, so blocked
// readers return [net.ErrClosed]. Packets in flight are discarded. Close is
// idempotent.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	hosts := n.order
	n.mu.Unlock()
	close(n.done)
	n.wg.Wait()
	for _, h := range hosts {
		for _, c := range h.allConns() {
			_ = c.Close()
		}
	}
	return nil
}

// getPacket returns a pooled packet holding a copy of b.
func (n *Network) getPacket(b []byte) *packet {
	p := n.pool.Get().(*packet)
	p.buf = append(p.buf[:0], b...)
	return p
}

func (n *Network) putPacket(p *packet) {
	*p = packet{buf: p.buf[:0]}
	n.pool.Put(p)
}

// drop counts a dropped packet and recycles it (p may be nil).
func (n *Network) drop(p *packet, r dropReason) {
	n.drops[r].Add(1)
	if p != nil {
		n.putPacket(p)
	}
}

// packet is one datagram in flight. It lives in exactly one place at a time
// (scheduler heap, conn queue) and goes back to the pool when read or dropped.
type packet struct {
	buf     []byte
	src     *net.UDPAddr // sender's address; shared and never mutated
	dstPort uint16
	readyAt int64 // network time when the receiver may read it
}

// wireSize is the size of a payload on the wire.
func wireSize(payload int) int { return payload + HeaderBytes }

func ipKey(ip net.IP) ([4]byte, bool) {
	ip4 := ip.To4()
	if ip4 == nil {
		return [4]byte{}, false
	}
	return [4]byte(ip4), true
}

func validateIP(ip net.IP) ([4]byte, error) {
	key, ok := ipKey(ip)
	if !ok || key[0] != 127 {
		return key, fmt.Errorf("vnet: host IP %v is not in 127.0.0.0/8", ip)
	}
	return key, nil
}
