package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pipespool/pipespool/fsutil"
	"github.com/pipespool/pipespool/proc"
)

// opener opens the run's input and output. Opening a FIFO waits for its
// peer (a writer for the input, a reader for the output), as the shell's
// `<` and `>` do, but where the run's timeout and a signal reach the wait:
// a blocking open(2) would hold pipespool deaf to both.
type opener struct {
	ctx      context.Context
	deadline time.Time // zero: no timeout
	timeout  string    // "timeout in job.toml", for the message
	log      *slog.Logger
}

// Bounds of the retries of a FIFO's open while it has no reader: short at
// first (the reader is usually about to open it), then at most 10 a second.
const (
	fifoRetryMin = 5 * time.Millisecond
	fifoRetryMax = 100 * time.Millisecond
)

// openPath opens path for reading (the input) or writing (an output that is
// not a regular file), without Go's netpoller, close-on-exec. A FIFO is
// opened non-blocking on an open file description of our own (no stage
// ever gets it: a pump copies it) once its peer is there.
func (o *opener) openPath(path string, write bool) (*os.File, error) {
	st, err := os.Stat(path)
	if err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		flag := os.O_RDONLY
		if write {
			flag = os.O_WRONLY
		}
		return fsutil.Open(path, flag, 0)
	}
	if write {
		return o.openFIFOWriter(path)
	}
	return o.openFIFOReader(path)
}

// openFIFOWriter opens a FIFO for writing once it has a reader: a
// non-blocking open fails with ENXIO until then, and is retried.
func (o *opener) openFIFOWriter(path string) (*os.File, error) {
	delay := fifoRetryMin
	logged := false
	for {
		fd, err := unix.Open(path, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		switch {
		case err == nil:
			return os.NewFile(uintptr(fd), path), nil
		case err == unix.EINTR:
			continue
		case err != unix.ENXIO:
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
		if !logged {
			o.log.Info("waiting for a reader of the output FIFO " + path)
			logged = true
		}
		if err := o.wait(delay, "a reader of the output FIFO "+path); err != nil {
			return nil, err
		}
		delay = min(2*delay, fifoRetryMax)
	}
}

// openFIFOReader opens a FIFO for reading and waits for a writer. A
// non-blocking open succeeds at once, but reads there give end of file
// until a writer has come; the FIFO becomes readable when a writer has
// written (or come and gone: an empty input), which poll(2) reports.
func (o *opener) openFIFOReader(path string) (*os.File, error) {
	f, err := fsutil.Open(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	fds := []unix.PollFd{{Fd: int32(rawFD(f)), Events: unix.POLLIN}}
	logged := false
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			f.Close()
			return nil, &os.PathError{Op: "poll", Path: path, Err: err}
		}
		if n > 0 && fds[0].Revents != 0 {
			return f, nil
		}
		if !logged {
			o.log.Info("waiting for a writer of the input FIFO " + path)
			logged = true
		}
		if err := o.wait(fifoRetryMax, "a writer of the input FIFO "+path); err != nil {
			f.Close()
			return nil, err
		}
	}
}

// wait sleeps d, or less when the deadline comes first; it returns the
// run's error once the deadline has passed or ctx is done.
func (o *opener) wait(d time.Duration, what string) error {
	if !o.deadline.IsZero() {
		left := time.Until(o.deadline)
		if left <= 0 {
			return &RunError{Msg: fmt.Sprintf("timed out waiting for %s (%s)", what, o.timeout)}
		}
		d = min(d, left)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-o.ctx.Done():
		var ie *proc.InterruptedError
		if errors.As(context.Cause(o.ctx), &ie) {
			return ie
		}
		return &RunError{Msg: fmt.Sprintf("cancelled while waiting for %s: %v", what, context.Cause(o.ctx))}
	}
}
