package vod

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// PeerProtocol carries BitTorrent peer-wire connections between gateways over libp2p streams.
const PeerProtocol protocol.ID = "/nanodc/vod/bt/1.0.0"

// anacrolix's network names must not contain "tcp", "udp", "4" or "6": it derives IP-version and
// transport behaviour from those substrings.
const p2pNetwork = "p2p"

// peerAddr names a libp2p peer for anacrolix. anacrolix only bans (smart ban after a failed hash
// check) peers whose address parses as IP:port, so every peer ID maps to a stable synthetic
// address in the IPv6 ULA range: 120 bits of the peer ID's hash make collisions negligible.
type peerAddr struct {
	id peer.ID
	ap netip.AddrPort
}

func (a peerAddr) Network() string { return p2pNetwork }
func (a peerAddr) String() string  { return a.ap.String() }

func syntheticAddr(id peer.ID) netip.AddrPort {
	sum := sha256.Sum256([]byte(id))
	var b [16]byte
	b[0] = 0xfd
	copy(b[1:], sum[:15])
	return netip.AddrPortFrom(netip.AddrFrom16(b), 1)
}

// keepTag protects a libp2p connection from the connection manager while it carries
// peer-wire streams.
const keepTag = "nanodc-vod"

// transport lets an anacrolix client dial and accept peer-wire connections as libp2p streams.
// It remembers which synthetic address stands for which peer, counts the bytes each remote peer
// sent us, and refuses peers that anacrolix banned.
//
// A connection carrying a peer-wire stream is protected from the connection manager for as
// long as the stream lives: the manager trims by count, not by use, and a replica serving a
// flash crowd holds more connections than the high watermark, so it would cut the very
// streams it exists for (each cut costs the requests in flight, new handshakes over a thin
// uplink and a rediscovery). anacrolix bounds the streams itself (EstablishedConnsPerTorrent).
type transport struct {
	host   host.Host
	self   peerAddr
	banned func(netip.Addr) bool
	onRead func(id peer.ID, n int)

	mu     sync.Mutex
	byAddr map[netip.Addr]peer.ID
	open   map[peer.ID]int // peer-wire streams per peer, to protect its connection while > 0
	// lost counts streams that ended because their connection went away under them.
	lost *atomic.Int64

	accept    chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
	proto     protocol.ID // PeerProtocol, or its slice-namespaced form
	scope     func(network.Stream) error
	// queue, when set, paces the piece messages of every stream (uplinkqueue.go).
	queue *uplinkQueue
}

func newTransport(h host.Host, proto protocol.ID, onRead func(peer.ID, int), scope func(network.Stream) error) *transport {
	t := &transport{
		scope:  scope,
		host:   h,
		proto:  proto,
		self:   peerAddr{id: h.ID(), ap: syntheticAddr(h.ID())},
		banned: func(netip.Addr) bool { return false },
		onRead: onRead,
		byAddr: map[netip.Addr]peer.ID{},
		open:   map[peer.ID]int{},
		lost:   new(atomic.Int64),
		accept: make(chan net.Conn),
		closed: make(chan struct{}),
	}
	h.SetStreamHandler(proto, t.handleStream)
	return t
}

// addrOf returns the address anacrolix should use for id, remembering the mapping.
func (t *transport) addrOf(id peer.ID) peerAddr {
	a := peerAddr{id: id, ap: syntheticAddr(id)}
	t.mu.Lock()
	t.byAddr[a.ap.Addr()] = id
	t.mu.Unlock()
	return a
}

func (t *transport) peerOf(addr string) (peer.ID, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return "", fmt.Errorf("vod transport: %q is not a peer address", addr)
	}
	t.mu.Lock()
	id, ok := t.byAddr[ap.Addr()]
	t.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("vod transport: no peer known at %s", addr)
	}
	return id, nil
}

