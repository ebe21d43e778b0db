package pump

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pipespool/pipespool/poller"
	"golang.org/x/sys/unix"
)

// Hop is what the pipeline watches and stops on one hop of a run: a Pump,
// or one destination of a Tee (a TeeBranch).
type Hop interface {
	Bytes() int64
	LastProgress() time.Time
	State() State
	SrcQueued() int
	DstQueued() int
	Buffered() int64
	Result() Result
	Done() <-chan struct{}
	Stop()
	Drain()
	Leftover() int
	Release()
}

var (
	_ Hop = (*Pump)(nil)
	_ Hop = (*TeeBranch)(nil)
	_ Hop = (*TeeSource)(nil)
)

// WaitingBranch is the state of a tee's destination that has every byte
// the source holds for it and waits for another destination to take them
// (the slowest destination sets the pace of all).
const WaitingBranch State = Limited + 1

// ErrBranchStopped is a TeeBranch's Result.Err when its own Stop dropped
// it; it wraps ErrStopped.
var ErrBranchStopped = fmt.Errorf("tee destination dropped: %w", ErrStopped)

// Tee copies one source to several destinations: every destination gets
// every byte of the source, in order, and the slowest sets the pace (see
// the package documentation for how, and for the bound on what it holds).
//
// Run's goroutine does the copying: it alone uses the copy state, the
// poller (but for Wake) and the branches' transfer fields, and it alone
// closes ends. Other goroutines read the counters and states, look at the
// ends' queues under fdMu, and call Stop on the tee or on a branch.
type Tee struct {
	src      end
	branches []*TeeBranch
	poller   *poller.Poller
	// zeroCopy: the source and every destination are pipes, and the tee
	// moves bytes with tee(2) and splice(2); else with read and write.
	zeroCopy bool
	witness  bool // KeepWitness
	hold     bool // HoldWhenConsumerGone

	stopping atomic.Bool // Tee.Stop
	// requests: some branch's Stop or Drain was called: Run looks at each.
	requests atomic.Bool
	// taken: bytes taken off the source (consumed from its pipe, or read),
	// and when that last happened (unix nanoseconds): see TeeSource.
	taken, lastTaken atomic.Int64
	// srcResult is the source's Result (TeeSource), set by Run.
	srcResult Result

	// Run's goroutine only.
	regs   registrations
	rw     teeRW
	ending bool // Run settles the destinations left; see settle

	// fdMu makes the fds safe to inspect from other goroutines: the
	// goroutine that closes an end holds it to do so, readers hold it
	// shared and look at the closed flags first. It guards srcClosed and
	// each branch's closed and witness.
	fdMu      sync.RWMutex
	srcClosed bool

	done chan struct{}
}

// TeeBranch is one destination of a Tee seen as a hop: its own counters,
// state and result, and Stop, which drops this destination alone.
type TeeBranch struct {
	t   *Tee
	dst end

	bytes atomic.Int64 // delivered to this destination
	last  atomic.Int64 // unix nanoseconds of its last progress
	state atomic.Int32 // a State, or waitingEither
	// ahead (zero copy): bytes at the head of the source pipe that this
	// destination already has. Written by Run's goroutine only.
	ahead atomic.Int64
	// held (read/write): bytes of the tee's buffer not yet written to this
	// destination. Written by Run's goroutine only.
	held     atomic.Int64
	stopReq  atomic.Bool
	drainReq atomic.Bool
	// holding: its reader has gone and it waits for Drain or Stop (mode
	// branchHolding), for State. Written by Run's goroutine only.
	holding atomic.Bool

	// Run's goroutine only.
	active bool
	mode   branchMode
	// drained: bytes thrown away for it since its drain began (counted
	// in bytes too); drainLost: bytes left unread in its pipe then;
	// drainHeld: bytes the tee held for it then (read/write).
	drained, drainLost, drainHeld int64
	off                           int    // read/write: bytes of the buffer written to it
	out                           writer // read/write: how it is written without blocking
	ready                         bool   // read/write: epoll reported it ready (see end.pollsFirst)

	closed bool // under t.fdMu
	witnFD int  // under t.fdMu; see KeepWitness; -1 when none
	done   chan struct{}
	result Result
}

