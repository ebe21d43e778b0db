package pump

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/pipespool/pipespool/poller"
	"golang.org/x/sys/unix"
)

// maxSplice bounds one transfer: the default pipe-max-size (1 MiB), which
// is as much as a pipe can hold unless an administrator raised the limit; a
// larger request would only be cut short by the kernel.
const maxSplice = 1 << 20

// rwBufSize is the buffer of the read/write path (no pipe on either side,
// or splice refused): large enough to amortise syscalls, small enough to
// keep memory flat with many pumps.
const rwBufSize = 256 << 10

// End is one side of a pump.
type End struct {
	FD int
	// Own: the pump closes FD when it finishes (deregistering it first).
	// An fd the pump does not own (pipespool's inherited stdin or stdout)
	// is never closed and its flags are never changed.
	Own bool
	// Name describes the end for errors: "stdin", "pipe to stage zstd".
	Name string
}

// State is what a pump is doing, for progress and stall diagnosis.
type State int32

// The states of a pump.
const (
	Moving     State = iota // transferring, or about to try
	WaitingSrc              // the source had nothing to give
	WaitingDst              // the destination had no room
	Finished

	// waitingEither: the splice path waits for either side to change (see
	// waitEdge); State looks at the pipes to say which. Never returned.
	waitingEither State = -1
)

func (s State) String() string {
	switch s {
	case Moving:
		return "moving"
	case WaitingSrc:
		return "waiting for input"
	case WaitingDst:
		return "waiting for output room"
	default:
		return "finished"
	}
}

// ErrConsumerGone is Result.Err's cause when the destination's reader went
// away (EPIPE) before the source reached EOF.
var ErrConsumerGone = errors.New("consumer gone (EPIPE)")

// ErrStopped is Result.Err when Stop ended the pump.
var ErrStopped = errors.New("pump stopped")

// Result is how a pump ended.
type Result struct {
	Bytes int64 // bytes delivered to the destination
	EOF   bool  // the source reached end of file and all of it was delivered
	// ConsumerGone: the destination's reader went away. Undelivered is
	// what the pump then knew to be left behind: bytes queued in the
	// source pipe, in the destination pipe, and in its own buffer.
	ConsumerGone bool
	// Undelivered is also set when Stop ended the pump. Unread is the
	// part of Bytes that was still queued in the destination pipe then:
	// delivered to the pipe, never read by the consumer.
	Undelivered int64
	Unread      int64
	// Drained is the part of Bytes discarded after Drain: read from the
	// source once the consumer had gone, and thrown away.
	Drained int64
	Err     error // nil at EOF
}

// Pump copies Src to Dst.
type Pump struct {
	src, dst End

	srcPipe, dstPipe bool // S_ISFIFO
	// srcFile, dstFile: the side never waits and cannot be polled: a
	// regular file, or a device epoll refuses (/dev/null, /dev/zero,
	// /dev/full, a tape). It is read and written with plain calls, which
	// end when the device has taken or given the bytes.
	srcFile, dstFile bool
	useSplice        bool

	poller             *poller.Poller
	srcAdded, dstAdded bool
	edgeArmed          bool // both sides registered edge-triggered (splice path)
	// endGone: waitEdge harvested a hang-up or error on either end (no
	// writer left on the source, no reader on the destination), a state
	// that will not change again; see waitsAfter.
	endGone bool
	// batchTarget (a quarter of the smaller pipe's capacity) and batchMax:
	// see batchDelay; 0 when the ends are not two pipes or the pipes are
	// too small to batch.
	batchTarget int
	batchMax    time.Duration

	bytes    atomic.Int64
	last     atomic.Int64 // unix nanoseconds of the last progress
	state    atomic.Int32
	stopping atomic.Bool

	witness int // see KeepWitness; -1 when none

	// dstSend, dstAlt: how the read/write path writes to an inherited
	// blocking socket (send with MSG_DONTWAIT) or terminal (dstAlt, a
	// second, non-blocking opening of it; -1 when none) without blocking;
	// see nonBlockingWrites.
	dstSend bool
	dstAlt  int

	buf        []byte // read/write path only: bytes read, not yet written
	bufStart   int
	bufEnd     int
	lastRWSide side // which side returned EAGAIN on the read/write path
	// srcReady, dstReady: epoll reported the side ready since its last
	// operation. Used only for inherited blocking fds on the read/write
	// path, which must not be touched before they are ready (a blocking
	// read there would park the pump where Stop cannot reach it).
	srcReady, dstReady bool
	keepWitnes         bool

	// hold, decision, drainReq, draining, drainFrom: see
	// HoldWhenConsumerGone and Drain.
	awaitRead    bool // see AwaitRead
	hold         bool
	decision     chan struct{} // closed by the first Drain or Stop
	decisionOnce sync.Once
	drainReq     atomic.Bool
	draining     bool  // the destination is /dev/null now
	drainFrom    int64 // bytes moved when draining began
	drainLost    int64 // bytes left unread in the consumer's pipe then

	// fdMu makes the fds safe to inspect from other goroutines (FIONREAD
	// for a stall diagnosis): closeEnds holds it to close them, readers
	// hold it shared and check fdsClosed, so an fd number is never used
	// after it was closed and perhaps reused.
	fdMu      sync.RWMutex
	fdsClosed bool

	done   chan struct{}
	result Result
}

