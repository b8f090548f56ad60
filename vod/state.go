package vod

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/nanodc/nanodc/internal/atomicfile"
)

// stateFile is the cache's bookkeeping that must survive a restart: pins and what was
// watched when (eviction needs recency and popularity).
type stateFile struct {
	path   string
	Titles map[string]*titleState `json:"titles"`
}

type titleState struct {
	Pinned bool `json:"pinned,omitempty"`
	// Prefix is how many bytes from the title's start a prefix push placed here: kept through
	// eviction (the rest of the title goes, the prefix is fetched again), so that a viewer
	// starts from the gateway's own disk.
	Prefix   int64     `json:"prefix_bytes,omitempty"`
	Plays    int       `json:"plays"`
	LastUsed time.Time `json:"last_used"`
}

func loadState(path string) (*stateFile, error) {
	s := &stateFile{path: path, Titles: map[string]*titleState{}}
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("vod: cache state: %w", err)
	}
	if err := json.Unmarshal(raw, s); err != nil {
		return nil, fmt.Errorf("vod: cache state %s is damaged (remove it to start over; cached titles are re-verified): %w", path, err)
	}
	if s.Titles == nil {
		s.Titles = map[string]*titleState{}
	}
	return s, nil
}

func (s *stateFile) title(c string) *titleState {
	ts := s.Titles[c]
	if ts == nil {
		ts = &titleState{}
		s.Titles[c] = ts
	}
	return ts
}

func (s *stateFile) save() error {
	raw, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(s.path, raw)
}

// writeFileAtomic writes via a temporary file and a rename so a crash never leaves half a file.
func writeFileAtomic(path string, data []byte) error {
	return atomicfile.WriteFile(path, data, 0o600)
}
