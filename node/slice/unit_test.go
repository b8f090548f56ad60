package slice

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
)

func newKey(t testing.TB) crypto.PrivKey {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestUnitRoundTripAndTampering(t *testing.T) {
	key := newKey(t)
	module := []byte("\x00asm\x01\x00\x00\x00")
	u, err := Pack(key, Manifest{Name: "counter", Version: "1.0", Kind: KindWASM, Requires: []string{ServiceStorage}}, module)
	if err != nil {
		t.Fatal(err)
	}
	b, err := u.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeUnit(b)
	if err != nil {
		t.Fatalf("DecodeUnit of a packed unit: %v", err)
	}
	if got.CID() != u.CID() || !bytes.Equal(got.Module, module) {
		t.Fatalf("round trip changed the unit: %s vs %s", got.CID(), u.CID())
	}
	signer, _ := got.SignerID()
	if want, _ := crypto.MarshalPublicKey(key.GetPublic()); !bytes.Equal(got.Signer, want) || signer == "" {
		t.Fatal("signer not preserved")
	}

	mutate := func(f func(*Unit)) []byte {
		var c Unit
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatal(err)
		}
		f(&c)
		out, _ := json.Marshal(&c)
		return out
	}
	other := newKey(t)
	otherPub, _ := crypto.MarshalPublicKey(other.GetPublic())
	for _, tc := range []struct {
		name, data, want string
	}{
		{"version changed after signing", string(mutate(func(c *Unit) { c.Manifest.Version = "2.0" })), "bad signature"},
		{"module swapped", string(mutate(func(c *Unit) { c.Module = []byte("\x00asm\x01\x00\x00\x00\x00") })), "hash to"},
		{"signer swapped", string(mutate(func(c *Unit) { c.Signer = otherPub })), "bad signature"},
		{"services added", string(mutate(func(c *Unit) { c.Manifest.Requires = append(c.Manifest.Requires, ServicePubSub) })), "bad signature"},
		{"bad app name", string(mutate(func(c *Unit) { c.Manifest.Name = "../etc" })), "app id"},
		{"unknown field", `{"manifest":{"name":"a","kind":"wasm"},"evil":1}`, "unknown field"},
		{"not json", "\x00asm", "not a deployment unit"},
		{"trailing", string(b) + "{}", "trailing"},
		{"garbage signer", string(mutate(func(c *Unit) { c.Signer = []byte{1, 2, 3} })), "signer key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeUnit([]byte(tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestAccessDocMatchesMatrix keeps docs/access.md the rendering of the matrix the code
// enforces.
func TestAccessDocMatchesMatrix(t *testing.T) {
	doc, err := os.ReadFile("../../docs/access.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), AccessMarkdown()) {
		t.Fatalf("docs/access.md does not contain the matrix the code enforces; paste this:\n%s", AccessMarkdown())
	}
}

func FuzzDecodeUnit(f *testing.F) {
	key := newKey(f)
	u, _ := Pack(key, Manifest{Name: "a", Kind: KindWASM}, []byte("\x00asm\x01\x00\x00\x00"))
	b, _ := u.Encode()
	f.Add(b)
	f.Add([]byte(`{"manifest":{"name":"a","kind":"vod"},"signer":"","signature":""}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		u, err := DecodeUnit(data)
		if err != nil {
			return
		}
		// Whatever decodes must be internally consistent: valid manifest, module matching.
		if err := u.Manifest.validate(); err != nil {
			t.Fatalf("decoded an invalid manifest: %v", err)
		}
		if u.Manifest.Module != "" && moduleCID(u.Module).String() != u.Manifest.Module {
			t.Fatal("decoded a unit whose module does not match its CID")
		}
	})
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"op":"slice.create","slice":"video","provider":"12D3KooW","quotas":{"memory_bytes":1048576}}`))
	f.Add([]byte(`{"op":"events.core","since":3,"wait_ms":100}`))
	f.Add([]byte(`{"op":"app.install","slice":"a","unit":"AAAA"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := DecodeRequest(bytes.NewReader(data))
		if err != nil {
			return
		}
		if _, ok := lookupRule(req.Op); !ok {
			t.Fatalf("accepted unknown op %q", req.Op)
		}
		if req.Slice != "" && ValidID("slice", req.Slice) != nil {
			t.Fatalf("accepted slice id %q", req.Slice)
		}
		if req.App != "" && ValidID("app", req.App) != nil {
			t.Fatalf("accepted app id %q", req.App)
		}
	})
}