// branchMode is what an active destination is to the copy.
type branchMode uint8

const (
	branchServed   branchMode = iota // written as the source is read
	branchHolding                    // its reader is gone; waits for Drain or Stop (HoldWhenConsumerGone)
	branchDraining                   // Drain: its share of the source is thrown away
)

// NewTee prepares a tee from src to every one of dsts. Owned ends must be
// non-blocking. It takes KeepWitness (for every pipe destination) and
// HoldWhenConsumerGone (for every destination, see TeeBranch.Drain); a
// rate limit, a buffer or AwaitRead belongs on a pump after the tee.
func NewTee(src End, dsts []End, opts ...Option) (*Tee, error) {
	if len(dsts) == 0 {
		return nil, fmt.Errorf("tee from %s: no destination", src.Name)
	}
	var probe Pump
	for _, o := range opts {
		o(&probe)
	}
	if probe.opts.rate > 0 || probe.opts.buffer.Size > 0 || probe.opts.awaitRead {
		return nil, fmt.Errorf("tee from %s: a rate limit, a buffer or AwaitRead does not apply to a tee: put a pump after it", src.Name)
	}
	srcKind, err := kindOf(src.FD)
	if err != nil {
		return nil, fmt.Errorf("tee source %s: %w", src.Name, err)
	}
	kinds := make([]endKind, len(dsts))
	for i, d := range dsts {
		if kinds[i], err = kindOf(d.FD); err != nil {
			return nil, fmt.Errorf("tee destination %s: %w", d.Name, err)
		}
	}
	t := &Tee{witness: probe.opts.keepWitness, hold: probe.gone == goneHolds, done: make(chan struct{})}
	t.lastTaken.Store(time.Now().UnixNano())
	if t.poller, err = poller.New(); err != nil {
		return nil, err
	}
	t.regs = registrations{poller: t.poller}
	t.src = end{End: src, kind: refineKind(t.poller, srcKind, src.FD)}
	t.zeroCopy = t.src.kind == kindPipe
	now := time.Now().UnixNano()
	for i, d := range dsts {
		b := &TeeBranch{t: t, dst: end{End: d, kind: refineKind(t.poller, kinds[i], d.FD)}, active: true,
			out: writer{alt: -1}, witnFD: -1, done: make(chan struct{})}
		b.last.Store(now)
		if b.dst.kind != kindPipe {
			t.zeroCopy = false
		}
		t.branches = append(t.branches, b)
	}
	return t, nil
}

// Branch returns destination i (in NewTee's order) as a hop.
func (t *Tee) Branch(i int) *TeeBranch { return t.branches[i] }

// Branches returns the number of destinations.
func (t *Tee) Branches() int { return len(t.branches) }

// Done is closed when Run has returned.
func (t *Tee) Done() <-chan struct{} { return t.done }

// Stop makes Run return as soon as it is not transferring, every
// destination still served ending with ErrStopped; safe from any goroutine
// and at any time.
func (t *Tee) Stop() {
	t.stopping.Store(true)
	_ = t.poller.Wake()
}

// Results returns one Result per destination, in NewTee's order, once
// Done is closed.
func (t *Tee) Results() []Result {
	<-t.done
	out := make([]Result, len(t.branches))
	for i, b := range t.branches {
		out[i] = b.result
	}
	return out
}

