package fsutil

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// AtomicFile is a file written under a temporary name beside its final path
// and renamed over it by Commit: nothing appears under the final name until
// then, and Discard leaves nothing behind. The temporary file is created
// fresh (O_EXCL, O_NOFOLLOW, mode 0600) and holds an flock until it is
// committed or discarded, which tells a later run that it is not stale.
type AtomicFile struct {
	f     *os.File
	final string
	temp  string
	mode  os.FileMode
	uid   int // -1: leave as created
	gid   int
	done  bool // committed or discarded
}

// AtomicOptions say what mode the file gets.
type AtomicOptions struct {
	// Perm is the mode of a new file, before the umask (as open(2)
	// takes it): 0o666 for an output, 0o644 for a report.
	Perm os.FileMode
	// Mode, when ModeSet, is the exact mode of the file, whether it is new
	// or replaces one (the umask does not apply).
	Mode    os.FileMode
	ModeSet bool
}

// tempPrefix and tempSuffix frame the temporary name of final path
// DIR/BASE: DIR/.BASE.pipespool-RANDOM.tmp.
func tempPrefix(final string) string { return "." + filepath.Base(final) + ".pipespool-" }

const tempSuffix = ".tmp"

// CreateAtomic starts an atomic replacement of t, which ResolveForWrite
// found to be an existing regular file or nothing (not a link: its target,
// not a special file: those are written in place). Stale temporary files of
// t left by a killed writer are removed first. An existing file keeps its
// mode, owner and group (where allowed) unless opts.ModeSet.
func CreateAtomic(t Target, opts AtomicOptions) (*AtomicFile, error) {
	if t.Special() {
		return nil, &os.PathError{Op: "create", Path: t.Path, Err: errors.New("is not a regular file: write it in place")}
	}
	a := &AtomicFile{final: t.Path, uid: -1, gid: -1}
	switch {
	case opts.ModeSet:
		a.mode = opts.Mode
	case t.Info != nil:
		a.mode = t.Info.Mode().Perm()
		if st, ok := t.Info.Sys().(*syscall.Stat_t); ok {
			a.uid, a.gid = int(st.Uid), int(st.Gid)
		}
	default:
		a.mode = opts.Perm.Perm() &^ umask()
	}
	dir := filepath.Dir(t.Path)
	RemoveStaleTemps(t.Path)
	for range 10 {
		var rnd [6]byte
		rand.Read(rnd[:])
		a.temp = filepath.Join(dir, tempPrefix(t.Path)+hex.EncodeToString(rnd[:])+tempSuffix)
		f, err := CreateExclusive(a.temp, os.O_WRONLY, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			os.Remove(a.temp)
			return nil, &os.PathError{Op: "flock", Path: a.temp, Err: err}
		}
		a.f = f
		return a, nil
	}
	return nil, &os.PathError{Op: "create", Path: a.temp, Err: os.ErrExist}
}

// File is the open temporary file.
func (a *AtomicFile) File() *os.File { return a.f }

// Final is the path Commit renames the file to.
func (a *AtomicFile) Final() string { return a.final }

// TempPath is the temporary file's path.
func (a *AtomicFile) TempPath() string { return a.temp }

// Commit makes the file final: owner and mode set, fsync, rename over the
// final path, close, fsync of the directory. On error the temporary file
// is removed and nothing was written under the final name (unless the
// error is the directory's fsync, after the rename). Commit after Commit
// or Discard does nothing.
func (a *AtomicFile) Commit() error {
	if a.done {
		return nil
	}
	a.done = true
	fd := int(a.f.Fd())
	if a.uid >= 0 && (a.uid != os.Geteuid() || a.gid != os.Getegid()) {
		// Keep the replaced file's owner and group where allowed (root,
		// or a group pipespool's user is in); else they are the writer's,
		// as for any new file.
		if unix.Fchown(fd, a.uid, a.gid) != nil {
			unix.Fchown(fd, -1, a.gid)
		}
	}
	err := a.f.Chmod(a.mode)
	if err == nil {
		err = a.f.Sync()
	}
	if err == nil {
		// Renamed before it is closed: the flock then guards the name
		// until it is gone, so RemoveStaleTemps never takes a file that
		// is being committed.
		err = os.Rename(a.temp, a.final)
	}
	if cerr := a.f.Close(); err == nil && cerr != nil {
		err = cerr
		// Renamed already: the data is fsynced, the close error is odd
		// but the file is whole.
		return fmt.Errorf("close %s: %w", a.final, err)
	}
	if err != nil {
		os.Remove(a.temp)
		return fmt.Errorf("%s: %w (nothing was written under that name)", a.final, err)
	}
	return SyncDir(filepath.Dir(a.final))
}

