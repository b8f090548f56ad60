package slice

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/nanodc/nanodc/internal/atomicfile"
)

// storage is one slice's private storage: a key/value store (the "storage" service) and a
// files directory (what WASI apps see as "/"), both under the slice's directory and counted
// against its storage quota.
//
// Key/value writes are checked before they happen. Files written through WASI cannot be
// checked write by write (wazero writes them directly), so usage is rescanned periodically
// and a slice over quota has its apps stopped by the watchdog (docs/slices.md).
type storage struct {
	dir   string
	mu    sync.Mutex
	used  int64 // bytes, as of the last scan plus key/value changes since
	quota func() int64
}

const (
	maxKeyBytes   = 256
	maxValueBytes = 1 << 20
)

// ErrQuota is returned when a write would exceed the slice's storage quota.
var ErrQuota = errors.New("storage quota exceeded")

func newStorage(dir string, quota func() int64) (*storage, error) {
	for _, d := range []string{filepath.Join(dir, "kv"), filepath.Join(dir, "files")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	s := &storage{dir: dir, quota: quota}
	_, err := s.rescan()
	return s, err
}

// filesDir is the directory WASI apps of the slice see.
func (s *storage) filesDir(app string) string { return filepath.Join(s.dir, "files", app) }

func (s *storage) keyPath(app, key string) (string, error) {
	if key == "" || len(key) > maxKeyBytes {
		return "", fmt.Errorf("storage: key must be 1-%d bytes", maxKeyBytes)
	}
	// Hex names: no key can spell a path, however it is written.
	return filepath.Join(s.dir, "kv", app+"."+hex.EncodeToString([]byte(key))), nil
}

func (s *storage) get(app, key string) ([]byte, bool, error) {
	p, err := s.keyPath(app, key)
	if err != nil {
		return nil, false, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	return b, err == nil, err
}

func (s *storage) put(app, key string, val []byte) error {
	if len(val) > maxValueBytes {
		return fmt.Errorf("storage: value of %d bytes, more than %d", len(val), maxValueBytes)
	}
	p, err := s.keyPath(app, key)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var old int64
	if fi, err := os.Stat(p); err == nil {
		old = fi.Size()
	}
	delta := int64(len(val)) - old
	if q := s.quota(); delta > 0 && s.used+delta > q {
		return fmt.Errorf("%w: %d of %d bytes used, writing %d more", ErrQuota, s.used, q, delta)
	}
	if err := atomicfile.WriteFile(p, val, 0o600); err != nil {
		return err
	}
	s.used += delta
	return nil
}

func (s *storage) delete(app, key string) error {
	p, err := s.keyPath(app, key)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fi, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		return err
	}
	s.used -= fi.Size()
	return nil
}

// rescan measures what the slice's directory really holds.
func (s *storage) rescan() (int64, error) {
	var total int64
	err := filepath.WalkDir(s.dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // vanished while walking
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
			}
		}
		return nil
	})
	s.mu.Lock()
	s.used = total
	s.mu.Unlock()
	return total, err
}

func (s *storage) usage() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

// removeApp deletes an app's keys and files.
func (s *storage) removeApp(app string) error {
	matches, _ := filepath.Glob(filepath.Join(s.dir, "kv", app+".*"))
	for _, m := range matches {
		_ = os.Remove(m)
	}
	err := os.RemoveAll(s.filesDir(app))
	_, _ = s.rescan()
	return err
}
