package pump

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

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
	Err         error // nil at EOF
}

// Pump copies Src to Dst.
type Pump struct {
	src, dst End

	srcPipe, dstPipe bool // S_ISFIFO
	srcFile, dstFile bool // regular files: never EAGAIN, not pollable
	useSplice        bool

	poller             *poller.Poller
	srcAdded, dstAdded bool

	bytes    atomic.Int64
	last     atomic.Int64 // unix nanoseconds of the last progress
	state    atomic.Int32
	stopping atomic.Bool

	witness int // see KeepWitness; -1 when none

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

// New prepares a pump from src to dst. Owned ends must be non-blocking.
func New(src, dst End, opts ...Option) (*Pump, error) {
	p := &Pump{src: src, dst: dst, witness: -1, done: make(chan struct{})}
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
	// splice(2) needs a pipe on one side. The other side must be a pipe or
	// a regular file, or an fd we own (non-blocking): splice to or from an
	// inherited blocking socket or tty could block the pump where Stop
	// cannot reach it.
	okSide := func(pipe, file bool, e End) bool { return pipe || file || e.Own }
	p.useSplice = (p.srcPipe || p.dstPipe) && okSide(p.srcPipe, p.srcFile, src) && okSide(p.dstPipe, p.dstFile, dst)
	if p.poller, err = poller.New(); err != nil {
		return nil, err
	}
	p.last.Store(time.Now().UnixNano())
	return p, nil
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

// State returns what the pump is doing now.
func (p *Pump) State() State { return State(p.state.Load()) }

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
// owned ends and returns. Call it once, in its own goroutine.
func (p *Pump) Run() Result {
	defer close(p.done)
	res := p.loop()
	res.Bytes = p.bytes.Load()
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
			p.last.Store(time.Now().UnixNano())
			p.state.Store(int32(Moving))
		case err == nil: // n == 0: end of input, everything delivered
			return Result{EOF: true}
		case err == unix.EAGAIN:
			if werr := p.waitFor(p.blockedSide()); werr != nil {
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
				return Result{EOF: true}
			}
			return Result{ConsumerGone: true, Undelivered: p.undelivered(), Unread: p.dstQueued(), Err: ErrConsumerGone}
		case err == unix.EINVAL && p.useSplice && p.bytes.Load() == 0:
			// This pair of files does not splice (a tty, an odd device):
			// fall back to read/write. Nothing has moved yet, so nothing
			// can be lost or repeated by switching.
			p.useSplice = false
		default:
			return Result{Err: fmt.Errorf("copying %s to %s: %w", p.src.Name, p.dst.Name, err)}
		}
	}
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
	n, err := ignoringEINTRIO(unix.Write, p.dst.FD, p.buf[p.bufStart:p.bufEnd])
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

// blockedSide says which side made the last transfer return EAGAIN.
func (p *Pump) blockedSide() side {
	if !p.useSplice {
		return p.lastRWSide
	}
	switch {
	case p.srcFile:
		return sideDst // a regular file never makes splice wait
	case p.dstFile:
		return sideSrc
	}
	// Neither side is a regular file: a pipe and another pipe, or a pipe
	// and a socket or device we own. EAGAIN is "source empty" or
	// "destination full" and splice does not say which, so look.
	//
	// This used to assume that a non-pipe side never blocks, and that a
	// source pipe with nothing queued meant "wait for the source". Both
	// spun at 100% CPU: an owned socket does block (its buffer full, or
	// nothing to read, while the pipe side is ready at once), and splice
	// checks the destination for room before it looks for EOF, so a
	// producer that has exited (source empty, hung up) with the
	// destination full made every wait for the source return at once on
	// its hang-up (TestPumpIdleUsesNoCPU; regression tests
	// TestPumpNoSpinWhenDestinationFullAfterProducerExit,
	// TestPumpNoSpinOnOwnedSocket).
	//
	// Bytes queued in the source (FIONREAD works on pipes and sockets)
	// mean the destination had no room; so does a destination that is not
	// writable now. Otherwise the source had nothing. If readiness changes
	// right after this look, the wait is on a side that is ready or will
	// be: level-triggered, it returns at once or when that side moves,
	// and the next attempt looks again.
	if Queued(p.src.FD) > 0 || !hasRoom(p.dst.FD) {
		return sideDst
	}
	return sideSrc
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

// waitFor arms s one-shot and waits until it is ready or the pump is woken.
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
