package vnet

import (
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Conn is a UDP conn on a [Host]; [Host.ListenUDP] returns one as a
// [net.PacketConn]. Addresses are *net.UDPAddr. WriteTo never blocks: the
// packet is copied and either scheduled or dropped (drops are silent, as on a
// real network, and counted). ReadFrom returns packets when they are due.
type Conn struct {
	n     *Network
	host  *Host
	port  uint16
	laddr *net.UDPAddr // as requested; may be unspecified
	src   *net.UDPAddr // host IP and port, the source of outgoing packets

	closed  atomic.Bool
	writeDL atomic.Int64 // network time; MaxInt64 = none

	mu sync.Mutex
	// q holds packets sorted by readyAt; q[head:] are live. The first
	// nready live packets were due when last checked and hold readyBytes.
	q          []*packet
	head       int
	nready     int
	readyBytes int
	readDL     int64         // network time; MaxInt64 = none
	dlChanged  chan struct{} // closed and replaced when readDL changes
	timer      *time.Timer   // idle read timer, borrowed by a waiting reader
	notify     chan struct{} // a new head packet arrived (capacity 1)
	closeCh    chan struct{}
}

var _ net.PacketConn = (*Conn)(nil)

func newConn(h *Host, port uint16, laddr *net.UDPAddr) *Conn {
	c := &Conn{
		n:         h.n,
		host:      h,
		port:      port,
		laddr:     laddr,
		src:       &net.UDPAddr{IP: h.ip, Port: int(port)},
		readDL:    math.MaxInt64,
		dlChanged: make(chan struct{}),
		notify:    make(chan struct{}, 1),
		closeCh:   make(chan struct{}),
	}
	c.writeDL.Store(math.MaxInt64)
	return c
}

func (c *Conn) opErr(op string, addr net.Addr, err error) error {
	return &net.OpError{Op: op, Net: "udp", Source: c.laddr, Addr: addr, Err: err}
}

// ReadFrom waits for the next due packet and copies it into b (truncating, as
// UDP does). The address is the sender's *net.UDPAddr, shared between calls:
// do not modify it. After Close it returns an error wrapping [net.ErrClosed];
// past the read deadline, one wrapping [os.ErrDeadlineExceeded].
func (c *Conn) ReadFrom(b []byte) (int, net.Addr, error) {
	n := c.n
	c.mu.Lock()
	for {
		if c.closed.Load() {
			c.mu.Unlock()
			return 0, nil, c.opErr("read", nil, net.ErrClosed)
		}
		now := n.now()
		// Like the Go poller, an expired deadline wins over queued data.
		if now >= c.readDL {
			c.mu.Unlock()
			return 0, nil, c.opErr("read", nil, os.ErrDeadlineExceeded)
		}
		wait := int64(math.MaxInt64)
		if c.head < len(c.q) {
			p := c.q[c.head]
			if p.readyAt <= now+n.slack {
				c.popLocked(p)
				c.mu.Unlock()
				nb := copy(b, p.buf)
				addr := p.src
				n.readLate.record(now - p.readyAt)
				n.delivered.Add(1)
				n.putPacket(p)
				return nb, addr, nil
			}
			wait = p.readyAt - n.slack - now
		}
		if c.readDL != math.MaxInt64 {
			wait = min(wait, c.readDL-now)
		}
		dlCh := c.dlChanged
		if wait == math.MaxInt64 {
			c.mu.Unlock()
			select {
			case <-c.notify:
			case <-dlCh:
			case <-c.closeCh:
			}
			c.mu.Lock()
			continue
		}
		t := c.timer
		c.timer = nil
		c.mu.Unlock()
		if t == nil {
			t = time.NewTimer(time.Duration(wait))
		} else {
			t.Reset(time.Duration(wait))
		}
		select {
		case <-t.C:
		case <-c.notify:
		case <-dlCh:
		case <-c.closeCh:
		}
		t.Stop()
		c.mu.Lock()
		c.timer = t
	}
}

// popLocked removes the head packet p.
func (c *Conn) popLocked(p *packet) {
	c.q[c.head] = nil
	c.head++
	if c.nready > 0 {
		c.nready--
		c.readyBytes -= len(p.buf)
	}
	switch {
	case c.head == len(c.q):
		c.q, c.head = c.q[:0], 0
	case c.head > 64 && c.head > len(c.q)/2:
		// Slide live packets down so the slice does not grow without bound.
		m := copy(c.q, c.q[c.head:])
		clear(c.q[m:])
		c.q, c.head = c.q[:m], 0
	}
}

// enqueue hands p to the conn to be read at readyAt; now is the current
// network time, used to account the read buffer.
func (c *Conn) enqueue(p *packet, readyAt, now int64) {
	p.readyAt = readyAt
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		c.n.drop(p, dropClosed)
		return
	}
	// Packets not yet due are still on the link, not in the read buffer:
	// only due-but-unread bytes count against the limit ("due" as ReadFrom
	// sees it, with the slack).
	live := c.q[c.head:]
	for c.nready < len(live) && live[c.nready].readyAt <= now+c.n.slack {
		c.readyBytes += len(live[c.nready].buf)
		c.nready++
	}
	if c.readyBytes+len(p.buf) > c.n.rcvBuf {
		c.mu.Unlock()
		c.n.drop(p, dropReadBuffer)
		return
	}
	// Insert in readyAt order; without reordering that is the end.
	i := len(c.q)
	c.q = append(c.q, p)
	for i > c.head && c.q[i-1].readyAt > readyAt {
		c.q[i] = c.q[i-1]
		i--
	}
	c.q[i] = p
	if i-c.head < c.nready {
		c.nready++
		c.readyBytes += len(p.buf)
	}
	newHead := i == c.head
	c.mu.Unlock()
	if newHead {
		select {
		case c.notify <- struct{}{}:
		default:
		}
	}
}

