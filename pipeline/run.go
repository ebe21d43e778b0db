package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pipespool/pipespool/filter"
	"github.com/pipespool/pipespool/proc"
	"github.com/pipespool/pipespool/pump"
	"github.com/pipespool/pipespool/stage"
)

// running is the state of one run.
type running struct {
	job   *Job
	opts  Options
	log   *slog.Logger
	grace time.Duration
	// deadline is when the job's timeout ends the run (zero: none); it
	// counts from the start, the wait for a FIFO's peer included.
	deadline time.Time
	src      *source
	dst      *sink
	stages   []stage.Stage
	links    []link // len(stages)+1

	// programs are the external stages' programs as resolved ("" for a
	// built-in).
	programs []string
	// pipeSize is what each pipe asks for (see pipeSizeFor); pipesMade
	// counts the pipes wire made.
	pipeSize, pipesMade int
	// treePipes, on a line of a tree, is how many pipes the whole tree
	// may make: the user's budget of pipe buffers is shared by them all
	// (0: the line's own count).
	treePipes int

	procs runProcs // the run's processes beyond its stages (descendants.go)
	// scope, when not nil, is the scope the stages start in, shared by
	// the lines of a tree (its coordinator closes it); nil: the run's own.
	scope *proc.Scope
	// tree is set on a line of a tree: how it meets the other lines
	// (fanout.go); nil for a run that is a line.
	tree *lineHooks

	pumpsWG sync.WaitGroup
	// failedC is closed when the run is stopped (see stopRun).
	failedC chan struct{}

	mu       sync.Mutex // guards the fields below
	outcomes []*outcome
	stop     *stopCause // the first reason the run was stopped, nil while none
	stopAt   time.Time  // when stop was set
	// ownAt is when the first own failure that waits for another line
	// of a tree happened (see noteOwn), zero while none; ownStage is its
	// stage (len(stages): the output).
	ownAt    time.Time
	ownStage int
}

