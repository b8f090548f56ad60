package catalog

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// LoadKey reads a provider key file: a libp2p-marshalled Ed25519 private key, the format of a
// node's identity.key.
func LoadKey(path string) (crypto.PrivKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("provider key file: %w", err)
	}
	priv, err := crypto.UnmarshalPrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("provider key file %s: not a valid libp2p private key: %w", path, err)
	}
	if priv.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("provider key file %s: key type %s, want Ed25519", path, priv.Type())
	}
	return priv, nil
}

// CreateKey generates an Ed25519 key and writes it to path (mode 0600). It never replaces an
// existing file: losing a provider key orphans every entry it signed.
func CreateKey(path string) (crypto.PrivKey, error) {
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("provider key file %s: already exists; not overwriting it", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("provider key file: %w", err)
	}
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("provider key file %s: generating key: %w", path, err)
	}
	raw, err := crypto.MarshalPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("provider key file %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("provider key file %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("provider key file %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := writeSyncClose(tmp, raw, 0o600); err != nil {
		return nil, fmt.Errorf("provider key file %s: %w", path, err)
	}
	// A hard link, unlike rename, fails if path appeared meanwhile: complete file or nothing,
	// and never someone else's key replaced.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("provider key file %s: already exists; not overwriting it", path)
		}
		return nil, fmt.Errorf("provider key file %s: %w", path, err)
	}
	return priv, nil
}
