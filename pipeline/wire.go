package pipeline

import (
	"fmt"
	"io"
	"math"
	"os"

	"golang.org/x/sys/unix"

	"github.com/pipespool/pipespool/pump"
	"github.com/pipespool/pipespool/stage"
	"github.com/pipespool/pipespool/units"
)

// link is the connection into stage k (k = len(stages) for the output): a
// pump (or a fan-out's branch), or a file handed over directly.
type link struct {
	pump   hop      // nil when direct
	direct *os.File // our copy of a directly handed file, for its offset
	start  int64    // its offset when handed over
}

// hop is what moves a link's bytes: a pump.Pump, which the line runs, or a
// fan-out's side, which the fan-out runs: the branch that writes straight
// into a branch's first stage (teeHop), or the source that the last stage
// of a line that forks writes straight into (teeSourceHop).
type hop interface {
	pump.Hop
	BufferSize() int64
	BufferPeak() int64
	Drain()
}

// teeHop is a fan-out's branch as the input link of a branch's first
// stage: no buffer (a buffered first hop is a pump after the fan-out).
type teeHop struct{ *pump.TeeBranch }

func (teeHop) BufferSize() int64 { return 0 }
func (teeHop) BufferPeak() int64 { return 0 }

// Drain drops the branch: no stage of a branch's line is upstream of its
// first, so its input is never drained for a verifier (drain.go).
func (h teeHop) Drain() { h.Stop() }

// teeSourceHop is a fan-out's source as the output link of the last stage
// of a line that forks: the stage writes the fan-out's pipe itself.
type teeSourceHop struct{ *pump.TeeSource }

func (teeSourceHop) BufferSize() int64 { return 0 }
func (teeSourceHop) BufferPeak() int64 { return 0 }

// ends are the files handed to the stages, prepared by wire.
type ends struct{ stdin, stdout []*os.File }

// ownedFD is a descriptor pipespool created and must close exactly once:
// either Close (idempotent) closes it, or Release hands it to a new owner
// (a pump, an *os.File for a stage), after which Close does nothing.
type ownedFD struct{ fd int } // -1 once closed or released

func newOwnedFD(fd int) *ownedFD { return &ownedFD{fd: fd} }

// Close closes the descriptor unless it was closed or released already.
func (o *ownedFD) Close() error {
	if o.fd < 0 {
		return nil
	}
	fd := o.fd
	o.fd = -1
	return unix.Close(fd)
}

// Release gives up ownership and returns the descriptor.
func (o *ownedFD) Release() int {
	fd := o.fd
	o.fd = -1
	return fd
}

// File hands the descriptor to a new *os.File named name.
func (o *ownedFD) File(name string) *os.File { return os.NewFile(uintptr(o.Release()), name) }

// closers is what wire has created and not yet handed over, closed in one
// place when wiring fails (as os/exec closes its child's files).
type closers []io.Closer

func (c *closers) add(x io.Closer) { *c = append(*c, x) }

func (c closers) closeAll() {
	for i := len(c) - 1; i >= 0; i-- {
		c[i].Close()
	}
}

// pumpCloser closes a pump that never ran: stopped first, Run returns at
// once and closes the ends it owns.
type pumpCloser struct{ p *pump.Pump }

func (c pumpCloser) Close() error {
	c.p.Stop()
	c.p.Run()
	return nil
}

// newPipe creates a pipe of the run's size, both ends owned by open.
func (r *running) newPipe(open *closers) (rd, wr *ownedFD, err error) {
	p, _, err := pump.NewPipe(r.pipeSize)
	if err != nil {
		return nil, nil, err
	}
	r.pipesMade++
	rd, wr = newOwnedFD(p.R), newOwnedFD(p.W)
	open.add(rd)
	open.add(wr)
	return rd, wr, nil
}

