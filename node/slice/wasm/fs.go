package wasm

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
	"time"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/sys"
)

// rootFS is the WASI file system of one app: the slice's directory opened as an os.Root.
//
// wazero's own DirFS is not a jail (its docs say "../" lookups escape it, and it follows
// symlinks anywhere). wazero's WASI layer already refuses absolute and "../" paths, but a guest
// can still create a symlink to "../../etc" and open through it, or meet one planted in the
// directory. os.Root resolves every path, symlinks included, inside the directory and refuses
// anything that leaves it, so all path operations go through it.
type rootFS struct {
	experimentalsys.UnimplementedFS
	root *os.Root
}

// rel turns a guest path (already cleaned and relative to the mount, "" for the mount itself)
// into a name for os.Root.
func rel(p string) string {
	p = strings.TrimPrefix(p, "/")
	if p == "" {
		return "."
	}
	return p
}

// pathErrno maps an error of a path operation. os.Root refuses escapes with a plain error, which
// wazero would report as EIO; the guest should see a permission error instead.
func pathErrno(err error) experimentalsys.Errno {
	if err == nil {
		return 0
	}
	errno := experimentalsys.UnwrapOSError(err)
	var se syscall.Errno
	if errno == experimentalsys.EIO && !errors.As(err, &se) {
		return experimentalsys.EPERM
	}
	return errno
}

func (r *rootFS) String() string { return r.root.Name() }

// OpenFile implements experimentalsys.FS.
func (r *rootFS) OpenFile(p string, flag experimentalsys.Oflag, perm fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	name := rel(p)
	if flag&experimentalsys.O_DIRECTORY != 0 && flag&(experimentalsys.O_WRONLY|experimentalsys.O_RDWR) != 0 {
		return nil, experimentalsys.EISDIR
	}
	if flag&experimentalsys.O_NOFOLLOW != 0 {
		// os.Root follows symlinks that stay inside it; honour the guest's no-follow here.
		if fi, err := r.root.Lstat(name); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			return nil, experimentalsys.ELOOP
		}
	}
	osFlag := toOSFlag(flag)
	f, err := r.root.OpenFile(name, osFlag, perm)
	if err != nil {
		return nil, pathErrno(err)
	}
	return wrapFile(r.root, name, f, osFlag)
}

func toOSFlag(flag experimentalsys.Oflag) int {
	var f int
	switch flag & (experimentalsys.O_RDONLY | experimentalsys.O_RDWR | experimentalsys.O_WRONLY) {
	case experimentalsys.O_RDWR:
		f = os.O_RDWR
	case experimentalsys.O_WRONLY:
		f = os.O_WRONLY
	default:
		f = os.O_RDONLY
	}
	for _, m := range []struct {
		w experimentalsys.Oflag
		o int
	}{
		{experimentalsys.O_APPEND, os.O_APPEND},
		{experimentalsys.O_CREAT, os.O_CREATE},
		{experimentalsys.O_DIRECTORY, syscall.O_DIRECTORY},
		{experimentalsys.O_DSYNC, syscall.O_DSYNC},
		{experimentalsys.O_EXCL, os.O_EXCL},
		{experimentalsys.O_NONBLOCK, syscall.O_NONBLOCK},
		{experimentalsys.O_SYNC, os.O_SYNC},
		{experimentalsys.O_TRUNC, os.O_TRUNC},
	} {
		if flag&m.w != 0 {
			f |= m.o
		}
	}
	return f
}

// Lstat implements experimentalsys.FS.
func (r *rootFS) Lstat(p string) (sys.Stat_t, experimentalsys.Errno) {
	fi, err := r.root.Lstat(rel(p))
	if err != nil {
		return sys.Stat_t{}, pathErrno(err)
	}
	return sys.NewStat_t(fi), 0
}

// Stat implements experimentalsys.FS.
func (r *rootFS) Stat(p string) (sys.Stat_t, experimentalsys.Errno) {
	fi, err := r.root.Stat(rel(p))
	if err != nil {
		return sys.Stat_t{}, pathErrno(err)
	}
	return sys.NewStat_t(fi), 0
}

// Mkdir implements experimentalsys.FS.
func (r *rootFS) Mkdir(p string, perm fs.FileMode) experimentalsys.Errno {
	errno := pathErrno(r.root.Mkdir(rel(p), perm))
	if errno == experimentalsys.ENOTDIR { // as wazero's DirFS: a missing parent is ENOENT
		errno = experimentalsys.ENOENT
	}
	return errno
}

