package vodload

import (
	"bytes"
	"crypto/sha1"
	"fmt"
	"hash"

	"github.com/anacrolix/torrent/metainfo"

	"github.com/nanodc/nanodc/vod/catalog"
)

// pieceCheck hashes what a player reads, from the title's first byte on, piece by piece,
// against the torrent's SHA-1 piece hashes: the issue's "no corrupted byte ever reaches a
// player" checked for every viewer of every run, faults and hostile peers included, not only
// in the unit tests. A corrupt byte from any source (a peer, the origin, a storage or
// gap-fill bug) fails the piece it is in.
type pieceCheck struct {
	info metainfo.Info
	size int64
	h    hash.Hash
	off  int64 // bytes checked or being hashed so far
	bad  int   // pieces whose bytes did not match
}

func newPieceCheck(e *catalog.Entry) (*pieceCheck, error) {
	mi, err := e.MetaInfo()
	if err != nil {
		return nil, err
	}
	info, err := mi.UnmarshalInfo()
	if err != nil {
		return nil, fmt.Errorf("title %q: info: %w", e.Name, err)
	}
	return &pieceCheck{info: info, size: info.TotalLength(), h: sha1.New()}, nil
}

// write hashes the next bytes of the stream, checking each piece as its last byte arrives.
func (c *pieceCheck) write(b []byte) {
	for len(b) > 0 {
		if c.off >= c.size {
			c.bad++ // bytes past the end of the title
			return
		}
		p := c.info.Piece(int(c.off / c.info.PieceLength))
		end := p.Offset() + p.Length()
		n := min(int64(len(b)), end-c.off)
		c.h.Write(b[:n])
		c.off += n
		b = b[n:]
		if c.off == end {
			if want := p.V1Hash(); !want.Ok || !bytes.Equal(c.h.Sum(nil), want.Value[:]) {
				c.bad++
			}
			c.h.Reset()
		}
	}
}
