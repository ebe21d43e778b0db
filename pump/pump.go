package pump

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pipespool/pipespool/poller"
)

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
	// Limited: the pump waits for its rate limit (RateLimit) to let it
	// move more: progress as fast as allowed, not a stall.
	Limited

	// waitingEither: the splice path waits for either side to change (see
	// spliceCopier.wait); State looks at the pipes to say which. Never
	// returned.
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
	case Limited:
		return "waiting for its rate limit"
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
	// source once the consumer had gone, and thrown away. What the pump
	// held then (refused by the consumer) is in Undelivered.
	Drained int64
	// BufferPeak is the most the pump's buffer held (see Buffer); 0
	// without one.
	BufferPeak int64
	Err        error // nil at EOF
}

// Pump copies Src to Dst.
//
// Run's goroutine does the copying: it alone uses copier, gone, the drain
// counters and the poller (but for Wake), and it alone changes src and
// dst. Other goroutines read the counters and State, look at the ends'
// queues under fdMu, and call Stop and Drain.
type Pump struct {
	// src and dst are classified by New. A drain makes /dev/null the
	// destination, under fdMu.
	src, dst end
	poller   *poller.Poller // the pump's own epoll instance; Run closes it
	copier   copier         // the copy strategy in use
	opts     options
	// limit is the rate limit (RateLimit), nil when none: the unlimited
	// path pays one nil check per transfer for it, nothing else. Run's
	// goroutine only (a drain lifts it).
	limit *limiter

	bytes    atomic.Int64 // delivered to the destination
	last     atomic.Int64 // unix nanoseconds of the last progress
	state    atomic.Int32 // a State, or waitingEither
	stopping atomic.Bool

	// The buffer's accounting (see Buffer), written by the buffer copier
	// only: a pump without a buffer never touches them.
	bufFill, bufPeak, bufMapped atomic.Int64

	// What happens when the consumer goes first: see HoldWhenConsumerGone
	// and Drain. decision is closed by the first Drain or Stop.
	gone         goneMode
	decision     chan struct{}
	decisionOnce sync.Once
	drainReq     atomic.Bool
	drainFrom    int64 // bytes moved when the drain began
	drainLost    int64 // bytes left unread in the consumer's pipe then
	drainHeld    int64 // bytes the copier held then, thrown away

	// fdMu makes the fds safe to inspect from other goroutines (FIONREAD
	// for a stall diagnosis): closeEnds and the drain hold it to close or
	// replace them, readers hold it shared and check fdsClosed, so an fd
	// number is never used after it was closed and perhaps reused. It
	// guards fdsClosed, the fds of src and dst, and witness.
	fdMu      sync.RWMutex
	fdsClosed bool
	witness   int // see KeepWitness; -1 when none

	done   chan struct{}
	result Result
}

// options are the choices made with New's Options.
type options struct {
	keepWitness bool       // see KeepWitness
	awaitRead   bool       // see AwaitRead
	rate        int64      // bytes per second; see RateLimit
	burst       int64      // the limit's burst, set by New
	buffer      BufferSpec // see Buffer; Size 0: none
}

// Option configures a Pump.
type Option func(*Pump)

// New prepares a pump from src to dst. Owned ends must be non-blocking.
func New(src, dst End, opts ...Option) (*Pump, error) {
	p := &Pump{witness: -1, done: make(chan struct{}), decision: make(chan struct{})}
	for _, o := range opts {
		o(p)
	}
	if p.opts.buffer.Size > 0 {
		if p.opts.rate > 0 {
			return nil, fmt.Errorf("pump %s to %s: a buffer and a rate limit on one pump are not supported", src.Name, dst.Name)
		}
		if err := p.opts.buffer.Check(); err != nil {
			return nil, fmt.Errorf("pump %s to %s: %w", src.Name, dst.Name, err)
		}
	}
	srcKind, err := kindOf(src.FD)
	if err != nil {
		return nil, fmt.Errorf("pump source %s: %w", src.Name, err)
	}
	dstKind, err := kindOf(dst.FD)
	if err != nil {
		return nil, fmt.Errorf("pump destination %s: %w", dst.Name, err)
	}
	if p.poller, err = poller.New(); err != nil {
		return nil, err
	}
	p.src = end{End: src, kind: p.refine(srcKind, src.FD)}
	p.dst = end{End: dst, kind: p.refine(dstKind, dst.FD)}
	p.copier = p.newCopier()
	p.startLimit()
	p.last.Store(time.Now().UnixNano())
	return p, nil
}

