package pump

import (
	"errors"
	"fmt"
	"time"

	"github.com/pipespool/pipespool/poller"
	"golang.org/x/sys/unix"
)

// This file holds the memory buffer of a pump (Buffer): the pump keeps
// reading its source while the destination takes nothing, up to the
// buffer's size, and delivers what it holds when the destination takes
// bytes again.
//
// Memory: the buffer is a queue of chunks of bufChunk bytes, each its own
// anonymous mapping, mapped (populated at once) when the queue needs room.
// A chunk whose bytes have been delivered becomes a spare, reused before
// anything new is mapped; spares beyond bufSpare go back to the system
// once the buffer has needed no new chunk for bufRelease. So the memory of
// a buffer is at most its size plus one chunk, never its whole size up
// front, and a buffer that drained and stays drained gives it back (RSS
// drops) within bufRelease, not when the garbage collector gets to it.
//
// Why spares: a consumer that pauses again and again (a tape, an ssh
// window) fills and drains the buffer each time. Unmapping each drained
// chunk and mapping it again for the next fill cost a page fault per page
// and a TLB shootdown per chunk, every cycle: the pump's system time more
// than doubled and the stream took twice as long as with mbuffer, which
// keeps its memory.

// bufChunk is the unit in which a buffer's memory is mapped and returned:
// 1 MiB, a pipe's worth (one read fills at most one chunk), few enough
// mappings for a buffer of gigabytes, and little to keep when drained.
const bufChunk = 1 << 20

// bufSpare is how many empty chunks a buffer keeps mapped for good: a
// stream whose fill hovers at a chunk boundary then maps and unmaps
// nothing.
const bufSpare = 2

// bufRelease is how long spares beyond bufSpare are kept after the buffer
// last needed a chunk: long enough to span the pauses of a consumer that
// pauses again and again, short enough that a drained buffer gives its
// memory back soon.
const bufRelease = time.Second

// MinBuffer and MaxBuffer bound the size of a buffer. Below one pipe's
// default size a buffer adds less than a larger pipe_size would; above 64
// GiB the number is far more likely a typo than a machine's memory.
const (
	MinBuffer = DefaultPipeSize
	MaxBuffer = 64 << 30
)

// BufferSpec is a pump's memory buffer, in bytes.
type BufferSpec struct {
	// Size is the most the buffer holds; 0: no buffer.
	Size int64
	// StartAt: the pump delivers nothing until the buffer holds at least
	// this much (or the source has ended), at the start and again each
	// time the buffer has run empty (mbuffer -P). 0: deliver at once.
	StartAt int64
	// ResumeBelow: once the buffer is full, the pump reads its source
	// again only when the buffer holds less than this (mbuffer -p). Size
	// (or 0): read again as soon as there is room.
	ResumeBelow int64
}

// Check reports whether b is a buffer a pump can have: size within
// MinBuffer and MaxBuffer, StartAt within 0 and Size, ResumeBelow within
// 1 and Size (or 0 for Size).
func (b BufferSpec) Check() error {
	switch {
	case b.Size < MinBuffer || b.Size > MaxBuffer:
		return fmt.Errorf("buffer of %d bytes: the size must be %d to %d bytes", b.Size, int64(MinBuffer), int64(MaxBuffer))
	case b.StartAt < 0 || b.StartAt > b.Size:
		return fmt.Errorf("buffer start level %d bytes: must be 0 to the size, %d", b.StartAt, b.Size)
	case b.ResumeBelow < 0 || b.ResumeBelow > b.Size:
		return fmt.Errorf("buffer resume level %d bytes: must be 1 to the size, %d", b.ResumeBelow, b.Size)
	}
	return nil
}

// Buffer gives the pump a memory buffer of spec.Size bytes (see
// BufferSpec): while the destination takes nothing, the pump goes on
// reading its source until the buffer is full, so that the producer keeps
// running while its consumer pauses. The bytes are copied through memory
// with read(2) and write(2), never spliced. A pump with a buffer cannot
// have a rate limit. A drain (see Drain) discards what the buffer holds.
func Buffer(spec BufferSpec) Option {
	return func(p *Pump) {
		if spec.ResumeBelow == 0 {
			spec.ResumeBelow = spec.Size
		}
		p.opts.buffer = spec
	}
}

