package pump

import (
	"fmt"
	"time"

	"github.com/pipespool/pipespool/poller"
	"golang.org/x/sys/unix"
)

// teeCopy is the zero-copy strategy, for a pipe source and pipe
// destinations. Each round duplicates the head of the source pipe with
// tee(2) into every destination that is level with the source (has every
// byte consumed from it and none of its head) but one, then consumes with
// splice(2) into that last one at most as much as each of the others got:
// none of them falls behind the source. A destination that got more than
// that is ahead: it already has the first bytes of the source's head, and
// tee(2) can only copy from the head, so it is left alone until splices
// into the others have consumed what it has. No byte is ever held in user
// space, none is sent twice, and a destination that is behind cannot
// exist: the source is consumed only by the splice into a level
// destination, for no more than every other level destination got and
// every destination ahead has. When a level destination got nothing (it is
// full), nothing is consumed and the last one gets ahead with tee(2) too.
// When no destination is level (the one spliced into was dropped), the
// head that all of them have is read and thrown away.
//
// Invariant: a wait follows a round in which every attempt returned
// EAGAIN or moved less than it asked for, the splice counting as short
// when it moved what a short tee(2) got and left the source empty (and
// no destination was dropped): between two pipes that means the source
// ran empty or that destination filled up, so the change that ends it (a
// write into the empty source, a read from the full destination) is
// still to come; the source and every
// destination are registered edge-triggered, so that change is queued even
// before the wait, and a lasting state once. A destination ahead is not
// attempted: it waits for the level ones, whose attempts said why they
// stopped. Once a hang-up or error was harvested (no writer left, or a
// reader gone), a short transfer no longer says that a change is to come,
// and only a round in which every attempt returned EAGAIN is followed by a
// wait, as on the splice path of a pump. A short round between big pipes
// may instead be followed by a short sleep that lets the source fill (see
// spliceCopier.batchDelay), then a round.
func (t *Tee) teeCopy() (outcome, error) {
	c := &teeZC{t: t, events: make([]unix.EpollEvent, len(t.branches)+1), level: make([]*TeeBranch, 0, len(t.branches))}
	c.batchTarget, c.batchMax = t.batching()

	prev := time.Now().UnixNano()
	for {
		if t.stopping.Load() {
			return stopRequested, nil
		}
		t.handleRequests()
		if !t.anyActive() {
			return consumerGone, nil
		}
		r, how, err := c.round()
		if how != keepCopying {
			return how, err
		}
		if r.moved > 0 {
			now := time.Now().UnixNano()
			elapsed := now - prev
			prev = now
			if r.dropped || !r.short || c.endGone {
				continue
			}
			if c.batchTarget > 0 && r.moved < c.batchTarget && elapsed > 0 {
				sleep(min(time.Duration(elapsed*int64(c.batchTarget)/int64(r.moved)), c.batchMax))
				continue
			}
		} else if r.dropped {
			continue
		}
		if err := c.wait(); err != nil {
			return copyFailed, err
		}
		// The next round turns the change into bytes, EOF or EPIPE.
	}
}

// keepCopying: a round ended without an outcome for the whole tee.
const keepCopying outcome = 255

// teeZC is the zero-copy strategy's state. Run's goroutine only.
type teeZC struct {
	t       *Tee
	events  []unix.EpollEvent
	level   []*TeeBranch
	scratch []byte // for a head every destination has; see round
	armed   bool
	// endGone: a wait harvested a hang-up or error on some end: see
	// teeCopy's invariant.
	endGone bool
	// batchTarget and batchMax: see Tee.batching.
	batchTarget int
	batchMax    time.Duration
}

// roundResult is what one round did.
type roundResult struct {
	moved   int  // the most bytes any destination got
	short   bool // every attempt returned EAGAIN or moved less than it asked
	dropped bool // a destination was dropped
}