// WriteTo sends b to addr, which must be a *net.UDPAddr. It returns len(b)
// unless the conn is closed, the write deadline has passed or addr is not a
// usable IPv4 UDP address; everything else (oversize, outage, full queue,
// loss, nobody listening) is a silent, counted drop.
func (c *Conn) WriteTo(b []byte, addr net.Addr) (int, error) {
	n := c.n
	if c.closed.Load() {
		return 0, c.opErr("write", addr, net.ErrClosed)
	}
	if dl := c.writeDL.Load(); dl != math.MaxInt64 && n.now() >= dl {
		return 0, c.opErr("write", addr, os.ErrDeadlineExceeded)
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok || ua == nil || ua.Port <= 0 || ua.Port > lastEphemeral {
		return 0, c.opErr("write", addr, syscall.EINVAL)
	}
	key, ok := ipKey(ua.IP)
	if !ok {
		return 0, c.opErr("write", addr, syscall.EAFNOSUPPORT)
	}
	n.sent.Add(1)
	wire := wireSize(len(b))
	if wire > n.mtu {
		n.drop(nil, dropMTU)
		return len(b), nil
	}
	h := c.host
	if !h.isUp.Load() {
		n.drop(nil, dropDown)
		return len(b), nil
	}
	n.mu.RLock()
	dst := n.hosts[key]
	n.mu.RUnlock()
	if dst == h {
		// Loopback bypasses the access link, as the kernel's does.
		dc := h.conn(uint16(ua.Port))
		if dc == nil {
			n.drop(nil, dropNoListener)
			return len(b), nil
		}
		p := n.getPacket(b)
		p.src, p.dstPort = c.src, uint16(ua.Port)
		now := n.now()
		dc.enqueue(p, now, now)
		return len(b), nil
	}
	// The packet uses the uplink even if the network then drops it.
	exit, reason, ok := h.up.send(n.now(), wire)
	if !ok {
		n.drop(nil, reason)
		return len(b), nil
	}
	if dst == nil {
		n.drop(nil, dropNoListener)
		return len(b), nil
	}
	if h.site != dst.site {
		if h.site.down.Load() || dst.site.down.Load() {
			n.drop(nil, dropDown)
			return len(b), nil
		}
		if f := n.blocked.Load(); f != nil && (*f)(h.site.name, dst.site.name) {
			n.drop(nil, dropPartition)
			return len(b), nil
		}
		exit += n.backbone(h.site, dst.site)
	}
	p := n.getPacket(b)
	p.src, p.dstPort = c.src, uint16(ua.Port)
	dst.shard.push(exit, p, dst)
	return len(b), nil
}

// Close closes the conn: blocked and later reads and writes return an error
// wrapping [net.ErrClosed], and unread packets are dropped.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		return c.opErr("close", nil, net.ErrClosed)
	}
	c.closed.Store(true)
	pending := c.q[c.head:]
	c.q, c.head, c.nready, c.readyBytes = nil, 0, 0, 0
	close(c.closeCh)
	c.mu.Unlock()
	for _, p := range pending {
		c.n.drop(p, dropClosed)
	}
	c.host.removeConn(c.port, c)
	return nil
}

// LocalAddr returns the address the conn was opened on, a *net.UDPAddr.
func (c *Conn) LocalAddr() net.Addr { return c.laddr }

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline and wakes blocked readers so that
// they apply it; the zero time means none.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.opErr("set", nil, net.ErrClosed)
	}
	dl := c.n.netTime(t)
	c.mu.Lock()
	c.readDL = dl
	close(c.dlChanged)
	c.dlChanged = make(chan struct{})
	c.mu.Unlock()
	return nil
}

// SetWriteDeadline sets the write deadline; the zero time means none. Writes
// never block, so it only makes writes after the deadline fail.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.opErr("set", nil, net.ErrClosed)
	}
	c.writeDL.Store(c.n.netTime(t))
	return nil
}

// SetReadBuffer does nothing (the buffer is Options.ReadBufferBytes); it
// exists so that quic-go does not warn about buffer sizes.
func (c *Conn) SetReadBuffer(int) error { return nil }

// SetWriteBuffer does nothing; writes never block. See SetReadBuffer.
func (c *Conn) SetWriteBuffer(int) error { return nil }