// childEnd hands the end of a pipe that stage i will use to an *os.File
// (which open then owns): blocking for a process (programs expect it),
// non-blocking for a built-in (Go's poller then parks its goroutine, and
// Stop can interrupt it).
func (r *running) childEnd(fd *ownedFD, i int, name string, open *closers) (*os.File, error) {
	if r.stages[i].Kind() == stage.KindBuiltin {
		if err := pump.SetNonblock(fd.fd); err != nil {
			return nil, err
		}
	}
	f := fd.File(name)
	open.add(f)
	return f, nil
}

// wire creates the links: for each boundary k a direct file or a pump with
// its pipes. It returns what each stage gets as stdin and stdout. On error
// everything it created is closed.
func (r *running) wire() (e ends, err error) {
	var open closers
	defer func() {
		if err != nil {
			open.closeAll()
			e = ends{}
		}
	}()
	n := len(r.stages)
	pipes := r.pipesNeeded()
	size, why := pipeSizeFor(r.job.PipeSize, max(pipes, r.treePipes))
	r.pipeSize = size
	r.log.Debug(fmt.Sprintf("pipes: %d of %s each (%s)", pipes, units.FormatSize(int64(size)), why))
	e = ends{stdin: make([]*os.File, n), stdout: make([]*os.File, n)}
	for k := 0; k <= n; k++ {
		if r.builtinsJoined(k) {
			// Two built-ins count their own bytes and never leak a pipe
			// end to a child: one pipe joins them, no pump. That saves a
			// splice per chunk and a pipe's worth of page moves where
			// both sides already burn CPU (decrypt then decompress).
			rd, wr, err := r.newPipe(&open)
			if err != nil {
				return e, err
			}
			if e.stdout[k-1], err = r.childEnd(wr, k-1, r.stages[k-1].Name()+" stdout", &open); err != nil {
				return e, err
			}
			if e.stdin[k], err = r.childEnd(rd, k, r.stages[k].Name()+" stdin", &open); err != nil {
				return e, err
			}
			continue
		}
		srcEnd, direct, err := r.producerSide(k, &e, &open)
		if err != nil || direct {
			if err != nil {
				return e, err
			}
			continue
		}
		dstEnd, err := r.consumerSide(k, &e, &open)
		if err != nil {
			return e, err
		}
		var popts []pump.Option
		if k < n {
			popts = append(popts, pump.KeepWitness())
		} else {
			// The output is a party of the run: bytes left in its pipe
			// when its reader goes have not reached it (a no-op when
			// the output is not a pipe).
			popts = append(popts, pump.AwaitRead())
		}
		if lim := HopRateLimit(r.job, r.opts, k); lim > 0 {
			popts = append(popts, pump.RateLimit(lim))
		}
		if b := HopBuffer(r.job, r.opts, k); b.Size > 0 {
			popts = append(popts, pump.Buffer(b))
		}
		if k > 0 && k < n && r.verifierUpstream(k) {
			// Stage k may fail while a verifying stage upstream runs:
			// its input link is then drained, not cut (drain.go).
			popts = append(popts, pump.HoldWhenConsumerGone())
		}
		pm, err := pump.New(srcEnd.pumpEnd(), dstEnd.pumpEnd(), popts...)
		if err != nil {
			return e, err
		}
		// The pump owns its ends from now on.
		srcEnd.release()
		dstEnd.release()
		open.add(pumpCloser{pm})
		r.links[k] = link{pump: pm}
	}
	return e, nil
}

// builtinsJoined reports whether boundary k joins two built-ins with one
// pipe and no pump: unless the hop is rate limited or buffered, which
// only a pump can do.
func (r *running) builtinsJoined(k int) bool {
	n := len(r.stages)
	return k > 0 && k < n && r.stages[k-1].Kind() == stage.KindBuiltin && r.stages[k].Kind() == stage.KindBuiltin &&
		!r.hopPumped(k)
}

// inputDirect reports whether the input is handed to the first stage as it
// is (a regular file): not when its hop is rate limited or buffered,
// which only a pump can do; the pump then reads the file.
func (r *running) inputDirect() bool {
	return r.src.direct && !r.hopPumped(0)
}