// round makes one attempt on every level destination, as teeCopy says.
func (c *teeZC) round() (r roundResult, how outcome, err error) {
	t := c.t
	c.level = c.level[:0]
	// most: the most the source may be consumed by without a destination
	// falling behind it: what each destination ahead, or holding, has.
	most := int64(maxSplice)
	for _, b := range t.branches {
		if !b.active || b.mode == branchDraining {
			continue
		}
		if a := b.ahead.Load(); a > 0 || b.mode == branchHolding {
			most = min(most, a)
		} else {
			c.level = append(c.level, b)
		}
	}
	r.short = true
	if len(c.level) == 0 {
		return c.discard(r, int(most))
	}
	const want = maxSplice
	last := c.level[len(c.level)-1]
	m := int(most)
	// attempt accounts for one transfer's result; it reports the source's
	// end (no writer left, nothing queued) or a strategy change.
	attempt := func(b *TeeBranch, n, asked int, err error) (outcome, bool) {
		switch {
		case n > 0:
			b.progress(n)
			r.moved = max(r.moved, n)
			if n == asked {
				r.short = false
			}
		case err == nil:
			return sourceEnded, true
		case err == unix.EAGAIN:
		case err == unix.EPIPE:
			t.gone(b)
			r.dropped = true
		case err == unix.EINVAL && t.nothingMoved():
			return spliceRefused, true
		default:
			t.failed(b, err)
			r.dropped = true
		}
		return 0, false
	}
	for _, b := range c.level[:len(c.level)-1] {
		n, err := teeOnce(t.src.FD, b.dst.FD, want)
		if how, end := attempt(b, n, want, err); end {
			// tee(2) returns 0 only with nothing queued: no tee copied a
			// byte in this round, and every destination has it all.
			return r, how, nil
		}
		switch {
		case n > 0:
			b.ahead.Add(int64(n))
			m = min(m, n)
		case b.active:
			m = 0 // it has no room, or the source nothing
		}
	}
	if !last.active {
		return r, keepCopying, nil
	}
	// The splice consumes what every level destination got. When one got
	// nothing (full), nothing can be consumed: the last one then gets
	// ahead like the others, with tee(2).
	if m > 0 {
		n, err := splice(t.src.FD, last.dst.FD, m)
		// Moving all of m, what a short tee(2) of this round got (less
		// than the ahead destinations allow), counts as short too when
		// it left the source empty: the next write into it then wakes
		// the tee, and another round at once would only meet EAGAIN at
		// every destination, each attempt taking a pipe's lock that a
		// stage may hold for a whole read or write. Not when bytes came
		// in meanwhile: a writer that refills a source that was not
		// empty, in the middle of one large write(2) (dd bs=32M), sleeps
		// for room without waking the tee, and wakes it only when that
		// whole write is done. When an ahead destination set m, nothing
		// says a change is to come: moving all of m is not short.
		asked := m
		if n == m && m < int(most) && pipeEmpty(t.src.FD) {
			asked = want
		}
		if how, end := attempt(last, n, asked, err); end {
			return r, how, nil
		}
		if n > 0 {
			t.consumed(n, last)
		}
	} else {
		n, err := teeOnce(t.src.FD, last.dst.FD, want)
		if how, end := attempt(last, n, want, err); end {
			return r, how, nil
		}
		if n > 0 {
			last.ahead.Add(int64(n))
		}
	}
	return r, keepCopying, nil
}

// discard consumes up to most bytes of the source's head that every
// destination served has (none is level), or, when every destination
// drains, the source itself: read and thrown away. A destination holding
// at the head (most 0) lets nothing go: the round moved nothing.
func (c *teeZC) discard(r roundResult, most int) (roundResult, outcome, error) {
	t := c.t
	if most == 0 {
		return r, keepCopying, nil
	}
	if c.scratch == nil {
		c.scratch = make([]byte, discardBufSize)
	}
	n, err := ignoringEINTRIO(unix.Read, t.src.FD, c.scratch[:min(most, len(c.scratch))])
	switch {
	case n > 0:
		t.consumed(n, nil)
		r.moved, r.short = n, n < min(most, len(c.scratch))
	case err == nil:
		return r, sourceEnded, nil
	case err == unix.EAGAIN:
	default:
		return r, copyFailed, fmt.Errorf("reading %s: %w", t.src.Name, err)
	}
	return r, keepCopying, nil
}

// discardBufSize bounds one read of bytes thrown away: a quarter of the
// default pipe, few reads for a drained stream and little memory.
const discardBufSize = DefaultPipeSize / 4

// wait registers the ends the first time, then waits for a change of any
// of them, or a stop request.
func (c *teeZC) wait() error {
	t := c.t
	if !c.armed {
		if err := t.armEdge(); err != nil {
			return err
		}
		c.armed = true
	}
	for _, b := range t.branches {
		switch {
		case !b.active || b.mode == branchHolding:
		case b.mode == branchDraining:
			b.state.Store(int32(WaitingSrc))
		default:
			b.state.Store(int32(waitingEither))
		}
	}
	n, err := t.waitEvents(c.events)
	if err != nil {
		return err
	}
	for _, ev := range c.events[:n] {
		if ev.Events&(poller.Hup|poller.Err) != 0 {
			c.endGone = true
		}
	}
	return nil
}

