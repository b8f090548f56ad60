package vod

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Hooks for the external tests: they reach inside a gap fill that the scheduler would
// otherwise start only on its own timing.

// OpenTitleForTest adds a title's torrent to the client and waits for its info.
func (a *App) OpenTitleForTest(ref string) error {
	ti, ok := a.lookup(ref)
	if !ok {
		return fmt.Errorf("no title %q", ref)
	}
	a.mu.Lock()
	t, err := a.torrentLocked(ti)
	a.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case <-t.GotInfo():
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("title %q: no info", ref)
	}
}

// WritePeerBlockForTest writes data at off into piece i as a peer's chunk arrives: through the
// storage anacrolix writes to.
func (a *App) WritePeerBlockForTest(ref string, i int, off int64, data []byte) error {
	ti, _ := a.lookup(ref)
	_, err := ti.t.Piece(i).Storage().WriteAt(data, off)
	return err
}

// FillFromOriginForTest runs one deadline gap fill of piece i to its end.
func (a *App) FillFromOriginForTest(ref string, i int) error {
	ti, _ := a.lookup(ref)
	return a.fetchPiece(context.Background(), ti, i, "deadline", time.Second)
}

// PieceCompleteForTest tells whether piece i verified.
func (a *App) PieceCompleteForTest(ref string, i int) bool {
	ti, _ := a.lookup(ref)
	return ti.t.Piece(i).State().Complete
}

// GossipHoldersForTest lists the gateways this one heard announce that they hold a title.
func (a *App) GossipHoldersForTest(ref string) []peer.ID {
	ti, ok := a.lookup(ref)
	if !ok {
		return nil
	}
	var out []peer.ID
	for _, h := range a.gossipHolders(ti.cid) {
		out = append(out, h.ID)
	}
	return out
}

// KeepTag is the tag a connection carrying peer-wire streams is protected under.
const KeepTag = keepTag
