package vod

import (
	"slices"
	"testing"
)

// TestGuardMissing: a gap fill asks the origin only for the blocks no peer wrote, in at most
// maxRanges requests, and forgets what peers wrote once the piece completes or fails its check.
func TestGuardMissing(t *testing.T) {
	const length = 16*blockSize + 1000 // 17 blocks, the last one short
	k := pieceKey{i: 3}
	type write struct{ off, n int64 }
	cases := []struct {
		name      string
		writes    []write
		maxRanges int
		want      []byteRange
	}{
		{"nothing written", nil, 4, []byteRange{{0, length}}},
		{"first block", []write{{0, blockSize}}, 4, []byteRange{{blockSize, length}}},
		{"partial block does not count", []write{{0, blockSize - 1}, {blockSize + 1, blockSize}}, 4, []byteRange{{0, length}}},
		{"short last block counts", []write{{16 * blockSize, 1000}}, 4, []byteRange{{0, 16 * blockSize}}},
		{"all written", []write{{0, length}}, 4, nil},
		{"holes", []write{{blockSize, blockSize}, {5 * blockSize, 2 * blockSize}}, 4,
			[]byteRange{{0, blockSize}, {2 * blockSize, 5 * blockSize}, {7 * blockSize, length}}},
		{"closest ranges merged", []write{{blockSize, blockSize}, {3 * blockSize, 3 * blockSize}, {7 * blockSize, blockSize}}, 2,
			// gaps: 1 block (0|2), 3 blocks (2|6), 1 block (6|8): the first 1-block gap merges first
			[]byteRange{{0, 3 * blockSize}, {6 * blockSize, length}}},
		{"one range at most", []write{{blockSize, blockSize}, {10 * blockSize, blockSize}}, 1, []byteRange{{0, length}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newGuardedStorage(nil)
			for _, w := range tc.writes {
				s.noteWritten(k, w.off, w.n, length)
			}
			got := s.missing(k, length, tc.maxRanges)
			if !slices.Equal(got, tc.want) {
				t.Errorf("missing = %v, want %v", got, tc.want)
			}
			if other := s.missing(pieceKey{i: 4}, length, tc.maxRanges); !slices.Equal(other, []byteRange{{0, length}}) {
				t.Errorf("another piece: missing = %v, want all of it", other)
			}
			s.dropWritten(k)
			if got := s.missing(k, length, tc.maxRanges); !slices.Equal(got, []byteRange{{0, length}}) {
				t.Errorf("after dropWritten: missing = %v, want all of it", got)
			}
		})
	}
}
