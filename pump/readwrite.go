package pump

import (
	"fmt"
	"strconv"

	"github.com/pipespool/pipespool/poller"
	"golang.org/x/sys/unix"
)

// rwBufSize is the buffer of the read/write path (no pipe on either side,
// or splice refused): large enough to amortise syscalls, small enough to
// keep memory flat with many pumps.
const rwBufSize = 256 << 10

// rwCopier moves bytes with read(2) and write(2) through a buffer: for
// ends splice cannot serve (no pipe on either side, an inherited blocking
// socket or terminal, a pair splice refuses). It always knows which side
// returned EAGAIN, so it waits for that side alone, one-shot and
// level-triggered, and an inherited blocking side is read or written only
// after epoll said it was ready.
type rwCopier struct {
	p          *Pump
	buf        []byte // allocated at the first read
	start, end int    // buf[start:end]: read from the source, not yet written
	// asked is how much the next read asks for: rwBufSize, or less when
	// a rate limit allows less.
	asked int
	out   writer // how the destination is written without blocking
	// blocked is the side the last EAGAIN came from: the one to wait for.
	blocked side
	// ready: epoll reported the side ready since its last read or write.
	// Only a side that polls first needs it (see end.pollsFirst).
	ready [2]bool
	regs  registrations // the sides waited for, one-shot
}

func newRWCopier(p *Pump) *rwCopier {
	c := &rwCopier{p: p, asked: rwBufSize, out: writer{alt: -1}, regs: registrations{poller: p.poller}}
	if p.dst.kind == kindPolled && p.dst.pollsFirst() {
		c.out = nonBlockingWriter(p.dst.FD)
	}
	return c
}

func (c *rwCopier) buffered() int64 { return int64(c.end - c.start) }

func (c *rwCopier) close() error {
	c.out.close()
	return c.regs.removeAll()
}

func (c *rwCopier) copy() (outcome, error) {
	p := c.p
	// Invariant: a wait is for the side that returned EAGAIN, or an inherited
	// blocking side not reported ready since its last use; armed one-shot,
	// level-triggered, it is reported at once if ready, and once per arming.
	// Limited: a read asks for no more than the bucket holds, and spends
	// what it got (see ratelimit.go); the writes of those bytes are free.
	for {
		if p.stopping.Load() {
			return stopRequested, nil
		}
		if p.limit != nil && c.start == c.end {
			a, how, err := p.allowance(rwBufSize)
			if a == 0 {
				return how, err
			}
			c.asked = a
		}
		n, err := c.transfer()
		switch {
		case n > 0:
			p.progress(n)
		case err == nil:
			return sourceEnded, nil
		case err == unix.EAGAIN:
			if err := c.wait(c.blocked); err != nil {
				return copyFailed, err
			}
		case err == unix.EPIPE:
			return consumerGone, nil
		default:
			return copyFailed, p.copyError(err)
		}
	}
}

// transfer makes one attempt: a read when the buffer is empty, then a
// write of what it holds. It returns n > 0 for bytes written, 0 and nil at
// the source's end with the buffer empty, or an error (EAGAIN: c.blocked
// says which side). A short write leaves the rest for the next attempt.
func (c *rwCopier) transfer() (int, error) {
	p := c.p
	if c.start == c.end {
		c.start, c.end = 0, 0
		if !c.mayUse(sideSrc) {
			return 0, unix.EAGAIN
		}
		if c.buf == nil {
			c.buf = make([]byte, rwBufSize)
		}
		n, err := ignoringEINTRIO(unix.Read, p.src.FD, c.buf[:c.asked])
		if err != nil {
			c.blocked = sideSrc
			return 0, err
		}
		if n == 0 {
			return 0, nil
		}
		if p.limit != nil {
			p.limit.take(n)
		}
		c.end = n
	}
	if !c.mayUse(sideDst) {
		return 0, unix.EAGAIN
	}
	n, err := c.out.write(p.dst.FD, c.buf[c.start:c.end])
	if err != nil {
		c.blocked = sideDst
		return 0, err
	}
	if n == 0 {
		// write(2) of a non-empty buffer returning 0 is not supposed to
		// happen; treat it as an I/O error rather than loop forever.
		return 0, fmt.Errorf("write to %s returned 0", p.dst.Name)
	}
	c.start += n
	return n, nil
}

