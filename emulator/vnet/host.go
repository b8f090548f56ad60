package vnet

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// HostConfig describes a host to add to a [Network].
type HostConfig struct {
	// IP is the host's address; it must be in 127.0.0.0/8 and unique.
	IP net.IP
	// Site names the access node the host sits behind. Hosts with the same
	// Site (including the empty one) reach each other without backbone delay.
	Site string
	// Up shapes host → network, Down shapes network → host.
	Up, Down LinkConfig
}

// Host is one machine on the network: an IP address behind an access link.
type Host struct {
	n     *Network
	ip    net.IP
	site  *site
	shard *shard
	up    *link
	down  *link
	isUp  atomic.Bool

	mu       sync.RWMutex
	conns    map[uint16]*Conn
	nextPort int
}

// Ephemeral ports picked for port 0 (the IANA dynamic range).
const (
	firstEphemeral = 49152
	lastEphemeral  = 65535
)

// AddHost adds a host, initially up.
func (n *Network) AddHost(cfg HostConfig) (*Host, error) {
	key, err := validateIP(cfg.IP)
	if err != nil {
		return nil, err
	}
	if err := cfg.Up.validate(); err != nil {
		return nil, fmt.Errorf("uplink: %w", err)
	}
	if err := cfg.Down.validate(); err != nil {
		return nil, fmt.Errorf("downlink: %w", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, ErrNetworkClosed
	}
	if _, dup := n.hosts[key]; dup {
		return nil, fmt.Errorf("vnet: duplicate host IP %v", cfg.IP)
	}
	idx := uint64(len(n.order))
	h := &Host{
		n:        n,
		ip:       net.IP(key[:]),
		site:     n.siteLocked(cfg.Site),
		shard:    n.shards[idx%uint64(len(n.shards))],
		up:       newLink(cfg.Up, n.seed, 2*idx),
		down:     newLink(cfg.Down, n.seed, 2*idx+1),
		conns:    make(map[uint16]*Conn),
		nextPort: firstEphemeral,
	}
	h.isUp.Store(true)
	n.hosts[key] = h
	n.order = append(n.order, h)
	return h, nil
}

// IP returns the host's address.
func (h *Host) IP() net.IP { return append(net.IP(nil), h.ip...) }

// Site returns the name of the host's access node.
func (h *Host) Site() string { return h.site.name }

// SetUp takes the host's WAN connection down or back up. While it is down,
// every packet sent by or arriving for the host is dropped.
func (h *Host) SetUp(up bool) { h.isUp.Store(up) }

// SetLinks changes the host's link shaping at run time. Packets already
// queued keep the timing they were given.
func (h *Host) SetLinks(up, down LinkConfig) error {
	if err := up.validate(); err != nil {
		return fmt.Errorf("uplink: %w", err)
	}
	if err := down.validate(); err != nil {
		return fmt.Errorf("downlink: %w", err)
	}
	h.up.setConfig(up)
	h.down.setConfig(down)
	return nil
}

// Stats returns the host's link counters.
func (h *Host) Stats() LinkStats {
	now := h.n.now()
	return LinkStats{Up: h.up.stats(now), Down: h.down.stats(now)}
}

// ListenUDP opens a UDP conn on the host. network must be "udp" or "udp4".
// laddr may be nil; its IP must be the host's or unspecified, and port 0
// picks a free ephemeral port. As with the kernel, LocalAddr reports the
// address asked for (0.0.0.0 stays unspecified), while packets always leave
// with the host's IP as source. The signature matches
// quicreuse.OverrideListenUDP.
func (h *Host) ListenUDP(network string, laddr *net.UDPAddr) (net.PacketConn, error) {
	opErr := func(err error) error {
		var a net.Addr
		if laddr != nil {
			a = laddr
		}
		return &net.OpError{Op: "listen", Net: network, Addr: a, Err: err}
	}
	if network != "udp" && network != "udp4" {
		return nil, opErr(net.UnknownNetworkError(network))
	}
	ip := net.IP(net.IPv4zero)
	port := 0
	if laddr != nil {
		if laddr.IP != nil && !laddr.IP.IsUnspecified() {
			if !laddr.IP.Equal(h.ip) {
				return nil, opErr(syscall.EADDRNOTAVAIL)
			}
			ip = h.ip
		}
		port = laddr.Port
		if port < 0 || port > lastEphemeral {
			return nil, opErr(syscall.EINVAL)
		}
	}
	// Hold the network lock so that Close either sees this conn or we see
	// the network closed.
	h.n.mu.RLock()
	defer h.n.mu.RUnlock()
	if h.n.closed {
		return nil, opErr(ErrNetworkClosed)
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if port == 0 {
		for range lastEphemeral - firstEphemeral + 1 {
			p := h.nextPort
			h.nextPort++
			if h.nextPort > lastEphemeral {
				h.nextPort = firstEphemeral
			}
			if _, used := h.conns[uint16(p)]; !used {
				port = p
				break
			}
		}
		if port == 0 {
			return nil, opErr(syscall.EADDRINUSE)
		}
	} else if _, used := h.conns[uint16(port)]; used {
		return nil, opErr(syscall.EADDRINUSE)
	}
	c := newConn(h, uint16(port), &net.UDPAddr{IP: append(net.IP(nil), ip.To4()...), Port: port})
	h.conns[uint16(port)] = c
	return c, nil
}

func (h *Host) conn(port uint16) *Conn {
	h.mu.RLock()
	c := h.conns[port]
	h.mu.RUnlock()
	return c
}

func (h *Host) removeConn(port uint16, c *Conn) {
	h.mu.Lock()
	if h.conns[port] == c {
		delete(h.conns, port)
	}
	h.mu.Unlock()
}

func (h *Host) allConns() []*Conn {
	h.mu.RLock()
	defer h.mu.RUnlock()
	cs := make([]*Conn, 0, len(h.conns))
	for _, c := range h.conns {
		cs = append(cs, c)
	}
	return cs
}
