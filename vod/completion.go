package vod

import (
	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
)

// recordedOnly is the gateway's piece completion store as anacrolix should see it: a piece
// the store has no record of is known to be missing, not unknown.
//
// Only pieces recorded as verified are ours (a gateway writes a piece, hashes it, then
// records it). For an unknown piece anacrolix runs an "initial check" the moment a title is
// opened: it hashes every unrecorded piece (the zeros of a sparse file) and commits a "not
// complete" to bolt for each. That is tens of milliseconds of CPU per title on a gateway for
// nothing; in the emulator those bursts held both processors, and the 100-gateway flash
// crowd's packet scheduler waited up to 59 ms behind them. (Turning the check off per torrent
// is not the same: anacrolix then never requests an unknown piece at all.)
type recordedOnly struct{ storage.PieceCompletion }

// Get reports an unrecorded piece as known and incomplete.
func (c recordedOnly) Get(pk metainfo.PieceKey) (storage.Completion, error) {
	cn, err := c.PieceCompletion.Get(pk)
	if err == nil && cn.Err == nil && !cn.Ok {
		cn = storage.Completion{Ok: true, Complete: false}
	}
	return cn, err
}

// Persistent keeps the wrapped store's answer: anacrolix flushes a piece's data before
// recording it only when the record outlives the process.
func (c recordedOnly) Persistent() bool {
	if p, ok := c.PieceCompletion.(storage.PieceCompletionPersistenter); ok {
		return p.Persistent()
	}
	return true
}