// SrcQueued returns the bytes queued in the source pipe (what the producer
// wrote and the pump has not moved yet), or -1 when the source is not a
// pipe or the pump has finished. Safe from any goroutine.
func (p *Pump) SrcQueued() int {
	p.fdMu.RLock()
	defer p.fdMu.RUnlock()
	if p.fdsClosed || !p.srcPipe {
		return -1
	}
	return Queued(p.src.FD)
}

// DstQueued returns the bytes queued in the destination pipe (moved by the
// pump, not yet read by the consumer), or -1 when the destination is not a
// pipe or the pump has finished. Safe from any goroutine.
func (p *Pump) DstQueued() int {
	p.fdMu.RLock()
	defer p.fdMu.RUnlock()
	if p.fdsClosed || !p.dstPipe {
		return -1
	}
	return Queued(p.dst.FD)
}

// Option configures a Pump.
type Option func(*Pump)

// KeepWitness makes the pump, when it reaches EOF and closes a pipe
// destination, keep a read-only handle on that pipe (opened through
// /proc/self/fd, so no writer is added and the consumer still sees EOF).
// Leftover then tells how many bytes the consumer left unread when it
// exited: a stage that exits 0 with input still queued did not read all
// its input.
func KeepWitness() Option { return func(p *Pump) { p.keepWitnes = true } }

// AwaitRead makes the pump, at the end of its source, wait until the
// reader of its destination pipe has read every byte queued in it before
// it reports EOF. A reader that goes away first leaves those bytes unread:
// the pump ends as ConsumerGone, with them as Undelivered and Unread. For
// the run's own output: bytes written into a pipe have not reached the
// reader yet, and `pipespool ... | ssh host 'cat > f'` whose ssh died with
// the last 64 KiB still in the pipe did not deliver them. Stop ends the
// wait (ErrStopped, the bytes still queued as Unread).
func AwaitRead() Option { return func(p *Pump) { p.awaitRead = true } }

// atEOF is the result at the source's end with every byte delivered: EOF,
// unless AwaitRead finds the destination's reader gone with bytes left in
// its pipe (or the pump is stopped while it waits).
func (p *Pump) atEOF() Result {
	if p.awaitRead && p.dstPipe {
		if left, gone := p.waitRead(); gone {
			return Result{ConsumerGone: true, Undelivered: int64(left), Unread: int64(left), Err: ErrConsumerGone}
		} else if left > 0 {
			return Result{Err: ErrStopped, Undelivered: int64(left), Unread: int64(left)}
		}
	}
	return Result{EOF: true}
}