// Discard closes and removes the temporary file. It is idempotent and does
// nothing after Commit.
func (a *AtomicFile) Discard() {
	if a == nil || a.done {
		return
	}
	a.done = true
	a.f.Close()
	os.Remove(a.temp)
}

// RemoveStaleTemps removes the temporary files of final that a writer left
// when it was killed: files named like CreateAtomic's temporaries, owned by
// pipespool's user, whose flock is free (no process holds them open any
// more). It returns how many it removed, and the paths of those it left
// because a process holds them: a writer still running, or a process a
// killed writer started that still has the file open (for a moment, a
// child it was forking; for as long as it runs, one that outlived it).
func RemoveStaleTemps(final string) (removed int, held []string) {
	dir := filepath.Dir(final)
	prefix := tempPrefix(final)
	d, err := Open(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return 0, nil
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	for _, name := range names {
		if !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, tempSuffix) {
			continue
		}
		path := filepath.Join(dir, name)
		switch removeIfStale(path) {
		case staleRemoved:
			removed++
		case staleHeld:
			held = append(held, path)
		}
	}
	return removed, held
}

// What removeIfStale did with a file.
const (
	staleLeft    = iota // not ours, not a regular file, or gone
	staleRemoved        // removed
	staleHeld           // locked: a process holds it
)

func removeIfStale(path string) int {
	fd, err := openFD(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return staleLeft
	}
	defer unix.Close(fd)
	var st, now unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Uid != uint32(os.Geteuid()) {
		return staleLeft
	}
	if flock(fd, unix.LOCK_EX|unix.LOCK_NB) != nil {
		return staleHeld
	}
	// Still the same file under that name (not renamed away and replaced).
	if unix.Lstat(path, &now) != nil || now.Dev != st.Dev || now.Ino != st.Ino {
		return staleLeft
	}
	if os.Remove(path) != nil {
		return staleLeft
	}
	return staleRemoved
}

// WriteFileAtomic replaces path with data: through CreateAtomic for a
// regular file or a new one, in place for a FIFO, a device or one of
// pipespool's own descriptors (/dev/stderr). Links are followed as
// ResolveForWrite says.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	t, err := ResolveForWrite(path)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if t.Special() {
		return writeInPlace(t, data)
	}
	a, err := CreateAtomic(t, AtomicOptions{Perm: perm})
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := a.File().Write(data); err != nil {
		a.Discard()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := a.Commit(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func writeInPlace(t Target, data []byte) error {
	var f *os.File
	if t.FD >= 0 {
		fd, err := unix.FcntlInt(uintptr(t.FD), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			return fmt.Errorf("write %s: %w", t.Path, err)
		}
		f = os.NewFile(uintptr(fd), t.Path)
	} else {
		var err error
		// O_NONBLOCK: a FIFO without a reader fails at once (ENXIO)
		// instead of waiting for one where nothing can interrupt it.
		if f, err = Open(t.Path, os.O_WRONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0); err != nil {
			return fmt.Errorf("write %s: %w", t.Path, err)
		}
		// Ours alone: blocking again, so Write does not return EAGAIN.
		unix.SetNonblock(int(f.Fd()), false)
	}
	_, err := f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", t.Path, err)
	}
	return nil
}

// umask returns the process's umask, read from /proc/self/status (setting
// it to read it back would race with other threads creating files).
func umask() os.FileMode {
	umaskOnce.Do(func() {
		umaskVal = 0o022
		b, err := os.ReadFile("/proc/self/status")
		if err != nil {
			return
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "Umask:"); ok {
				if n, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
					umaskVal = os.FileMode(n)
				}
				return
			}
		}
	})
	return umaskVal
}

var (
	umaskOnce sync.Once
	umaskVal  os.FileMode
)

func flock(fd, how int) error {
	for {
		err := unix.Flock(fd, how)
		if err != unix.EINTR {
			return err
		}
	}
}