// Run copies until the source's end, every destination gone, an error or
// Stop, then closes the owned ends and returns one Result per destination
// in NewTee's order. Call it once, in its own goroutine: it holds that
// goroutine's thread, as SCHED_BATCH, until it returns (see batchThread).
func (t *Tee) Run() []Result {
	defer close(t.done)
	restore := batchThread()
	how, err := t.loop()
	restore()
	t.ending = true
	for _, b := range t.branches {
		if !b.active {
			continue
		}
		switch {
		case how == sourceEnded:
			t.settle(b, Result{EOF: true}, true)
		case b.mode == branchHolding:
			t.settle(b, t.goneResult(b), false)
		case how == stopRequested:
			// A witness, as at the source's end: the destination's
			// reader gets an end of file of pipespool's making and may
			// read what its pipe holds first; what it leaves there is
			// what it did not read of what it was given (Leftover).
			t.settle(b, Result{Err: ErrStopped, Undelivered: t.undelivered(b), Unread: b.dstQueued()}, true)
		default:
			if err == nil {
				// Never a destination left with neither EOF nor an error.
				err = fmt.Errorf("tee from %s ended before the source's end", t.src.Name)
			}
			t.settle(b, Result{Undelivered: t.undelivered(b), Unread: b.dstQueued(), Err: err}, false)
		}
	}
	t.srcResult = t.sourceResult(how, err)
	if err := t.regs.removeAll(); err != nil {
		t.failAll(err)
	}
	t.fdMu.Lock()
	t.srcClosed = true
	var srcErr error
	if t.src.Own {
		if e := unix.Close(t.src.FD); e != nil {
			srcErr = fmt.Errorf("close %s: %w", t.src.Name, e)
		}
	}
	t.fdMu.Unlock()
	if srcErr != nil {
		t.failAll(srcErr)
	}
	if err := t.poller.Close(); err != nil {
		t.failAll(err)
	}
	out := make([]Result, len(t.branches))
	for i, b := range t.branches {
		out[i] = b.result
		select {
		case <-b.done:
		default:
			close(b.done)
		}
	}
	return out
}

// failAll records err on every destination, and on the source, that has
// no error yet (an error of the tee's own, at its end).
func (t *Tee) failAll(err error) {
	for _, b := range t.branches {
		if b.result.Err == nil {
			b.result.Err = err
		}
	}
	if t.srcResult.Err == nil {
		t.srcResult.Err, t.srcResult.EOF = err, false
	}
}

// sourceResult is the source's Result once the copy ended as how says
// (with err) and every destination is settled; call it before the source
// is closed. Bytes is what the tee took off the source; Undelivered what
// it left there. The source reached its end when the copy did, or when
// every destination ended with EOF (each went after it had the whole
// stream, with nothing more written): nothing was refused then.
func (t *Tee) sourceResult(how outcome, err error) Result {
	res := Result{Bytes: t.taken.Load()}
	if t.src.kind == kindPipe {
		res.Undelivered = int64(max(Queued(t.src.FD), 0))
	}
	allEOF := true
	for _, b := range t.branches {
		allEOF = allEOF && b.result.EOF
	}
	switch {
	case how == sourceEnded || allEOF:
		res.EOF = true
	case how == consumerGone:
		res.ConsumerGone, res.Err = true, ErrConsumerGone
	case how == stopRequested:
		res.Err = ErrStopped
	case err != nil:
		res.Err = err
	default:
		res.Err = fmt.Errorf("tee from %s ended before the source's end", t.src.Name)
	}
	return res
}

// took counts n bytes taken off the source.
func (t *Tee) took(n int) {
	t.taken.Add(int64(n))
	t.lastTaken.Store(time.Now().UnixNano())
}

// loop runs the copy strategy in use until the tee is done.
func (t *Tee) loop() (outcome, error) {
	if t.zeroCopy {
		how, err := t.teeCopy()
		if how != spliceRefused {
			return how, err
		}
		// tee(2) refused this set of pipes before any byte moved: copy
		// with read/write, which then starts from the same point.
		if err := t.regs.removeAll(); err != nil {
			return copyFailed, err
		}
		t.zeroCopy = false
	}
	return t.rwCopy()
}