// newCopier returns the strategy for the current ends: the buffer's when
// the pump has one (and is not draining). splice(2) needs a
// pipe on one side. The other side must be a pipe or a file that never
// waits, or an fd we own (non-blocking): splice to or from an inherited
// blocking socket or terminal could block the pump where Stop cannot reach
// it.
func (p *Pump) newCopier() copier {
	if p.opts.buffer.Size > 0 && p.gone != goneDrained {
		return newBufferCopier(p)
	}
	spliceable := func(e end) bool { return e.kind != kindPolled || e.Own }
	if (p.src.kind == kindPipe || p.dst.kind == kindPipe) && spliceable(p.src) && spliceable(p.dst) {
		return newSpliceCopier(p)
	}
	return newRWCopier(p)
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

// SrcQueued returns the bytes queued in the source pipe (what the producer
// wrote and the pump has not moved yet), or -1 when the source is not a
// pipe or the pump has finished. Safe from any goroutine.
func (p *Pump) SrcQueued() int { return p.queued(&p.src) }

// DstQueued returns the bytes queued in the destination pipe (moved by the
// pump, not yet read by the consumer), or -1 when the destination is not a
// pipe or the pump has finished. Safe from any goroutine.
func (p *Pump) DstQueued() int { return p.queued(&p.dst) }

func (p *Pump) queued(e *end) int {
	p.fdMu.RLock()
	defer p.fdMu.RUnlock()
	if p.fdsClosed || e.kind != kindPipe {
		return -1
	}
	return Queued(e.FD)
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

// Run copies until EOF, a consumer gone, an error or Stop, then closes the
// owned ends and returns. Call it once, in its own goroutine: it holds that
// goroutine's thread, as SCHED_BATCH, until it returns (see batchThread);
// a pump with a buffer keeps the thread's policy.
func (p *Pump) Run() Result {
	defer close(p.done)
	// A buffered pump does real copying, and a consumer waiting for it to
	// refill its pipe must not wait for the end of another task's time
	// slice: it keeps the default policy (docs/internals/pump.md).
	restore := func() {}
	if p.opts.buffer.Size == 0 {
		restore = batchThread()
	}
	res := p.loop()
	restore()
	res.Bytes = p.bytes.Load()
	res.BufferPeak = p.bufPeak.Load()
	if p.gone == goneDrained {
		res.Drained, res.Unread = res.Bytes-p.drainFrom, p.drainLost
		// Not delivered to the consumer: what the pump held and what it
		// left in the consumer's pipe, as for a consumer gone.
		res.Undelivered += p.drainHeld + p.drainLost
	}
	p.state.Store(int32(Finished))
	if res.EOF && p.opts.keepWitness {
		p.openWitness()
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

// loop runs the copier until the pump is done, and decides what each of
// its endings means: the source's end goes through atEOF, a consumer gone
// is EOF, a hold or the end, and a pair of files that does not splice is
// copied with read/write instead.
func (p *Pump) loop() Result {
	for {
		how, err := p.copier.copy()
		switch how {
		case sourceEnded:
			return p.atEOF()
		case stopRequested:
			return Result{Err: ErrStopped, Undelivered: p.undelivered(), Unread: p.dstQueued()}
		case consumerGone:
			if p.srcDrained() {
				// splice looks for a reader on the destination before it
				// looks for the source's end: a producer that ended, with
				// nothing more written, after its consumer had gone also
				// gets here. Nothing was refused, so this is EOF; calling
				// it a consumer gone would make that producer's own
				// failure look like a consequence. Bytes it delivered may
				// still sit in the pipe of the consumer that went, though
				// (see AwaitRead).
				return p.atEOF()
			}
			if p.gone == goneHolds && p.awaitDrain() {
				if err := p.discardFromNow(); err != nil {
					return Result{Err: err}
				}
				continue
			}
			return Result{ConsumerGone: true, Undelivered: p.undelivered(), Unread: p.dstQueued(), Err: ErrConsumerGone}
		case spliceRefused:
			// This pair of files does not splice (a tty, an odd device):
			// copy with read/write. Nothing has moved yet, so nothing can
			// be lost or repeated by switching.
			if err := p.copier.close(); err != nil {
				return Result{Err: err}
			}
			p.copier = newRWCopier(p)
		default:
			return Result{Err: err}
		}
	}
}

// progress counts n bytes delivered and returns the nanoseconds since the
// previous progress (or since New).
func (p *Pump) progress(n int) (elapsed int64) {
	p.bytes.Add(int64(n))
	now := time.Now().UnixNano()
	prev := p.last.Swap(now)
	p.state.Store(int32(Moving))
	return now - prev
}

// touch notes that bytes moved from the source (into a buffer): progress,
// though nothing was delivered yet.
func (p *Pump) touch() {
	p.last.Store(time.Now().UnixNano())
	p.state.Store(int32(Moving))
}

// copyError is a transfer's error as Result.Err says it.
func (p *Pump) copyError(err error) error {
	return fmt.Errorf("copying %s to %s: %w", p.src.Name, p.dst.Name, err)
}