// waitRead waits, for AwaitRead, until the destination pipe is empty (0,
// false), its reader is gone (the bytes left, true) or Stop was called (the
// bytes left, false). No event says that a pipe became empty, and a reader
// wakes a writer only when the pipe was full: it looks at growing intervals
// (1 ms to 100 ms), and poll(2) with no events asked still returns at once
// when the reader closes its end (POLLERR).
func (p *Pump) waitRead() (left int, gone bool) {
	delay := time.Millisecond
	p.state.Store(int32(WaitingDst))
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
			return max(Queued(p.dst.FD), 0), true
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// HoldWhenConsumerGone makes the pump, when its consumer goes (EPIPE)
// before the source's end, wait for its owner's decision instead of closing
// its source at once: Drain goes on reading the source to its end and
// discards it (so that the producer can finish, and fail on its own if its
// input was bad), Stop ends the pump as it would have ended. Meanwhile the
// producer finds its pipe full and waits.
func HoldWhenConsumerGone() Option { return func(p *Pump) { p.hold = true } }

// Drain, for a pump made with HoldWhenConsumerGone, makes it discard the
// rest of its source once its consumer has gone (or now, if it is holding
// already). Safe from any goroutine; after a Stop it does nothing.
func (p *Pump) Drain() {
	p.drainReq.Store(true)
	p.decisionOnce.Do(func() { close(p.decision) })
}

// New prepares a pump from src to dst. Owned ends must be non-blocking.
func New(src, dst End, opts ...Option) (*Pump, error) {
	p := &Pump{src: src, dst: dst, witness: -1, dstAlt: -1, done: make(chan struct{}), decision: make(chan struct{})}
	for _, o := range opts {
		o(p)
	}
	var err error
	if p.srcPipe, p.srcFile, err = kind(src.FD); err != nil {
		return nil, fmt.Errorf("pump source %s: %w", src.Name, err)
	}
	if p.dstPipe, p.dstFile, err = kind(dst.FD); err != nil {
		return nil, fmt.Errorf("pump destination %s: %w", dst.Name, err)
	}
	if p.poller, err = poller.New(); err != nil {
		return nil, err
	}
	// A device that epoll cannot watch never makes a caller wait for
	// readiness (it has no poll method): waiting for it would fail, and
	// giving up would cut the stream. It is a file for the pump.
	for _, s := range []struct {
		fd         int
		pipe, file *bool
	}{{src.FD, &p.srcPipe, &p.srcFile}, {dst.FD, &p.dstPipe, &p.dstFile}} {
		if !*s.pipe && !*s.file && !p.pollable(s.fd) {
			*s.file = true
		}
	}
	// splice(2) needs a pipe on one side. The other side must be a pipe or
	// a file that never waits, or an fd we own (non-blocking): splice to or
	// from an inherited blocking socket or tty could block the pump where
	// Stop cannot reach it.
	okSide := func(pipe, file bool, e End) bool { return pipe || file || e.Own }
	p.useSplice = (p.srcPipe || p.dstPipe) && okSide(p.srcPipe, p.srcFile, src) && okSide(p.dstPipe, p.dstFile, dst)
	if !p.useSplice && !p.dstPipe && p.pollFirst(dst, p.dstFile) {
		p.dstSend, p.dstAlt = nonBlockingWrites(dst.FD)
	}
	if p.srcPipe && p.dstPipe {
		a, errA := unix.FcntlInt(uintptr(src.FD), unix.F_GETPIPE_SZ, 0)
		b, errB := unix.FcntlInt(uintptr(dst.FD), unix.F_GETPIPE_SZ, 0)
		if d := time.Duration(min(a, b) / fastestFill); errA == nil && errB == nil && d >= minBatchDelay {
			p.batchTarget, p.batchMax = min(a, b)/4, min(d, maxBatchDelay)
		}
	}
	p.last.Store(time.Now().UnixNano())
	return p, nil
}

// pollable reports whether epoll can watch fd.
func (p *Pump) pollable(fd int) bool {
	if err := p.poller.Add(fd, poller.In); err != nil {
		return !errors.Is(err, poller.ErrNotPollable)
	}
	p.poller.Remove(fd)
	return true
}

// nonBlockingWrites finds how to write to fd, an inherited blocking
// destination, so that no write blocks: epoll's "ready for output" only
// promises some room, and a blocking write(2) of more than that to a socket
// or a terminal sleeps until all of it is taken, where Stop (a job's
// timeout, SIGTERM) cannot reach it. The fd's flags are shared with other
// processes and never changed. A socket gets send(2) with MSG_DONTWAIT
// (sock); a terminal, a second opening of it through /proc/self/fd with
// O_NONBLOCK on that open file description only (alt, which the pump
// closes). Any other device (a tape, a printer) is written as before:
// opening one again can rewind or reset it.
func nonBlockingWrites(fd int) (sock bool, alt int) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, -1
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFSOCK:
		return true, -1
	case unix.S_IFCHR:
		if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
			return false, -1 // not a terminal
		}
		for {
			alt, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fd), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return false, -1
			}
			return false, alt
		}
	}
	return false, -1
}

