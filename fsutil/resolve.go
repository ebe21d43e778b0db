package fsutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Target is where a write to a path lands, as ResolveForWrite found it.
type Target struct {
	// Path is the path to write: the one given, or what its links lead to.
	Path string
	// Info is the Lstat of Path, nil when nothing is there yet.
	Info os.FileInfo
	// FD is >= 0 when the path names one of pipespool's own open files
	// (/dev/stdout, /dev/stderr, /dev/fd/N, /proc/self/fd/N): write to
	// that descriptor, as the shell does, instead of opening the path
	// anew (which would start a regular file over from offset 0).
	FD int
}

// Exists reports whether something is at t.Path (or t is a descriptor).
func (t Target) Exists() bool { return t.Info != nil || t.FD >= 0 }

// Regular reports whether t.Path is an existing regular file.
func (t Target) Regular() bool { return t.FD < 0 && t.Info != nil && t.Info.Mode().IsRegular() }

// Special reports whether t is something that is written in place: a
// descriptor, or an existing FIFO, device or socket.
func (t Target) Special() bool { return t.FD >= 0 || t.Info != nil && !t.Info.Mode().IsRegular() }

// maxLinks bounds the links followed, as the kernel's MAXSYMLINKS does.
const maxLinks = 40

// ResolveForWrite finds where a write to path lands, under the rules of the
// package documentation: links at the final component are followed (not
// where protected_symlinks would refuse them), a directory is an error, and
// an existing FIFO, device or socket in a sticky world-writable directory
// must belong to pipespool's user or to the directory's owner.
func ResolveForWrite(path string) (Target, error) {
	p := path
	for hops := 0; ; hops++ {
		// Every check below takes the directory of p as text (the
		// sticky-directory rules, the temporary file of an atomic
		// write): a ".." in it is resolved first, as the kernel does.
		// It also keeps p short along a chain of links.
		np, err := physicalDir(p)
		if err != nil {
			return Target{}, &os.PathError{Op: "resolve", Path: path, Err: err}
		}
		p = np
		if fd, ok := OwnFD(p); ok {
			return Target{Path: p, FD: fd}, nil
		}
		fi, err := os.Lstat(p)
		if errors.Is(err, os.ErrNotExist) {
			return Target{Path: p, FD: -1}, nil
		}
		if err != nil {
			return Target{}, err
		}
		switch m := fi.Mode(); {
		case m&os.ModeSymlink != 0:
			if hops >= maxLinks {
				return Target{}, &os.PathError{Op: "resolve", Path: path, Err: syscall.ELOOP}
			}
			if err := mayFollow(p, fi); err != nil {
				return Target{}, err
			}
			dst, err := os.Readlink(p)
			if err != nil {
				return Target{}, err
			}
			if !filepath.IsAbs(dst) {
				dst = JoinAsKernel(DirAsKernel(p), dst)
			}
			p = dst
		case m.IsDir():
			return Target{}, &os.PathError{Op: "write", Path: p, Err: errors.New("is a directory: name a file")}
		case m.IsRegular():
			return Target{Path: p, Info: fi, FD: -1}, nil
		default:
			if err := mayWriteSpecial(p, fi); err != nil {
				return Target{}, err
			}
			return Target{Path: p, Info: fi, FD: -1}, nil
		}
	}
}

// JoinAsKernel joins a relative name to dir as the kernel will resolve it:
// without cleaning. filepath.Join removes "sub/.." lexically, but when sub
// is a link the kernel goes to the parent of where sub leads, another
// directory: a write or a read would land elsewhere than the path says.
func JoinAsKernel(dir, name string) string {
	switch {
	case filepath.IsAbs(name) || dir == "":
		return name
	case strings.HasSuffix(dir, "/"):
		return dir + name
	}
	return dir + "/" + name
}

// DirAsKernel is the directory that holds path's last component, as the
// kernel resolves it: path without its last component, not cleaned (see
// JoinAsKernel); "." for a bare name.
func DirAsKernel(path string) string {
	path = strings.TrimRight(path, "/")
	i := strings.LastIndexByte(path, '/')
	switch {
	case i < 0:
		return "."
	case i == 0:
		return "/"
	}
	return path[:i]
}

// physicalDir rewrites a path whose directory part goes through "..": to
// the directory the kernel reaches (the links before each ".." followed),
// so that whoever takes filepath.Dir of the result (the sticky-directory
// checks, the temporary file of an atomic write beside the final name)
// gets the same directory as the kernel. A directory part without ".." is
// left as it is: text and kernel agree on it. One that cannot be resolved
// (a link on the way leads nowhere) is an error: the kernel could not
// reach the file either, and a temporary file made at its lexical reading
// would only fail at the rename, after the whole run.
func physicalDir(path string) (string, error) {
	d, base := filepath.Split(path)
	real, err := resolveDotDot(d)
	if err != nil {
		return "", fmt.Errorf("directory %s cannot be reached: %w", d, unwrapPathErr(err))
	}
	if real == d {
		return path, nil
	}
	return filepath.Join(real, base), nil
}