// hopPumped reports whether boundary k needs a pump whatever its ends are:
// it has a rate limit or a buffer.
func (r *running) hopPumped(k int) bool {
	return HopRateLimit(r.job, r.opts, k) > 0 || HopBuffer(r.job, r.opts, k).Size > 0
}

// HopBuffer is the buffer of boundary k (Size 0: none): that of the input
// hop of stage k+1 (1-based), whose size opts.Buffer sets for the first
// (its levels, in percent, still apply); the output hop (k =
// len(job.Stages)) has none. The levels are rounded up to whole bytes:
// 80% of a buffer is reached only when it holds at least that.
func HopBuffer(job *Job, opts Options, k int) pump.BufferSpec {
	if k >= len(job.Stages) {
		return pump.BufferSpec{}
	}
	s := &job.Stages[k]
	size := s.Buffer
	if k == 0 && opts.Buffer > 0 {
		size = opts.Buffer
	}
	if size == 0 {
		return pump.BufferSpec{}
	}
	resume := s.BufferResumeAt
	if resume <= 0 {
		resume = 100 // unset: a job file cannot say 0% (see validator.buffer)
	}
	level := func(pct float64) int64 { return min(int64(math.Ceil(float64(size)*pct/100)), size) }
	return pump.BufferSpec{Size: size, StartAt: level(s.BufferStartAt), ResumeBelow: max(level(resume), 1)}
}

// checkHops finds what opts make impossible on the job's hops: exec's
// --buffer and --rate-limit both apply to the run's input hop, which
// takes one or the other.
func checkHops(job *Job, opts Options) error {
	if len(job.Stages) == 0 {
		return nil
	}
	if b := opts.Buffer; b > 0 {
		least := max(int64(pump.MinBuffer), int64(job.PipeSize))
		if b < least || b > pump.MaxBuffer {
			return &HopFlagError{Msg: fmt.Sprintf("--buffer %s: use %s (one pipe of this job) to %s",
				units.FormatSize(b), units.FormatSize(least), units.FormatSize(pump.MaxBuffer))}
		}
	}
	if HopRateLimit(job, opts, 0) > 0 && HopBuffer(job, opts, 0).Size > 0 {
		what := "--buffer and --rate-limit"
		switch {
		case opts.Buffer == 0:
			what = "--rate-limit and the first stage's buffer"
		case opts.RateLimit == 0:
			what = "--buffer and the first stage's rate_limit"
		}
		return &HopFlagError{Msg: what + " both apply to the run's input hop, which takes a buffer or a rate limit, not both: put the one on the next stage's input, or add a cat stage"}
	}
	return nil
}

// HopRateLimit is the rate limit of boundary k in bytes per second (0:
// none): the input hop of stage k+1 (1-based), which opts.RateLimit
// sets for the first; the output hop (k = len(job.Stages)) has none.
func HopRateLimit(job *Job, opts Options, k int) int64 {
	switch {
	case k >= len(job.Stages):
		return 0
	case k == 0 && opts.RateLimit > 0:
		return opts.RateLimit
	}
	return job.Stages[k].RateLimit
}

// pipesNeeded counts the pipes wire creates, for their size: it follows
// wire's choices (keep the two in step; TestPipesNeededMatchesWire).
func (r *running) pipesNeeded() int {
	n, c := len(r.stages), 0
	for k := 0; k <= n; k++ {
		if r.builtinsJoined(k) {
			c++
			continue
		}
		switch {
		case k == 0 && (r.inputDirect() || r.src.fed != nil), k == n && (r.dst.direct || r.dst.fan != nil):
			// A file handed over, or a fan-out's pipe (made by the
			// tree's coordinator).
			continue
		case k > 0:
			c++ // stage k-1's stdout
		}
		if k < n {
			c++ // stage k's stdin
		}
	}
	return c
}

// linkEnd is one side of a pump being wired: an fd we own (a pipe end), or
// one we only borrow (pipespool's stdin or stdout, the input or output).
type linkEnd struct {
	owned *ownedFD // nil when borrowed
	fd    int
	name  string
}