// writeDst writes b to the destination on the read/write path.
func (p *Pump) writeDst(b []byte) (int, error) {
	switch {
	case p.dstSend:
		for {
			n, err := unix.SendmsgN(p.dst.FD, b, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
			if err != unix.EINTR {
				return max(n, 0), err
			}
		}
	case p.dstAlt >= 0:
		return ignoringEINTRIO(unix.Write, p.dstAlt, b)
	}
	return ignoringEINTRIO(unix.Write, p.dst.FD, b)
}

func kind(fd int) (pipe, file bool, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, false, err
	}
	m := st.Mode & unix.S_IFMT
	return m == unix.S_IFIFO, m == unix.S_IFREG, nil
}

// Bytes returns the bytes delivered so far; safe from any goroutine.
func (p *Pump) Bytes() int64 { return p.bytes.Load() }

// LastProgress returns when bytes last moved (or the pump was created).
func (p *Pump) LastProgress() time.Time { return time.Unix(0, p.last.Load()) }

// State returns what the pump is doing now. Safe from any goroutine.
func (p *Pump) State() State {
	s := State(p.state.Load())
	if s != waitingEither {
		return s
	}
	p.fdMu.RLock()
	defer p.fdMu.RUnlock()
	if p.fdsClosed {
		return Finished
	}
	return p.spliceBlockedSide()
}

// spliceBlockedSide says, for a splice that returned EAGAIN, which side made
// it: splice does not say, so look. A destination that would not take a
// write now had no room; else an empty source had nothing. A source with
// bytes and a destination with room is a change the pump has been woken
// for (or is about to be) and has not acted on yet: Moving, not waiting
// on either side. Uses only what New set, so it is safe from any
// goroutine holding fdMu.
func (p *Pump) spliceBlockedSide() State {
	switch {
	case p.srcFile:
		return WaitingDst // a regular file never makes splice wait
	case p.dstFile:
		return WaitingSrc
	case !hasRoom(p.dst.FD):
		return WaitingDst
	case Queued(p.src.FD) > 0:
		return Moving
	}
	return WaitingSrc
}

// Done is closed when Run has returned.
func (p *Pump) Done() <-chan struct{} { return p.done }

// Result returns the result once Done is closed.
func (p *Pump) Result() Result {
	<-p.done
	return p.result
}

// Stop makes Run return ErrStopped as soon as it is not transferring; it
// is safe from any goroutine and at any time.
func (p *Pump) Stop() {
	p.stopping.Store(true)
	p.decisionOnce.Do(func() { close(p.decision) })
	_ = p.poller.Wake()
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

// Run copies until EOF, a consumer gone, an error or Stop, then closes the
// owned ends and returns. Call it once, in its own goroutine: it holds that
// goroutine's thread, as SCHED_BATCH, until it returns (see batchThread).
func (p *Pump) Run() Result {
	defer close(p.done)
	restore := batchThread()
	res := p.loop()
	restore()
	res.Bytes = p.bytes.Load()
	if p.draining {
		res.Drained, res.Unread = res.Bytes-p.drainFrom, p.drainLost
	}
	p.state.Store(int32(Finished))
	if res.EOF && p.keepWitnes && p.dstPipe {
		// Opening the pipe read-only through /proc adds a reader, never a
		// writer: once our write end is closed the consumer sees EOF as
		// before, and FIONREAD on the witness counts what it left.
		path := fmt.Sprintf("/proc/self/fd/%d", p.dst.FD)
		if fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
			p.witness = fd
		}
	}
	if err := p.closeEnds(); err != nil && res.Err == nil {
		res.Err = err
	}
	if err := p.poller.Close(); err != nil && res.Err == nil {
		res.Err = err
	}
	p.result = res
	return res
}

