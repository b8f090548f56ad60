// Package slice is a gateway's multi-provider layer: the operator cuts the gateway into
// slices, one per provider, each with quotas, private storage, a private service registry,
// a private protocol namespace on the overlay and its own management view. Providers deploy
// signed, content-addressed apps into their slice (built-in kinds or WebAssembly run by
// node/slice/wasm). Every management operation, local or remote, goes through Manager.Do,
// which checks it once against the role × operation matrix in access.go (docs/access.md).
//
// The vocabulary follows BBF TR-181 SoftwareModules: a slice is an execution environment, an
// installed app a deployment unit with one execution unit.
package slice

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"

	"github.com/nanodc/nanodc/internal/atomicfile"
)

// Quotas bound what one slice may use on the gateway. Zero means "the gateway default" for
// the limits that have one (see Defaults) and "no limit" for bandwidth.
type Quotas struct {
	MemoryBytes  int64 `json:"memory_bytes"`  // linear memory of all its WASM apps together
	CPUMillis    int64 `json:"cpu_millis"`    // CPU share in thousandths of a core (1000 = one core)
	StorageBytes int64 `json:"storage_bytes"` // everything under the slice's directory
	UploadBps    int64 `json:"upload_bps"`    // upload bandwidth share, bits per second (0: unlimited)
	DownloadBps  int64 `json:"download_bps"`  // download bandwidth share, bits per second (0: unlimited)
	MaxApps      int   `json:"max_apps"`
	Streams      int   `json:"streams"` // overlay streams open at once in the slice's namespace
}

// Defaults are the quotas a slice gets when the operator names none.
var Defaults = Quotas{MemoryBytes: 32 << 20, CPUMillis: 250, StorageBytes: 256 << 20, MaxApps: 4, Streams: 192}

func (q Quotas) withDefaults() Quotas {
	if q.MemoryBytes == 0 {
		q.MemoryBytes = Defaults.MemoryBytes
	}
	if q.CPUMillis == 0 {
		q.CPUMillis = Defaults.CPUMillis
	}
	if q.StorageBytes == 0 {
		q.StorageBytes = Defaults.StorageBytes
	}
	if q.MaxApps == 0 {
		q.MaxApps = Defaults.MaxApps
	}
	if q.Streams == 0 {
		q.Streams = Defaults.Streams
	}
	return q
}

// streamLimits are the slice's resource-manager limits: its streams quota (two thirds of it
// either way, so that neither direction starves the other), and for stream buffers half its
// memory quota, at least 4 MiB and at most 256 MiB. Stream buffers are the slice's memory too,
// but they live in the libp2p stack, outside any app's linear memory.
func (q Quotas) streamLimits() rcmgr.BaseLimit {
	q = q.withDefaults()
	oneWay := max(q.Streams*2/3, 1)
	return rcmgr.BaseLimit{Streams: q.Streams, StreamsInbound: oneWay, StreamsOutbound: oneWay,
		Memory: min(max(q.MemoryBytes/2, 4<<20), 256<<20)}
}

func (q Quotas) validate() error {
	switch {
	case q.MemoryBytes < 0 || q.CPUMillis < 0 || q.StorageBytes < 0 || q.UploadBps < 0 || q.DownloadBps < 0 || q.MaxApps < 0 || q.Streams < 0:
		return errors.New("quotas: values must not be negative")
	case q.MemoryBytes != 0 && q.MemoryBytes < 64<<10:
		return errors.New("quotas.memory_bytes: at least 65536 (one WebAssembly page)")
	case q.CPUMillis > 64_000:
		return errors.New("quotas.cpu_millis: at most 64000 (64 cores)")
	case q.MaxApps > 1000:
		return errors.New("quotas.max_apps: at most 1000")
	case q.Streams > 4096:
		return errors.New("quotas.streams: at most 4096")
	}
	return nil
}

// Slice is one provider's execution environment on this gateway.
type Slice struct {
	ID       string       `json:"id"`
	Provider peer.ID      `json:"provider"`
	Quotas   Quotas       `json:"quotas"`
	Services []string     `json:"services"` // shared services granted to the slice
	Created  time.Time    `json:"created"`
	Apps     []*AppRecord `json:"apps"`
}

var idRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// ValidID reports why id cannot name a slice or app, or nil. Ids appear in paths, protocol
// IDs and metric labels, so they are short lowercase DNS-like names.
func ValidID(kind, id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("%s id %q: want 1-32 characters of a-z, 0-9 and '-', starting with a letter or digit", kind, id)
	}
	return nil
}

// state is what persists across restarts.
type state struct {
	Version int      `json:"version"`
	Slices  []*Slice `json:"slices"`
}

const stateVersion = 1

func loadState(path string) (*state, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &state{Version: stateVersion}, nil
	}
	if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("%s: state version %d, this build reads %d", path, st.Version, stateVersion)
	}
	for _, s := range st.Slices {
		if err := ValidID("slice", s.ID); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	return &st, nil
}

// save writes the state atomically: a crash leaves the old file or the new, never half.
func (st *state) save(path string) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, 0o600)
}

func (st *state) find(id string) *Slice {
	i := slices.IndexFunc(st.Slices, func(s *Slice) bool { return s.ID == id })
	if i < 0 {
		return nil
	}
	return st.Slices[i]
}

// sliceDir is where everything of one slice lives; nothing of it lies outside.
func sliceDir(root, id string) string { return filepath.Join(root, id) }
