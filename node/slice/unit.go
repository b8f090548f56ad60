package slice

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multihash"
)

// Manifest describes a deployment unit: what the provider signs.
type Manifest struct {
	Name     string   `json:"name"`    // the app's id inside the slice
	Version  string   `json:"version"` // free-form, shown in probes
	Kind     string   `json:"kind"`    // "wasm" or a built-in kind the node registers (e.g. "vod")
	Requires []string `json:"requires,omitempty"`
	// Provides names the services the app offers to the other apps of its slice while it
	// is Active (the slice's private service registry, registry.go).
	Provides []string `json:"provides,omitempty"`
	// Topics the app subscribes to, relative to the slice's namespace (service pubsub).
	Topics []string `json:"topics,omitempty"`
	// Module is the CID of the WebAssembly module (kind wasm); the unit carries the bytes.
	Module string `json:"module,omitempty"`
	// MemoryBytes caps the app's linear memory (0: the slice's remaining memory quota).
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
	// Config is handed to a built-in kind as is.
	Config json.RawMessage `json:"config,omitempty"`
}

// KindWASM is the WebAssembly app kind.
const KindWASM = "wasm"

// Unit is a signed deployment unit as shipped: manifest, signature and module bytes.
type Unit struct {
	Manifest  Manifest `json:"manifest"`
	Signer    []byte   `json:"signer"`    // the provider's public key (libp2p protobuf encoding)
	Signature []byte   `json:"signature"` // over signingBytes(manifest)
	Module    []byte   `json:"module,omitempty"`
}

// MaxUnitBytes bounds an encoded unit (a Go-compiled WASM module is a few MiB).
const MaxUnitBytes = 32 << 20

const signingPrefix = "nanodc-unit-v1\n"

func signingBytes(m Manifest) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return append([]byte(signingPrefix), b...), nil
}

// moduleCID names module bytes (raw codec, sha2-256).
func moduleCID(b []byte) cid.Cid {
	h, _ := multihash.Sum(b, multihash.SHA2_256, -1) // cannot fail for sha2-256
	return cid.NewCidV1(cid.Raw, h)
}

// Pack builds and signs a unit.
func Pack(key crypto.PrivKey, m Manifest, module []byte) (*Unit, error) {
	if len(module) > 0 {
		m.Module = moduleCID(module).String()
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	msg, err := signingBytes(m)
	if err != nil {
		return nil, err
	}
	sig, err := key.Sign(msg)
	if err != nil {
		return nil, fmt.Errorf("signing unit: %w", err)
	}
	pub, err := crypto.MarshalPublicKey(key.GetPublic())
	if err != nil {
		return nil, err
	}
	return &Unit{Manifest: m, Signer: pub, Signature: sig, Module: module}, nil
}

func (m Manifest) validate() error {
	if err := ValidID("app", m.Name); err != nil {
		return err
	}
	switch {
	case m.Kind == "":
		return errors.New("unit: manifest.kind is empty")
	case len(m.Version) > 64:
		return errors.New("unit: manifest.version longer than 64 bytes")
	case m.MemoryBytes < 0:
		return errors.New("unit: manifest.memory_bytes is negative")
	case len(m.Requires) > 32:
		return errors.New("unit: manifest.requires lists more than 32 services")
	case m.Kind == KindWASM && m.Module == "":
		return errors.New("unit: a wasm unit needs manifest.module")
	case len(m.Topics) > 16:
		return errors.New("unit: manifest.topics lists more than 16 topics")
	case len(m.Config) > 64<<10:
		return errors.New("unit: manifest.config larger than 64 KiB")
	}
	for _, t := range m.Topics {
		if err := ValidID("topic", t); err != nil {
			return fmt.Errorf("unit: manifest.topics: %w", err)
		}
	}
	for _, s := range m.Requires {
		if err := ValidID("service", s); err != nil {
			return fmt.Errorf("unit: manifest.requires: %w", err)
		}
	}
	return nil
}

// Encode is the unit's wire and file form.
func (u *Unit) Encode() ([]byte, error) { return json.Marshal(u) }

// CID names the unit by its signer and signed manifest (which names the module by its CID in
// turn): two providers shipping the same manifest and module have two different units.
func (u *Unit) CID() cid.Cid {
	b, _ := signingBytes(u.Manifest) // a decoded manifest always marshals
	return moduleCID(append(append(b, 0), u.Signer...))
}

// DecodeUnit parses and verifies a unit: well-formed, signed by the key it names, module
// bytes matching the manifest. It does not decide whether the signer may install it where
// it is going; Signer() says who signed.
func DecodeUnit(b []byte) (*Unit, error) {
	if len(b) > MaxUnitBytes {
		return nil, fmt.Errorf("unit: %d bytes, more than the %d allowed", len(b), MaxUnitBytes)
	}
	var u Unit
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&u); err != nil {
		return nil, fmt.Errorf("unit: not a deployment unit: %w", err)
	}
	if dec.More() {
		return nil, errors.New("unit: trailing data after the unit")
	}
	if err := u.Manifest.validate(); err != nil {
		return nil, err
	}
	pub, err := crypto.UnmarshalPublicKey(u.Signer)
	if err != nil {
		return nil, fmt.Errorf("unit: signer key: %w", err)
	}
	msg, err := signingBytes(u.Manifest)
	if err != nil {
		return nil, err
	}
	if ok, err := pub.Verify(msg, u.Signature); err != nil || !ok {
		return nil, errors.New("unit: bad signature: the manifest was not signed by the key it names")
	}
	switch {
	case u.Manifest.Module == "" && len(u.Module) > 0:
		return nil, errors.New("unit: module bytes but no module CID in the manifest")
	case u.Manifest.Module != "":
		want, err := cid.Decode(u.Manifest.Module)
		if err != nil {
			return nil, fmt.Errorf("unit: manifest.module: %w", err)
		}
		if got := moduleCID(u.Module); !got.Equals(want) {
			return nil, fmt.Errorf("unit: module bytes hash to %s, the manifest names %s", got, want)
		}
	}
	return &u, nil
}

// SignerID is the peer ID of the key that signed the unit.
func (u *Unit) SignerID() (peer.ID, error) {
	pub, err := crypto.UnmarshalPublicKey(u.Signer)
	if err != nil {
		return "", err
	}
	return peer.IDFromPublicKey(pub)
}

// missingServices lists what the unit requires that the slice was not granted.
func (u *Unit) missingServices(granted []string) []string {
	var out []string
	for _, s := range u.Manifest.Requires {
		if !slices.Contains(granted, s) {
			out = append(out, s)
		}
	}
	return out
}
