package fsutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// LockHeldError is a lock that another process holds (after Wait, if any):
// exit 75 (EX_TEMPFAIL), so that cron or a timer retries later.
type LockHeldError struct {
	Path   string
	Waited time.Duration
	// Holder says who is likely to hold it, for the message: "pipespool
	// or fspl is using this queue".
	Holder string
}

func (e *LockHeldError) Error() string {
	s := e.Path + " is locked: it is held by another process"
	if e.Holder != "" {
		s += " (" + e.Holder + ")"
	}
	if e.Waited > 0 {
		s += fmt.Sprintf("; waited %s", e.Waited)
	}
	return s + "; try again later"
}

// ExitCode is 75: EX_TEMPFAIL.
func (e *LockHeldError) ExitCode() int { return 75 }

// Lock is an flock(2) held on an open lock file until Release.
type Lock struct{ f *os.File }

// LockOptions say how Acquire takes a lock.
type LockOptions struct {
	// Create creates the lock file when it does not exist.
	Create bool
	// Wait is how long to wait for a lock held by another process; 0
	// returns a *LockHeldError at once.
	Wait time.Duration
	// Holder goes into the LockHeldError's message.
	Holder string
}

// Lock retry intervals while Wait runs: flock(2) has no timeout, and a
// blocked flock cannot be cancelled, so the wait tries LOCK_NB at growing
// intervals instead, at most lockPollMax apart to keep an idle wait cheap.
const (
	lockPollMin = 10 * time.Millisecond
	lockPollMax = 500 * time.Millisecond
)

// Acquire takes an exclusive flock on path. The lock file must be a regular
// file and is never a link (O_NOFOLLOW): a FIFO or device planted under a
// lock's name is refused without being opened. ctx cancels a wait; its
// cause is returned.
func Acquire(ctx context.Context, path string, opts LockOptions) (*Lock, error) {
	f, err := openLockFile(path, opts.Create)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(opts.Wait)
	delay := lockPollMin
	for {
		err := flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return &Lock{f: f}, nil
		}
		if err != unix.EWOULDBLOCK {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			f.Close()
			return nil, &LockHeldError{Path: path, Waited: opts.Wait, Holder: opts.Holder}
		}
		t := time.NewTimer(min(delay, left))
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, context.Cause(ctx)
		case <-t.C:
		}
		delay = min(2*delay, lockPollMax)
	}
}

func openLockFile(path string, create bool) (*os.File, error) {
	if create {
		f, err := CreateExclusive(path, os.O_RDWR, 0o644)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return nil, lockOpenError(path, err)
		}
	}
	pfd, err := openFD(path, unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, lockOpenError(path, err)
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return nil, lockOpenError(path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, lockOpenError(path, fmt.Errorf("%w: it is a %s; remove it or use another path", ErrNotRegular, typeName(st.Mode)))
	}
	fd, err := openFD("/proc/self/fd/"+strconv.Itoa(pfd), unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, lockOpenError(path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// LockPathError is a lock file that cannot be opened or created: a missing
// directory, a link or something not a regular file (bad usage, exit 2),
// or an I/O failure such as a read-only file system (exit 1).
type LockPathError struct {
	Path string
	Err  error
}

func (e *LockPathError) Error() string {
	var pe *os.PathError
	err := e.Err
	if errors.As(err, &pe) {
		err = pe.Err
	}
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Sprintf("lock file %s: directory %s does not exist: create it or choose another path", e.Path, filepath.Dir(e.Path))
	case errors.Is(err, unix.ELOOP):
		return fmt.Sprintf("lock file %s is a symbolic link: name the file itself", e.Path)
	}
	return fmt.Sprintf("lock file %s: %v", e.Path, err)
}

func (e *LockPathError) Unwrap() error { return e.Err }

// ExitCode is 2 when the path given cannot be a lock file, else 1.
func (e *LockPathError) ExitCode() int {
	if errors.Is(e.Err, os.ErrNotExist) || errors.Is(e.Err, unix.ELOOP) || errors.Is(e.Err, unix.ENOTDIR) ||
		errors.Is(e.Err, unix.EISDIR) || errors.Is(e.Err, ErrNotRegular) {
		return 2
	}
	return 1
}

func lockOpenError(path string, err error) error { return &LockPathError{Path: path, Err: err} }

// Release drops the lock. It is idempotent.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
