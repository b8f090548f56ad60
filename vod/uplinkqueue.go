package vod

import (
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// The upload cap, applied on the peer-wire connections.
//
// anacrolix paces a gateway's seeding with one token bucket shared by every connection: a
// connection that finds the bucket empty sets a retry timer, and whichever timer fires first
// takes the next tokens. Under a cap that is always reached (a DSL gateway seeding a crowd),
// who gets the uplink is then decided by timers, not by who asked first, and a requester
// can wait a long time behind others who asked later.
//
// So, for the nanodc strategy, the cap is applied below anacrolix: uplinkQueue reads the
// BitTorrent messages anacrolix writes on each connection, passes every other message
// straight through, and holds piece messages in one queue per gateway, sent oldest first
// across all connections as the cap allows. A peer's cancel drops its waiting block (the
// requester gave up on this gateway: it asked another, or the origin filled the piece), and
// with the fast extension a reject goes in its place, as BEP 6 requires.
//
// Ranking blocks by how few of the gateway's peers hold their piece (rarest first, to serve
// a title's frontier ahead of the viewers behind it) was built and measured first, and it
// did worse than oldest first: in the flash crowd it delayed common blocks into their
// requesters' deadlines and the origin sent more (docs/decisions.md, session 24). Measured
// since and not kept either (session 25): connections taking turns, one block each, which
// brought the partition's stalls back; and a queue 1 MiB deep per connection, which rarely
// holds anacrolix's writer (and so this gateway's own requests) back but did worse in the
// crowd and in the partition alike. The writer's wait past 64 KiB is worth keeping: with the
// same order and shares but the writer going on, the crowd got worse; a gateway whose uplink
// to a peer is backed up asks that peer for less. Nor is anacrolix's random order among a
// peer's requests worth correcting (session 26): holding them and passing them on lowest
// first changed nothing, since a viewer keeps only one or two outstanding at each holder.

const (
	// queuedConnBytes is how much piece data one connection may have waiting before its
	// writer blocks; anacrolix keeps the rest of the peer's requests, where a cancel costs
	// nothing.
	queuedConnBytes = 64 << 10
	// maxWireMessage bounds a peer-wire message the parser collects; a longer length prefix
	// means the bytes are not the plaintext peer-wire protocol, and the connection's bytes
	// are paced as they come instead (passThrough).
	maxWireMessage = 4 << 20

	btHandshakeLen = 68
	btCancelMsg    = 8
	btPieceMsg     = 7
	btRejectMsg    = 16
	btPieceHeader  = 13 // length, id, index, begin
	btRequestLen   = 17 // length, id, index, begin, length: a cancel or a reject
	btFastBit      = 0x04
)

// errQueueClosed is what a write to a closed queued connection returns.
var errQueueClosed = errors.New("vod: peer connection closed")

// uplinkQueue is one gateway's queue of piece blocks waiting for the upload cap.
type uplinkQueue struct {
	lim *rate.Limiter
	// cancelled counts blocks dropped for their requester's cancel.
	cancelled atomic.Int64

	mu      sync.Mutex
	waiting []*queuedBlock // oldest first
	wake    chan struct{}
}

// queuedBlock is one piece message waiting for the cap.
type queuedBlock struct {
	conn  *queuedConn
	msg   []byte // the whole message, header included
	piece uint32
}

func newUplinkQueue(lim *rate.Limiter) *uplinkQueue {
	return &uplinkQueue{lim: lim, wake: make(chan struct{}, 1)}
}

func (q *uplinkQueue) push(b *queuedBlock) {
	q.mu.Lock()
	q.waiting = append(q.waiting, b)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// next removes and returns the oldest waiting block, nil when none waits. Blocks of closed
// connections are dropped.
func (q *uplinkQueue) next() *queuedBlock {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.waiting) > 0 {
		b := q.waiting[0]
		q.waiting[0] = nil
		q.waiting = q.waiting[1:]
		if !b.conn.closed.Load() {
			return b
		}
		b.conn.sent(len(b.msg), nil)
		putBlockBuf(b.msg)
	}
	return nil
}

// drop removes c's waiting block for (index, begin); false when none waits (it was sent, or
// is being written).
func (q *uplinkQueue) drop(c *queuedConn, index, begin uint32) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, b := range q.waiting {
		if b.conn == c && b.piece == index && binary.BigEndian.Uint32(b.msg[9:13]) == begin {
			q.waiting = slices.Delete(q.waiting, i, i+1)
			c.sent(len(b.msg), nil)
			putBlockBuf(b.msg)
			return true
		}
	}
	return false
}