// BufferSize returns the size of the pump's buffer, 0 when it has none.
// Safe from any goroutine (it is fixed by New).
func (p *Pump) BufferSize() int64 { return p.opts.buffer.Size }

// Buffered returns the bytes the pump holds in its buffer now: read from
// the source, not yet delivered. Always 0 for a pump without a buffer.
// Safe from any goroutine.
func (p *Pump) Buffered() int64 { return p.bufFill.Load() }

// BufferPeak returns the most the buffer has held so far. Safe from any
// goroutine.
func (p *Pump) BufferPeak() int64 { return p.bufPeak.Load() }

// BufferMapped returns the memory the buffer has mapped now: what it
// holds, rounded up to chunks, and a few spare chunks. Safe from any
// goroutine.
func (p *Pump) BufferMapped() int64 { return p.bufMapped.Load() }

// chunk is one mapping of a buffer: b[r:w] holds bytes read and not yet
// delivered.
type chunk struct {
	b    []byte
	r, w int
}

// bufferCopier moves bytes with read(2) into its buffer and write(2) out
// of it, each side on its own: it reads whenever the buffer has room (and
// its resume level allows) and writes whenever it holds bytes (and its
// start level allows), and waits only when every side it wants returned
// EAGAIN, for those sides alone, one-shot and level-triggered. A full
// buffer stops it reading, so it does not poll the source; an empty one
// stops it writing, so it does not poll the destination: no spinning on a
// side it cannot serve.
type bufferCopier struct {
	p    *Pump
	spec BufferSpec

	chunks []*chunk // the queue: read into the last, written from the first
	spare  []*chunk // empty chunks kept for reuse (see bufRelease)
	fill   int64    // bytes held: the sum of w-r over chunks
	// lastNeed is when the queue last took a chunk (monotonic
	// nanoseconds since origin): spares beyond bufSpare go bufRelease
	// after it.
	lastNeed int64
	origin   time.Time

	srcEnded bool // the source said EOF: deliver the rest, read no more
	// readPaused: the buffer filled up, and reading waits until it holds
	// less than spec.ResumeBelow. writePaused: the buffer is empty (or
	// never filled), and writing waits until it holds spec.StartAt or the
	// source has ended.
	readPaused, writePaused bool

	out writer // how the destination is written without blocking
	// mustWait: the side returned EAGAIN (or polls first and was used
	// since epoll last reported it ready); it is tried again only after
	// epoll reports it. armed: registered one-shot and not yet reported.
	mustWait, armed [2]bool
	regs            registrations
}

func newBufferCopier(p *Pump) *bufferCopier {
	c := &bufferCopier{p: p, spec: p.opts.buffer, out: writer{alt: -1}, regs: registrations{poller: p.poller}, origin: time.Now()}
	c.writePaused = c.spec.StartAt > 0
	if p.dst.kind == kindPolled && p.dst.pollsFirst() {
		c.out = nonBlockingWriter(p.dst.FD)
	}
	for _, s := range []side{sideSrc, sideDst} {
		c.mustWait[s] = p.end(s).pollsFirst()
	}
	return c
}

func (c *bufferCopier) buffered() int64 { return c.fill }

// close returns every chunk to the system, with the registrations and
// what the writer opened. Bytes still held are dropped: the pump counted
// them as undelivered (or drained) before.
func (c *bufferCopier) close() error {
	var errs []error
	for _, ch := range append(c.chunks, c.spare...) {
		errs = append(errs, c.unmap(ch))
	}
	c.chunks, c.spare, c.fill = nil, nil, 0
	c.p.bufFill.Store(0)
	c.out.close()
	errs = append(errs, c.regs.removeAll())
	return errors.Join(errs...)
}

func (c *bufferCopier) wantRead() bool  { return !c.srcEnded && !c.readPaused && c.fill < c.spec.Size }
func (c *bufferCopier) wantWrite() bool { return c.fill > 0 && !c.writePaused }