func (p *Pump) loop() Result {
	for {
		if p.stopping.Load() {
			return Result{Err: ErrStopped, Undelivered: p.undelivered(), Unread: p.dstQueued()}
		}
		n, err := p.transfer()
		switch {
		case n > 0:
			p.bytes.Add(int64(n))
			now := time.Now().UnixNano()
			prev := p.last.Swap(now)
			p.state.Store(int32(Moving))
			if !p.waitsAfter(n) {
				break
			}
			if d := p.batchDelay(n, now-prev); d > 0 {
				sleep(d)
			} else if werr := p.waitEdge(); werr != nil {
				return Result{Err: werr}
			}
		case err == nil: // n == 0: end of input, everything delivered
			return p.atEOF()
		case err == unix.EAGAIN && p.useSplice:
			if werr := p.waitEdge(); werr != nil {
				return Result{Err: werr}
			}
		case err == unix.EAGAIN:
			if werr := p.waitFor(p.lastRWSide); werr != nil {
				return Result{Err: werr}
			}
		case err == unix.EPIPE:
			if p.srcDrained() {
				// splice checks for a reader on the destination before
				// it looks for EOF on the source: a producer that ended
				// without writing more, after its consumer had gone,
				// gets EPIPE here too. Nothing was refused, so this is
				// EOF: calling it "consumer gone" made that producer's
				// own failure (exit 54 with nothing to write) look like
				// a consequence (TestRegressionEOFAfterConsumerGoneIsEOF).
				// Bytes it delivered may still sit in the pipe of the
				// consumer that went, though (see AwaitRead).
				return p.atEOF()
			}
			if p.hold && !p.draining && p.awaitDrain() {
				if err := p.discardFromNow(); err != nil {
					return Result{Err: err}
				}
				continue
			}
			return Result{ConsumerGone: true, Undelivered: p.undelivered(), Unread: p.dstQueued(), Err: ErrConsumerGone}
		case err == unix.EINVAL && p.useSplice && p.bytes.Load() == 0:
			// This pair of files does not splice (a tty, an odd device):
			// fall back to read/write. Nothing has moved yet, so nothing
			// can be lost or repeated by switching.
			p.useSplice = false
			if err := p.disarmEdge(); err != nil {
				return Result{Err: err}
			}
		default:
			return Result{Err: fmt.Errorf("copying %s to %s: %w", p.src.Name, p.dst.Name, err)}
		}
	}
}

// awaitDrain waits, the consumer gone, for the owner's decision: true to
// drain (Drain), false to end (Stop).
func (p *Pump) awaitDrain() bool {
	p.state.Store(int32(WaitingDst))
	<-p.decision
	return p.drainReq.Load() && !p.stopping.Load()
}

