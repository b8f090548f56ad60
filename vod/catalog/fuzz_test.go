package catalog

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzDecode feeds Decode hostile bytes: it must never panic, and whatever it accepts must
// survive an encode/decode round trip unchanged.
func FuzzDecode(f *testing.F) {
	e, _ := publishTest(f, newKey(f), "seed.mp4", 40_000)
	valid := mustEncode(f, e)
	f.Add(valid)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"version": 1, "version": 2}`))
	f.Add([]byte(strings.Replace(string(valid), `"bitrate_bps": 1500000`, `"bitrate_bps": 0`, 1)))
	f.Add([]byte(strings.Replace(string(valid), `"cid"`, `"Cid"`, 1)))
	f.Add(valid[:len(valid)-40])
	f.Add([]byte(`{"torrent": "bGxsbGxsbGxsbGxsbGxsbGxsbGxsbGxsbGxsbGxsbGxsbGxsbGxsbGxsbGxsbA=="}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := Decode(b)
		if err != nil {
			return
		}
		enc, err := got.Encode()
		if err != nil {
			t.Fatalf("accepted entry does not encode: %v", err)
		}
		again, err := Decode(enc)
		if err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		if enc2, _ := again.Encode(); !bytes.Equal(enc, enc2) {
			t.Fatalf("round trip changed the entry:\n%s\n%s", enc, enc2)
		}
		if !got.Published.Equal(again.Published) || got.Size != again.Size || got.CID != again.CID ||
			!bytes.Equal(got.Torrent, again.Torrent) || !bytes.Equal(got.Signature, again.Signature) {
			t.Fatal("round trip changed a field")
		}
	})
}