// peek returns the tokens the oldest waiting block takes (its payload, at least 1), 0 when
// none waits.
func (q *uplinkQueue) peek() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.waiting) == 0 {
		return 0
	}
	return max(len(q.waiting[0].msg)-btPieceHeader, 1)
}

// run hands blocks to their connections, oldest first, as the cap allows, until done is
// closed.
func (q *uplinkQueue) run(done <-chan struct{}) {
	for {
		n := q.peek()
		if n == 0 {
			select {
			case <-q.wake:
				continue
			case <-done:
				return
			}
		}
		if !waitTokens(q.lim, n, done) {
			return
		}
		if b := q.next(); b != nil {
			b.conn.grant(b)
		}
	}
}

// waitTokens takes n tokens from lim, in bursts it allows; false when done closed first.
func waitTokens(lim *rate.Limiter, n int, done <-chan struct{}) bool {
	for n > 0 {
		step := min(n, lim.Burst())
		r := lim.ReserveN(time.Now(), step)
		if !r.OK() {
			return true // a burst of 0: the limiter was turned off
		}
		if d := r.Delay(); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-done:
				t.Stop()
				r.Cancel()
				return false
			}
		}
		n -= step
	}
	return true
}

// wrap puts a peer-wire connection's piece messages through the queue.
func (q *uplinkQueue) wrap(c net.Conn) net.Conn {
	qc := &queuedConn{Conn: c, q: q}
	qc.cond = sync.NewCond(&qc.mu)
	return qc
}

// blockBufSize holds one message of a standard 16 KiB block. Blocks are copied out of
// anacrolix's write buffer into these, and a seeding gateway uploads a hundred a second in
// a crowd: pooled, they add no garbage.
const blockBufSize = btPieceHeader + 16<<10

var blockBufs = sync.Pool{New: func() any { b := make([]byte, 0, blockBufSize); return &b }}

func getBlockBuf() []byte { return (*blockBufs.Get().(*[]byte))[:0] }

func putBlockBuf(b []byte) {
	if cap(b) == blockBufSize {
		b = b[:0]
		blockBufs.Put(&b)
	}
}

// queuedConn is a peer-wire connection whose piece messages wait in an uplinkQueue. Write is
// only called by anacrolix's one writer goroutine per connection, which owns the parser
// state; the queue's grants are written by a goroutine of the connection's own while any
// are pending.
type queuedConn struct {
	net.Conn
	q *uplinkQueue

	// parser state, writer goroutine only
	handshake   []byte
	passThrough bool
	msg         []byte // the message being collected (a pooled block buffer)
	msgLen      int    // 4 + the length prefix, once the prefix is complete
	through     []byte // this Write's messages that are not pieces

	// read-side parser state, reader goroutine only: it looks for the peer's cancels.
	rHandshake []byte
	rOff       bool   // not a plaintext handshake: cancels cannot be read
	rMsg       []byte // the current message's first bytes (all of a cancel)
	rLen       int    // 4 + its length prefix, once known
	rGot       int    // bytes of it read so far

	wmu sync.Mutex // one message at a time on the wire

	mu      sync.Mutex
	cond    *sync.Cond
	queued  int // bytes of piece messages waiting or granted, not yet written
	ready   []*queuedBlock
	writing bool
	ourFast bool // our handshake offered the fast extension
	err     error
	closed  atomic.Bool
}