// settle fixes b's result, closes b's destination (keeping a witness when
// asked: at the source's end and at a Stop of the whole tee, where its
// reader gets an end of file) and closes b.done. Run's goroutine only.
func (t *Tee) settle(b *TeeBranch, res Result, witness bool) {
	b.active = false
	b.holding.Store(false)
	res.Bytes = b.bytes.Load()
	if b.mode == branchDraining {
		// As a pump's drain: what it refused is undelivered, what it left
		// in its pipe unread, what was thrown away drained.
		res.Drained, res.Unread = b.drained, b.drainLost
		res.Undelivered += b.drainHeld + b.drainLost
		witness = false // its pipe is closed already: no witness
	}
	b.state.Store(int32(Finished))
	b.ahead.Store(0)
	b.held.Store(0)
	var closeErr error
	if t.regs.has(b.dst.FD) {
		closeErr = t.unregister(b.dst.FD)
	}
	b.out.close()
	t.fdMu.Lock()
	if witness && t.witness {
		b.openWitness()
		if b.witnFD >= 0 {
			// The witness counts what the pipe holds (Leftover), and
			// what the reader may still take of it: not Unread too.
			res.Undelivered -= res.Unread
			res.Unread = 0
		}
	}
	if b.dst.Own && !b.closed {
		if err := unix.Close(b.dst.FD); err != nil && closeErr == nil {
			closeErr = fmt.Errorf("close %s: %w", b.dst.Name, err)
		}
	}
	b.closed = true
	t.fdMu.Unlock()
	if closeErr != nil && res.Err == nil {
		res.Err = closeErr
		res.EOF = false
	}
	b.result = res
	// A destination dropped while others go on is finished now. The last
	// one, and those Run settles at its end, are finished when Run has
	// closed the source too: Run closes their done.
	if !t.ending && t.anyActive() {
		close(b.done)
	}
}

// unregister removes fd from the poller and from t.regs.
func (t *Tee) unregister(fd int) error {
	for i, f := range t.regs.fds {
		if f == fd {
			t.regs.fds = append(t.regs.fds[:i], t.regs.fds[i+1:]...)
			return t.poller.Remove(fd)
		}
	}
	return nil
}

// handleRequests acts on the branches' Stop and Drain: Stop drops a
// destination (one holding ends as its reader's going made it end), Drain
// makes one that holds throw its share away from now on.
func (t *Tee) handleRequests() {
	if !t.requests.Swap(false) {
		return
	}
	for _, b := range t.branches {
		switch {
		case !b.active:
		case b.stopReq.Load() && b.mode == branchHolding:
			t.settle(b, t.goneResult(b), false)
		case b.stopReq.Load():
			t.settle(b, Result{Err: ErrBranchStopped, Undelivered: t.undelivered(b), Unread: b.dstQueued()}, false)
		case b.drainReq.Load() && b.mode == branchHolding:
			t.startDrain(b)
		}
	}
}

// anyActive reports whether some destination is still served.
func (t *Tee) anyActive() bool {
	for _, b := range t.branches {
		if b.active {
			return true
		}
	}
	return false
}

// gone acts on b's reader having gone (EPIPE). A source at its end with
// nothing left for b refused b nothing: that is b's EOF (a reader may
// exit once it has read what it wanted, before the tee saw the end).
// Else b ends ConsumerGone, with what it missed, or, for a tee that holds
// (HoldWhenConsumerGone), waits for Drain or Stop, which a Drain made
// already decides.
func (t *Tee) gone(b *TeeBranch) {
	switch {
	case t.src.kind == kindPipe && b.ahead.Load() == 0 && b.held.Load() == 0 && pipeDrained(t.src.FD):
		t.settle(b, Result{EOF: true}, true)
	case !t.hold:
		t.settle(b, t.goneResult(b), false)
	case b.drainReq.Load():
		t.startDrain(b)
	default:
		b.mode = branchHolding
		b.holding.Store(true)
		b.state.Store(int32(WaitingDst))
	}
}