// discardFromNow makes /dev/null the destination: the rest of the source is
// read and thrown away, counted in Bytes and in Result.Drained.
func (p *Pump) discardFromNow() error {
	null, err := unix.Open(os.DevNull, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("draining %s: %w", p.src.Name, err)
	}
	if err := p.disarmEdge(); err != nil {
		unix.Close(null)
		return err
	}
	// The read/write path's one-shot registrations go too: a splice that
	// drains waits for its source edge-triggered, and an fd still
	// registered one-shot (disarmed once it fired) would keep waitEdge
	// from registering it again.
	if p.srcAdded {
		if err := p.poller.Remove(p.src.FD); err != nil {
			unix.Close(null)
			return err
		}
		p.srcAdded = false
	}
	p.fdMu.Lock()
	if p.dstAdded {
		p.poller.Remove(p.dst.FD)
		p.dstAdded = false
	}
	p.drainLost = p.dstQueued()
	if p.dst.Own {
		unix.Close(p.dst.FD) // the pipe to the consumer that went
	}
	if p.dstAlt >= 0 {
		unix.Close(p.dstAlt)
		p.dstAlt = -1
	}
	p.dst = End{FD: null, Own: true, Name: "discard (" + p.dst.Name + ")"}
	p.dstPipe, p.dstFile, p.dstSend = false, true, false
	p.fdMu.Unlock()
	p.batchTarget = 0
	p.useSplice = p.srcPipe
	p.draining, p.drainFrom = true, p.bytes.Load()
	p.state.Store(int32(Moving))
	return nil
}