func (c *bufferCopier) copy() (outcome, error) {
	p := c.p
	// Invariant: a wait follows an attempt on every side the buffer wants
	// (room to read into, bytes to write) that found it not ready, and is
	// for those sides alone, armed one-shot and level-triggered: a side
	// that became ready meanwhile is reported at once, and a side the
	// buffer does not want (full: the source; empty: the destination) is
	// not waited for, so it cannot wake the loop again and again.
	for {
		if p.stopping.Load() {
			return stopRequested, nil
		}
		moved := false
		if c.wantRead() && !c.mustWait[sideSrc] {
			n, err := c.read()
			switch {
			case n > 0:
				moved = true
			case err == nil:
				c.srcEnded, c.writePaused = true, false
				moved = true
			case err == unix.EAGAIN:
				c.mustWait[sideSrc] = true
			default:
				return copyFailed, p.copyError(err)
			}
		}
		if c.wantWrite() && !c.mustWait[sideDst] {
			n, err := c.write()
			switch {
			case n > 0:
				p.progress(n)
				moved = true
			case err == unix.EAGAIN:
				c.mustWait[sideDst] = true
			case err == unix.EPIPE:
				return consumerGone, nil
			default:
				return copyFailed, p.copyError(err)
			}
		}
		if c.srcEnded && c.fill == 0 {
			return sourceEnded, nil
		}
		if moved {
			continue
		}
		if err := c.wait(); err != nil {
			return copyFailed, err
		}
	}
}

// read reads from the source into the buffer's last chunk, at most to the
// buffer's size. It returns n > 0 for bytes read, 0 and nil at the
// source's end, or an error (EAGAIN: not ready).
func (c *bufferCopier) read() (int, error) {
	p := c.p
	ch, err := c.tail()
	if err != nil {
		return 0, err
	}
	want := int(min(int64(len(ch.b)-ch.w), c.spec.Size-c.fill))
	n, err := ignoringEINTRIO(unix.Read, p.src.FD, ch.b[ch.w:ch.w+want])
	if p.src.pollsFirst() {
		c.mustWait[sideSrc] = true // used: wait for the next report
	}
	if err != nil || n == 0 {
		return 0, err
	}
	ch.w += n
	c.fill += int64(n)
	if c.fill >= c.spec.Size {
		c.readPaused = true
	}
	if c.writePaused && c.fill >= c.spec.StartAt {
		c.writePaused = false
	}
	p.bufFill.Store(c.fill)
	if c.fill > p.bufPeak.Load() {
		p.bufPeak.Store(c.fill)
	}
	p.touch()
	return n, nil
}

// write writes from the buffer's first chunk to the destination. It
// returns n > 0 for bytes written, or an error (EAGAIN: no room).
func (c *bufferCopier) write() (int, error) {
	p := c.p
	ch := c.chunks[0]
	n, err := c.out.write(p.dst.FD, ch.b[ch.r:ch.w])
	if p.dst.pollsFirst() {
		c.mustWait[sideDst] = true
	}
	if err != nil {
		return 0, err
	}
	if n == 0 {
		// write(2) of a non-empty buffer returning 0 is not supposed to
		// happen; treat it as an I/O error rather than loop forever.
		return 0, fmt.Errorf("write to %s returned 0", p.dst.Name)
	}
	ch.r += n
	c.fill -= int64(n)
	if ch.r == ch.w {
		c.emptied(ch)
	}
	if c.readPaused && c.fill < c.spec.ResumeBelow {
		c.readPaused = false
	}
	if c.fill == 0 && c.spec.StartAt > 0 && !c.srcEnded {
		c.writePaused = true
	}
	p.bufFill.Store(c.fill)
	return n, nil
}

// tail returns the chunk to read into: the last one when it has room,
// else a spare or a new mapping appended to the queue.
func (c *bufferCopier) tail() (*chunk, error) {
	if k := len(c.chunks); k > 0 && c.chunks[k-1].w < len(c.chunks[k-1].b) {
		return c.chunks[k-1], nil
	}
	var ch *chunk
	if k := len(c.spare); k > 0 {
		ch, c.spare = c.spare[k-1], c.spare[:k-1]
	} else {
		size := int(min(int64(bufChunk), c.spec.Size))
		// Populated now: one call instead of a fault per page.
		b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
		if err != nil {
			return nil, fmt.Errorf("buffer of %s: mapping %d bytes: %w", c.p.src.Name, size, err)
		}
		c.p.bufMapped.Add(int64(size))
		ch = &chunk{b: b}
	}
	c.chunks = append(c.chunks, ch)
	c.lastNeed = c.now()
	return ch, nil
}