// goneResult is b's result when its reader has gone.
func (t *Tee) goneResult(b *TeeBranch) Result {
	return Result{ConsumerGone: true, Undelivered: t.undelivered(b), Unread: b.dstQueued(), Err: ErrConsumerGone}
}

// startDrain makes b, whose reader has gone, take its share of the source
// into the void from now on: its pipe is closed, what it holds of the
// source's head counts as delivered as before (it is in the pipe that
// went), what the tee held for it as undelivered, and every byte consumed
// from the source beyond that is counted in its Bytes and drained.
func (t *Tee) startDrain(b *TeeBranch) {
	b.mode = branchDraining
	b.holding.Store(false)
	b.drainHeld = b.held.Load()
	b.held.Store(0)
	b.off = t.rw.fill
	if t.regs.has(b.dst.FD) {
		if err := t.unregister(b.dst.FD); err != nil {
			t.failed(b, err)
			return
		}
	}
	b.out.close()
	t.fdMu.Lock()
	b.drainLost = b.dstQueued()
	b.closed = true
	var err error
	if b.dst.Own {
		err = unix.Close(b.dst.FD)
	}
	t.fdMu.Unlock()
	if err != nil {
		t.failed(b, fmt.Errorf("close %s: %w", b.dst.Name, err))
		return
	}
	b.state.Store(int32(Moving))
}

// discarded counts n bytes of the source thrown away for b, which drains.
func (b *TeeBranch) discarded(n int) {
	b.drained += int64(n)
	b.progress(n)
}

// failed drops b after a write to it failed.
func (t *Tee) failed(b *TeeBranch, err error) {
	t.settle(b, Result{Undelivered: t.undelivered(b), Unread: b.dstQueued(),
		Err: fmt.Errorf("copying %s to %s: %w", t.src.Name, b.dst.Name, err)}, false)
}

// undelivered is what b is known to miss: what the source pipe queues
// beyond what b already has, what the tee holds for it, and what its own
// pipe still queues (delivered, never read). Run's goroutine only.
func (t *Tee) undelivered(b *TeeBranch) int64 {
	n := b.held.Load() + b.dstQueued()
	if t.src.kind == kindPipe {
		if q := Queued(t.src.FD); q > 0 {
			n += max(int64(q)-b.ahead.Load(), 0)
		}
	}
	return n
}

// dstQueued is the count of bytes queued in b's pipe, 0 when it is not a
// pipe. Run's goroutine only, before b is closed.
func (b *TeeBranch) dstQueued() int64 {
	if b.dst.kind != kindPipe || b.closed {
		return 0
	}
	return int64(max(Queued(b.dst.FD), 0))
}

// progress counts n bytes delivered to b.
func (b *TeeBranch) progress(n int) {
	b.bytes.Add(int64(n))
	b.last.Store(time.Now().UnixNano())
	b.state.Store(int32(Moving))
}

// wake-up handling shared by both strategies: a wait returns on an event,
// or on a wake-up that carries a stop request (the tee's or a branch's).
func (t *Tee) waitEvents(events []unix.EpollEvent) (int, error) {
	for {
		n, woken, err := t.poller.Wait(events, -1)
		if err != nil {
			return 0, fmt.Errorf("tee from %s: %w", t.src.Name, err)
		}
		if n > 0 || woken && (t.stopping.Load() || t.requests.Load()) {
			return n, nil
		}
	}
}

// branchOf returns the active branch whose destination is fd, or nil.
func (t *Tee) branchOf(fd int32) *TeeBranch {
	for _, b := range t.branches {
		if b.active && int32(b.dst.FD) == fd {
			return b
		}
	}
	return nil
}

// Bytes returns the bytes delivered to this destination so far; safe from
// any goroutine.
func (b *TeeBranch) Bytes() int64 { return b.bytes.Load() }