// transfer makes one attempt to move bytes. It returns n > 0 for progress,
// 0 and nil for EOF with nothing left to deliver, or an error (EAGAIN when
// a side is not ready; blockedSide says which).
func (p *Pump) transfer() (int, error) {
	if p.useSplice {
		for {
			n, err := unix.Splice(p.src.FD, nil, p.dst.FD, nil, maxSplice, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			if err == unix.EINTR {
				continue
			}
			if n == 0 && err == nil {
				return 0, nil // EOF: no writer left and the source pipe is empty
			}
			return int(n), err
		}
	}
	if p.buf == nil {
		p.buf = make([]byte, rwBufSize)
	}
	if p.bufStart == p.bufEnd {
		p.bufStart, p.bufEnd = 0, 0
		if p.pollFirst(p.src, p.srcFile) && !p.srcReady {
			p.lastRWSide = sideSrc
			return 0, unix.EAGAIN
		}
		p.srcReady = false
		n, err := ignoringEINTRIO(unix.Read, p.src.FD, p.buf)
		if err != nil {
			p.lastRWSide = sideSrc
			return 0, err
		}
		if n == 0 {
			return 0, nil
		}
		p.bufEnd = n
	}
	if p.pollFirst(p.dst, p.dstFile) && !p.dstReady {
		p.lastRWSide = sideDst
		return 0, unix.EAGAIN
	}
	p.dstReady = false
	n, err := p.writeDst(p.buf[p.bufStart:p.bufEnd])
	if err != nil {
		p.lastRWSide = sideDst
		return 0, err
	}
	if n == 0 {
		// write(2) of a non-empty buffer returning 0 is not supposed to
		// happen; treat it as an I/O error rather than loop forever.
		return 0, fmt.Errorf("write to %s returned 0", p.dst.Name)
	}
	// A short write leaves the rest in buf for the next round.
	p.bufStart += n
	return n, nil
}

type side int

const (
	sideSrc side = iota
	sideDst
)

// pollFirst reports whether e must be waited for before each operation: an
// inherited fd that is blocking and can be polled.
func (p *Pump) pollFirst(e End, regular bool) bool {
	if e.Own || regular {
		return false
	}
	fl, err := unix.FcntlInt(uintptr(e.FD), unix.F_GETFL, 0)
	return err == nil && fl&unix.O_NONBLOCK == 0
}

// srcDrained reports whether the source is a pipe at end of file: nothing
// queued, nothing in our buffer, and no writer left (POLLHUP without
// POLLIN), so no byte could have been refused by the destination.
func (p *Pump) srcDrained() bool {
	if !p.srcPipe || p.bufStart != p.bufEnd || Queued(p.src.FD) != 0 {
		return false
	}
	fds := []unix.PollFd{{Fd: int32(p.src.FD), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0 && fds[0].Revents&unix.POLLHUP != 0 && fds[0].Revents&unix.POLLIN == 0
	}
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

// waitEdge waits, on the splice path, until either side changes state or
// the pump is woken. The first call registers both ends edge-triggered, and
// they stay registered: no epoll_ctl per wait, and no look at the pipes to
// learn which side made splice return EAGAIN (splice does not say). Each
// end is registered only for the event that can end a wait on it (input on
// the source, room on the destination), plus the hang-up and error that
// epoll always reports.
//
// No wake-up can be missed: splice returned EAGAIN, so the source was empty
// with a writer left or the destination full with a reader left, and the
// change that ends either (a write, a read from a full pipe, a close) wakes
// the pipe's wait queue, which queues an event from the moment the end is
// registered, whether Wait has been entered or not (a first registration
// reports a side that is ready already). Neither can the pump spin: a state
// that persists (a hang-up, a full destination while the producer keeps
// writing into a source that is not yet full) is reported once per change,
// and a change of the side that is not blocked costs one more attempt.
// This path is only for ends that never block (pipes, regular files, and
// fds the pump owns, non-blocking); an inherited blocking fd goes through
// read/write and waitFor, level-triggered.
func (p *Pump) waitEdge() error {
	if !p.edgeArmed {
		for _, c := range []struct {
			e     End
			file  bool
			ev    uint32
			added *bool
		}{{p.src, p.srcFile, poller.In, &p.srcAdded}, {p.dst, p.dstFile, poller.Out, &p.dstAdded}} {
			if c.file || *c.added {
				continue
			}
			err := p.poller.Add(c.e.FD, c.ev|poller.Edge)
			if err == poller.ErrNotPollable {
				continue // never waits, like a regular file
			}
			if err != nil {
				return fmt.Errorf("waiting for %s: %w", c.e.Name, err)
			}
			*c.added = true
		}
		p.edgeArmed = true
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
				p.endGone = true
			}
		}
		if n > 0 || woken && p.stopping.Load() {
			return nil // the next attempt turns the change into bytes, EOF or an error
		}
		// Woken without a stop request: keep waiting.
	}
}

// waitsAfter reports whether a splice that moved n bytes may be followed by
// a wait instead of another attempt. That attempt is the costly one: it
// finds the producer in the middle of its next write, which holds the pipe
// lock for the whole copy, and spins on that lock only to return EAGAIN.
//
// Between two pipes, splice stops short of what it was asked for only when
// the source ran empty or the destination filled up, or when the source has
// no writer left or the destination no reader. In the first two cases the
// change that ends them (a write, a read from a full pipe) is still to
// come, and waitEdge will see it. The last two never change again: their
// hang-up or error was queued when it happened, so either waitEdge has not
// harvested it yet (and returns at once) or it has and set endGone, and
// then every attempt is made until splice says EOF, EAGAIN or EPIPE itself.
// Between a pipe and anything else a short count does not say as much (a
// file at its end, a socket's partial read), so those always try again.
func (p *Pump) waitsAfter(n int) bool {
	return n < maxSplice && p.useSplice && p.srcPipe && p.dstPipe && !p.endGone
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
// of the pipe at a time, instead of each write as it comes, roughly halves
// the context switches of `cat | pump | cat` and takes the relay from about
// 1.13x to 1.05x the time of the two cats joined by one pipe.
//
// The delay is what the stream's current rate (n bytes in elapsed) needs to
// put a quarter of the smaller pipe in the source, so neither side starves:
// the producer still has three quarters of its pipe free, and the consumer
// has at least the n bytes just moved, which at that rate last about as
// long. It is capped by maxBatchDelay, and by the time in which the source
// pipe would fill at 10 GB/s, faster than any stage here writes: a small
// pipe (64 KiB: 6.5 us) is not worth a sleep and is not batched at all.
func (p *Pump) batchDelay(n int, elapsed int64) time.Duration {
	if p.batchTarget == 0 || n >= p.batchTarget || elapsed <= 0 {
		return 0
	}
	return min(time.Duration(elapsed*int64(p.batchTarget)/int64(n)), p.batchMax)
}

const (
	// maxBatchDelay bounds the latency that batching adds to a byte.
	maxBatchDelay = 100 * time.Microsecond
	// minBatchDelay: below this a sleep costs more than it saves.
	minBatchDelay = 20 * time.Microsecond
	// fastestFill is the producer rate, in bytes per nanosecond (10 GB/s),
	// at which batching must still not let the source pipe fill up.
	fastestFill = 10
)

// sleep sleeps the pump's thread for d (at most maxBatchDelay), resuming
// after signals.
//
// It is a raw system call, which the Go scheduler does not see: its P stays
// with the pump for those 100 us at most (delaying a stop-the-world by as
// much). Through the usual entry (unix.Nanosleep), each of these sleeps kept
// the runtime's sysmon thread waking every 20 us for the whole stream to
// watch the system call, about 6,500 wake-ups per GiB that took their CPU
// from the stages; with the raw call it backs off as it does when the pump
// is idle. Never use this for a wait without a short bound.
func sleep(d time.Duration) {
	ts := unix.NsecToTimespec(int64(min(d, maxBatchDelay)))
	for {
		_, _, e := unix.RawSyscall(unix.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), uintptr(unsafe.Pointer(&ts)), 0)
		if e != unix.EINTR {
			return
		}
	}
}

// disarmEdge removes the edge-triggered registrations of waitEdge, so that
// the read/write path's one-shot waits see only the side they arm.
func (p *Pump) disarmEdge() error {
	if !p.edgeArmed {
		return nil
	}
	p.edgeArmed = false
	for _, c := range []struct {
		fd    int
		added *bool
	}{{p.src.FD, &p.srcAdded}, {p.dst.FD, &p.dstAdded}} {
		if *c.added {
			if err := p.poller.Remove(c.fd); err != nil {
				return err
			}
			*c.added = false
		}
	}
	return nil
}

// waitFor arms s one-shot and waits until it is ready or the pump is woken
// (the read/write path, which knows which side returned EAGAIN).
func (p *Pump) waitFor(s side) error {
	e, ev, added := p.src, uint32(poller.In), &p.srcAdded
	ready := &p.srcReady
	st := WaitingSrc
	if s == sideDst {
		e, ev, added, ready, st = p.dst, poller.Out, &p.dstAdded, &p.dstReady, WaitingDst
	}
	p.state.Store(int32(st))
	var err error
	if *added {
		err = p.poller.Modify(e.FD, ev|poller.OneShot)
	} else {
		err = p.poller.Add(e.FD, ev|poller.OneShot)
		*added = err == nil
	}
	if err != nil {
		return fmt.Errorf("waiting for %s: %w", e.Name, err)
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
			*ready = true
			return nil
		}
		if woken && p.stopping.Load() {
			return nil // loop sees stopping
		}
		// Woken without a stop request: keep waiting, the fd stays armed.
	}
}