// resolveDotDot is dir with the links before each ".." followed, as the
// kernel does (dir itself when it has no ".."); an error when a link on the
// way leads nowhere.
func resolveDotDot(dir string) (string, error) {
	if !strings.Contains(dir, "..") {
		return dir, nil
	}
	return filepath.EvalSymlinks(dir)
}

// unwrapPathErr is err's cause without the path a *PathError repeats.
func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// AbsAsKernel is path made absolute against the working directory without
// cleaning it (see JoinAsKernel), as the kernel resolves a relative path;
// only a leading "." component, which names the working directory itself
// whatever it is, is left out ("t.toml" in /srv is in /srv, not /srv/.).
func AbsAsKernel(path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	wd, err := os.Getwd()
	if err != nil {
		return path
	}
	for path == "." || strings.HasPrefix(path, "./") {
		path = strings.TrimLeft(strings.TrimPrefix(path, "."), "/")
	}
	if path == "" {
		return wd
	}
	return JoinAsKernel(wd, path)
}

// DirAsKernelAbs is the absolute directory that holds path's last
// component as the kernel reaches it: a ".." in it resolved (see
// physicalDir), the rest as written.
func DirAsKernelAbs(path string) string {
	d := AbsAsKernel(DirAsKernel(path))
	if real, err := resolveDotDot(d); err == nil {
		return real
	}
	return d
}

// OwnFD reports whether path names one of this process's descriptors
// (/dev/stdin, /dev/stdout, /dev/stderr, /dev/fd/N, /proc/self/fd/N,
// /proc/PID/fd/N with our pid) and which.
func OwnFD(path string) (int, bool) {
	// "/dev/fd/../stdout" is /proc/self/stdout to the kernel (/dev/fd is
	// a link), nothing like /dev/stdout: a path through ".." is left to
	// the kernel.
	if slices.Contains(strings.Split(path, "/"), "..") {
		return -1, false
	}
	p := filepath.Clean(path)
	switch p {
	case "/dev/stdin":
		return 0, true
	case "/dev/stdout":
		return 1, true
	case "/dev/stderr":
		return 2, true
	}
	var rest string
	switch {
	case strings.HasPrefix(p, "/dev/fd/"):
		rest = strings.TrimPrefix(p, "/dev/fd/")
	case strings.HasPrefix(p, "/proc/self/fd/"):
		rest = strings.TrimPrefix(p, "/proc/self/fd/")
	case strings.HasPrefix(p, "/proc/"+strconv.Itoa(os.Getpid())+"/fd/"):
		rest = strings.TrimPrefix(p, "/proc/"+strconv.Itoa(os.Getpid())+"/fd/")
	default:
		return -1, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 {
		return -1, false
	}
	return n, true
}

// stickyWorldWritable returns the owner of dir and whether dir is sticky and
// world-writable (/tmp, /var/tmp, /dev/shm): a place where other users can
// plant entries that pipespool's user cannot remove.
func stickyWorldWritable(dir string) (owner uint32, shared bool) {
	fi, err := os.Stat(dir)
	if err != nil {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	m := fi.Mode()
	return st.Uid, m&os.ModeSticky != 0 && m.Perm()&0o002 != 0
}

func ownerOf(fi os.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid
	}
	return 0
}

// planted reports whether the entry fi at p is something another user may
// have planted for pipespool: it lies in a sticky world-writable directory
// and belongs neither to pipespool's user nor to the directory's owner.
// That is the test of the kernel's protected_symlinks and
// protected_fifos=2 rules.
func planted(p string, fi os.FileInfo) (owner uint32, dir string, bad bool) {
	dir = filepath.Dir(p)
	dirOwner, shared := stickyWorldWritable(dir)
	owner = ownerOf(fi)
	return owner, dir, shared && owner != uint32(os.Geteuid()) && owner != dirOwner
}

// mayFollow applies the protected_symlinks rule to the link at p.
func mayFollow(p string, fi os.FileInfo) error {
	if o, dir, bad := planted(p, fi); bad {
		return &os.PathError{Op: "write", Path: p, Err: fmt.Errorf("is a symbolic link owned by uid %d in the shared directory %s (sticky, world-writable): refusing to follow it, as the kernel would; remove it or write elsewhere", o, dir)}
	}
	return nil
}

// mayWriteSpecial applies the protected_fifos=2 rule to an existing FIFO,
// device or socket at p, for every kind of special file.
func mayWriteSpecial(p string, fi os.FileInfo) error {
	if o, dir, bad := planted(p, fi); bad {
		return &os.PathError{Op: "write", Path: p, Err: fmt.Errorf("is a %s owned by uid %d in the shared directory %s (sticky, world-writable): another user made it, refusing to write into it; remove it or write elsewhere", TypeName(fi.Mode()), o, dir)}
	}
	return nil
}
