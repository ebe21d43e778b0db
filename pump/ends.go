package pump

import (
	"errors"
	"fmt"

	"github.com/pipespool/pipespool/poller"
	"golang.org/x/sys/unix"
)

// endKind is what an end is to the pump. New decides it once per end.
type endKind uint8

const (
	// kindPipe: splice works on it, FIONREAD counts what it queues, and
	// epoll reports its hang-up.
	kindPipe endKind = iota
	// kindFile never waits and cannot be polled: a regular file, or a
	// device epoll refuses (/dev/null, /dev/zero, /dev/full, a tape). It
	// is read and written with plain calls, which end when the device
	// has taken or given the bytes.
	kindFile
	// kindPolled is anything else epoll can watch (a socket, a terminal,
	// a character device): it may have to be waited for.
	kindPolled
)

// end is an End as the pump sees it.
type end struct {
	End
	kind endKind
}

// kindOf classifies fd by its file type; refine then settles kindPolled.
func kindOf(fd int) (endKind, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return kindPipe, nil
	case unix.S_IFREG:
		return kindFile, nil
	}
	return kindPolled, nil
}

// refine makes a device that epoll cannot watch a file: it has no poll
// method, so it never makes a caller wait for readiness, and waiting for
// it would fail and cut the stream.
func (p *Pump) refine(k endKind, fd int) endKind { return refineKind(p.poller, k, fd) }

// refineKind is refine with pl, the poller of the pump or tee that asks.
func refineKind(pl *poller.Poller, k endKind, fd int) endKind {
	if k != kindPolled {
		return k
	}
	if err := pl.Add(fd, poller.In); err != nil {
		if errors.Is(err, poller.ErrNotPollable) {
			return kindFile
		}
		return kindPolled
	}
	pl.Remove(fd)
	return kindPolled
}

// pollsFirst reports whether e must be reported ready by epoll before each
// read or write: an inherited fd that is blocking and can be polled, where
// a read or write could sleep out of Stop's reach. The flags are read
// every time: they belong to an open file description that other
// processes share, and any of them may change O_NONBLOCK meanwhile.
func (e *end) pollsFirst() bool {
	if e.Own || e.kind == kindFile {
		return false
	}
	fl, err := unix.FcntlInt(uintptr(e.FD), unix.F_GETFL, 0)
	return err == nil && fl&unix.O_NONBLOCK == 0
}

// hasRoom reports whether fd would accept a write now, or fail it with an
// error (EPIPE): a poll(2) that does not wait. Only a destination that is
// merely full reports false; one whose reader is gone reports true, so
// that the pump waits for its source, not for a hang-up that is always
// pending (the next write attempt reports EPIPE).
func hasRoom(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		return err != nil || n > 0 && fds[0].Revents != 0
	}
}

// srcDrained reports whether the source is a pipe at end of file: nothing
// queued, nothing in the copier's buffer, and no writer left (POLLHUP
// without POLLIN), so no byte could have been refused by the destination.
func (p *Pump) srcDrained() bool {
	return p.src.kind == kindPipe && p.copier.buffered() == 0 && pipeDrained(p.src.FD)
}

// pipeDrained reports whether the pipe whose read end is fd is at end of
// file: nothing queued and no writer left (POLLHUP without POLLIN).
func pipeDrained(fd int) bool {
	if Queued(fd) != 0 {
		return false
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0 && fds[0].Revents&unix.POLLHUP != 0 && fds[0].Revents&unix.POLLIN == 0
	}
}

// dstQueued is the count of bytes queued in the destination pipe, 0 when
// it is not a pipe. Run's goroutine only.
func (p *Pump) dstQueued() int64 {
	if p.dst.kind != kindPipe {
		return 0
	}
	return int64(max(Queued(p.dst.FD), 0))
}

// undelivered counts what is known to be left behind when the consumer has
// gone: bytes in the copier's buffer, queued in the source pipe, and
// queued in the destination pipe (our write end keeps it alive until we
// close it).
func (p *Pump) undelivered() int64 {
	n := p.copier.buffered()
	if p.src.kind == kindPipe {
		if q := Queued(p.src.FD); q > 0 {
			n += int64(q)
		}
	}
	return n + p.dstQueued()
}

// closeEnds closes the copier (its poller registrations and what it
// opened), then the owned ends: the source first, so that a producer still
// writing gets EPIPE.
func (p *Pump) closeEnds() error {
	p.fdMu.Lock()
	defer p.fdMu.Unlock()
	p.fdsClosed = true
	errs := []error{p.copier.close()}
	for _, e := range []*end{&p.src, &p.dst} {
		if e.Own {
			if err := unix.Close(e.FD); err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", e.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// ignoringEINTRIO retries an I/O syscall interrupted by a signal (a stop and
// continue, an strace attach, Go's own preemption signal).
func ignoringEINTRIO(fn func(fd int, p []byte) (int, error), fd int, b []byte) (int, error) {
	for {
		n, err := fn(fd, b)
		if err != unix.EINTR {
			if n < 0 {
				n = 0
			}
			return n, err
		}
	}
}
