package pipeline

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pipespool/pipespool/proc"
	"github.com/pipespool/pipespool/stage"
)

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

	procs runProcs // the run's processes beyond its stages (descendants.go)

	pumpsWG sync.WaitGroup
	// failedC is closed when the run is stopped (see stopRun).
	failedC chan struct{}

	mu       sync.Mutex // guards the fields below
	outcomes []*outcome
	stop     *stopCause // the first reason the run was stopped, nil while none
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
	note      string
}

// Run runs job and returns its report. The error is nil on success, or a
// *RunError, *proc.InterruptedError, *InputError or *JobError. Every stage is
// stopped and reaped before Run returns, whatever the path.
func Run(ctx context.Context, job *Job, opts Options) (*Report, error) {
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
	start := time.Now()
	if err := r.build(); err != nil {
		r.closeAll()
		return nil, err
	}
	r.run(ctx)
	r.endProcesses()
	return r.finish(start)
}

// build resolves programs, opens the input and the output, creates every
// stage and link. Nothing is started yet; on error everything is closed.
func (r *running) build() error {
	job := r.job
	n := len(job.Stages)
	r.procs.start(job)
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
			Stderr: s.Stderr, StderrTo: r.opts.StderrTo, Logger: r.log, Scope: r.procs.scope}
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
			if cw, ok := s.Filter.(stage.ConfigWarner); ok {
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
		Partial: o.partial, Unread: o.unread, InputEOF: o.inputEOF,
		AllowPartialRead: r.job.Stages[i].AllowPartialRead}
	if res.Err != nil && res.ExitCode == -1 && res.Signal == 0 && res.Started.IsZero() {
		f.StartErr = res.Err.Error()
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
	return rf
}

// finish decides the run, commits or discards the output, and builds the
// report and the error.
func (r *running) finish(start time.Time) (*Report, error) {
	r.src.close()
	rf := r.facts()
	v := decideRun(rf)
	if v.Result == ResultSuccess && r.opts.BeforeCommit != nil {
		if rf.CheckErr = r.opts.BeforeCommit(); rf.CheckErr != nil {
			v = decideRun(rf)
		}
	}
	if v.Result == ResultSuccess {
		if rf.Sink.CommitErr = r.dst.commit(); rf.Sink.CommitErr != nil {
			v = decideRun(rf)
		}
	} else {
		r.dst.discard()
	}
	rep := &Report{Job: r.job.Name, JobFile: r.job.File, Start: start, End: time.Now(), Result: v.Result,
		Message: v.Msg, Input: r.src.desc, Output: r.dst.desc}
	rep.Duration = rep.End.Sub(start).Seconds()
	if v.Root >= 0 && v.Root < len(r.stages) {
		rep.RootCause = r.stages[v.Root].Name()
	}
	for i := range r.stages {
		rep.Stages = append(rep.Stages, r.stageReport(i, v.Stages[i]))
	}
	switch v.Result {
	case ResultSuccess:
		return rep, nil
	case ResultInterrupted:
		return rep, &proc.InterruptedError{Signal: v.Signal}
	}
	return rep, &RunError{Msg: v.Msg, Report: rep}
}

// stageReport is stage i's entry in the report, with the status decided.
func (r *running) stageReport(i int, sv stageVerdict) StageReport {
	st := r.stages[i]
	o := r.outcomes[i]
	res := o.res
	sr := StageReport{Name: st.Name(), Kind: string(st.Kind()), Argv: st.Argv(), Pid: st.Pid(),
		BytesIn: o.bytesIn, BytesOut: o.bytesOut, StderrTail: string(res.StderrTail),
		Status: sv.Status, Note: sv.Note}
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
	if o.leftovers > 0 {
		sr.Note = strings.TrimPrefix(sr.Note+fmt.Sprintf("; %d leftover process(es) in its group were stopped", o.leftovers), "; ")
	}
	if monitorNote != "" { // "recovered after nudge"
		sr.Note = strings.TrimPrefix(sr.Note+"; "+monitorNote, "; ")
	}
	return sr
}