// LastProgress returns when bytes last reached this destination (or the
// tee was created).
func (b *TeeBranch) LastProgress() time.Time { return time.Unix(0, b.last.Load()) }

// State returns what this destination waits for now: WaitingDst when its
// pipe is full, WaitingBranch when it has all the source holds and another
// destination is behind, WaitingSrc when the source has nothing more.
// Safe from any goroutine.
func (b *TeeBranch) State() State {
	s := State(b.state.Load())
	if b.holding.Load() {
		return WaitingDst // as a pump that holds: see HoldWhenConsumerGone
	}
	if s != waitingEither {
		return s
	}
	t := b.t
	t.fdMu.RLock()
	defer t.fdMu.RUnlock()
	if b.closed || t.srcClosed {
		return Finished
	}
	switch {
	case b.dst.kind == kindPipe && !hasRoom(b.dst.FD):
		return WaitingDst
	case b.ahead.Load() > 0 || b.held.Load() > 0:
		return WaitingBranch
	case t.src.kind == kindPipe && Queued(t.src.FD) > 0:
		return Moving
	}
	return WaitingSrc
}

// SrcQueued returns the bytes queued in the tee's source pipe that this
// destination has not had yet, or -1 when the source is not a pipe or this
// destination is finished. Safe from any goroutine.
func (b *TeeBranch) SrcQueued() int {
	t := b.t
	t.fdMu.RLock()
	defer t.fdMu.RUnlock()
	if b.closed || t.srcClosed || t.src.kind != kindPipe {
		return -1
	}
	return max(Queued(t.src.FD)-int(b.ahead.Load()), 0)
}

// DstQueued returns the bytes queued in this destination's pipe, or -1
// when it is not a pipe or is finished. Safe from any goroutine.
func (b *TeeBranch) DstQueued() int {
	t := b.t
	t.fdMu.RLock()
	defer t.fdMu.RUnlock()
	if b.closed || b.dst.kind != kindPipe {
		return -1
	}
	return Queued(b.dst.FD)
}

// Buffered returns the bytes the tee holds in memory for this destination
// (read from the source, not yet written to it): 0 on the zero-copy path.
func (b *TeeBranch) Buffered() int64 { return b.held.Load() }

// Done is closed when this destination is finished: dropped, or the tee
// ended.
func (b *TeeBranch) Done() <-chan struct{} { return b.done }

// Result returns this destination's result once Done is closed.
func (b *TeeBranch) Result() Result {
	<-b.done
	return b.result
}

// Stop drops this destination (closing it if owned): its Result says
// ErrBranchStopped with what it missed, and the tee goes on with the
// others. Safe from any goroutine and at any time; it does nothing once
// the destination is finished.
func (b *TeeBranch) Stop() {
	b.stopReq.Store(true)
	b.t.requests.Store(true)
	_ = b.t.poller.Wake()
}

// Drain, for a tee made with HoldWhenConsumerGone, makes this destination,
// once its reader has gone (or now, if it is holding already), throw its
// share of the source away instead of holding the others back: the tee goes
// on at the pace of the destinations still read, and when none is left it
// reads its source to the end, so that the producer can finish (and fail on
// its own if its input was bad). Safe from any goroutine; after a Stop it
// does nothing.
func (b *TeeBranch) Drain() {
	b.drainReq.Store(true)
	b.t.requests.Store(true)
	_ = b.t.poller.Wake()
}

// openWitness keeps a read-only handle on b's pipe (see KeepWitness).
// Call it holding t.fdMu, before b's destination is closed.
func (b *TeeBranch) openWitness() {
	if b.dst.kind == kindPipe {
		b.witnFD = witnessOf(b.dst.FD)
	}
}

// Leftover returns the bytes still queued in this destination's pipe,
// read through the witness (see KeepWitness), or -1 if there is none.
func (b *TeeBranch) Leftover() int {
	<-b.done
	b.t.fdMu.RLock()
	defer b.t.fdMu.RUnlock()
	if b.witnFD < 0 {
		return -1
	}
	return Queued(b.witnFD)
}