// Dial implements anacrolix's dialer.T.
func (t *transport) Dial(ctx context.Context, addr string) (net.Conn, error) {
	id, err := t.peerOf(addr)
	if err != nil {
		return nil, err
	}
	s, err := t.host.NewStream(ctx, id, t.proto)
	if err != nil {
		return nil, fmt.Errorf("vod transport: stream to %s: %w", id, err)
	}
	if err := t.scope(s); err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("vod transport: stream to %s: %w", id, err)
	}
	return t.wrap(s), nil
}

// DialerNetwork implements anacrolix's dialer.T.
func (t *transport) DialerNetwork() string { return p2pNetwork }

func (t *transport) handleStream(s network.Stream) {
	remote := t.addrOf(s.Conn().RemotePeer())
	if t.banned(remote.ap.Addr()) || t.scope(s) != nil {
		_ = s.Reset()
		return
	}
	c := t.wrap(s)
	select {
	case t.accept <- c:
	case <-t.closed:
		_ = c.Close()
	case <-time.After(10 * time.Second):
		_ = c.Close()
	}
}

// Accept implements anacrolix's Listener.
func (t *transport) Accept() (net.Conn, error) {
	select {
	case c := <-t.accept:
		return c, nil
	case <-t.closed:
		return nil, net.ErrClosed
	}
}

// Addr implements anacrolix's Listener.
func (t *transport) Addr() net.Addr { return t.self }

// Close stops accepting; anacrolix must be closed first (it keeps calling Accept until then).
func (t *transport) Close() error {
	t.closeOnce.Do(func() {
		t.host.RemoveStreamHandler(t.proto)
		close(t.closed)
	})
	return nil
}

func (t *transport) wrap(s network.Stream) net.Conn {
	id := s.Conn().RemotePeer()
	t.mu.Lock()
	t.open[id]++
	if t.open[id] == 1 {
		t.host.ConnManager().Protect(id, keepTag)
	}
	t.mu.Unlock()
	var c net.Conn = &streamConn{Stream: s, local: t.self, remote: t.addrOf(id), t: t}
	if t.queue != nil {
		c = t.queue.wrap(c)
	}
	return c
}

// release drops a closed stream's hold on its peer's connection.
func (t *transport) release(id peer.ID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.open[id]--; t.open[id] <= 0 {
		delete(t.open, id)
		t.host.ConnManager().Unprotect(id, keepTag)
	}
}

// streamConn is a libp2p stream seen as a net.Conn.
type streamConn struct {
	network.Stream
	local, remote peerAddr
	t             *transport
	closed        atomic.Bool
	lost          atomic.Bool
}

func (c *streamConn) Read(b []byte) (int, error) {
	n, err := c.Stream.Read(b)
	if n > 0 && c.t.onRead != nil {
		c.t.onRead(c.remote.id, n)
	}
	if err != nil && !c.closed.Load() {
		c.noteLost(err)
	}
	if errors.Is(err, network.ErrReset) {
		err = fmt.Errorf("%w: %v", net.ErrClosed, err)
	}
	return n, err
}

func (c *streamConn) Write(b []byte) (int, error) {
	n, err := c.Stream.Write(b)
	if err != nil && !c.closed.Load() {
		c.noteLost(err)
	}
	return n, err
}

// noteLost counts the stream once as lost if its connection went away under it: the error
// says so, or the connection is closed (anacrolix may see a failed write and close the stream
// before a read returns the connection's error).
func (c *streamConn) noteLost(err error) {
	var connErr *network.ConnError
	if (errors.As(err, &connErr) || c.Stream.Conn().IsClosed()) && !c.lost.Swap(true) {
		c.t.lost.Add(1)
	}
}

// Close resets rather than half-closes: anacrolix closes a connection only when it is done
// with it, and a reset frees the stream on both sides at once.
func (c *streamConn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.noteLost(nil)
	c.t.release(c.remote.id)
	return c.Stream.Reset()
}

func (c *streamConn) LocalAddr() net.Addr  { return c.local }
func (c *streamConn) RemoteAddr() net.Addr { return c.remote }
