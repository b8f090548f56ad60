package vod

import (
	"context"
	"io"
	"slices"
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
//
// It also remembers which blocks of an incomplete piece peers have written, so that a gap fill
// asks the origin only for the rest: a piece that misses its deadline is usually partly there.
type guardedStorage struct {
	storage.ClientImplCloser

	mu      sync.Mutex
	filling map[pieceKey]bool
	sealed  map[pieceKey]bool
	written map[pieceKey][]uint64 // bitmap of blocks peers wrote, incomplete pieces only
}

// blockSize is the granularity of the written bitmaps: anacrolix's request chunk size. A write
// that covers a block only in part does not count (the block is fetched again, never missed).
const blockSize = 16 << 10

// byteRange is [Off, End) within a piece.
type byteRange struct{ Off, End int64 }

func (r byteRange) len() int64 { return r.End - r.Off }

type pieceKey struct {
	ih metainfo.Hash
	i  int
}

func newGuardedStorage(inner storage.ClientImplCloser) *guardedStorage {
	return &guardedStorage{ClientImplCloser: inner, filling: map[pieceKey]bool{}, sealed: map[pieceKey]bool{}, written: map[pieceKey][]uint64{}}
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
	for k := range s.written {
		if k.ih == ih {
			delete(s.written, k)
		}
	}
}

// noteWritten records a peer's write of b bytes at off into piece k (length bytes long).
func (s *guardedStorage) noteWritten(k pieceKey, off, n, length int64) {
	first := (off + blockSize - 1) / blockSize
	end := (off + n) / blockSize // blocks [first, end) are covered in full
	if off+n == length {
		end = (length + blockSize - 1) / blockSize // the piece's short last block
	}
	if end <= first {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	bm := s.written[k]
	if bm == nil {
		bm = make([]uint64, (length+64*blockSize-1)/(64*blockSize))
		s.written[k] = bm
	}
	for b := first; b < end && b/64 < int64(len(bm)); b++ {
		bm[b/64] |= 1 << (b % 64)
	}
}

// dropWritten forgets a piece's written blocks: it completed, or failed its hash check (then
// anacrolix fetches every block again, and none of the old data is to be trusted).
func (s *guardedStorage) dropWritten(k pieceKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.written, k)
}

// missing is what of piece k (length bytes long) no peer has written: at most maxRanges ranges
// (the closest ones are merged, taking a few written blocks again, so that one gap fill is a
// few requests to the origin, not one per block).
func (s *guardedStorage) missing(k pieceKey, length int64, maxRanges int) []byteRange {
	s.mu.Lock()
	bm := slices.Clone(s.written[k])
	s.mu.Unlock()
	var out []byteRange
	for b := int64(0); b*blockSize < length; b++ {
		if int(b/64) < len(bm) && bm[b/64]&(1<<(b%64)) != 0 {
			continue
		}
		off, end := b*blockSize, min((b+1)*blockSize, length)
		if n := len(out); n > 0 && out[n-1].End == off {
			out[n-1].End = end
		} else {
			out = append(out, byteRange{off, end})
		}
	}
	for len(out) > max(maxRanges, 1) {
		gap := 1
		for i := 2; i < len(out); i++ {
			if out[i].Off-out[i-1].End < out[gap].Off-out[gap-1].End {
				gap = i
			}
		}
		out[gap-1].End = out[gap].End
		out = slices.Delete(out, gap, gap+1)
	}
	return out
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
	n, err := p.PieceImpl.WriteAt(b, off)
	if err == nil {
		p.s.noteWritten(p.key, off, int64(n), p.length)
	}
	return n, err
}

// writeFill is the gap filler's write, the only one allowed during a fill.
func (p *guardedPiece) writeFill(b []byte, off int64) (int, error) {
	return p.PieceImpl.WriteAt(b, off)
}

// MarkComplete and MarkNotComplete end what the written bitmap is for.
func (p *guardedPiece) MarkComplete() error {
	p.s.dropWritten(p.key)
	return p.PieceImpl.MarkComplete()
}

func (p *guardedPiece) MarkNotComplete() error {
	p.s.dropWritten(p.key)
	return p.PieceImpl.MarkNotComplete()
}

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
