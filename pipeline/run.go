package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pipespool/pipespool/filter"
	"github.com/pipespool/pipespool/pump"
	"github.com/pipespool/pipespool/stage"
)

// SignalCause is the cancellation cause a caller gives Run's context when a
// signal (SIGINT, SIGTERM) should stop the run: Run then stops every stage
// and returns an *InterruptedError.
type SignalCause struct{ Signal syscall.Signal }

func (c *SignalCause) Error() string { return "received " + c.Signal.String() }

// link is the connection into stage k (k = len(stages) for the output): a
// pump, or a file handed over directly.
type link struct {
	pump   *pump.Pump // nil when direct
	direct *os.File   // our copy of a directly handed file, for its offset
	start  int64      // its offset when handed over
}

// running is the state of one run.
type running struct {
	job    *Job
	opts   Options
	log    *slog.Logger
	grace  time.Duration
	src    *source
	dst    *sink
	stages []stage.Stage
	links  []link // len(stages)+1

	pumpsWG sync.WaitGroup
	// failedC is closed when the run is decided failed (see decide).
	failedC chan struct{}

	mu       sync.Mutex // guards the fields below
	outcomes []*outcome
	failed   bool   // a stage failed on its own, or time ran out: stop all
	result   string // ResultFailed, ResultTimeout, ResultInterrupted once decided
	root     int    // index of the root-cause stage, -1 if none
	message  string
	signal   syscall.Signal
}

// outcome is what Run learned about a stage once it was over.
type outcome struct {
	res          stage.Result
	started      bool
	partial      bool  // exited 0 without reading all its input
	unread       int64 // bytes it left unread, when known
	consumerGone bool  // its output pump found the consumer gone
	// outputCut: its consumer ended before its output reached EOF (the
	// pump got EPIPE, or was stopped when the consumer was over).
	outputCut bool
	inputEOF  bool // its input pump delivered everything up to EOF
	bytesIn   int64
	bytesOut  int64
	leftovers int // processes left in its group at the end
	// Written by the monitor under running.mu:
	stalls    int
	nudges    int
	diagnoses []string
	status    string
	note      string
}

