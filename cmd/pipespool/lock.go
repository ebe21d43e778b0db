package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// LockHeldError is --lock finding the lock held by another process (after
// --lock-wait, if given): exit 75 (EX_TEMPFAIL), so cron or a timer can
// retry later.
type LockHeldError struct {
	Path   string
	Waited time.Duration
}

func (e *LockHeldError) Error() string {
	if e.Waited > 0 {
		return fmt.Sprintf("lock %s is held by another process (waited %s)", e.Path, e.Waited)
	}
	return fmt.Sprintf("lock %s is held by another process", e.Path)
}

// ExitCode is 75: EX_TEMPFAIL.
func (e *LockHeldError) ExitCode() int { return 75 }

// Lock retry intervals while --lock-wait waits: flock(2) has no timeout, and
// a blocked flock cannot be cancelled, so the wait tries LOCK_NB at growing
// intervals instead, up to lockPollMax apart to keep an idle wait cheap.
const (
	lockPollMin = 10 * time.Millisecond
	lockPollMax = 500 * time.Millisecond
)

// fileLock is an flock(2) held on an open file until Release.
type fileLock struct{ f *os.File }

// acquireLock takes an exclusive flock on path (created if missing). If
// another process holds it, it retries until wait has passed (0: not at
// all) and then returns a *LockHeldError. ctx cancels the wait.
func acquireLock(ctx context.Context, path string, wait time.Duration) (*fileLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644) // os opens with O_CLOEXEC
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	start := time.Now()
	deadline := start.Add(wait)
	delay := lockPollMin
	for {
		err := flock(f, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return &fileLock{f: f}, nil
		}
		if err != unix.EWOULDBLOCK {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			f.Close()
			return nil, &LockHeldError{Path: path, Waited: wait}
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

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			return err
		}
	}
}

// Release drops the lock by closing the file.
func (l *fileLock) Release() error {
	if l == nil {
		return nil
	}
	return l.f.Close()
}
