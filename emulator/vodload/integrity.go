package vodload

import (
	"bytes"
	"crypto/sha1"
	"fmt"
	"hash"

	"github.com/nanodc/nanodc/vod/catalog"
)

// pieceCheck hashes what a player reads, from the title's first byte on, piece by piece,
// against the torrent's SHA-1 piece hashes: the issue's "no corrupted byte ever reaches a
// player" checked for every viewer of every run, faults and hostile peers included, not only
// in the unit tests. A corrupt byte from any source (a peer, the origin, a storage or
// gap-fill bug) fails the piece it is in.
type pieceCheck struct {
	hashes [][]byte // one SHA-1 per piece
	plen   int64
	size   int64
	h      hash.Hash
	off    int64 // bytes checked or being hashed so far
	bad    int   // pieces whose bytes did not match
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
	n := info.NumPieces()
	if len(info.Pieces) != n*sha1.Size || info.PieceLength != e.PieceLength || info.TotalLength() != e.Size {
		return nil, fmt.Errorf("title %q: info disagrees with the catalog entry", e.Name)
	}
	c := &pieceCheck{plen: e.PieceLength, size: e.Size, h: sha1.New()}
	for i := range n {
		c.hashes = append(c.hashes, info.Pieces[i*sha1.Size:(i+1)*sha1.Size])
	}
	return c, nil
}

// write hashes the next bytes of the stream, checking each piece as its last byte arrives.
func (c *pieceCheck) write(b []byte) {
	for len(b) > 0 {
		if c.off >= c.size {
			c.bad++ // bytes past the end of the title
			return
		}
		end := min(c.size, (c.off/c.plen+1)*c.plen) // end of the current piece
		n := min(int64(len(b)), end-c.off)
		c.h.Write(b[:n])
		c.off += n
		b = b[n:]
		if c.off == end {
			if !bytes.Equal(c.h.Sum(nil), c.hashes[(end-1)/c.plen]) {
				c.bad++
			}
			c.h.Reset()
		}
	}
}
