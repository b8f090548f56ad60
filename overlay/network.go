package overlay

import (
	"context"
	"net"
	"sync/atomic"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/transport/quicreuse"
	"github.com/quic-go/quic-go"
	"go.uber.org/fx"
)

// PacketNetwork replaces the operating system's UDP sockets. A node built on one speaks
// QUIC only (TCP would bypass it), so everything it sends crosses the injected network.
type PacketNetwork interface {
	ListenUDP(network string, laddr *net.UDPAddr) (net.PacketConn, error)
}

// fixedSourceIP answers quic-go's "which source address for this destination" with the
// address the node listened on: an injected network has no routing table to consult.
type fixedSourceIP struct{ ip atomic.Pointer[net.IP] }

func (s *fixedSourceIP) PreferredSourceIPForDestination(*net.UDPAddr) (net.IP, error) {
	if ip := s.ip.Load(); ip != nil {
		return *ip, nil
	}
	return net.IPv4(127, 0, 0, 1), nil
}

// quicOnPacketNetwork builds the QUIC connection manager on pn, keeping the same resource
// manager hooks go-libp2p installs for real sockets.
func quicOnPacketNetwork(pn PacketNetwork) libp2p.Option {
	src := &fixedSourceIP{}
	listen := func(netw string, laddr *net.UDPAddr) (net.PacketConn, error) {
		if laddr != nil && !laddr.IP.IsUnspecified() {
			ip := laddr.IP
			src.ip.Store(&ip)
		}
		return pn.ListenUDP(netw, laddr)
	}
	constructor := func(lc fx.Lifecycle, key quic.StatelessResetKey, tokenKey quic.TokenGeneratorKey, rcmgr network.ResourceManager) (*quicreuse.ConnManager, error) {
		cm, err := quicreuse.NewConnManager(key, tokenKey,
			quicreuse.OverrideListenUDP(listen),
			quicreuse.OverrideSourceIPSelector(func() (quicreuse.SourceIPSelector, error) { return src, nil }),
			quicreuse.ConnContext(func(ctx context.Context, ci *quic.ClientInfo) (context.Context, error) {
				addr, err := quicreuse.ToQuicMultiaddr(ci.RemoteAddr, quic.Version1)
				if err != nil {
					addr = nil
				}
				scope, err := rcmgr.OpenConnection(network.DirInbound, false, addr)
				if err != nil {
					return ctx, err
				}
				ctx = network.WithConnManagementScope(ctx, scope)
				context.AfterFunc(ctx, scope.Done)
				return ctx, nil
			}),
			quicreuse.VerifySourceAddress(rcmgr.VerifySourceAddress),
		)
		if err != nil {
			return nil, err
		}
		lc.Append(fx.StopHook(cm.Close))
		return cm, nil
	}
	return libp2p.QUICReuse(constructor)
}