func (l linkEnd) pumpEnd() pump.End { return pump.End{FD: l.fd, Own: l.owned != nil, Name: l.name} }

func (l linkEnd) release() {
	if l.owned != nil {
		l.owned.Release()
	}
}

// producerSide prepares what feeds boundary k: the input, or stage k-1's
// stdout. direct reports that the boundary needs no pump (a regular file
// handed over as it is).
func (r *running) producerSide(k int, e *ends, open *closers) (src linkEnd, direct bool, err error) {
	n := len(r.stages)
	switch {
	case k == 0 && r.inputDirect():
		f, err := dupFile(r.src.file)
		if err != nil {
			return src, false, err
		}
		open.add(f)
		e.stdin[0] = f
		r.links[0] = link{direct: r.src.file, start: r.src.start}
		return src, true, nil
	case k == 0 && r.src.fed != nil:
		// A branch's first stage reads the pipe its fan-out writes.
		f, err := r.childEnd(r.src.pipe, 0, r.stages[0].Name()+" stdin", open)
		if err != nil {
			return src, false, err
		}
		e.stdin[0] = f
		r.links[0] = link{pump: teeHop{r.src.fed}}
		return src, true, nil
	case k == 0 && r.src.pipe != nil:
		return linkEnd{owned: r.src.pipe, fd: r.src.pipe.fd, name: "input " + r.src.desc}, false, nil
	case k == 0:
		return linkEnd{fd: rawFD(r.src.file), name: "input " + r.src.desc}, false, nil
	case k == n && r.dst.fan != nil:
		// The last stage of a line that forks writes the pipe its
		// fan-out reads.
		f, err := r.childEnd(r.dst.pipe, n-1, r.stages[n-1].Name()+" stdout", open)
		if err != nil {
			return src, false, err
		}
		e.stdout[n-1] = f
		r.links[n] = link{pump: teeSourceHop{r.dst.fan.Source()}}
		return src, true, nil
	case k == n && r.dst.direct:
		f, err := dupFile(r.dst.file)
		if err != nil {
			return src, false, err
		}
		open.add(f)
		e.stdout[n-1] = f
		off, _ := r.dst.file.Seek(0, io.SeekCurrent)
		r.links[n] = link{direct: r.dst.file, start: off}
		return src, true, nil
	}
	rd, wr, err := r.newPipe(open)
	if err != nil {
		return src, false, err
	}
	if err := pump.SetNonblock(rd.fd); err != nil {
		return src, false, err
	}
	if e.stdout[k-1], err = r.childEnd(wr, k-1, r.stages[k-1].Name()+" stdout", open); err != nil {
		return src, false, err
	}
	return linkEnd{owned: rd, fd: rd.fd, name: "output of stage " + r.stages[k-1].Name()}, false, nil
}

// consumerSide prepares what boundary k delivers to: the output, or stage
// k's stdin.
func (r *running) consumerSide(k int, e *ends, open *closers) (linkEnd, error) {
	if k == len(r.stages) {
		if r.dst.pipe != nil {
			return linkEnd{owned: r.dst.pipe, fd: r.dst.pipe.fd, name: "output " + r.dst.desc}, nil
		}
		return linkEnd{fd: rawFD(r.dst.file), name: "output " + r.dst.desc}, nil
	}
	rd, wr, err := r.newPipe(open)
	if err != nil {
		return linkEnd{}, err
	}
	if err := pump.SetNonblock(wr.fd); err != nil {
		return linkEnd{}, err
	}
	if e.stdin[k], err = r.childEnd(rd, k, r.stages[k].Name()+" stdin", open); err != nil {
		return linkEnd{}, err
	}
	return linkEnd{owned: wr, fd: wr.fd, name: "input of stage " + r.stages[k].Name()}, nil
}

// HopFlagError is an exec --buffer or --rate-limit that the job's
// input hop cannot take: exit 2, as any usage error.
type HopFlagError struct{ Msg string }

func (e *HopFlagError) Error() string { return e.Msg }

// ExitCode is 2: invalid usage.
func (e *HopFlagError) ExitCode() int { return 2 }
