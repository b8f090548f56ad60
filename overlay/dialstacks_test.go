package overlay_test

import (
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// stackGate is a connection gater that counts the call paths every dial came from: a test
// that fails on connections nobody should have dialled logs who dialled them (it is how
// kad-dht's checks of re-dialled peers and its own bootstrapping were told apart).
type stackGate struct {
	mu     sync.Mutex
	stacks map[string]int
}

func (g *stackGate) InterceptPeerDial(peer.ID) bool {
	var keep []string
	for _, l := range strings.Split(string(debug.Stack()), "\n") {
		if strings.HasPrefix(l, "\t") || strings.HasPrefix(l, "goroutine") || strings.Contains(l, "stackGate") || strings.HasPrefix(l, "runtime/debug") {
			continue
		}
		if i := strings.LastIndex(l, "("); i > 0 {
			l = l[:i]
		}
		keep = append(keep, l)
	}
	g.mu.Lock()
	if g.stacks == nil {
		g.stacks = map[string]int{}
	}
	g.stacks[strings.Join(keep, " < ")]++
	g.mu.Unlock()
	return true
}

// logIfFailed logs the call paths, most frequent first, if t failed.
func (g *stackGate) logIfFailed(t *testing.T) {
	if !t.Failed() {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	paths := make([]string, 0, len(g.stacks))
	for s := range g.stacks {
		paths = append(paths, s)
	}
	sort.Slice(paths, func(i, j int) bool { return g.stacks[paths[i]] > g.stacks[paths[j]] })
	for _, s := range paths {
		t.Logf("%d dials from %s", g.stacks[s], s)
	}
}
func (g *stackGate) InterceptAddrDial(peer.ID, ma.Multiaddr) bool { return true }
func (g *stackGate) InterceptSecured(network.Direction, peer.ID, network.ConnMultiaddrs) bool {
	return true
}
func (g *stackGate) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}
func (g *stackGate) InterceptAccept(network.ConnMultiaddrs) bool { return true }