func (c *queuedConn) Write(b []byte) (int, error) {
	if err := c.writeErr(); err != nil {
		return 0, err
	}
	if c.passThrough {
		return c.paced(b)
	}
	through := c.through[:0]
	for i := 0; i < len(b); {
		if len(c.handshake) < btHandshakeLen {
			take := min(btHandshakeLen-len(c.handshake), len(b)-i)
			c.handshake = append(c.handshake, b[i:i+take]...)
			through = append(through, b[i:i+take]...)
			i += take
			if c.handshake[0] != 19 {
				// Not a plaintext BitTorrent handshake (an ordinary client's encrypted one).
				c.passThrough = true
				if _, err := c.paced(through); err != nil {
					return 0, err
				}
				n, err := c.paced(b[i:])
				return i + n, err
			}
			if len(c.handshake) == btHandshakeLen {
				c.mu.Lock()
				c.ourFast = c.handshake[27]&btFastBit != 0
				c.mu.Unlock()
			}
			continue
		}
		if c.msgLen == 0 {
			if c.msg == nil {
				c.msg = getBlockBuf()
			}
			take := min(4-len(c.msg), len(b)-i)
			c.msg = append(c.msg, b[i:i+take]...)
			i += take
			if len(c.msg) < 4 {
				continue
			}
			size := binary.BigEndian.Uint32(c.msg)
			if size > maxWireMessage {
				c.passThrough = true
				through = append(through, c.msg...)
				c.msg = nil
				if _, err := c.paced(through); err != nil {
					return 0, err
				}
				n, err := c.paced(b[i:])
				return i + n, err
			}
			c.msgLen = 4 + int(size)
		}
		take := min(c.msgLen-len(c.msg), len(b)-i)
		c.msg = append(c.msg, b[i:i+take]...)
		i += take
		if len(c.msg) < c.msgLen {
			continue
		}
		if c.msgLen >= btPieceHeader && c.msg[4] == btPieceMsg {
			c.mu.Lock()
			c.queued += len(c.msg)
			c.mu.Unlock()
			c.q.push(&queuedBlock{conn: c, msg: c.msg, piece: binary.BigEndian.Uint32(c.msg[5:9])})
			c.msg = nil
		} else {
			through = append(through, c.msg...)
			c.msg = c.msg[:0]
		}
		c.msgLen = 0
	}
	c.through = through
	if len(through) > 0 {
		c.wmu.Lock()
		_, err := c.Conn.Write(through)
		c.wmu.Unlock()
		if err != nil {
			c.fail(err)
			return 0, err
		}
	}
	// Backpressure: past queuedConnBytes, anacrolix waits here before it sends more.
	c.mu.Lock()
	for c.queued > queuedConnBytes && c.err == nil {
		c.cond.Wait()
	}
	err := c.err
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return len(b), nil
}

// Read watches the peer's messages for cancels. A block anacrolix handed to the queue is sent
// for all anacrolix knows, so a cancel for it would not stop it: the requester has given up
// on this gateway (it asked elsewhere, or the origin filled the piece) and the block would be
// uplink spent for nothing, which a queue that defers common blocks makes frequent.
func (c *queuedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && !c.rOff {
		c.readWire(b[:n])
	}
	return n, err
}

