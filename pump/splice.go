package pump

import (
	"fmt"
	"time"
	"unsafe"

	"github.com/pipespool/pipespool/poller"
	"golang.org/x/sys/unix"
)

// maxSplice bounds one transfer: the default pipe-max-size (1 MiB), which
// is as much as a pipe can hold unless an administrator raised the limit; a
// larger request would only be cut short by the kernel.
const maxSplice = 1 << 20

const (
	// maxBatchDelay bounds the latency that batching adds to a byte.
	maxBatchDelay = 100 * time.Microsecond
	// minBatchDelay: below this a sleep costs more than it saves.
	minBatchDelay = 20 * time.Microsecond
	// fastestFill is the producer rate, in bytes per nanosecond (10 GB/s),
	// at which batching must still not let the source pipe fill up.
	fastestFill = 10
)

// spliceCopier moves bytes with splice(2): a pipe on one side, and on the
// other a pipe, a file that never waits, or an fd the pump owns
// (non-blocking). No end it touches can block, so it waits for both at
// once, edge-triggered.
type spliceCopier struct {
	p *Pump
	// regs: both ends (those that can be polled) from the first wait on,
	// edge-triggered, each for the event that can end a wait on it.
	regs  registrations
	armed bool
	// endGone: wait harvested a hang-up or error on either end (no writer
	// left on the source, no reader on the destination), a state that
	// will not change again; see waitsAfter.
	endGone bool
	// batchTarget (a quarter of the smaller pipe's capacity) and batchMax:
	// see batchDelay; 0 when the ends are not two pipes or the pipes are
	// too small to batch.
	batchTarget int
	batchMax    time.Duration
}

func newSpliceCopier(p *Pump) *spliceCopier {
	c := &spliceCopier{p: p, regs: registrations{poller: p.poller}}
	if c.betweenPipes() {
		a, errA := unix.FcntlInt(uintptr(p.src.FD), unix.F_GETPIPE_SZ, 0)
		b, errB := unix.FcntlInt(uintptr(p.dst.FD), unix.F_GETPIPE_SZ, 0)
		if d := time.Duration(min(a, b) / fastestFill); errA == nil && errB == nil && d >= minBatchDelay {
			c.batchTarget, c.batchMax = min(a, b)/4, min(d, maxBatchDelay)
		}
	}
	return c
}

func (c *spliceCopier) betweenPipes() bool {
	return c.p.src.kind == kindPipe && c.p.dst.kind == kindPipe
}

func (c *spliceCopier) buffered() int64 { return 0 } // splice holds nothing

func (c *spliceCopier) close() error {
	c.armed = false
	return c.regs.removeAll()
}

func (c *spliceCopier) copy() (outcome, error) {
	p := c.p
	// Invariant: a wait follows only EAGAIN or a short pipe-to-pipe splice, so
	// the change that ends it is yet to come; with both ends registered edge-
	// triggered, that change is queued even before the wait, a lasting one once.
	// Limited: each splice asks for what the bucket holds (see ratelimit.go),
	// and only moving less than it asked for counts as short.
	for {
		if p.stopping.Load() {
			return stopRequested, nil
		}
		asked := maxSplice
		if p.limit != nil {
			a, how, err := p.allowance(maxSplice)
			if a == 0 {
				return how, err
			}
			asked = a
		}
		n, err := splice(p.src.FD, p.dst.FD, asked)
		switch {
		case n > 0:
			if p.limit != nil {
				p.limit.take(n)
			}
			elapsed := p.progress(n)
			if !c.waitsAfter(n, asked) {
				continue
			}
			if d := c.batchDelay(n, elapsed); d > 0 {
				sleep(d)
			} else if err := c.wait(); err != nil {
				return copyFailed, err
			}
		case err == nil:
			return sourceEnded, nil
		case err == unix.EAGAIN:
			if err := c.wait(); err != nil {
				return copyFailed, err
			}
		case err == unix.EPIPE:
			return consumerGone, nil
		case err == unix.EINVAL && p.bytes.Load() == 0:
			return spliceRefused, nil
		default:
			return copyFailed, p.copyError(err)
		}
	}
}

