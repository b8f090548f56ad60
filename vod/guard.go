package vod

import (
	"context"
	"io"
	"sync"

	g "github.com/anacrolix/generics"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
)

// guardedStorage wraps the torrent storage so that an origin gap fill cannot be corrupted by a
// peer. anacrolix keeps requesting the chunks of a piece we fill from the origin (it does not
// know about our write) and writes what arrives without checking completion; a hostile peer's
// chunk landing after our data verified would corrupt a complete piece. So while a piece is
// being filled, and forever after it verified (it is "sealed"), peer writes to it are dropped.
type guardedStorage struct {
	storage.ClientImplCloser

	mu      sync.Mutex
	filling map[pieceKey]bool
	sealed  map[pieceKey]bool
}

type pieceKey struct {
	ih metainfo.Hash
	i  int
}

func newGuardedStorage(inner storage.ClientImplCloser) *guardedStorage {
	return &guardedStorage{ClientImplCloser: inner, filling: map[pieceKey]bool{}, sealed: map[pieceKey]bool{}}
}

func (s *guardedStorage) OpenTorrent(ctx context.Context, info *metainfo.Info, ih metainfo.Hash) (storage.TorrentImpl, error) {
	ti, err := s.ClientImplCloser.OpenTorrent(ctx, info, ih)
	if err != nil {
		return ti, err
	}
	wrap := func(p metainfo.Piece, inner storage.PieceImpl) storage.PieceImpl {
		return &guardedPiece{PieceImpl: inner, key: pieceKey{ih, p.Index()}, length: p.Length(), s: s}
	}
	if f := ti.Piece; f != nil {
		ti.Piece = func(p metainfo.Piece) storage.PieceImpl { return wrap(p, f(p)) }
	}
	if f := ti.PieceWithHash; f != nil {
		ti.PieceWithHash = func(p metainfo.Piece, h g.Option[[]byte]) storage.PieceImpl { return wrap(p, f(p, h)) }
	}
	return ti, nil
}

func (s *guardedStorage) blocked(k pieceKey) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.filling[k] || s.sealed[k]
}

// startFill blocks peer writes to a piece; it reports false when a fill already runs.
func (s *guardedStorage) startFill(k pieceKey) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.filling[k] {
		return false
	}
	s.filling[k] = true
	return true
}

// endFill ends a fill; a verified piece stays sealed.
func (s *guardedStorage) endFill(k pieceKey, verified bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.filling, k)
	if verified {
		s.sealed[k] = true
	}
}

// forget drops the seals of a torrent whose data was evicted.
func (s *guardedStorage) forget(ih metainfo.Hash) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.sealed {
		if k.ih == ih {
			delete(s.sealed, k)
		}
	}
}

type guardedPiece struct {
	storage.PieceImpl
	key    pieceKey
	length int64
	s      *guardedStorage
}

// WriteAt is anacrolix writing a peer's chunk: dropped while the piece is filled from the
// origin or once that fill verified (reported as written, so anacrolix carries on).
func (p *guardedPiece) WriteAt(b []byte, off int64) (int, error) {
	if p.s.blocked(p.key) {
		return len(b), nil
	}
	return p.PieceImpl.WriteAt(b, off)
}

// writeFill is the gap filler's write, the only one allowed during a fill.
func (p *guardedPiece) writeFill(b []byte) (int, error) { return p.PieceImpl.WriteAt(b, 0) }

// WriteTo keeps the inner piece's efficient copy when it has one.
func (p *guardedPiece) WriteTo(w io.Writer) (int64, error) {
	if wt, ok := p.PieceImpl.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	return io.Copy(w, io.NewSectionReader(p.PieceImpl, 0, p.length))
}

// Flush passes through for storages that buffer writes.
func (p *guardedPiece) Flush() error {
	if f, ok := p.PieceImpl.(interface{ Flush() error }); ok {
		return f.Flush()
	}
	return nil
}
