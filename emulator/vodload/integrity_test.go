package vodload

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/nanodc/nanodc/vod/catalog"
)

func TestPieceCheck(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 5*(16<<10)+1234) // five 16 KiB pieces and a short last one
	rand.Read(data)
	path := filepath.Join(dir, "t.bin")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	o := catalog.PublishOptions{Key: priv, OriginBase: "http://127.0.0.1/", MIME: "video/mp4", BitrateBps: 1e6, PieceLength: 16 << 10}
	e, err := catalog.Publish(context.Background(), path, o)
	if err != nil {
		t.Fatal(err)
	}
	feed := func(b []byte, chunk int) *pieceCheck {
		c, err := newPieceCheck(e)
		if err != nil {
			t.Fatal(err)
		}
		for len(b) > 0 {
			n := min(chunk, len(b))
			c.write(b[:n])
			b = b[n:]
		}
		return c
	}
	for _, chunk := range []int{1000, 16 << 10, 1 << 20} {
		if c := feed(data, chunk); c.bad != 0 || c.off != int64(len(data)) {
			t.Errorf("intact title in %d-byte reads: %d bad pieces, %d bytes checked", chunk, c.bad, c.off)
		}
	}
	for _, at := range []int{0, 16<<10 - 1, 3 * 16 << 10, len(data) - 1} {
		bad := bytes.Clone(data)
		bad[at] ^= 1
		if c := feed(bad, 7000); c.bad != 1 {
			t.Errorf("one flipped byte at %d: %d bad pieces, want 1", at, c.bad)
		}
	}
	if c := feed(append(bytes.Clone(data), 0), 7000); c.bad != 1 {
		t.Errorf("a byte past the end: %d bad, want 1", c.bad)
	}
}