// Chmod implements experimentalsys.FS.
func (r *rootFS) Chmod(p string, perm fs.FileMode) experimentalsys.Errno {
	return pathErrno(r.root.Chmod(rel(p), perm))
}

// Rename implements experimentalsys.FS.
func (r *rootFS) Rename(from, to string) experimentalsys.Errno {
	return pathErrno(r.root.Rename(rel(from), rel(to)))
}

// Rmdir implements experimentalsys.FS.
func (r *rootFS) Rmdir(p string) experimentalsys.Errno {
	name := rel(p)
	fi, err := r.root.Lstat(name)
	if err != nil {
		return pathErrno(err)
	}
	if !fi.IsDir() {
		return experimentalsys.ENOTDIR
	}
	return pathErrno(r.root.Remove(name))
}

// Unlink implements experimentalsys.FS.
func (r *rootFS) Unlink(p string) experimentalsys.Errno {
	name := rel(p)
	fi, err := r.root.Lstat(name)
	if err != nil {
		return pathErrno(err)
	}
	if fi.IsDir() {
		return experimentalsys.EISDIR
	}
	return pathErrno(r.root.Remove(name))
}

// Link implements experimentalsys.FS.
func (r *rootFS) Link(oldPath, newPath string) experimentalsys.Errno {
	return pathErrno(r.root.Link(rel(oldPath), rel(newPath)))
}

// Symlink implements experimentalsys.FS. os.Root would never follow a link that leaves it, but
// such a link would still be a trap for anything else that walks the slice's directory (backups,
// the slice manager), so it is not created at all.
func (r *rootFS) Symlink(target, link string) experimentalsys.Errno {
	name := rel(link)
	if path.IsAbs(target) || !fs.ValidPath(path.Join(path.Dir(name), target)) {
		return experimentalsys.EPERM
	}
	return pathErrno(r.root.Symlink(target, name))
}

// Readlink implements experimentalsys.FS.
func (r *rootFS) Readlink(p string) (string, experimentalsys.Errno) {
	s, err := r.root.Readlink(rel(p))
	if err != nil {
		return "", pathErrno(err)
	}
	return s, 0
}

// Utimens implements experimentalsys.FS.
func (r *rootFS) Utimens(p string, atim, mtim int64) experimentalsys.Errno {
	return pathErrno(r.root.Chtimes(rel(p), utime(atim), utime(mtim)))
}

// utime converts a WASI timestamp; the zero time.Time tells Chtimes to leave it alone.
func utime(ns int64) time.Time {
	if ns == experimentalsys.UTIME_OMIT {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// rootFile is a file or directory opened through rootFS. Reading, writing, seeking and listing
// are wazero's own adapter for an fs.File (sysfs.AdaptFS) around the *os.File that os.Root
// opened, which reuses wazero's file semantics (directory rewind, errno mapping) rather than
// re-implementing them; what that adapter leaves out for a plain fs.File is added here.
type rootFile struct {
	experimentalsys.File
	f      *os.File
	append bool
}

// preopened is an fs.FS whose first Open returns a file already opened through os.Root; later
// Opens (wazero re-opens a directory to rewind it) go through os.Root again.
type preopened struct {
	root *os.Root
	f    *os.File
}

func (p *preopened) Open(name string) (fs.File, error) {
	if f := p.f; f != nil {
		p.f = nil
		return f, nil
	}
	return p.root.Open(name)
}

func wrapFile(root *os.Root, name string, f *os.File, osFlag int) (experimentalsys.File, experimentalsys.Errno) {
	af, errno := (&sysfs.AdaptFS{FS: &preopened{root: root, f: f}}).OpenFile(name, experimentalsys.O_RDONLY, 0)
	if errno != 0 {
		_ = f.Close()
		return nil, errno
	}
	return &rootFile{File: af, f: f, append: osFlag&os.O_APPEND != 0}, 0
}

// IsAppend implements experimentalsys.File.
func (f *rootFile) IsAppend() bool { return f.append }

// Truncate implements experimentalsys.File.
func (f *rootFile) Truncate(size int64) experimentalsys.Errno {
	return experimentalsys.UnwrapOSError(f.f.Truncate(size))
}

// Sync implements experimentalsys.File.
func (f *rootFile) Sync() experimentalsys.Errno { return experimentalsys.UnwrapOSError(f.f.Sync()) }

// Datasync implements experimentalsys.File.
func (f *rootFile) Datasync() experimentalsys.Errno { return f.Sync() }