func (c *queuedConn) readWire(b []byte) {
	for len(b) > 0 && !c.rOff {
		if len(c.rHandshake) < btHandshakeLen {
			take := min(btHandshakeLen-len(c.rHandshake), len(b))
			c.rHandshake = append(c.rHandshake, b[:take]...)
			b = b[take:]
			c.rOff = c.rHandshake[0] != 19
			continue
		}
		if c.rLen == 0 {
			take := min(4-len(c.rMsg), len(b))
			c.rMsg = append(c.rMsg, b[:take]...)
			b = b[take:]
			c.rGot += take
			if len(c.rMsg) < 4 {
				continue
			}
			size := binary.BigEndian.Uint32(c.rMsg)
			if size > maxWireMessage {
				c.rOff = true
				return
			}
			c.rLen = 4 + int(size)
		}
		take := min(c.rLen-c.rGot, len(b))
		if keep := min(btRequestLen-len(c.rMsg), take); keep > 0 && c.rLen == btRequestLen {
			c.rMsg = append(c.rMsg, b[:keep]...)
		}
		b = b[take:]
		c.rGot += take
		if c.rGot < c.rLen {
			continue
		}
		if c.rLen == btRequestLen && c.rMsg[4] == btCancelMsg {
			c.cancel(c.rMsg[5:btRequestLen])
		}
		c.rMsg, c.rLen, c.rGot = c.rMsg[:0], 0, 0
	}
}

// cancel drops the queued block a peer's cancel names (index, begin, length). With the fast
// extension the peer expects the block or a reject for every request it cancelled, so the
// reject goes in the block's place.
func (c *queuedConn) cancel(req []byte) {
	index, begin := binary.BigEndian.Uint32(req), binary.BigEndian.Uint32(req[4:])
	if !c.q.drop(c, index, begin) {
		return
	}
	if c.fastExtension() {
		reject := append(binary.BigEndian.AppendUint32(make([]byte, 0, btRequestLen), btRequestLen-4), btRejectMsg)
		reject = append(reject, req[:12]...)
		c.wmu.Lock()
		_, err := c.Conn.Write(reject)
		c.wmu.Unlock()
		if err != nil {
			c.fail(err)
		}
	}
	c.q.cancelled.Add(1)
}

// fastExtension reports whether both handshakes offered the fast extension (BEP 6).
func (c *queuedConn) fastExtension() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ourFast && len(c.rHandshake) == btHandshakeLen && c.rHandshake[27]&btFastBit != 0
}

// paced writes bytes the parser cannot read, at the cap, in arrival order.
func (c *queuedConn) paced(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	waitTokens(c.q.lim, len(b), nil)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.Conn.Write(b)
}

// grant is the queue's word that a block may go now.
func (c *queuedConn) grant(b *queuedBlock) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ready = append(c.ready, b)
	if !c.writing {
		c.writing = true
		go c.writeGranted()
	}
}

// writeGranted writes granted blocks until none is left; a slow peer holds up only its own
// connection, not the queue.
func (c *queuedConn) writeGranted() {
	for {
		c.mu.Lock()
		if len(c.ready) == 0 || c.err != nil {
			for _, b := range c.ready {
				c.queued -= len(b.msg)
				putBlockBuf(b.msg)
			}
			c.ready = nil
			c.writing = false
			c.cond.Broadcast()
			c.mu.Unlock()
			return
		}
		b := c.ready[0]
		c.ready = c.ready[1:]
		c.mu.Unlock()
		c.wmu.Lock()
		_, err := c.Conn.Write(b.msg)
		c.wmu.Unlock()
		c.sent(len(b.msg), err)
		putBlockBuf(b.msg)
	}
}

// sent accounts for a block written (or dropped, with its connection closed).
func (c *queuedConn) sent(n int, err error) {
	c.mu.Lock()
	c.queued -= n
	if err != nil && c.err == nil {
		c.err = err
	}
	c.cond.Broadcast()
	c.mu.Unlock()
}

func (c *queuedConn) fail(err error) {
	c.sent(0, err)
}

func (c *queuedConn) writeErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *queuedConn) Close() error {
	c.closed.Store(true)
	c.fail(errQueueClosed)
	return c.Conn.Close()
}

// queuedListener puts the connections of ordinary BitTorrent clients through the queue too.
type queuedListener struct {
	net.Listener
	q *uplinkQueue
}

func (l queuedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.q.wrap(c), nil
}
