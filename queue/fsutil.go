package queue

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// openFile is os.OpenFile (close-on-exec) for the files a job opens:
// os.OpenFile offers every file to Go's netpoller, which costs a regular
// file or a directory four more syscalls (O_NONBLOCK on, epoll_ctl refused,
// O_NONBLOCK off), three files per tiny job. The *os.File made here is a
// plain blocking file, as those end up; errors are the same *PathError.
func openFile(path string, flag int, perm uint32) (*os.File, error) {
	for {
		fd, err := unix.Open(path, flag|unix.O_CLOEXEC, perm)
		if err == nil {
			return os.NewFile(uintptr(fd), path), nil
		}
		if err != unix.EINTR {
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
	}
}

// fsyncDir makes the entries of dir (renames, unlinks, creations) durable.
func fsyncDir(dir string) error {
	d, err := openFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("open directory %s to fsync it: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// writeTempDurably writes n as a seqfile's content to tmp and fsyncs it.
func writeTempDurably(tmp string, n uint64) error {
	f, err := openFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte(strconv.FormatUint(n, 10) + "\n"))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	return nil
}

// NewUUID returns a random (version 4) UUID in its canonical lower-case
// form, as fspl gen-uuid prints it.
func NewUUID() string {
	var b [16]byte
	if _, err := io.ReadFull(rand.Reader, b[:]); err != nil {
		// crypto/rand does not fail on Linux >= 3.17 (getrandom).
		panic("queue: crypto/rand: " + err.Error())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hex = "0123456789abcdef"
	var s strings.Builder
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			s.WriteByte('-')
		}
		s.WriteByte(hex[c>>4])
		s.WriteByte(hex[c&0xf])
	}
	return s.String()
}

// NewJobFilename returns a fresh fspl-<uuid>.fspl name.
func NewJobFilename() string { return "fspl-" + NewUUID() + ".fspl" }

// IsJobFilename reports whether name is a job in a jobs/ directory:
// fspl-*.fspl.
func IsJobFilename(name string) bool {
	return len(name) >= len("fspl-.fspl") && strings.HasPrefix(name, "fspl-") && strings.HasSuffix(name, ".fspl")
}

// parseSeq parses a seqfile's content: a decimal number and a newline.
func parseSeq(path string, b []byte) (uint64, error) {
	s := strings.TrimSpace(string(b))
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: not a sequence number: %q", path, s)
	}
	return n, nil
}

// LockHeldError is a lock that another process (pipespool or fspl) holds.
type LockHeldError struct{ Path string }

func (e *LockHeldError) Error() string {
	return fmt.Sprintf("%s is locked by another process (pipespool or fspl is using this queue or seqfile); try again later", e.Path)
}

// ExitCode is 75, EX_TEMPFAIL, so that cron retries later (fspl exits 1).
func (e *LockHeldError) ExitCode() int { return 75 }

// Lock is a held flock(2) on a lock file. Close releases it.
type Lock struct{ f *os.File }

// AcquireLock takes flock(LOCK_EX|LOCK_NB) on path, creating the file when
// create is set. A lock held elsewhere is a *LockHeldError at once.
func AcquireLock(path string, create bool) (*Lock, error) {
	flags := os.O_RDWR | unix.O_CLOEXEC
	if create {
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &LockHeldError{Path: path}
		}
		return nil, fmt.Errorf("flock %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

// Close releases the lock.
func (l *Lock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
