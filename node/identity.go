package node

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/nanodc/nanodc/internal/atomicfile"
)

// Files kept in the data directory.
const (
	IdentityFile = "identity.key" // libp2p-marshalled Ed25519 private key
	TokenFile    = "api-token"    // the local root's (operator's) bearer token for the management API
	APIAddrFile  = "api.addr"     // where the running node's API listens, for the CLI
	ConfigFile   = "config.yaml"  // read when --config is not given and the file exists
)

// LoadOrCreateIdentity reads the node's private key, creating an Ed25519 key on first run.
// The peer ID derives from it, so it must survive restarts; a damaged file is an error,
// never silently replaced (that would change the node's identity).
func LoadOrCreateIdentity(path string) (crypto.PrivKey, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("identity file %s: generating key: %w", path, err)
		}
		raw, err := crypto.MarshalPrivateKey(priv)
		if err != nil {
			return nil, fmt.Errorf("identity file %s: %w", path, err)
		}
		if err := writeFileAtomic(path, raw, 0o600); err != nil {
			return nil, fmt.Errorf("identity file %s: %w", path, err)
		}
		return priv, nil
	}
	if err != nil {
		return nil, fmt.Errorf("identity file %s: %w", path, err)
	}
	priv, err := crypto.UnmarshalPrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("identity file %s: not a valid libp2p private key (restore it from backup or remove it to create a new identity): %w", path, err)
	}
	if priv.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("identity file %s: key type %s, want Ed25519", path, priv.Type())
	}
	return priv, nil
}

// LoadOrCreateToken returns the management API token, creating a random one on first run.
func LoadOrCreateToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		tok := hex.EncodeToString(b)
		if err := writeFileAtomic(path, []byte(tok+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("token file %s: %w", path, err)
		}
		return tok, nil
	}
	if err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	tok := strings.TrimSpace(string(data))
	if len(tok) < 16 {
		return "", fmt.Errorf("token file %s: token shorter than 16 characters", path)
	}
	return tok, nil
}

func tokenEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// writeFileAtomic writes via a temporary file and rename, so a crash never leaves a
// half-written key behind.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	return atomicfile.WriteFile(path, data, perm)
}