// batching returns the batching target (a quarter of the smallest pipe of
// the tee) and the longest batching sleep, as spliceCopier does between two
// pipes; 0 when a pipe is too small to batch.
func (t *Tee) batching() (int, time.Duration) {
	least, err := unix.FcntlInt(uintptr(t.src.FD), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return 0, 0
	}
	for _, b := range t.branches {
		n, err := unix.FcntlInt(uintptr(b.dst.FD), unix.F_GETPIPE_SZ, 0)
		if err != nil {
			return 0, 0
		}
		least = min(least, n)
	}
	d := time.Duration(least / fastestFill)
	if d < minBatchDelay {
		return 0, 0
	}
	return least / 4, min(d, maxBatchDelay)
}

// consumed accounts for n bytes taken off the source's head, by the splice
// into except (nil: read and thrown away): every other destination had
// them already, at its own head.
func (t *Tee) consumed(n int, except *TeeBranch) {
	t.took(n)
	for _, b := range t.branches {
		if !b.active || b == except {
			continue
		}
		a := b.ahead.Load()
		if b.mode == branchDraining {
			// Bytes it had before its drain were counted then.
			if extra := int64(n) - a; extra > 0 {
				b.discarded(int(extra))
			}
			b.ahead.Store(max(a-int64(n), 0))
			continue
		}
		b.ahead.Store(a - int64(n))
	}
}

// nothingMoved reports whether no destination has had a byte yet: only
// then may the tee change strategy without losing or repeating one.
func (t *Tee) nothingMoved() bool {
	for _, b := range t.branches {
		if b.bytes.Load() > 0 {
			return false
		}
	}
	return true
}

// armEdge registers the source for input and every active destination for
// room, edge-triggered, for the rest of the zero-copy path.
func (t *Tee) armEdge() error {
	if err := t.regs.add(&t.src, poller.In|poller.Edge); err != nil {
		return err
	}
	for _, b := range t.branches {
		if b.active && b.mode != branchDraining {
			if err := t.regs.add(&b.dst, poller.Out|poller.Edge); err != nil {
				return err
			}
		}
	}
	return nil
}

// pipeEmpty reports whether the pipe whose read end is fd held nothing,
// with a writer left, at an instant during the call: poll(2), which looks
// without taking the pipe's lock. Any byte written after that instant
// comes from a write(2) that found the pipe empty as it took the lock, and
// that write wakes the readers.
func pipeEmpty(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if err != unix.EINTR {
			return err == nil && n == 0
		}
	}
}

// teeOnce makes one attempt to duplicate up to asked bytes from the head
// of the pipe src into the pipe dst, consuming nothing. Like splice, it
// returns n > 0, 0 and nil at the source's end, or an error (EAGAIN when
// the source is empty or the destination full).
func teeOnce(src, dst, asked int) (int, error) {
	for {
		n, err := unix.Tee(src, dst, asked, unix.SPLICE_F_NONBLOCK)
		if err != unix.EINTR {
			return int(max(n, 0)), err
		}
	}
}

// teeRW is the state of the read/write strategy.
type teeRW struct {
	buf      []byte // allocated at the first read
	fill     int    // buf[:fill] was read from the source
	srcReady bool   // epoll reported the source ready (see end.pollsFirst)
}