func (c *bufferCopier) now() int64 { return int64(time.Since(c.origin)) }

// releaseIn returns how long until the spares beyond bufSpare go back to
// the system, after returning those whose time has come: 0 when none
// is left to wait for.
func (c *bufferCopier) releaseIn() time.Duration {
	if len(c.spare) <= bufSpare {
		return 0
	}
	if left := time.Duration(c.lastNeed + int64(bufRelease) - c.now()); left > 0 {
		return left
	}
	for len(c.spare) > bufSpare {
		k := len(c.spare) - 1
		// An error leaves a mapping behind, which costs memory but no
		// byte of the stream; close reports the errors of the rest.
		_ = c.unmap(c.spare[k])
		c.spare[k] = nil
		c.spare = c.spare[:k]
	}
	return 0
}

// emptied handles ch, the first chunk, once all it held was written: the
// only chunk starts over from its beginning; any other leaves the queue
// for the spares, which go back to the system when their time has come
// (checked here too, for a stream that never waits).
func (c *bufferCopier) emptied(ch *chunk) {
	ch.r, ch.w = 0, 0
	if len(c.chunks) == 1 {
		return
	}
	c.chunks[0] = nil
	c.chunks = c.chunks[1:]
	c.spare = append(c.spare, ch)
	c.releaseIn()
}

func (c *bufferCopier) unmap(ch *chunk) error {
	n := len(ch.b)
	if err := unix.Munmap(ch.b); err != nil {
		return fmt.Errorf("buffer of %s: unmapping: %w", c.p.src.Name, err)
	}
	ch.b = nil
	c.p.bufMapped.Add(-int64(n))
	return nil
}

// wait arms, one-shot, each side the buffer wants and that must be waited
// for, and waits until one is reported or the pump is woken by Stop. A
// side armed for an earlier wait and not wanted now may still report
// once: the loop then finds nothing to do and waits again, without it.
func (c *bufferCopier) wait() error {
	p := c.p
	var want [2]bool
	want[sideSrc] = c.wantRead() && c.mustWait[sideSrc]
	want[sideDst] = c.wantWrite() && c.mustWait[sideDst]
	if !want[sideSrc] && !want[sideDst] {
		// Unreachable: a loop that moved nothing found every side it
		// wants not ready, and it always wants one (bytes held, or room
		// and no EOF, or the start level just lifted by an EOF).
		return fmt.Errorf("buffer of %s: nothing to wait for (fill %d, ended %v)", p.src.Name, c.fill, c.srcEnded)
	}
	if want[sideSrc] {
		p.state.Store(int32(WaitingSrc))
	} else {
		p.state.Store(int32(WaitingDst))
	}
	for _, s := range []side{sideSrc, sideDst} {
		if !want[s] || c.armed[s] {
			continue
		}
		e, ev := p.end(s), uint32(poller.In)
		if s == sideDst {
			ev = poller.Out
		}
		if c.regs.has(e.FD) {
			if err := p.poller.Modify(e.FD, ev|poller.OneShot); err != nil {
				return fmt.Errorf("waiting for %s: %w", e.Name, err)
			}
		} else if err := c.regs.add(e, ev|poller.OneShot); err != nil {
			return err
		}
		c.armed[s] = true
	}
	var events [2]unix.EpollEvent
	for {
		// Spares to return bound the wait: at their time it returns
		// them and the loop tries again (and then waits without bound).
		timeout := -1
		if left := c.releaseIn(); left > 0 {
			timeout = int((left + time.Millisecond - 1) / time.Millisecond)
		}
		n, woken, err := p.poller.Wait(events[:], timeout)
		if err != nil {
			return fmt.Errorf("waiting for %s or %s: %w", p.src.Name, p.dst.Name, err)
		}
		if n == 0 && !woken {
			c.releaseIn()
			continue
		}
		for _, ev := range events[:n] {
			// Any event counts: readiness, hang-up or error. The next
			// attempt turns it into bytes, EOF or EPIPE.
			for _, s := range []side{sideSrc, sideDst} {
				if int(ev.Fd) == p.end(s).FD {
					c.armed[s], c.mustWait[s] = false, false
				}
			}
		}
		if n > 0 || woken && p.stopping.Load() {
			return nil
		}
	}
}