// noteOwn records the own failure of stage i (len(stages): the output) of
// a line of a tree, which waits for the judgement of the line feeding it
// (every stage upstream in its own line has been judged), if it is the
// first: dated by when the stage ended (its judgement may come a grace
// period later, once what it left in its group is gone), else now. Another
// reason may stop the run during that wait: see ownFirst.
func (r *running) noteOwn(i int) {
	now := time.Now()
	at := now
	if i < len(r.stages) {
		// It waits for another line only from when every stage before it
		// in its line had ended too; a failure of a process its main
		// process left behind happened by now, not when the main exited.
		var latest time.Time
		for j := 0; j <= i; j++ {
			if e := r.outcomes[j].res.Ended; e.After(latest) {
				latest = e
			}
		}
		if p, ok := r.stages[i].(*stage.Process); ok && !r.outcomes[i].res.Failed() && len(p.LeftFailures()) > 0 {
			latest = now
		}
		if !latest.IsZero() && latest.Before(at) {
			at = latest
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ownAt.IsZero() || at.Before(r.ownAt) {
		r.ownAt, r.ownStage = at, i
	}
}

// ownFirst returns the run's first own failure when it came before the
// reason the run was stopped for (a timeout, a signal, a stalled stage
// killed, another line of a tree): that reason then came while the
// failure waited (see run), and the failure is what stopped the run. ok is
// false otherwise.
func (r *running) ownFirst() (c stopCause, at time.Time, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ownAt.IsZero() || r.stop == nil || r.stop.Own || r.ownAt.After(r.stopAt) {
		return stopCause{}, time.Time{}, false
	}
	return stopCause{Own: true, Stage: r.ownStage}, r.ownAt, true
}

// outcome is what Run learned about a stage once it was over.
type outcome struct {
	res          stage.Result
	started      bool
	partial      bool  // exited 0 without reading all its input
	unread       int64 // bytes it left unread, when known
	unreadAll    bool  // unread is all that was left of its input
	consumerGone bool  // its output pump found the consumer gone
	// outputCut: its consumer ended before its output reached EOF (the
	// pump got EPIPE, or was stopped when the consumer was over).
	outputCut bool
	inputEOF  bool // its input pump delivered everything up to EOF
	bytesIn   int64
	bytesOut  int64
	leftovers int   // processes left in its group at the end
	startErr  error // why it could not start; nil when it started
	// drained: it failed on its own while a verifying stage upstream ran,
	// and its input link was drained (drain.go). Written under
	// running.mu (drainProgress reads it).
	drained bool
	// Written by the monitor under running.mu:
	stalls    int
	nudges    int
	diagnoses []string
	note      string
}

// Run runs job and returns its report. The error is nil on success, or a
// *RunError, *proc.InterruptedError, *InputError or *JobError. Every stage is
// stopped and reaped before Run returns, whatever the path. A job that fans
// out is run as a tree of lines (fanout.go).
func Run(ctx context.Context, job *Job, opts Options) (*Report, error) {
	if job.FansOut() {
		return runTree(ctx, job, opts)
	}
	if last := &job.Stages[len(job.Stages)-1]; opts.OutputPath != "" && last.Output != "" {
		return nil, &HopFlagError{Msg: fmt.Sprintf("-o %s: stage %q ends the job in an output of its own (output = %q), so there is no [output] to replace", opts.OutputPath, last.Name, last.Output)}
	}
	if err := checkWrittenFiles(job, opts); err != nil {
		return nil, err
	}
	r := newRunning(job, opts)
	start := time.Now()
	if job.Timeout > 0 {
		r.deadline = start.Add(job.Timeout)
	}
	if err := r.build(ctx); err != nil {
		r.closeAll()
		return nil, err
	}
	r.run(ctx)
	r.endProcesses()
	r.yieldToSignal(ctx)
	return r.finish(start)
}

// newRunning prepares the run of job (a line): nothing is opened yet.
func newRunning(job *Job, opts Options) *running {
	r := &running{job: job, opts: opts, log: opts.Logger, grace: opts.Grace, failedC: make(chan struct{})}
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
	return r
}

// build resolves programs, opens the input and the output, creates every
// stage and link. Nothing is started yet; on error everything is closed.
func (r *running) build(ctx context.Context) error {
	job := r.job
	n := len(job.Stages)
	r.procs.start(job, r.scope)
	specs := make([]stage.ProcessSpec, n)
	// Validate every stage before opening anything: a missing binary or
	// dir is a job error found before any output file appears.
	resolved, err := validateStages(job)
	if err != nil {
		return err
	}
	if err := checkHops(job, r.opts); err != nil {
		return err
	}
	r.programs = make([]string, n)
	for i := range job.Stages {
		s := &job.Stages[i]
		if s.Builtin != "" {
			continue
		}
		argv := resolved[i].argv
		if i == n-1 && len(r.opts.ExtraArgs) > 0 {
			if s.Shell != "" {
				// sh -c SCRIPT NAME ARGS...: the params are $1, $2, ...
				argv = append(argv, "sh")
			}
			argv = append(argv, r.opts.ExtraArgs...)
		}
		r.programs[i] = resolved[i].path
		specs[i] = stage.ProcessSpec{Name: s.Name, Path: resolved[i].path, Argv: argv, Dir: s.Dir,
			Env:    proc.MergeEnv(os.Environ(), r.opts.Env, envList(s.Env)),
			Stderr: s.Stderr, StderrTo: r.opts.StderrTo, Logger: r.log, Scope: r.procs.scope}
	}
	if len(r.opts.ExtraArgs) > 0 && job.Stages[n-1].Builtin != "" {
		return &JobError{File: job.File, Key: stageKey(n, ""), Msg: "job parameters (--allow-job-params) need an external last stage, not a built-in"}
	}

	inPath := job.Input
	if r.opts.InputPath != "" {
		inPath = r.opts.InputPath
	} else if inPath != "-" && inPath != "none" && !strings.HasPrefix(inPath, "/") {
		inPath = job.Dir + "/" + inPath
	}

	o := &opener{ctx: ctx, deadline: r.deadline, timeout: fmt.Sprintf("timeout %s in %s", job.Timeout, job.File), log: r.log}
	// A line of a tree may come with its input or output made already:
	// a pipe from or into a fan-out (fanout.go).
	if r.src == nil {
		if r.src, err = openSource(o, inPath, r.opts.Input, r.opts.Stdin); err != nil {
			return err
		}
	}
	outPath := job.Output
	if r.opts.OutputPath != "" {
		outPath = r.opts.OutputPath
	} else if outPath != "-" && outPath != "none" && !strings.HasPrefix(outPath, "/") {
		outPath = job.Dir + "/" + outPath
	}
	if r.dst == nil {
		if r.dst, err = openSink(o, outPath, job.OutputMode, job.OutputModeSet, r.opts.Stdout); err != nil {
			return err
		}
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

// closeAll releases what build opened when Run ends early.
func (r *running) closeAll() {
	r.endProcesses()
	if r.src != nil {
		r.src.close()
	}
	if r.dst != nil {
		r.dst.discard()
	}
}

// stageFacts gathers what the decision needs to know about stage i, once
// it is over.
func (r *running) stageFacts(i int) stageFacts {
	o := r.outcomes[i]
	res := o.res
	f := stageFacts{Name: r.stages[i].Name(), Attempted: o.started,
		Failed: res.Failed(), Status: res.Status(), BrokenPipe: res.BrokenPipe,
		ConsumerGone: o.consumerGone, Stopped: res.Stopped, OutputCut: o.outputCut,
		Partial: o.partial, Unread: o.unread, UnreadAll: o.unreadAll, InputEOF: o.inputEOF,
		AllowPartialRead: r.job.Stages[i].AllowPartialRead}
	if o.startErr != nil {
		f.StartErr = o.startErr.Error()
	}
	// A process the stage's main process left running in its group (a
	// shell stage's `cmd &`) carries on the stage's work: if it failed on
	// its own, so did the stage, whatever the main process's status.
	if p, ok := r.stages[i].(*stage.Process); ok && !f.Failed && !f.Stopped {
		if left := p.LeftFailures(); len(left) > 0 {
			f.Failed = true
			f.Status = fmt.Sprintf("%v, left running by its main process (which exited 0)", left[0])
		}
	}
	return f
}

// facts gathers everything the decision looks at, once every stage is over.
func (r *running) facts() runFacts {
	rf := runFacts{Stages: make([]stageFacts, len(r.stages))}
	for i := range r.stages {
		rf.Stages[i] = r.stageFacts(i)
	}
	r.mu.Lock()
	rf.Stop = r.stop
	r.mu.Unlock()
	rf.Sink = r.sinkFacts()
	return rf
}

// sinkFacts gathers what the decision needs to know about the output, once
// every pump has finished.
func (r *running) sinkFacts() sinkFacts {
	sf := sinkFacts{Name: r.dst.name()}
	switch l := r.links[len(r.stages)]; {
	case l.pump != nil:
		pr := l.pump.Result()
		sf.Bytes = pr.Bytes - pr.Unread // what its reader took
		sf.Gone = pr.ConsumerGone
		if pr.Err != nil && !pr.ConsumerGone && !errors.Is(pr.Err, pump.ErrStopped) {
			sf.Err = pr.Err
		}
	case l.direct != nil:
		var pr proc.Reader
		if off := sharedOffset(&pr, l.direct); off >= 0 {
			sf.Bytes = off - l.start
		}
		sf.Full = fileSystemFull(l.direct)
	}
	return sf
}

// finish decides the run, commits or discards the output, and builds the
// report and the error.
func (r *running) finish(start time.Time) (*Report, error) {
	rf := r.settle()
	v := decideRun(rf)
	if v.Result == ResultSuccess && r.opts.BeforeCommit != nil {
		if rf.CheckErr = r.opts.BeforeCommit(); rf.CheckErr != nil {
			v = decideRun(rf)
		}
	}
	if v.Result == ResultSuccess {
		if rf.Sink.CommitErr = r.dst.commit(); rf.Sink.CommitErr != nil {
			v = decideRun(rf)
		} else if rf.Sidecar = r.commitSidecars(); rf.Sidecar != nil {
			v = decideRun(rf)
		}
	} else {
		r.dst.discard()
	}
	r.dst.sweepTemps(r.log)
	if v.Result != ResultSuccess {
		r.discardSidecars()
	}
	rep := &Report{Job: r.job.Name, JobFile: r.job.File, Start: start, End: time.Now(), Result: v.Result,
		Message: v.Msg, Input: r.src.desc, Output: r.dst.desc}
	rep.Duration = rep.End.Sub(start).Seconds()
	switch {
	case v.Root == len(r.stages):
		rep.RootCause = OutputRootCause
	case v.Root >= 0:
		rep.RootCause = r.stages[v.Root].Name()
	}
	rep.Stages = r.stageReports(v)
	switch v.Result {
	case ResultSuccess:
		return rep, nil
	case ResultInterrupted:
		return rep, &proc.InterruptedError{Signal: v.Signal}
	}
	return rep, &RunError{Msg: v.Msg, Report: rep}
}

// settle closes the input once every stage is over and every pump has
// finished, and gathers the facts the decision looks at.
func (r *running) settle() runFacts {
	r.src.close()
	r.settleDrained()
	return r.facts()
}

// stageReports are the stages' entries in the report, with their status
// as v decided it.
func (r *running) stageReports(v verdict) []StageReport {
	var reps []StageReport
	for i := range r.stages {
		reps = append(reps, r.stageReport(i, v.Stages[i]))
	}
	return reps
}

// stageReport is stage i's entry in the report, with the status decided.
func (r *running) stageReport(i int, sv stageVerdict) StageReport {
	st := r.stages[i]
	o := r.outcomes[i]
	res := o.res
	sr := StageReport{Name: st.Name(), Kind: string(st.Kind()), Argv: st.Argv(), Pid: st.Pid(),
		BytesIn: o.bytesIn, BytesOut: o.bytesOut, StderrTail: string(res.StderrTail),
		Status: sv.Status, Note: sv.Note, RateLimit: HopRateLimit(r.job, r.opts, i)}
	if p := r.links[i].pump; p != nil && p.BufferSize() > 0 {
		peak := p.BufferPeak()
		sr.Buffer, sr.BufferPeak = p.BufferSize(), &peak
	}
	started := o.started && o.startErr == nil && !res.Started.IsZero()
	if started {
		sr.Duration = res.Ended.Sub(res.Started).Seconds()
	}
	switch {
	case o.startErr != nil:
		sr.Error = o.startErr.Error()
	case res.Err != nil:
		sr.Error = res.Err.Error()
	}
	if res.Signal != 0 {
		sr.Signal = stage.SignalName(res.Signal)
	} else if started {
		// A stage that never started has no exit status: absent.
		code := res.ExitCode
		sr.ExitCode = &code
	}
	r.mu.Lock()
	sr.Stalls, sr.Nudges = o.stalls, o.nudges
	sr.Diagnoses = append([]string(nil), o.diagnoses...)
	monitorNote := o.note
	r.mu.Unlock()
	if i == len(r.stages)-1 && r.dst.desc == "none" && st.Kind() == stage.KindCommand {
		// The fast discard: the stage writes /dev/null itself, and
		// nothing sees its bytes.
		sr.Note = strings.TrimPrefix(sr.Note+"; output none: its bytes_out are not counted (-o /dev/null counts them)", "; ")
	}
	if o.leftovers > 0 {
		sr.Note = strings.TrimPrefix(sr.Note+fmt.Sprintf("; %d leftover process(es) in its group were stopped", o.leftovers), "; ")
	}
	if monitorNote != "" { // "recovered after nudge"
		sr.Note = strings.TrimPrefix(sr.Note+"; "+monitorNote, "; ")
	}
	return sr
}