// rwCopy is the read/write strategy, for a source or a destination that is
// not a pipe: one read into the buffer, then a write of it to every
// destination, each from its own offset, and the next read once every
// destination has all of it. The tee holds at most rwBufSize bytes.
//
// Invariant: a wait follows a round in which nothing moved, and is for the
// sides that returned EAGAIN (the source when every destination has the
// whole buffer, else the destinations still short of it that are full),
// or an inherited blocking side not reported ready since its last use;
// armed one-shot and level-triggered, a side is reported at once if ready,
// and once per arming, so a full destination is waited for alone while
// the others, which have everything, are not.
func (t *Tee) rwCopy() (outcome, error) {
	rw := &t.rw
	for _, b := range t.branches {
		// An inherited blocking destination, a pipe included: write(2)
		// on it could sleep until all was taken, out of Stop's reach.
		if b.active && b.dst.pollsFirst() {
			b.out = nonBlockingWriter(b.dst.FD)
		}
	}
	events := make([]unix.EpollEvent, len(t.branches)+1)
	var waitDst []*TeeBranch
	for {
		if t.stopping.Load() {
			return stopRequested, nil
		}
		t.handleRequests()
		if !t.anyActive() {
			return consumerGone, nil
		}
		moved, waitSrc := false, false
		waitDst = waitDst[:0]
		if t.allHaveBuffer() {
			rw.fill = 0
			for _, b := range t.branches {
				b.off = 0
			}
			if t.src.pollsFirst() && !rw.srcReady {
				waitSrc = true
			} else {
				rw.srcReady = false
				if rw.buf == nil {
					rw.buf = make([]byte, rwBufSize)
				}
				n, err := ignoringEINTRIO(unix.Read, t.src.FD, rw.buf)
				switch {
				case n > 0:
					rw.fill = n
					t.took(n)
					moved = true // bytes to write, or thrown away (every destination drains)
					for _, b := range t.branches {
						switch {
						case !b.active:
						case b.mode == branchDraining:
							b.off = n
							b.discarded(n)
						default:
							b.held.Store(int64(n))
						}
					}
				case err == nil:
					return sourceEnded, nil
				case err == unix.EAGAIN:
					waitSrc = true
				default:
					return copyFailed, fmt.Errorf("reading %s: %w", t.src.Name, err)
				}
			}
		}
		for _, b := range t.branches {
			if !b.active || b.off == rw.fill || b.mode != branchServed {
				continue
			}
			if b.dst.pollsFirst() && !b.ready {
				waitDst = append(waitDst, b)
				continue
			}
			b.ready = false
			n, err := b.out.write(b.dst.FD, rw.buf[b.off:rw.fill])
			switch {
			case n > 0:
				b.off += n
				b.held.Store(int64(rw.fill - b.off))
				b.progress(n)
				moved = true
			case err == unix.EAGAIN:
				waitDst = append(waitDst, b)
			case err == unix.EPIPE:
				t.gone(b)
				moved = true
			case err == nil:
				// write(2) of a non-empty buffer returning 0 is not
				// supposed to happen: an I/O error, not a loop.
				t.failed(b, fmt.Errorf("write returned 0"))
				moved = true
			default:
				t.failed(b, err)
				moved = true
			}
		}
		if moved {
			continue
		}
		if err := t.rwWait(waitSrc, waitDst, events); err != nil {
			return copyFailed, err
		}
	}
}

// allHaveBuffer reports whether every active destination has every byte
// of the buffer.
func (t *Tee) allHaveBuffer() bool {
	for _, b := range t.branches {
		if b.active && b.off < t.rw.fill {
			return false
		}
	}
	return true
}

// rwWait arms the source (when waitSrc) and the destinations in waitDst
// one-shot, says what each destination waits for, and waits for one of
// them or a stop request.
func (t *Tee) rwWait(waitSrc bool, waitDst []*TeeBranch, events []unix.EpollEvent) error {
	if waitSrc {
		if err := t.armOneShot(&t.src, poller.In); err != nil {
			return err
		}
	}
	for _, b := range waitDst {
		if err := t.armOneShot(&b.dst, poller.Out); err != nil {
			return err
		}
		b.state.Store(int32(WaitingDst))
	}
	for _, b := range t.branches {
		if b.active && b.mode != branchHolding && b.off == t.rw.fill {
			if waitSrc {
				b.state.Store(int32(WaitingSrc))
			} else {
				b.state.Store(int32(WaitingBranch))
			}
		}
	}
	n, err := t.waitEvents(events)
	if err != nil {
		return err
	}
	for _, ev := range events[:n] {
		if int(ev.Fd) == t.src.FD {
			t.rw.srcReady = true
		} else if b := t.branchOf(ev.Fd); b != nil {
			b.ready = true
		}
	}
	return nil
}

// armOneShot arms e one-shot for events, registering it the first time.
func (t *Tee) armOneShot(e *end, events uint32) error {
	if e.kind == kindFile {
		return nil // never waits
	}
	if t.regs.has(e.FD) {
		if err := t.poller.Modify(e.FD, events|poller.OneShot); err != nil {
			return fmt.Errorf("waiting for %s: %w", e.Name, err)
		}
		return nil
	}
	return t.regs.add(e, events|poller.OneShot)
}