func (p *Pump) dstQueued() int64 {
	if !p.dstPipe {
		return 0
	}
	return int64(max(Queued(p.dst.FD), 0))
}

// undelivered counts what is known to be left behind when the consumer has
// gone: bytes in our buffer, queued in the source pipe, and queued in the
// destination pipe (our write end keeps it alive until we close it).
func (p *Pump) undelivered() int64 {
	n := int64(p.bufEnd - p.bufStart)
	if p.srcPipe {
		if q := Queued(p.src.FD); q > 0 {
			n += int64(q)
		}
	}
	return n + p.dstQueued()
}

// closeEnds deregisters and closes the owned ends; the source first, so that
// a producer still writing gets EPIPE.
func (p *Pump) closeEnds() error {
	p.fdMu.Lock()
	defer p.fdMu.Unlock()
	p.fdsClosed = true
	var errs []error
	for _, c := range []struct {
		e     End
		added bool
	}{{p.src, p.srcAdded}, {p.dst, p.dstAdded}} {
		if c.added {
			if err := p.poller.Remove(c.e.FD); err != nil {
				errs = append(errs, err)
			}
		}
		if c.e.Own {
			if err := unix.Close(c.e.FD); err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", c.e.Name, err))
			}
		}
	}
	p.srcAdded, p.dstAdded = false, false
	if p.dstAlt >= 0 {
		unix.Close(p.dstAlt)
		p.dstAlt = -1
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
