package pump

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// This file holds what the pump does about its consumer at the end: wait
// until it has read every byte (AwaitRead), keep a look at what it left
// (KeepWitness), and what happens when it goes first (HoldWhenConsumerGone,
// Drain).

// KeepWitness makes the pump, when it reaches EOF and closes a pipe
// destination, keep a read-only handle on that pipe (opened through
// /proc/self/fd, so no writer is added and the consumer still sees EOF).
// Leftover then tells how many bytes the consumer left unread when it
// exited: a stage that exits 0 with input still queued did not read all
// its input. A Tee keeps one on each pipe destination also when it is
// stopped; those bytes are then counted by Leftover alone, not in the
// Result's Unread or Undelivered.
func KeepWitness() Option { return func(p *Pump) { p.opts.keepWitness = true } }

// AwaitRead makes the pump, at the end of its source, wait until the
// reader of its destination pipe has read every byte queued in it before
// it reports EOF. A reader that goes away first leaves those bytes unread:
// the pump ends as ConsumerGone, with them as Undelivered and Unread. For
// the run's own output: bytes written into a pipe have not reached the
// reader yet, and `pipespool ... | ssh host 'cat > f'` whose ssh died with
// the last 64 KiB still in the pipe did not deliver them. Stop ends the
// wait (ErrStopped, the bytes still queued as Unread).
func AwaitRead() Option { return func(p *Pump) { p.opts.awaitRead = true } }

// HoldWhenConsumerGone makes the pump, when its consumer goes (EPIPE)
// before the source's end, wait for its owner's decision instead of closing
// its source at once: Drain goes on reading the source to its end and
// discards it (so that the producer can finish, and fail on its own if its
// input was bad), Stop ends the pump as it would have ended. Meanwhile the
// producer finds its pipe full and waits.
func HoldWhenConsumerGone() Option { return func(p *Pump) { p.gone = goneHolds } }

// goneMode is what the pump does when its consumer goes before the
// source's end.
type goneMode uint8

const (
	goneEnds    goneMode = iota // end as ConsumerGone, closing the source
	goneHolds                   // wait for Drain or Stop (HoldWhenConsumerGone)
	goneDrained                 // Drain chose: the destination is /dev/null now
)

// Drain, for a pump made with HoldWhenConsumerGone, makes it discard the
// rest of its source once its consumer has gone (or now, if it is holding
// already). Safe from any goroutine; after a Stop it does nothing.
func (p *Pump) Drain() {
	p.drainReq.Store(true)
	p.decisionOnce.Do(func() { close(p.decision) })
}

// awaitDrain waits, the consumer gone, for the owner's decision: true to
// drain (Drain), false to end (Stop).
func (p *Pump) awaitDrain() bool {
	p.state.Store(int32(WaitingDst))
	<-p.decision
	return p.drainReq.Load() && !p.stopping.Load()
}

// discardFromNow makes /dev/null the destination: the rest of the source is
// read and thrown away, counted in Bytes and in Result.Drained. The copier
// that served the consumer is closed with its registrations and its
// buffer (bytes the consumer refused, never delivered), and a new one
// chosen for the new pair of ends.
func (p *Pump) discardFromNow() error {
	null, err := unix.Open(os.DevNull, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("draining %s: %w", p.src.Name, err)
	}
	// What the copier holds (a buffer) was read from the source and
	// refused by the consumer: not drained, but undelivered, so that the
	// producer's bytes (Bytes + Undelivered) stay exact.
	held := p.copier.buffered()
	if err := p.copier.close(); err != nil {
		unix.Close(null)
		return err
	}
	p.drainHeld = held
	p.fdMu.Lock()
	p.drainLost = p.dstQueued()
	if p.dst.Own {
		unix.Close(p.dst.FD) // the pipe to the consumer that went
	}
	p.dst = end{End: End{FD: null, Own: true, Name: "discard (" + p.dst.Name + ")"}, kind: kindFile}
	p.fdMu.Unlock()
	p.gone, p.drainFrom = goneDrained, p.bytes.Load()
	// The limit was on the bytes delivered to the consumer; the rest goes
	// to /dev/null, and the sooner the producer is done the sooner the run
	// can say how it failed.
	p.limit = nil
	p.copier = p.newCopier()
	p.state.Store(int32(Moving))
	return nil
}

// atEOF is the result at the source's end with every byte delivered: EOF,
// unless AwaitRead finds the destination's reader gone with bytes left in
// its pipe (or the pump is stopped while it waits).
func (p *Pump) atEOF() Result {
	if p.opts.awaitRead && p.dst.kind == kindPipe {
		if left, gone := p.waitRead(); gone {
			return Result{ConsumerGone: true, Undelivered: int64(left), Unread: int64(left), Err: ErrConsumerGone}
		} else if left > 0 {
			return Result{Err: ErrStopped, Undelivered: int64(left), Unread: int64(left)}
		}
	}
	return Result{EOF: true}
}

// waitRead waits, for AwaitRead, until the destination pipe is empty (0,
// false), its reader is gone with bytes left in it (the bytes left, true)
// or Stop was called (the bytes left, false).
func (p *Pump) waitRead() (left int, gone bool) {
	delay := time.Millisecond
	p.state.Store(int32(WaitingDst))
	// Invariant: no event says a pipe became empty (a reader wakes a writer
	// only from a full pipe), so it looks at intervals of 1 to 100 ms; poll
	// asked for no events still returns at once when the reader goes (POLLERR).
	for {
		q := Queued(p.dst.FD)
		if q <= 0 {
			return 0, false
		}
		if p.stopping.Load() {
			return q, false
		}
		fds := []unix.PollFd{{Fd: int32(p.dst.FD)}}
		n, err := unix.Poll(fds, int(delay/time.Millisecond))
		if err == nil && n > 0 && fds[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0 {
			// A reader that read the last byte and then went took
			// everything: that is the end it was waiting for.
			left := max(Queued(p.dst.FD), 0)
			return left, left > 0
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// openWitness opens the witness (see KeepWitness) of a pipe destination.
// Opening the pipe read-only through /proc adds a reader, never a writer:
// once our write end is closed the consumer sees EOF as before, and
// FIONREAD on the witness counts what it left.
func (p *Pump) openWitness() {
	if p.dst.kind == kindPipe {
		p.witness = witnessOf(p.dst.FD)
	}
}

// witnessOf opens a read-only handle on the pipe whose write end is fd
// (see openWitness), or returns -1.
func witnessOf(fd int) int {
	w, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return w
}

// Leftover returns the bytes still queued in the destination pipe, read
// through the witness (see KeepWitness), or -1 if there is none.
func (p *Pump) Leftover() int {
	<-p.done
	p.fdMu.RLock()
	defer p.fdMu.RUnlock()
	if p.witness < 0 {
		return -1
	}
	return Queued(p.witness)
}

// Release closes the witness, if any. Call it after Leftover; Leftover
// returns -1 from then on. Both are safe from any goroutine.
func (p *Pump) Release() {
	<-p.done
	p.fdMu.Lock()
	defer p.fdMu.Unlock()
	if p.witness >= 0 {
		unix.Close(p.witness)
		p.witness = -1
	}
}