// splice makes one attempt to move up to asked bytes (at most maxSplice).
// It returns n > 0 for progress, 0 and nil at the source's end (for a pipe:
// no writer left and nothing queued), or an error (EAGAIN when a side is
// not ready: splice does not say which).
func splice(src, dst, asked int) (int, error) {
	for {
		n, err := unix.Splice(src, nil, dst, nil, asked, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		if err != unix.EINTR {
			return int(max(n, 0)), err
		}
	}
}

// wait waits until either end changes state or the pump is woken. The
// first call registers both ends edge-triggered, and they stay registered:
// no epoll_ctl per wait, and no look at the pipes to learn which side made
// splice return EAGAIN. Each end is registered only for the event that can
// end a wait on it (input on the source, room on the destination), plus
// the hang-up and error that epoll always reports.
//
// No wake-up can be missed: splice returned EAGAIN (or stopped short; see
// waitsAfter), so the source was empty with a writer left or the
// destination full with a reader left, and the change that ends either (a
// write, a read from a full pipe, a close) wakes the pipe's wait queue,
// which queues an event from the moment the end is registered, whether
// Wait has been entered or not (a first registration reports a side that
// is ready already). Neither can the pump spin: a state that persists (a
// hang-up, a full destination while the producer keeps writing into a
// source that is not yet full) is reported once per change, and a change
// of the side that is not blocked costs one more attempt.
func (c *spliceCopier) wait() error {
	p := c.p
	if !c.armed {
		for _, r := range []struct {
			e  *end
			ev uint32
		}{{&p.src, poller.In}, {&p.dst, poller.Out}} {
			if r.e.kind == kindFile {
				continue // never waits
			}
			if err := c.regs.add(r.e, r.ev|poller.Edge); err != nil {
				return err
			}
		}
		c.armed = true
	}
	p.state.Store(int32(waitingEither))
	var events [2]unix.EpollEvent
	for {
		n, woken, err := p.poller.Wait(events[:], -1)
		if err != nil {
			return fmt.Errorf("waiting for %s or %s: %w", p.src.Name, p.dst.Name, err)
		}
		for _, ev := range events[:n] {
			if ev.Events&(poller.Hup|poller.Err) != 0 {
				c.endGone = true
			}
		}
		if n > 0 || woken && p.stopping.Load() {
			return nil // the next attempt turns the change into bytes, EOF or an error
		}
		// Woken without a stop request: keep waiting.
	}
}

// waitsAfter reports whether a splice that moved n of the asked bytes may
// be followed by a wait instead of another attempt. That attempt is the costly one: it
// finds the producer in the middle of its next write, which holds the pipe
// lock for the whole copy, and spins on that lock only to return EAGAIN.
//
// Between two pipes, splice stops short of what it was asked for only when
// the source ran empty or the destination filled up, or when the source has
// no writer left or the destination no reader. In the first two cases the
// change that ends them (a write, a read from a full pipe) is still to
// come, and wait will see it. The last two never change again: their
// hang-up or error was queued when it happened, so either wait has not
// harvested it yet (and returns at once) or it has and set endGone, and
// then every attempt is made until splice says EOF, EAGAIN or EPIPE itself.
// Between a pipe and anything else a short count does not say as much (a
// file at its end, a socket's partial read), so those always try again.
//
// A splice that moved all it asked for (a rate limit asks for less than
// maxSplice) stopped because of the asking, not because of the pipes: it
// says nothing about either side, and the next attempt is made.
func (c *spliceCopier) waitsAfter(n, asked int) bool {
	return n < asked && c.betweenPipes() && !c.endGone
}

// batchDelay returns how long to let bytes gather in the source pipe after
// a short pipe-to-pipe splice of n bytes, made elapsed nanoseconds after the
// previous one, before the next attempt; 0: wait for the next change as
// usual.
//
// Every splice takes the lock of both pipes, and a stage holds its pipe's
// lock for the whole copy of each read or write (128 KiB for cat): a pump
// that wakes at every write of its producer spends most of its time
// spinning on those locks, on a CPU that the stages need. Moving a quarter
// of the pipe at a time, instead of each write as it comes, wakes the pump
// and the stages far less often for the same bytes.
//
// The delay is what the stream's current rate (n bytes in elapsed) needs to
// put a quarter of the smaller pipe in the source, so neither side starves:
// the producer still has three quarters of its pipe free, and the consumer
// has at least the n bytes just moved, which at that rate last about as
// long. It is capped by maxBatchDelay, and by the time in which the source
// pipe would fill at 10 GB/s, faster than any stage here writes: a small
// pipe (64 KiB: 6.5 us) is not worth a sleep and is not batched at all.
func (c *spliceCopier) batchDelay(n int, elapsed int64) time.Duration {
	if c.batchTarget == 0 || n >= c.batchTarget || elapsed <= 0 {
		return 0
	}
	return min(time.Duration(elapsed*int64(c.batchTarget)/int64(n)), c.batchMax)
}

// sleep sleeps the pump's thread for d (at most maxBatchDelay), or less:
// a signal ends it early, and it is not resumed.
//
// It is a raw system call, which the Go scheduler does not see: its P stays
// with the pump for those 100 us at most (delaying a stop-the-world by as
// much). Through the usual entry (unix.Nanosleep) each of these sleeps
// enters the scheduler's system-call path, and the runtime's sysmon thread
// then keeps waking every 20 us for the whole stream to watch the call,
// taking its CPU from the stages; with the raw call it backs off as it
// does when the pump is idle. Never use this for a wait without a short
// bound.
//
// Never resume it after EINTR. The runtime preempts a thread by signalling
// it (SIGURG), again and again until the thread yields, and a thread in a
// raw system call cannot yield: only returning to Go code lets it. The
// time left that nanosleep reports includes the timer's slack (50 us by
// default), so a sleep resumed with it and interrupted again sooner than
// that asks for more each time and never ends; the garbage collector, and
// with it every goroutine that allocates, then waits for the pump's thread
// for as long as the signals keep coming (minutes, under load). Cutting a
// batching sleep short only makes one more attempt sooner.
func sleep(d time.Duration) {
	ts := unix.NsecToTimespec(int64(min(d, maxBatchDelay)))
	unix.RawSyscall(unix.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), 0, 0)
}

// spliceBlockedSide says, for a splice that returned EAGAIN, which side made
// it: splice does not say, so look. A destination that would not take a
// write now had no room; else an empty source had nothing. A source with
// bytes and a destination with room is a change the pump has been woken
// for (or is about to be) and has not acted on yet: Moving, not waiting
// on either side. Call it holding fdMu, shared.
func (p *Pump) spliceBlockedSide() State {
	switch {
	case p.src.kind == kindFile:
		return WaitingDst // a regular file never makes splice wait
	case p.dst.kind == kindFile:
		return WaitingSrc
	case !hasRoom(p.dst.FD):
		return WaitingDst
	case Queued(p.src.FD) > 0:
		return Moving
	}
	return WaitingSrc
}