// mayUse reports whether side s may be read or written now: a side that
// polls first only once epoll has reported it ready since its last use.
// It takes that report; when it says no, s is the side to wait for.
func (c *rwCopier) mayUse(s side) bool {
	if c.p.end(s).pollsFirst() && !c.ready[s] {
		c.blocked = s
		return false
	}
	c.ready[s] = false
	return true
}

// wait arms side s one-shot and waits until it is ready or the pump is
// woken by Stop.
func (c *rwCopier) wait(s side) error {
	p := c.p
	e, ev, st := p.end(s), uint32(poller.In), WaitingSrc
	if s == sideDst {
		ev, st = poller.Out, WaitingDst
	}
	p.state.Store(int32(st))
	if c.regs.has(e.FD) {
		if err := p.poller.Modify(e.FD, ev|poller.OneShot); err != nil {
			return fmt.Errorf("waiting for %s: %w", e.Name, err)
		}
	} else if err := c.regs.add(e, ev|poller.OneShot); err != nil {
		return err
	}
	var events [2]unix.EpollEvent
	for {
		n, woken, err := p.poller.Wait(events[:], -1)
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", e.Name, err)
		}
		if n > 0 {
			// Any event counts: readiness, hang-up or error. The next
			// transfer attempt turns it into bytes, EOF or EPIPE.
			c.ready[s] = true
			return nil
		}
		if woken && p.stopping.Load() {
			return nil // copy sees stopping
		}
		// Woken without a stop request: keep waiting, the fd stays armed.
	}
}

// writeMode is how the read/write path writes its destination.
type writeMode uint8

const (
	writePlain writeMode = iota // write(2) on the destination's fd
	writeSend                   // send(2) with MSG_DONTWAIT: an inherited blocking socket
	writeAlt                    // write(2) on alt: an inherited blocking terminal
)

// writer writes the destination so that no write blocks. For writeAlt,
// alt is a second opening of the destination with O_NONBLOCK, which the
// writer owns and close closes; -1 otherwise.
type writer struct {
	mode writeMode
	alt  int
}

// nonBlockingWriter finds how to write to fd, an inherited blocking
// destination, so that no write blocks: epoll's "ready for output" only
// promises some room, and a blocking write(2) of more than that to a socket
// or a terminal sleeps until all of it is taken, where Stop (a job's
// timeout, SIGTERM) cannot reach it. The fd's flags are shared with other
// processes and never changed. A socket gets send(2) with MSG_DONTWAIT; a
// terminal or a pipe, a second opening of it through /proc/self/fd with
// O_NONBLOCK on that open file description only (for a pipe, one more
// writer, until close). Any other device (a tape, a printer) is written
// with plain write(2): opening one again can rewind or reset it.
func nonBlockingWriter(fd int) writer {
	plain := writer{mode: writePlain, alt: -1}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return plain
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFSOCK:
		return writer{mode: writeSend, alt: -1}
	case unix.S_IFCHR, unix.S_IFIFO:
		if st.Mode&unix.S_IFMT == unix.S_IFCHR {
			if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
				return plain // not a terminal
			}
		}
		for {
			alt, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fd), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return plain
			}
			return writer{mode: writeAlt, alt: alt}
		}
	}
	return plain
}

// write writes b to fd, the destination, as w.mode says.
func (w writer) write(fd int, b []byte) (int, error) {
	switch w.mode {
	case writeSend:
		for {
			n, err := unix.SendmsgN(fd, b, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
			if err != unix.EINTR {
				return max(n, 0), err
			}
		}
	case writeAlt:
		return ignoringEINTRIO(unix.Write, w.alt, b)
	}
	return ignoringEINTRIO(unix.Write, fd, b)
}

// close closes alt, if the writer opened one.
func (w *writer) close() {
	if w.alt >= 0 {
		unix.Close(w.alt)
		w.alt = -1
	}
	w.mode = writePlain
}
