package overlay

import (
	"errors"
	"strings"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
)

// refusalCounter is the resource manager with every refusal reported to a callback, as
// "scope/resource/direction" ("peer/streams/inbound", "system/conns/outbound",
// "transient/memory"): what go-libp2p's trace reporter counts as blocked, without the trace.
// That trace formats a timestamp and runs a reporter for every event the manager sees (each
// stream opened and closed, each memory reservation), 3 % of an emulated fleet's CPU, where
// refusals are rare and are all the emulator wants to know (docs/decisions.md).
type refusalCounter struct {
	network.ResourceManager
	refused func(what string)
}

func (m refusalCounter) note(err error, resource string, dir network.Direction) {
	var scope string
	switch {
	case err == nil:
		return
	case errors.Is(err, network.ErrResourceLimitExceeded):
		scope = refusedScope(err)
	case resource == "conns" && strings.Contains(err.Error(), "per ip"):
		scope = "ip" // the manager's limit on connections from one address
	default:
		return // not a refusal (a scope attached twice: a bug, reported by its caller)
	}
	what := scope + "/" + resource
	switch {
	case resource == "memory":
	case dir == network.DirInbound:
		what += "/inbound"
	case dir == network.DirOutbound:
		what += "/outbound"
	}
	m.refused(what)
}

// refusedScope is the class of the scope a resource-manager error names first ("peer:12D3…:
// cannot reserve…" → "peer", "conn-17: …" → "conn"): the one whose limit was hit.
func refusedScope(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, ": "); i > 0 {
		msg = msg[:i]
	} else {
		return "unknown"
	}
	if i := strings.IndexAny(msg, ":-"); i > 0 {
		msg = msg[:i]
	}
	return msg
}

func (m refusalCounter) OpenConnection(dir network.Direction, usefd bool, endpoint ma.Multiaddr) (network.ConnManagementScope, error) {
	s, err := m.ResourceManager.OpenConnection(dir, usefd, endpoint)
	if err != nil {
		m.note(err, "conns", dir)
		return nil, err
	}
	return countedConnScope{s, m, dir}, nil
}

func (m refusalCounter) OpenStream(p peer.ID, dir network.Direction) (network.StreamManagementScope, error) {
	s, err := m.ResourceManager.OpenStream(p, dir)
	if err != nil {
		m.note(err, "streams", dir)
		return nil, err
	}
	return countedStreamScope{s, m, dir}, nil
}

type countedConnScope struct {
	network.ConnManagementScope
	m   refusalCounter
	dir network.Direction
}

func (s countedConnScope) SetPeer(p peer.ID) error {
	err := s.ConnManagementScope.SetPeer(p)
	s.m.note(err, "conns", s.dir)
	return err
}

func (s countedConnScope) ReserveMemory(size int, prio uint8) error {
	err := s.ConnManagementScope.ReserveMemory(size, prio)
	s.m.note(err, "memory", s.dir)
	return err
}

type countedStreamScope struct {
	network.StreamManagementScope
	m   refusalCounter
	dir network.Direction
}

func (s countedStreamScope) SetProtocol(proto protocol.ID) error {
	err := s.StreamManagementScope.SetProtocol(proto)
	s.m.note(err, "streams", s.dir)
	return err
}

func (s countedStreamScope) SetService(srv string) error {
	err := s.StreamManagementScope.SetService(srv)
	s.m.note(err, "streams", s.dir)
	return err
}

func (s countedStreamScope) ReserveMemory(size int, prio uint8) error {
	err := s.StreamManagementScope.ReserveMemory(size, prio)
	s.m.note(err, "memory", s.dir)
	return err
}