// Release closes the witness, if any. Call it after Leftover.
func (b *TeeBranch) Release() {
	<-b.done
	b.t.fdMu.Lock()
	defer b.t.fdMu.Unlock()
	if b.witnFD >= 0 {
		unix.Close(b.witnFD)
		b.witnFD = -1
	}
}

// TeeSource is a Tee's source seen as a hop: the link out of the stage that
// writes the tee's source pipe itself, with no pump between them. Its
// bytes are those the tee took off the source (consumed from its pipe, or
// read): what the stage wrote is those plus what its pipe still queues
// (SrcQueued). Its Result comes once the tee has ended: EOF when the
// source's whole stream was taken, ConsumerGone when every destination
// went before that (the tee closed the source: the stage gets EPIPE, as
// from any consumer that went), ErrStopped after Tee.Stop. Stop stops the
// whole tee: a stage's output is every destination's input.
type TeeSource struct{ t *Tee }

// Source returns the tee's source as a hop.
func (t *Tee) Source() *TeeSource { return &TeeSource{t} }

// Bytes returns the bytes the tee has taken off its source; safe from any
// goroutine.
func (s *TeeSource) Bytes() int64 { return s.t.taken.Load() }

// LastProgress returns when the tee last took bytes off its source (or was
// created).
func (s *TeeSource) LastProgress() time.Time { return time.Unix(0, s.t.lastTaken.Load()) }

// State returns what the source's side of the tee waits for: WaitingSrc
// when the source queues nothing (the stage writing it is not producing),
// WaitingDst when it does and some destination's pipe is full (the slowest
// destination sets the pace), Moving otherwise, Finished once the tee has
// ended. Safe from any goroutine.
func (s *TeeSource) State() State {
	t := s.t
	select {
	case <-t.done:
		return Finished
	default:
	}
	full := false
	for _, b := range t.branches {
		if b.State() == WaitingDst {
			full = true
		}
	}
	t.fdMu.RLock()
	defer t.fdMu.RUnlock()
	switch {
	case t.srcClosed:
		return Finished
	case t.src.kind == kindPipe && Queued(t.src.FD) <= 0:
		return WaitingSrc
	case full:
		return WaitingDst
	}
	return Moving
}

// SrcQueued returns the bytes queued in the source pipe, or -1 when it is
// not a pipe or is closed. Safe from any goroutine.
func (s *TeeSource) SrcQueued() int {
	t := s.t
	t.fdMu.RLock()
	defer t.fdMu.RUnlock()
	if t.srcClosed || t.src.kind != kindPipe {
		return -1
	}
	return Queued(t.src.FD)
}

// DstQueued returns -1: the source's bytes go to several pipes (see each
// TeeBranch).
func (s *TeeSource) DstQueued() int { return -1 }

// Buffered returns 0: what the tee holds (read/write) was taken off the
// source already, and Bytes counts it.
func (s *TeeSource) Buffered() int64 { return 0 }

// Result returns the source's result once the tee has ended.
func (s *TeeSource) Result() Result {
	<-s.t.done
	return s.t.srcResult
}

// Done is closed when the tee has ended.
func (s *TeeSource) Done() <-chan struct{} { return s.t.done }

// Stop stops the tee (Tee.Stop).
func (s *TeeSource) Stop() { s.t.Stop() }

// Drain stops the tee too: a tee takes every byte its destinations take,
// and has no consumer of its own to read the rest into the void for.
func (s *TeeSource) Drain() { s.t.Stop() }

// Leftover returns -1: the source's bytes left behind are in Result's
// Undelivered.
func (s *TeeSource) Leftover() int {
	<-s.t.done
	return -1
}

// Release does nothing: the source has no witness.
func (s *TeeSource) Release() {}