// Run runs job and returns its report. The error is nil on success, or a
// *RunError, *InterruptedError, *InputError or *JobError. Every stage is
// stopped and reaped before Run returns, whatever the path.
func Run(ctx context.Context, job *Job, opts Options) (*Report, error) {
	r := &running{job: job, opts: opts, root: -1, log: opts.Logger, grace: opts.Grace, failedC: make(chan struct{})}
	if r.log == nil {
		r.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if r.grace <= 0 {
		r.grace = DefaultGrace
	}
	if opts.Stdin == nil {
		r.opts.Stdin = os.Stdin
	}
	if opts.Stdout == nil {
		r.opts.Stdout = os.Stdout
	}
	start := time.Now()
	if err := r.build(); err != nil {
		r.closeAll()
		return nil, err
	}
	r.run(ctx)
	return r.finish(start)
}

// build resolves programs, opens the input and the output, creates every
// stage and link. Nothing is started yet; on error everything is closed.
func (r *running) build() error {
	job := r.job
	n := len(job.Stages)
	specs := make([]stage.ProcessSpec, n)
	// Resolve every program before opening anything: a missing binary is
	// a job error found before any output file appears.
	for i := range job.Stages {
		s := &job.Stages[i]
		if s.Builtin != "" {
			continue
		}
		path, argv, err := resolveProgram(job, s)
		if err != nil {
			return &JobError{File: job.File, Line: s.Line, Key: stageKey(s.Index, ""), Msg: fmt.Sprintf("stage %q: %v", s.Name, err)}
		}
		if i == n-1 && len(r.opts.ExtraArgs) > 0 {
			if s.Shell != "" {
				// sh -c SCRIPT NAME ARGS...: the params are $1, $2, ...
				argv = append(argv, "sh")
			}
			argv = append(argv, r.opts.ExtraArgs...)
		}
		specs[i] = stage.ProcessSpec{Name: s.Name, Path: path, Argv: argv, Dir: s.Dir,
			Env:    mergeEnv(os.Environ(), r.opts.Env, envList(s.Env)),
			Stderr: s.Stderr, StderrTo: r.opts.StderrTo, Logger: r.log}
	}
	if len(r.opts.ExtraArgs) > 0 && job.Stages[n-1].Builtin != "" {
		return &JobError{File: job.File, Key: stageKey(n, ""), Msg: "job parameters (--allow-job-params) need an external last stage, not a built-in"}
	}

	inPath := job.Input
	if r.opts.InputPath != "" {
		inPath = r.opts.InputPath
	} else if inPath != "-" && !strings.HasPrefix(inPath, "/") {
		inPath = job.Dir + "/" + inPath
	}
	var err error
	if r.src, err = openSource(inPath, r.opts.Input, r.opts.Stdin); err != nil {
		return err
	}
	outPath := job.Output
	if r.opts.OutputPath != "" {
		outPath = r.opts.OutputPath
	} else if outPath != "-" && outPath != "none" && !strings.HasPrefix(outPath, "/") {
		outPath = job.Dir + "/" + outPath
	}
	if r.dst, err = openSink(outPath, job.OutputMode, job.OutputModeSet, r.opts.Stdout); err != nil {
		return err
	}

	r.stages = make([]stage.Stage, n)
	for i := range job.Stages {
		s := &job.Stages[i]
		if s.Builtin != "" {
			if cw, ok := s.Filter.(filter.ConfigWarner); ok {
				for _, w := range cw.Warnings() {
					r.log.Warn(fmt.Sprintf("stage %q: %s", s.Name, w), "stage", s.Name)
				}
			}
			r.stages[i] = stage.NewBuiltin(s.Name, s.Builtin, s.Filter)
		} else {
			r.stages[i] = stage.NewProcess(specs[i])
		}
	}
	r.outcomes = make([]*outcome, n)
	for i := range r.outcomes {
		r.outcomes[i] = &outcome{}
	}
	r.links = make([]link, n+1)
	return nil
}

// ends are the files handed to the stages, prepared by wire.
type ends struct{ stdin, stdout []*os.File }

// wire creates the links: for each boundary k a direct file or a pump with
// its pipes. It returns what each stage gets as stdin and stdout.
func (r *running) wire() (ends, error) {
	n := len(r.stages)
	e := ends{stdin: make([]*os.File, n), stdout: make([]*os.File, n)}
	fail := func(err error) (ends, error) {
		for _, f := range append(e.stdin, e.stdout...) {
			if f != nil {
				f.Close()
			}
		}
		for _, l := range r.links {
			if l.pump != nil {
				// A pump closes its ends when Run returns; stopped
				// first, Run returns at once.
				l.pump.Stop()
				l.pump.Run()
			}
		}
		return ends{}, err
	}
	// childEnd wraps the end of a pipe a stage will use: blocking for a
	// process (programs expect it), non-blocking for a built-in (Go's
	// poller then parks its goroutine, and Stop can interrupt it).
	childEnd := func(fd int, i int, name string) (*os.File, error) {
		if r.stages[i].Kind() == stage.KindBuiltin {
			if err := pump.SetNonblock(fd); err != nil {
				unix.Close(fd)
				return nil, err
			}
		}
		return pump.File(fd, name), nil
	}
	for k := 0; k <= n; k++ {
		var srcEnd, dstEnd pump.End
		if k > 0 && k < n && r.stages[k-1].Kind() == stage.KindBuiltin && r.stages[k].Kind() == stage.KindBuiltin {
			// Two built-ins count their own bytes and never leak a pipe
			// end to a child: one pipe joins them, no pump. That saves a
			// splice per chunk and a pipe's worth of page moves where
			// both sides already burn CPU (decrypt then decompress).
			p, _, err := pump.NewPipe(r.job.PipeSize)
			if err != nil {
				return fail(err)
			}
			w, werr := childEnd(p.W, k-1, r.stages[k-1].Name()+" stdout")
			if werr != nil {
				unix.Close(p.R)
				return fail(werr)
			}
			e.stdout[k-1] = w
			rd, rerr := childEnd(p.R, k, r.stages[k].Name()+" stdin")
			if rerr != nil {
				return fail(rerr)
			}
			e.stdin[k] = rd
			continue
		}
		// The producer side of boundary k.
		if k == 0 {
			if r.src.regular {
				f, err := dupFile(r.src.file)
				if err != nil {
					return fail(err)
				}
				e.stdin[0] = f
				r.links[0] = link{direct: r.src.file, start: r.src.start}
				continue
			}
			srcEnd = pump.End{FD: rawFD(r.src.file), Name: "input " + r.src.desc}
		} else {
			if k == n && r.dst.direct {
				f, err := dupFile(r.dst.file)
				if err != nil {
					return fail(err)
				}
				e.stdout[n-1] = f
				off, _ := r.dst.file.Seek(0, io.SeekCurrent)
				r.links[n] = link{direct: r.dst.file, start: off}
				continue
			}
			p, _, err := pump.NewPipe(r.job.PipeSize)
			if err != nil {
				return fail(err)
			}
			if err := pump.SetNonblock(p.R); err != nil {
				unix.Close(p.R)
				unix.Close(p.W)
				return fail(err)
			}
			f, err := childEnd(p.W, k-1, r.stages[k-1].Name()+" stdout")
			if err != nil {
				unix.Close(p.R)
				return fail(err)
			}
			e.stdout[k-1] = f
			srcEnd = pump.End{FD: p.R, Own: true, Name: "output of stage " + r.stages[k-1].Name()}
		}
		// The consumer side.
		if k == n {
			dstEnd = pump.End{FD: rawFD(r.dst.file), Name: "output " + r.dst.desc}
		} else {
			p, _, err := pump.NewPipe(r.job.PipeSize)
			if err != nil {
				if srcEnd.Own {
					unix.Close(srcEnd.FD)
				}
				return fail(err)
			}
			if err := pump.SetNonblock(p.W); err != nil {
				unix.Close(p.R)
				unix.Close(p.W)
				return fail(err)
			}
			f, err := childEnd(p.R, k, r.stages[k].Name()+" stdin")
			if err != nil {
				unix.Close(p.W)
				return fail(err)
			}
			e.stdin[k] = f
			dstEnd = pump.End{FD: p.W, Own: true, Name: "input of stage " + r.stages[k].Name()}
		}
		var popts []pump.Option
		if k < n {
			popts = append(popts, pump.KeepWitness())
		}
		pm, err := pump.New(srcEnd, dstEnd, popts...)
		if err != nil {
			for _, x := range []pump.End{srcEnd, dstEnd} {
				if x.Own {
					unix.Close(x.FD)
				}
			}
			return fail(err)
		}
		r.links[k] = link{pump: pm}
	}
	return e, nil
}

// run starts everything, supervises, and returns when every stage is over
// and every pump has finished.
func (r *running) run(ctx context.Context) {
	e, err := r.wire()
	if err != nil {
		r.decide(-1, ResultFailed, fmt.Sprintf("setting up pipes: %v", err))
		for i := range r.outcomes {
			r.outcomes[i].status = "not-started"
		}
		return
	}
	// Pumps first: they only move bytes once stages produce them.
	for _, l := range r.links {
		if l.pump != nil {
			r.pumpsWG.Add(1)
			go func(p *pump.Pump) {
				defer r.pumpsWG.Done()
				p.Run()
			}(l.pump)
		}
	}
	events := make(chan int, len(r.stages))
	var stagesWG sync.WaitGroup
	for i, st := range r.stages {
		if err := st.Start(e.stdin[i], e.stdout[i]); err != nil {
			r.log.Debug("stage did not start", "stage", st.Name(), "err", err)
		}
		r.outcomes[i].started = true
		stagesWG.Add(1)
		go func(i int) {
			defer stagesWG.Done()
			r.watchStage(i)
			events <- i
		}(i)
	}

	// The monitor watches progress (stall detection, progress display)
	// until every stage is over.
	stopMonitor := make(chan struct{})
	monitorDone := make(chan struct{})
	go func() {
		defer close(monitorDone)
		r.monitor(stopMonitor)
	}()
	defer func() {
		close(stopMonitor)
		<-monitorDone
	}()

	var timeout <-chan time.Time
	if r.job.Timeout > 0 {
		t := time.NewTimer(r.job.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	ctxDone := ctx.Done()
	// An own failure waits until every stage upstream of it is judged (at
	// most pendingWait), and the most upstream own failure is the root
	// cause. A stage that exits 7 half-way makes the zstd or gpg after it
	// fail on a truncated stream, and whichever watchStage finished first
	// used to be blamed, most often the decoder
	// (TestRegressionTruncatingStageIsRootCauseNotItsDecoder). And a
	// decoder can fail on corrupt data before the stage that produced it
	// says why: zstd found its checksum wrong while openpgp-decrypt, still
	// running, was about to report the modified message (the MDC is checked
	// at the end), and zstd was blamed in about 1 run in 20. Upstream
	// stages are not stopped meanwhile: with their consumer gone they end
	// at their next write, as a consequence, or fail on their own first.
	judged := make([]bool, len(r.stages))
	var pending []int
	var pendingTimer <-chan time.Time
	for left := len(r.stages); left > 0; {
		select {
		case i := <-events:
			left--
			judged[i] = true
			if r.judge(i, judged) {
				pending = append(pending, i)
				if pendingTimer == nil {
					pendingTimer = time.After(pendingWait)
				}
			}
			pending = r.flushPending(pending, judged, false)
		case <-pendingTimer:
			pending = r.flushPending(pending, judged, true)
		case <-timeout:
			timeout = nil
			r.decide(-1, ResultTimeout, fmt.Sprintf("timed out after %s (timeout in %s)", r.job.Timeout, r.job.File))
		case <-ctxDone:
			ctxDone = nil
			var sc *SignalCause
			if errors.As(context.Cause(ctx), &sc) {
				r.mu.Lock()
				r.signal = sc.Signal
				r.mu.Unlock()
				r.decide(-1, ResultInterrupted, "interrupted by "+sc.Signal.String())
			} else {
				r.decide(-1, ResultFailed, fmt.Sprintf("cancelled: %v", context.Cause(ctx)))
			}
		}
	}
	r.flushPending(pending, judged, true)
	stagesWG.Wait()
	// Every stage is over. Pumps still running feed nobody or read from an
	// input that will never end (an idle stdin): stop them.
	for _, l := range r.links {
		if l.pump != nil {
			if r.isFailed() {
				l.pump.Stop()
			}
		}
	}
	r.pumpsWG.Wait()
}

// isOver reports whether stage i has ended (false past the last stage).
func (r *running) isOver(i int) bool {
	if i >= len(r.stages) {
		return false
	}
	select {
	case <-r.stages[i].Done():
		return true
	default:
		return false
	}
}

func (r *running) isFailed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

// watchStage follows stage i to its end: the main process exits, its output
// link finishes, what is left of its process group is stopped, and its
// input link is settled. Then it records the outcome.
func (r *running) watchStage(i int) {
	st := r.stages[i]
	o := r.outcomes[i]
	<-st.Done()
	first := st.Wait()
	// The output link: when the stage succeeded, wait for it to drain (a
	// process the stage left behind may still be writing, as in a shell
	// pipeline); when it failed, give it a moment to say whether the
	// consumer had gone, which makes the failure a consequence.
	if out := r.links[i+1].pump; out != nil {
		// The last link delivers to the job's output, which nobody stops
		// downstream: once the run has failed (or this stage, which fails
		// it), what is left of it is discarded, and a destination that
		// stopped taking bytes (a full socket, a terminal on XOFF) must
		// not hold pipespool past its timeout or a SIGTERM.
		last := i+1 == len(r.stages)
		var failedC <-chan struct{}
		if last {
			failedC = r.failedC
		}
		if first.Failed() {
			select {
			case <-out.Done():
			case <-time.After(time.Second):
			}
		} else {
			select {
			case <-out.Done():
			case <-failedC:
			}
		}
		if last && (first.Failed() || r.isFailed()) {
			out.Stop()
		}
		select {
		case <-out.Done():
			// A pump stopped because its consumer was over (see "the
			// input link" below) closed this stage's stdout reader just
			// as an EPIPE would have: a shell stage then exits 141 (its
			// last command's SIGPIPE) rather than dying of the signal,
			// and was blamed as the root cause
			// (TestRegressionShellStageExit141AfterConsumerEnded). Only
			// when bytes were refused or the status says SIGPIPE: a
			// stage idle at the stop that then fails with nothing to
			// write failed on its own
			// (TestRegressionProducerFailingAfterConsumerClosedIsRootCause).
			pr := out.Result()
			o.outputCut = pr.ConsumerGone || errors.Is(pr.Err, pump.ErrStopped) && r.isOver(i+1)
			o.consumerGone = pr.ConsumerGone || o.outputCut &&
				(pr.Undelivered > 0 || first.ExitCode == 128+int(syscall.SIGPIPE))
		default:
		}
	}
	if p, ok := st.(*stage.Process); ok {
		o.leftovers = p.Cleanup(r.grace)
	}
	res := st.Wait()
	o.res = res
	// The input link: nobody reads it any more. A pump still running (its
	// producer idle, or still writing) has undelivered input: stop it,
	// which also makes the producer get EPIPE at its next write.
	in := r.links[i]
	switch {
	case in.pump != nil:
		in.pump.Stop()
		pr := in.pump.Result()
		// Bytes the stage never read: what the pump could not deliver
		// (ConsumerGone, or stopped here with input still queued) plus
		// what it delivered but the stage left in its pipe (the witness).
		left := pr.Undelivered
		w := in.pump.Leftover()
		in.pump.Release()
		if w > 0 {
			left += int64(w)
		}
		o.unread = left
		o.partial = left > 0
		o.inputEOF = pr.EOF
		o.bytesIn = pr.Bytes - pr.Unread - int64(max(w, 0))
	case in.direct != nil:
		if off, err := in.direct.Seek(0, io.SeekCurrent); err == nil {
			o.bytesIn = off - in.start
			if fi, err := in.direct.Stat(); err == nil && off < fi.Size() {
				o.partial = true
				o.unread = fi.Size() - off
			}
		}
	}
	if out := r.links[i+1]; out.pump != nil {
		// What the stage wrote: what the pump delivered, plus what it
		// left in its source pipe and buffer (Undelivered includes the
		// destination's queue, which Bytes already counts).
		pr := out.pump.Result()
		o.bytesOut = pr.Bytes + pr.Undelivered - pr.Unread
	} else if out.direct != nil {
		if off, err := out.direct.Seek(0, io.SeekCurrent); err == nil {
			o.bytesOut = off - out.start
		}
	}
	if st.Kind() == stage.KindBuiltin {
		// A built-in counts its own bytes, whatever its links are.
		o.bytesIn, o.bytesOut = st.Counters()
	}
}

// pendingWait bounds how long an own failure waits for the judgement of the
// stages upstream of it (see run): one that ended is about to be judged, one
// still running ends at its next write into the failed stage; one that does
// neither (it waits for its own input) is stopped when the wait is over.
const pendingWait = 2 * time.Second

// flushPending decides the pending own failures whose upstream stages have
// been judged (all of them when force), in pipeline order; decide keeps the
// first reason, so an upstream root cause decided meanwhile wins. It
// returns those still pending.
func (r *running) flushPending(pending []int, judged []bool, force bool) []int {
	slices.Sort(pending)
	var keep []int
	for _, i := range pending {
		if !force && upstreamUnjudged(i, judged) {
			keep = append(keep, i)
			continue
		}
		r.decide(i, ResultFailed, r.failureMessage(i))
	}
	return keep
}

// upstreamUnjudged reports whether a stage upstream of i has not been
// judged yet: it is still running, or its end is still being looked at.
func upstreamUnjudged(i int, judged []bool) bool {
	for j := range i {
		if !judged[j] {
			return true
		}
	}
	return false
}

// judge classifies stage i once it is over, and stops the run at the first
// failure of a stage's own. It returns true, deciding nothing, for an own
// failure that must wait for the judgement of an upstream stage (see run).
func (r *running) judge(i int, judged []bool) bool {
	o := r.outcomes[i]
	spec := &r.job.Stages[i]
	res := o.res
	own := false
	switch {
	case res.Err != nil && res.ExitCode == -1 && res.Signal == 0 && res.Started.IsZero():
		own = true // never started
	case res.Failed() && (res.BrokenPipe || o.consumerGone):
		// Its consumer went first: a consequence of that.
	case res.Failed() && res.Stopped:
		// pipespool stopped it.
	case res.Failed():
		own = true
	case o.partial && !spec.AllowPartialRead && !o.outputCut:
		// Not when its consumer ended first: then what it left unread
		// was not wanted anyway, and a process the stage left behind to
		// do the work (`cat <&3 &`) died of SIGPIPE after the main
		// process had exited 0 (TestRegressionBackgroundWorkerOfStoppedConsumer).
		own = true
	}
	if own && upstreamUnjudged(i, judged) {
		return true
	}
	if own {
		r.decide(i, ResultFailed, r.failureMessage(i))
	}
	return false
}

func (r *running) failureMessage(i int) string {
	o := r.outcomes[i]
	name := r.stages[i].Name()
	if !o.res.Failed() && o.partial {
		what := "input"
		if o.unread > 0 {
			what = fmt.Sprintf("input (%d bytes left unread)", o.unread)
		}
		return fmt.Sprintf("stage %q exited 0 without reading all its %s: set allow_partial_read = true if that is expected", name, what)
	}
	if o.res.Err != nil && o.res.Started.IsZero() {
		return fmt.Sprintf("stage %q did not start: %v", name, o.res.Err)
	}
	if o.res.Err != nil {
		return fmt.Sprintf("stage %q failed: %v", name, o.res.Err)
	}
	return fmt.Sprintf("stage %q failed: %s", name, o.res.Status())
}

// decide records the first reason the run failed and stops every stage
// that is still running. Later calls keep the first reason.
func (r *running) decide(root int, result, msg string) {
	r.mu.Lock()
	if r.failed {
		r.mu.Unlock()
		return
	}
	r.failed, r.root, r.result, r.message = true, root, result, msg
	r.mu.Unlock()
	close(r.failedC)
	for i, st := range r.stages {
		if i == root {
			continue
		}
		select {
		case <-st.Done():
		default:
			st.Stop(r.grace)
		}
	}
}

// closeAll releases what build opened when Run ends early.
func (r *running) closeAll() {
	if r.src != nil {
		r.src.close()
	}
	if r.dst != nil {
		r.dst.discard()
	}
}

// finish commits or discards the output, builds the report and the error.
func (r *running) finish(start time.Time) (*Report, error) {
	r.src.close()
	n := len(r.stages)
	r.blamePartialReaders()
	r.mu.Lock()
	failed, result, root, msg, sig := r.failed, r.result, r.root, r.message, r.signal
	r.mu.Unlock()
	if !failed && r.opts.BeforeCommit != nil {
		if err := r.opts.BeforeCommit(); err != nil {
			failed, result, msg = true, ResultFailed, fmt.Sprintf("input check after the last byte: %v", err)
		}
	}
	if !failed {
		if err := r.dst.commit(); err != nil {
			failed, result, msg = true, ResultFailed, err.Error()
		} else {
			result = ResultSuccess
		}
	} else {
		r.dst.discard()
	}
	rep := &Report{Job: r.job.Name, JobFile: r.job.File, Start: start, End: time.Now(), Result: result,
		Message: msg, Input: r.src.desc, Output: r.dst.desc}
	rep.Duration = rep.End.Sub(start).Seconds()
	if root >= 0 {
		rep.RootCause = r.stages[root].Name()
	}
	for i := 0; i < n; i++ {
		rep.Stages = append(rep.Stages, r.stageReport(i, root, failed))
	}
	if !failed {
		return rep, nil
	}
	if result == ResultInterrupted {
		return rep, &InterruptedError{Signal: sig, Report: rep}
	}
	return rep, &RunError{Msg: msg, Report: rep}
}

func (r *running) stageReport(i, root int, failed bool) StageReport {
	st := r.stages[i]
	o := r.outcomes[i]
	res := o.res
	sr := StageReport{Name: st.Name(), Kind: string(st.Kind()), Argv: st.Argv(), Pid: st.Pid(),
		BytesIn: o.bytesIn, BytesOut: o.bytesOut, StderrTail: string(res.StderrTail)}
	if !res.Started.IsZero() {
		sr.Duration = res.Ended.Sub(res.Started).Seconds()
	}
	if res.Err != nil {
		sr.Error = res.Err.Error()
	}
	if res.Signal != 0 {
		sr.Signal = stage.SignalName(res.Signal)
	} else if !res.Started.IsZero() {
		code := res.ExitCode
		sr.ExitCode = &code
	}
	r.mu.Lock()
	sr.Stalls, sr.Nudges = o.stalls, o.nudges
	sr.Diagnoses = append([]string(nil), o.diagnoses...)
	monitorNote := o.note
	r.mu.Unlock()
	spec := &r.job.Stages[i]
	switch {
	case !o.started || res.Started.IsZero() && res.Err != nil && i != root:
		sr.Status = "not-started"
	case i == root:
		sr.Status = "failed"
		if !res.Failed() && o.partial {
			sr.Status = "partial-read"
		}
	case res.Failed() && res.Stopped && !res.BrokenPipe:
		// Stopped by pipespool (SIGTERM/SIGKILL) before anything else
		// could end it: say so, even if its consumer had gone too.
		sr.Status = "stopped"
		sr.Note = "stopped by pipespool"
	case res.Failed() && (res.BrokenPipe || o.consumerGone):
		if r.consumerAllowedStop(i) {
			sr.Status = "ok"
			sr.Note = "stopped by its consumer, which may stop reading (allow_partial_read)"
		} else {
			sr.Status = "consequence"
			sr.Note = "its consumer had gone"
		}
	case res.Failed():
		sr.Status = "failed"
	case o.partial && o.outputCut && !spec.AllowPartialRead:
		sr.Status = "ok"
		sr.Note = "its consumer stopped reading first; input left unread"
	case o.partial && !spec.AllowPartialRead:
		sr.Status = "partial-read"
	default:
		sr.Status = "ok"
		if o.partial {
			sr.Note = fmt.Sprintf("stopped reading early (allow_partial_read); %d bytes unread", o.unread)
		}
	}
	if o.leftovers > 0 {
		sr.Note = strings.TrimPrefix(sr.Note+fmt.Sprintf("; %d leftover process(es) in its group were stopped", o.leftovers), "; ")
	}
	if monitorNote != "" { // "recovered after nudge"
		sr.Note = strings.TrimPrefix(sr.Note+"; "+monitorNote, "; ")
	}
	return sr
}

// blamePartialReaders runs when every stage is over. A producer that died of
// SIGPIPE (or whose consumer had gone) had more to give: the consumer that
// stopped reading exited without reading all its input, even if nothing
// was queued at the moment it exited. Unless it may (allow_partial_read),
// that consumer is a failure, and the root cause if there is none yet.
func (r *running) blamePartialReaders() {
	for i := range r.stages {
		o := r.outcomes[i]
		if !(o.res.Failed() && (o.res.BrokenPipe || o.consumerGone)) || o.res.Stopped {
			continue
		}
		j := r.stoppedReader(i)
		if j < 0 {
			continue
		}
		c := r.outcomes[j]
		c.partial = true
		if !r.job.Stages[j].AllowPartialRead {
			r.decide(j, ResultFailed, r.failureMessage(j))
		}
	}
}

// stoppedReader returns the stage downstream of i that stopped reading while
// it still succeeded, walking through stages that are themselves
// consequences; -1 if there is none.
func (r *running) stoppedReader(i int) int {
	for j := i + 1; j < len(r.stages); j++ {
		o := r.outcomes[j]
		if o.res.Failed() && (o.res.BrokenPipe || o.consumerGone) || !o.res.Failed() && o.outputCut {
			continue
		}
		if o.res.Failed() || o.inputEOF {
			return -1
		}
		return j
	}
	return -1
}

// consumerAllowedStop reports whether the stage after i stopped reading
// early with allow_partial_read, so that i's SIGPIPE is expected.
func (r *running) consumerAllowedStop(i int) bool {
	for j := i + 1; j < len(r.stages); j++ {
		o := r.outcomes[j]
		if o.partial && r.job.Stages[j].AllowPartialRead && !o.res.Failed() {
			return true
		}
		if !(o.res.Failed() && (o.res.BrokenPipe || o.consumerGone) || !o.res.Failed() && o.outputCut) {
			return false
		}
	}
	return false
}
