package catalog

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ipfs/go-cid"

	"github.com/nanodc/nanodc/internal/atomicfile"
)

// Store is a catalog directory: DIR/<cid>.json holds each signed entry and DIR/<name>.torrent
// the title's standard torrent file. Every read verifies; nothing is cached, so a directory
// edited by hand or synced from elsewhere is always read as it is.
type Store struct {
	dir string
}

// OpenStore opens an existing catalog directory.
func OpenStore(dir string) (*Store, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("catalog directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("catalog directory %s: not a directory", dir)
	}
	return &Store{dir: dir}, nil
}

// Dir is the catalog directory.
func (s *Store) Dir() string { return s.dir }

// EntryPath is where the store keeps e.
func (s *Store) EntryPath(e *Entry) string { return filepath.Join(s.dir, e.CID+".json") }

// TorrentPath is where the store keeps e's .torrent file.
func (s *Store) TorrentPath(e *Entry) string { return filepath.Join(s.dir, e.Name+".torrent") }

// Put verifies e and writes it with its .torrent file, each atomically. Publishing the same
// content under the same name again replaces the entry (e.g. a new origin); the same name for
// different content, or the same content under another name, is an error, because one of the
// two .torrent or .json files would silently point at the wrong title.
func (s *Store) Put(e *Entry) error {
	if err := e.Verify(); err != nil {
		return err
	}
	existing, err := s.List()
	if err != nil {
		return err
	}
	for _, x := range existing {
		switch {
		case x.CID == e.CID && x.Name != e.Name:
			return fmt.Errorf("catalog %s: this content is already published as %q (%s); remove it first", s.dir, x.Name, s.EntryPath(x))
		case x.Name == e.Name && x.CID != e.CID:
			return fmt.Errorf("catalog %s: name %q is already published with other content (%s); remove it first", s.dir, x.Name, s.EntryPath(x))
		}
	}
	b, err := e.Encode()
	if err != nil {
		return err
	}
	// The torrent first: an entry is only listed once its .torrent is in place.
	if err := writeFileAtomic(s.TorrentPath(e), e.Torrent, 0o644); err != nil {
		return fmt.Errorf("catalog %s: %w", s.dir, err)
	}
	if err := writeFileAtomic(s.EntryPath(e), b, 0o644); err != nil {
		return fmt.Errorf("catalog %s: %w", s.dir, err)
	}
	return nil
}

// List decodes and verifies every entry, sorted by name. A file that does not decode, or whose
// file name is not its CID, is an error naming it: a catalog never silently loses a title.
func (s *Store) List() ([]*Entry, error) {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("catalog directory: %w", err)
	}
	var out []*Entry
	for _, de := range des {
		n := de.Name()
		if !strings.HasSuffix(n, ".json") || strings.HasPrefix(n, ".") {
			continue // .torrent files, temporary files of an interrupted Put
		}
		p := filepath.Join(s.dir, n)
		if !de.Type().IsRegular() {
			return nil, fmt.Errorf("catalog file %s: not a regular file", p)
		}
		b, err := readFileLimited(p, MaxEntrySize)
		if err != nil {
			return nil, fmt.Errorf("catalog file %s: %w", p, err)
		}
		e, err := Decode(b)
		if err != nil {
			return nil, fmt.Errorf("catalog file %s: %w", p, err)
		}
		if n != e.CID+".json" {
			return nil, fmt.Errorf("catalog file %s: holds CID %s, want the file named %s.json", p, e.CID, e.CID)
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].CID < out[j].CID
	})
	return out, nil
}

// Get finds one title by CID, infohash (hex) or name, tried in that order.
func (s *Store) Get(ref string) (*Entry, error) {
	if ref == "" {
		return nil, errors.New("catalog: empty title reference")
	}
	all, err := s.List()
	if err != nil {
		return nil, err
	}
	if c, err := cid.Decode(ref); err == nil {
		for _, e := range all {
			if e.ContentID().Equals(c) {
				return e, nil
			}
		}
	}
	if validateInfoHash(strings.ToLower(ref)) == nil {
		for _, e := range all {
			if e.InfoHash == strings.ToLower(ref) {
				return e, nil
			}
		}
	}
	var byName []*Entry
	for _, e := range all {
		if e.Name == ref {
			byName = append(byName, e)
		}
	}
	switch len(byName) {
	case 0:
		return nil, fmt.Errorf("catalog %s: no title with CID, infohash or name %q", s.dir, ref)
	case 1:
		return byName[0], nil
	}
	cids := make([]string, len(byName))
	for i, e := range byName {
		cids[i] = e.CID
	}
	return nil, fmt.Errorf("catalog %s: name %q is ambiguous: %d titles (CIDs %s); use a CID", s.dir, ref, len(byName), strings.Join(cids, ", "))
}

func readFileLimited(p string, limit int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%d bytes, more than the %d-byte limit", fi.Size(), limit)
	}
	b := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, err
	}
	return b, nil
}

// writeFileAtomic writes via a temporary file and rename, so a reader or a crash never sees a
// half-written file.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	return atomicfile.WriteFile(path, data, perm)
}

func writeSyncClose(f *os.File, data []byte, perm fs.FileMode) error {
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
