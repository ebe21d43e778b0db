package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pipespool/pipespool/fsutil"
	"github.com/pipespool/pipespool/proc"
	"github.com/pipespool/pipespool/progress"
	"github.com/pipespool/pipespool/pump"
	"github.com/pipespool/pipespool/units"
)

// A job that fans out is run as a tree of lines (tree.go). Each line is run
// as a job that is a line is (a running, with its stages, its pumps, its
// monitor and its own decision); what differs is where it starts and ends:
// the last stage of a line that forks writes the pipe its fan-out
// (pump.Tee) reads itself (its output link is the fan-out's TeeSource),
// and the fan-out copies it into each branch's pipe, which the branch's
// first stage reads itself (its input link is the fan-out's TeeBranch),
// or a pump when that hop has a buffer or a rate limit. No hop of a fan-out
// costs a pump of its own.
//
// The tree coordinator starts every line and fan-out, stops lines when one
// fails (every line when it may not fail, the branch and what it feeds when
// it is optional), and decides the run once every line is over
// (decideTree). The outputs are committed together, after that: all of
// them when the run succeeded (but those of optional branches that
// failed), none when it failed.

// lineHooks is how a line of a tree meets the coordinator.
type lineHooks struct {
	// onStop is called once, when the line is stopped (stopRun).
	onStop func(stopCause)
	// upstreamBusy reports whether a line upstream of this one (the line
	// whose fan-out feeds it, and so on) is still running.
	upstreamBusy func() bool
	// upstreamDone returns a channel closed once every line upstream of
	// this one is over. Called only while the tree runs.
	upstreamDone func() <-chan struct{}
	// jam names the branches that hold up the fan-outs at the line's ends
	// (their pipes are full), "" when none does.
	jam func() string
	// progress, when not nil, takes the line's latest progress samples
	// (its stages in order), every progressInterval, and once more with
	// the final counts when the line is over.
	progress         func([]progress.StageSample)
	progressInterval time.Duration
}

// treeRun is the run of a job that fans out.
type treeRun struct {
	job   *Job
	opts  Options
	log   *slog.Logger
	lines []line
	runs  []*running
	// fans are the fan-outs, one per line that forks (nil for the others).
	fans  []*pump.Tee
	scope *proc.Scope
	// done[l] is closed once line l's run has returned.
	done []chan struct{}
	// pipes bounds the pipes of the whole tree (see treePipes).
	pipes int

	mu sync.Mutex // guards samples
	// samples are the latest progress samples of every stage, in the job
	// file's order, as the lines' monitors hand them over.
	samples []progress.StageSample
}

// runTree runs a job that fans out; see Run.
func runTree(ctx context.Context, job *Job, opts Options) (*Report, error) {
	if len(opts.ExtraArgs) > 0 {
		return nil, &JobError{File: job.File, Key: "stage", Msg: "job parameters (--allow-job-params) need a job that is a line: this job fans out, so it has no one last stage to give them to"}
	}
	t := &treeRun{job: job, opts: opts, log: opts.Logger, lines: job.lines()}
	if t.log == nil {
		t.log = slog.New(slog.NewTextHandler(discard{}, nil))
	}
	if err := t.checkOutputFlag(); err != nil {
		return nil, err
	}
	if err := checkWrittenFiles(job, opts); err != nil {
		return nil, err
	}
	start := time.Now()
	var deadline time.Time
	if job.Timeout > 0 {
		deadline = start.Add(job.Timeout)
	}
	n := len(t.lines)
	t.runs = make([]*running, n)
	t.fans = make([]*pump.Tee, n)
	t.done = make([]chan struct{}, n)
	t.samples = make([]progress.StageSample, len(job.Stages))
	for i := range t.samples {
		t.samples[i] = progress.StageSample{State: "starting", Buffer: -1}
	}
	t.scope = proc.NewScope(job.MayOutlive)
	t.pipes = treePipes(job, t.lines)
	for l := range t.lines {
		t.runs[l] = t.newLine(l, deadline)
		t.runs[l].treePipes = t.pipes
		t.done[l] = make(chan struct{})
	}
	if err := t.build(ctx); err != nil {
		t.closeAll()
		return nil, err
	}
	board := t.newBoard(start)
	stopDisplay := t.display(board)
	t.run(ctx)
	stopDisplay()
	t.endProcesses()
	t.yieldToSignal(ctx)
	rep, err := t.finish(start)
	if board != nil {
		t.mu.Lock()
		board.Update(time.Now(), slices.Clone(t.samples))
		t.mu.Unlock()
		result := "done"
		if rep.Result != ResultSuccess {
			result = rep.Result
		}
		t.opts.Progress.Close(board, result)
	}
	return rep, err
}

// newBoard is the tree's progress board (nil without a display): every
// stage in the job file's order, a branch's stages indented below the
// stage they read from, its first marked.
func (t *treeRun) newBoard(now time.Time) *progress.Board {
	if t.opts.Progress == nil {
		return nil
	}
	names := make([]string, len(t.job.Stages))
	depth := make([]int, len(t.lines))
	for l, ln := range t.lines {
		if ln.Parent >= 0 {
			depth[l] = depth[ln.Parent] + 1
		}
		for k, i := range ln.Stages {
			name := t.job.Stages[i].Name
			switch {
			case depth[l] == 0:
			case k == 0:
				name = strings.Repeat("  ", depth[l]-1) + "└ " + name
			default:
				name = strings.Repeat("  ", depth[l]) + name
			}
			names[i] = name
		}
	}
	size, sizedOut := t.runs[0].progressSize()
	return progress.NewBoard(progress.Config{Job: t.job.Name, Stages: names, Size: size, SizedOut: sizedOut}, now)
}

// display draws board every interval of the display until the function it
// returns is called (nothing without a board).
func (t *treeRun) display(board *progress.Board) (stop func()) {
	if board == nil {
		return func() {}
	}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(t.opts.Progress.Interval())
		defer tk.Stop()
		for {
			select {
			case <-quit:
				return
			case now := <-tk.C:
				t.mu.Lock()
				board.Update(now, slices.Clone(t.samples))
				t.mu.Unlock()
				t.opts.Progress.Draw(board)
			}
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}

// discard is an io.Writer that drops everything.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// checkOutputFlag checks -o against the tree: it replaces the output of
// the branch that has none of its own, so there must be one (that -o is
// not another branch's output is checkWrittenFiles's to say).
func (t *treeRun) checkOutputFlag() error {
	p := t.opts.OutputPath
	if p == "" {
		return nil
	}
	cons := t.job.consumers()
	for i := range t.job.Stages {
		if t.job.Stages[i].Output == "" && len(cons[i]) == 0 {
			return nil
		}
	}
	return &HopFlagError{Msg: "-o " + p + ": every branch of this job ends in an output of its own, so there is no [output] to replace"}
}

// newLine prepares the run of line l: a job of its stages, with the
// options that concern it (the input's for the trunk, the output's for the
// branch that writes [output]).
func (t *treeRun) newLine(l int, deadline time.Time) *running {
	ln := &t.lines[l]
	sub := *t.job
	sub.Stages = make([]StageSpec, len(ln.Stages))
	for k, i := range ln.Stages {
		sub.Stages[k] = t.job.Stages[i]
	}
	opts := t.opts
	opts.BeforeCommit = nil // the coordinator calls it, once
	opts.ExtraArgs = nil
	if ln.Parent >= 0 {
		opts.Input, opts.InputPath = nil, ""
		opts.RateLimit, opts.Buffer, opts.ExpectedSize = 0, 0, 0
	}
	// One progress board for the tree, which the coordinator draws: the
	// lines hand it their samples.
	opts.Progress = nil
	last := &sub.Stages[len(sub.Stages)-1]
	if len(ln.Children) == 0 && last.Output != "" {
		sub.Output, sub.OutputMode, sub.OutputModeSet = last.Output, last.OutputMode, last.OutputModeSet
		opts.OutputPath = ""
	}
	r := newRunning(&sub, opts)
	r.deadline = deadline
	r.scope = t.scope
	r.tree = &lineHooks{
		onStop:       func(c stopCause) { t.lineStopped(l, c) },
		upstreamBusy: func() bool { return t.upstreamBusy(l) },
		upstreamDone: func() <-chan struct{} { return t.upstreamDone(l) },
		jam:          func() string { return t.jam(l) },
	}
	if t.opts.Progress != nil {
		r.tree.progressInterval = t.opts.Progress.Interval()
		r.tree.progress = func(s []progress.StageSample) {
			t.mu.Lock()
			defer t.mu.Unlock()
			for k, i := range ln.Stages {
				t.samples[i] = s[k]
			}
		}
	}
	return r
}

// build makes the fan-outs' pipes, then builds every line (which opens the
// input and the outputs and checks every stage), then the fan-outs. On
// error what was made is closed by closeAll.
func (t *treeRun) build(ctx context.Context) error {
	type fanEnds struct {
		src  pump.End
		dsts []pump.End
	}
	ends := make([]*fanEnds, len(t.lines))
	var made []*ownedFD
	fail := func(err error) error {
		for _, fd := range made {
			fd.Close()
		}
		return err
	}
	// pipe makes a pipe; the end the tee uses is non-blocking, and so is
	// the other unless a stage gets it (childEnd then decides): the read
	// end of a branch's pipe (stageReads), the write end of the tee's
	// source (!stageReads).
	size, why := pipeSizeFor(t.job.PipeSize, t.pipes)
	t.log.Debug(fmt.Sprintf("fan-out pipes: %s each (%s)", units.FormatSize(int64(size)), why))
	pipe := func(what string, stageReads, stageWrites bool) (rd, wr *ownedFD, err error) {
		p, _, err := pump.NewPipe(size)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", what, err)
		}
		rd, wr = newOwnedFD(p.R), newOwnedFD(p.W)
		made = append(made, rd, wr)
		var fds []int
		if !stageReads {
			fds = append(fds, p.R)
		}
		if !stageWrites {
			fds = append(fds, p.W)
		}
		for _, fd := range fds {
			if err := pump.SetNonblock(fd); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", what, err)
			}
		}
		return rd, wr, nil
	}
	// A branch's first stage reads its fan-out's pipe itself, with no hop
	// between them, unless its input hop has a buffer or a rate limit,
	// which only a pump after the fan-out can give.
	direct := make([]bool, len(t.lines))
	for c := range t.lines {
		direct[c] = t.lines[c].Parent >= 0 && !t.runs[c].hopPumped(0)
	}
	for l := range t.lines {
		ln := &t.lines[l]
		if len(ln.Children) == 0 {
			continue
		}
		producer := t.job.Stages[ln.Stages[len(ln.Stages)-1]].Name
		rd, wr, err := pipe("fan-out of stage "+producer, false, true)
		if err != nil {
			return fail(&RunError{Msg: fmt.Sprintf("setting up the fan-out of stage %q: %v", producer, err)})
		}
		names := make([]string, len(ln.Children))
		for b, c := range ln.Children {
			names[b] = t.lines[c].Name
		}
		t.runs[l].dst = &sink{desc: "fan-out to " + strings.Join(names, ", "), pipe: wr}
		fe := &fanEnds{src: pump.End{FD: rd.fd, Own: true, Name: "fan-out of stage " + producer}}
		for _, c := range ln.Children {
			brd, bwr, err := pipe("branch "+t.lines[c].Name, direct[c], false)
			if err != nil {
				return fail(&RunError{Msg: fmt.Sprintf("setting up the fan-out of stage %q: %v", producer, err)})
			}
			t.runs[c].src = &source{desc: "fan-out of stage " + producer, pipe: brd}
			fe.dsts = append(fe.dsts, pump.End{FD: bwr.fd, Own: true, Name: "branch " + t.lines[c].Name})
		}
		ends[l] = fe
	}
	// An optional branch's output that is written in place (stdout, a
	// FIFO, a device) is refused before any stage starts, as the job
	// file's check does: first by its path (so that a FIFO is not waited
	// for), then as opened (a FIFO made meanwhile).
	for l := range t.runs {
		if err := t.optionalInPlace(l, nil); err != nil {
			return fail(err)
		}
	}
	for l, r := range t.runs {
		if err := r.build(ctx); err != nil {
			if je, ok := err.(*JobError); ok && t.lines[l].Parent >= 0 && je.Key == "" {
				je.Msg = branchLabel(t.lines, l) + ": " + je.Msg
			}
			return fail(err)
		}
	}
	for l, r := range t.runs {
		if err := t.optionalInPlace(l, r.dst); err != nil {
			return fail(err)
		}
	}
	for l, fe := range ends {
		if fe == nil {
			continue
		}
		// The witness tells what a branch's first stage left unread in
		// the pipe the tee writes (as a line's pump's does).
		tee, err := pump.NewTee(fe.src, fe.dsts, pump.KeepWitness())
		if err != nil {
			return fail(&RunError{Msg: fmt.Sprintf("setting up the fan-out of stage %q: %v", t.job.Stages[t.lines[l].Stages[len(t.lines[l].Stages)-1]].Name, err)})
		}
		// The tee owns the ends from now on.
		for _, fd := range made {
			if fd.fd == fe.src.FD {
				fd.Release()
			}
			for _, d := range fe.dsts {
				if fd.fd == d.FD {
					fd.Release()
				}
			}
		}
		t.fans[l] = tee
		t.runs[l].dst.fan = tee
		for b, c := range t.lines[l].Children {
			if direct[c] {
				t.runs[c].src.fed = tee.Branch(b)
			}
		}
	}
	return nil
}

// optionalInPlace refuses line l's output when l is part of an optional
// branch and the output is written in place rather than committed
// atomically (see validator.optionalOutputs): by its path when dst is nil,
// else as opened.
func (t *treeRun) optionalInPlace(l int, dst *sink) error {
	o := optionalRoot(t.lines, l)
	if o < 0 || len(t.lines[l].Children) > 0 {
		return nil
	}
	last := &t.job.Stages[t.lines[l].Stages[len(t.lines[l].Stages)-1]]
	path, _, _ := t.job.outputOf(last, t.opts)
	if last.Output == "" && t.opts.OutputPath != "" && path != "-" && path != "none" {
		path = fsutil.AbsAsKernel(path) // -o is relative to the working directory
	}
	key := stageKey(last.Index, "output")
	if last.Output == "" {
		key = "output.path"
		if t.opts.OutputPath != "" {
			key = "-o"
		}
	}
	var why string
	switch {
	case dst == nil:
		why = writtenInPlace(path, t.job.Dir)
	case dst.discardable():
	case dst.desc == "-":
		why = "stdout"
	default:
		why = "written in place"
		if st, err := dst.file.Stat(); err == nil {
			why = "a " + fsutil.TypeName(st.Mode())
		}
	}
	if why == "" {
		return nil
	}
	msg := optionalInPlaceMsg(t.lines, o, path, why)
	if key == "-o" {
		return &HopFlagError{Msg: "-o " + path + ": " + msg}
	}
	return &JobError{File: t.job.File, Line: keyLine(t.job.pos, key), Key: key, Msg: msg}
}

// closeAll releases what build made when the run ends before it started.
func (t *treeRun) closeAll() {
	for _, r := range t.runs {
		if r.src != nil {
			r.src.close()
		}
		if r.dst != nil {
			r.dst.discard()
		}
	}
	for _, f := range t.fans {
		if f != nil {
			f.Stop()
			f.Run()
			for b := range f.Branches() {
				f.Branch(b).Release() // a stopped branch keeps a witness
			}
		}
	}
	t.endProcesses()
}

// run runs every fan-out and every line, and returns once all are over.
func (t *treeRun) run(ctx context.Context) {
	var fansWG, linesWG sync.WaitGroup
	for _, f := range t.fans {
		if f != nil {
			fansWG.Add(1)
			go func() {
				defer fansWG.Done()
				f.Run()
			}()
		}
	}
	for l, r := range t.runs {
		linesWG.Add(1)
		go func() {
			defer linesWG.Done()
			defer close(t.done[l])
			r.run(ctx)
		}()
	}
	linesWG.Wait()
	// Every line is over, so every pipe into and out of a fan-out is
	// closed and each has ended or is about to: a fan-out still running
	// has nothing left to do.
	for _, f := range t.fans {
		if f == nil {
			continue
		}
		select {
		case <-f.Done():
		case <-time.After(time.Second):
			f.Stop()
		}
	}
	fansWG.Wait()
	// The witnesses of the branches: a line releases those of the
	// branches its first stage reads once it looked at them, but not
	// when that stage never started; a pump reads the others. Every line
	// is over: Release, which does nothing twice, is safe now.
	for _, f := range t.fans {
		if f == nil {
			continue
		}
		for b := range f.Branches() {
			f.Branch(b).Release()
		}
	}
}

// upstreamBusy reports whether a line upstream of l is still running.
func (t *treeRun) upstreamBusy(l int) bool {
	for p := t.lines[l].Parent; p >= 0; p = t.lines[p].Parent {
		select {
		case <-t.done[p]:
		default:
			return true
		}
	}
	return false
}

// treePipes bounds the pipes a tree makes, which share the user's budget
// of pipe buffers (see pipeSizeFor): each stage's stdin and stdout, the
// fan-outs' source pipes and one per branch. Files handed over directly
// and joined built-ins make fewer: the bound errs on the side of smaller
// pipes, never of the 8 KiB ones the kernel gives past the budget.
func treePipes(job *Job, ls []line) int {
	n := 2 * len(job.Stages)
	for _, l := range ls {
		if len(l.Children) > 0 {
			n += 1 + len(l.Children)
		}
	}
	return n
}

// upstreamDone returns a channel closed once every line upstream of l is
// over. Every line runs once the tree runs, so the goroutine ends.
func (t *treeRun) upstreamDone(l int) <-chan struct{} {
	c := make(chan struct{})
	go func() {
		defer close(c)
		for p := t.lines[l].Parent; p >= 0; p = t.lines[p].Parent {
			<-t.done[p]
		}
	}()
	return c
}

// jam names the branches that hold up the fan-out feeding line l or fed by
// it: a branch whose pipe is full while the fan-out has bytes for it is
// back-pressure on the fan-out, and the slowest branch sets the pace of
// all.
func (t *treeRun) jam(l int) string {
	var slow []string
	for _, f := range []int{t.lines[l].Parent, l} {
		if f < 0 || t.fans[f] == nil {
			continue
		}
		for b, c := range t.lines[f].Children {
			if t.fans[f].Branch(b).State() == pump.WaitingDst {
				slow = append(slow, branchLabel(t.lines, c))
			}
		}
	}
	if len(slow) == 0 {
		return ""
	}
	return "the fan-out waits on " + strings.Join(slow, ", ") + ", which is not taking its bytes (the slowest branch sets the pace of all; a buffer on a branch's first stage lets the others go on while it fills)"
}

// lineStopped is called when line l stopped (its first stopCause c). A line
// that may not fail stops every line and fan-out: the run has failed and
// nothing of it will be committed, so nothing is gained by going on. An
// optional branch stops what it feeds, whose stream it cut. A line stopped
// because every branch of its fan-out had gone (its output's reader went)
// stops nothing more: those branches have ended already.
func (t *treeRun) lineStopped(l int, c stopCause) {
	if c.Cascade || c.Own && c.Stage == len(t.runs[l].stages) && len(t.lines[l].Children) > 0 {
		return
	}
	var stop []int
	all := t.optionalRoot(l) < 0 || c.Result == ResultTimeout || c.Result == ResultInterrupted
	if all {
		for o := range t.lines {
			if o != l {
				stop = append(stop, o)
			}
		}
	} else {
		stop = t.below(l)
	}
	// Each line is marked stopped before its fan-out is: a branch whose
	// input ends then is taken for stopped, not for stalled or done.
	msg := fmt.Sprintf("stopped: %s failed", branchLabel(t.lines, l))
	for _, o := range stop {
		t.runs[o].stopRun(stopCause{Stage: -1, Result: ResultFailed, Msg: msg, Cascade: true})
	}
	if all {
		for _, f := range t.fans {
			if f != nil {
				f.Stop()
			}
		}
	}
}

// optionalRoot returns the optional branch line l is part of (itself or
// the nearest line upstream that is optional), or -1.
func (t *treeRun) optionalRoot(l int) int {
	return optionalRoot(t.lines, l)
}

func optionalRoot(ls []line, l int) int {
	for ; l >= 0; l = ls[l].Parent {
		if ls[l].Optional {
			return l
		}
	}
	return -1
}

// below returns the lines fed by line l, directly or not.
func (t *treeRun) below(l int) []int { return below(t.lines, l) }

func below(ls []line, l int) []int {
	var out []int
	for _, c := range ls[l].Children {
		out = append(out, c)
		out = append(out, below(ls, c)...)
	}
	return out
}

// endProcesses stops what the stages of every line left running (see
// running.endProcesses), once every line is over.
func (t *treeRun) endProcesses() {
	if t.scope == nil {
		return
	}
	scope := t.scope
	t.scope = nil
	grace := t.opts.Grace
	if grace <= 0 {
		grace = DefaultGrace
	}
	endScope(scope, grace, t.log)
}

// finish decides the run, commits or discards every output, and builds
// the report.
func (t *treeRun) finish(start time.Time) (*Report, error) {
	facts := make([]runFacts, len(t.runs))
	verdicts := make([]verdict, len(t.runs))
	lf := make([]lineFacts, len(t.runs))
	// The signal that interrupted the run, if one did, and when the
	// first line saw it.
	var sig syscall.Signal
	var sigAt time.Time
	for l, r := range t.runs {
		facts[l] = r.settle()
		if s := facts[l].Stop; s != nil && s.Result == ResultInterrupted {
			r.mu.Lock()
			if sigAt.IsZero() || r.stopAt.Before(sigAt) {
				sig, sigAt = s.Signal, r.stopAt
			}
			r.mu.Unlock()
		}
	}
	for l, r := range t.runs {
		// A line whose own failure waited for its trunk's judgement,
		// and was stopped meanwhile (a timeout, a signal, another
		// line), failed on its own first: judged as if that failure
		// had stopped it.
		c, at, ok := r.ownFirst()
		if ok && t.promotable(l, c, at, sig, sigAt) {
			facts[l].Stop = &c
		}
		verdicts[l] = decideRun(facts[l])
		lf[l] = t.lineFactsOf(l, facts[l], verdicts[l])
	}
	tv := decideTree(lf)
	var checkErr error
	if tv.Result == ResultSuccess && t.opts.BeforeCommit != nil {
		if checkErr = t.opts.BeforeCommit(); checkErr != nil {
			tv = treeVerdict{Result: ResultFailed, Line: -1, Msg: fmt.Sprintf("input check after the last byte: %v", checkErr), Discard: allTrue(len(t.lines))}
		}
	}
	outs := t.commit(&tv, verdicts)
	rep := t.report(start, tv, verdicts, outs)
	for _, w := range tv.Warnings {
		t.log.Warn(w)
	}
	switch tv.Result {
	case ResultSuccess:
		return rep, nil
	case ResultInterrupted:
		return rep, &proc.InterruptedError{Signal: tv.Signal}
	}
	return rep, &RunError{Msg: tv.Msg, Report: rep}
}

func allTrue(n int) []bool {
	b := make([]bool, n)
	for i := range b {
		b[i] = true
	}
	return b
}

// promotable reports whether the own failure c of line l (at at), which
// waited for the line feeding it while the run was stopped for another
// reason, is what failed the run: not a failure that cannot fail the run
// (an optional branch's; a fan-out whose readers all went), nor the doing
// of sig, the signal that interrupted pipespool at sigAt (systemd signals a
// service's every process at once: see doneBySignal), nor a line where a
// process a stage left behind died of it.
func (t *treeRun) promotable(l int, c stopCause, at time.Time, sig syscall.Signal, sigAt time.Time) bool {
	r := t.runs[l]
	if optionalRoot(t.lines, l) >= 0 {
		return false
	}
	if c.Stage >= len(r.stages) {
		return len(t.lines[l].Children) == 0
	}
	// A stage of the line that died of the signal: decideRun may name it
	// rather than c.Stage.
	return sig == 0 || !doneBySignal(at, r.deaths(), sig, sigAt) && !r.leftDiedOf(sig)
}

// lineFactsOf is what the tree's decision needs to know of line l.
func (t *treeRun) lineFactsOf(l int, rf runFacts, v verdict) lineFacts {
	r := t.runs[l]
	ln := &t.lines[l]
	f := lineFacts{Label: branchLabel(t.lines, l), Parent: ln.Parent, Optional: ln.Optional, Forks: len(ln.Children) > 0,
		Result: v.Result, Msg: v.Msg, Signal: v.Signal}
	r.mu.Lock()
	if rf.Stop != nil {
		f.Cascade = rf.Stop.Cascade
		f.Decided = !rf.Stop.Own && !rf.Stop.Cascade
		f.At = r.stopAt
		if rf.Stop.Own && !r.ownAt.IsZero() {
			// When the failure happened, not when it stopped the run
			// (after waiting for the stages upstream).
			f.At = r.ownAt
		}
	}
	r.mu.Unlock()
	if f.At.IsZero() {
		f.At = time.Now()
	}
	// A line that forks and failed only because every branch stopped
	// reading its fan-out: the branches say why.
	f.FanOutGone = f.Forks && v.Root == len(r.stages) && (rf.Sink.Gone || rf.Stop != nil && rf.Stop.Own && rf.Stop.Stage == len(r.stages))
	if ln.Parent >= 0 {
		f.FanOutErr = t.fanOutErr(l)
	}
	return f
}

// fanOutErr is why the fan-out could not deliver to branch l (a write
// error other than its reader going), or "".
func (t *treeRun) fanOutErr(l int) string {
	ln := &t.lines[l]
	f := t.fans[ln.Parent]
	if f == nil {
		return ""
	}
	res := f.Branch(ln.Branch).Result()
	if res.Err == nil || res.ConsumerGone || errors.Is(res.Err, pump.ErrStopped) {
		return ""
	}
	return fmt.Sprintf("the fan-out could not deliver to %s: %v", branchLabel(t.lines, l), res.Err)
}

// OutputReport is one output of a run in its report: a branch's, or the
// run's only one.
type OutputReport struct {
	// Branch is the branch that writes it ("" for the trunk).
	Branch string `json:"branch,omitempty"`
	Path   string `json:"path"`
	Bytes  int64  `json:"bytes"`
	// Status is "committed" (renamed into place, or written in place and
	// closed), "discarded" (nothing appears under its name), "written"
	// (written in place as the stream went, stdout, a FIFO or a device,
	// in a run that failed: it cannot be discarded, and what it got may be
	// a cut stream), or "failed" (its commit failed).
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// commit commits every output the verdict keeps, in the order of the
// lines, once every line is over: a commit that fails stops the commit
// (the outputs after it are discarded) and fails the run, naming those
// already committed. The stages' files beside the outputs (sha256's
// digest) are committed after all the outputs.
func (t *treeRun) commit(tv *treeVerdict, verdicts []verdict) []OutputReport {
	var outs []OutputReport
	var committed []string
	failed := tv.Result != ResultSuccess
	// First every output's data is made durable: a failure then commits
	// none. Only a rename (or the directory's fsync) can fail after one
	// output is in place.
	for l, r := range t.runs {
		if failed || tv.Discard[l] || len(t.lines[l].Children) > 0 {
			continue
		}
		if err := r.dst.prepare(); err != nil {
			failed = true
			*tv = treeVerdict{Result: ResultFailed, Line: l, Output: true, Msg: fmt.Sprintf("%s: %v (no output was committed)", branchLabel(t.lines, l), err), Discard: tv.Discard}
			verdicts[l].Root = len(r.stages)
		}
	}
	for l, r := range t.runs {
		if len(t.lines[l].Children) > 0 {
			r.dst.discard() // the fan-out's pipe: its last stage's stdout, closed at its start
			continue
		}
		o := OutputReport{Branch: t.lines[l].Name, Path: r.dst.desc, Bytes: r.sinkFacts().Bytes}
		switch {
		case failed || tv.Discard[l]:
			o.Status = "discarded"
			if !r.dst.discardable() {
				o.Status = "written"
			}
			r.dst.discard()
		default:
			if err := r.dst.commit(); err != nil {
				failed = true
				o.Status, o.Error = "failed", err.Error()
				what := "none was committed"
				if len(committed) > 0 {
					what = "already committed: " + strings.Join(committed, ", ")
				}
				others := "the others were discarded"
				if t.writesInPlace() {
					others = "the others were not committed; those written in place (stdout, a FIFO, a device) have what the run wrote to them"
				}
				*tv = treeVerdict{Result: ResultFailed, Line: l, Output: true, Msg: fmt.Sprintf("%s: %v (%s; %s)", branchLabel(t.lines, l), err, what, others), Discard: tv.Discard}
				verdicts[l].Root = len(r.stages)
				break
			}
			o.Status = "committed"
			committed = append(committed, r.dst.desc)
		}
		r.dst.sweepTemps(r.log)
		outs = append(outs, o)
	}
	for l, r := range t.runs {
		if failed || tv.Discard[l] {
			r.discardSidecars()
			continue
		}
		if sc := r.commitSidecars(); sc != nil && tv.Result == ResultSuccess {
			*tv = treeVerdict{Result: ResultFailed, Line: l, Msg: fmt.Sprintf("stage %q: %v (the outputs were committed)", r.stages[sc.Stage].Name(), sc.Err), Discard: tv.Discard}
			verdicts[l].Root = sc.Stage
		}
	}
	return outs
}

// writesInPlace reports whether an output of the run is written in place
// (stdout, a FIFO, a device): one that cannot be discarded.
func (t *treeRun) writesInPlace() bool {
	for l, r := range t.runs {
		if len(t.lines[l].Children) == 0 && !r.dst.discardable() {
			return true
		}
	}
	return false
}

// report builds the run's report: every stage in the job file's order,
// with its branch, every output, every branch.
func (t *treeRun) report(start time.Time, tv treeVerdict, verdicts []verdict, outs []OutputReport) *Report {
	rep := &Report{Job: t.job.Name, JobFile: t.job.File, Start: start, End: time.Now(), Result: tv.Result,
		Message: tv.Msg, Input: t.runs[0].src.desc, Outputs: outs, Warnings: tv.Warnings}
	rep.Duration = rep.End.Sub(start).Seconds()
	byIndex := make([]StageReport, len(t.job.Stages))
	for l, r := range t.runs {
		ln := &t.lines[l]
		reps := r.stageReports(verdicts[l])
		for k, i := range ln.Stages {
			reps[k].Branch = ln.Name
			if p := t.job.producer(i); p >= 0 {
				reps[k].From = t.job.Stages[p].Name
			}
			byIndex[i] = reps[k]
		}
		if len(ln.Children) == 0 && t.job.Stages[ln.Stages[len(ln.Stages)-1]].Output == "" {
			rep.Output = r.dst.desc
		}
		if ln.Parent >= 0 {
			br := BranchReport{Name: ln.Name, From: t.job.Stages[t.job.producer(ln.Stages[0])].Name, Optional: ln.Optional,
				Result: verdicts[l].Result, Message: verdicts[l].Msg}
			for _, i := range ln.Stages {
				br.Stages = append(br.Stages, t.job.Stages[i].Name)
			}
			if tv.Discard[l] && tv.Result == ResultSuccess {
				br.Result = "discarded"
			}
			rep.Branches = append(rep.Branches, br)
		}
	}
	rep.Stages = byIndex
	if tv.Line >= 0 {
		r := t.runs[tv.Line]
		root := verdicts[tv.Line].Root
		switch {
		case tv.Output || root == len(r.stages):
			rep.RootCause = OutputRootCause
		case root >= 0:
			rep.RootCause = r.stages[root].Name()
		}
		rep.RootBranch = t.lines[tv.Line].Name
	}
	return rep
}

// BranchReport is one branch of a tree in the report.
type BranchReport struct {
	// Name is its first stage's name; From the stage it reads from.
	Name     string   `json:"name"`
	From     string   `json:"from"`
	Optional bool     `json:"optional,omitempty"`
	Stages   []string `json:"stages"`
	// Result is its own: "success", "failed", "timeout", "interrupted",
	// or "discarded" (an optional branch that failed in a run that
	// succeeded: its outputs were not committed).
	Result  string `json:"result"`
	Message string `json:"message,omitempty"`
}

// lineFacts is what the tree's decision knows about one line once every
// line is over.
type lineFacts struct {
	Label    string // how messages name it
	Parent   int
	Optional bool
	Forks    bool
	// Result, Msg, Signal: its own verdict.
	Result string
	Msg    string
	Signal syscall.Signal
	// Cascade: it was stopped because another line failed first.
	Cascade bool
	// Decided: it was stopped for a reason of the run's (a timeout, a
	// signal to pipespool, a stalled stage killed), not a failure of its
	// own.
	Decided bool
	// FanOutGone: it forks, and failed only because every branch of its
	// fan-out stopped reading.
	FanOutGone bool
	// FanOutErr: the fan-out feeding it could not deliver to it.
	FanOutErr string
	// At: when it failed.
	At time.Time
}

// treeVerdict is the decision of a tree.
type treeVerdict struct {
	Result string
	Line   int  // the line of the root cause, -1 for none
	Output bool // the root cause is that line's output (its commit)
	Msg    string
	Signal syscall.Signal
	// Discard[l]: line l's outputs are not committed.
	Discard []bool
	// Warnings: the optional branches that failed, and why.
	Warnings []string
}

// decideTree decides a tree from its lines' facts:
//
//  1. A line fails when its own verdict is a failure or its fan-out could
//     not deliver to it; one stopped because another failed (Cascade), or
//     one that forks and failed only because every branch stopped reading
//     (FanOutGone), is never a root cause.
//  2. A timeout or a signal fails the run, optional branch or not; a
//     signal to pipespool is the run's, not a branch's: when it is the
//     root cause, no line is named.
//  3. A failure inside an optional branch (the branch, or a line it
//     feeds) discards that branch's outputs and is a warning; the run
//     succeeds unless something else fails. A fan-out whose branches all
//     failed reached nobody: the run fails.
//  4. Any other failure fails the run, and nothing is committed. The root
//     cause is the failure upstream of the others (the trunk's stage that
//     cut or corrupted the stream, not the branch that read it), else the
//     earliest.
func decideTree(ls []lineFacts) treeVerdict {
	n := len(ls)
	tv := treeVerdict{Result: ResultSuccess, Line: -1, Discard: make([]bool, n)}
	failed := make([]bool, n)
	for l := range ls {
		failed[l] = ls[l].Result != ResultSuccess && !ls[l].FanOutGone || ls[l].FanOutErr != ""
	}
	msgOf := func(l int) string {
		if ls[l].FanOutErr != "" && ls[l].Result == ResultSuccess {
			return ls[l].FanOutErr
		}
		return ls[l].Msg
	}
	parents := make([]line, n)
	for l := range ls {
		parents[l] = line{Parent: ls[l].Parent, Optional: ls[l].Optional}
	}
	for l := range ls {
		if p := ls[l].Parent; p >= 0 {
			parents[p].Children = append(parents[p].Children, l)
		}
	}
	// The root cause among the lines cands: upstream first, else earliest.
	pick := func(cands []int) int {
		best := -1
		for _, c := range cands {
			switch {
			case best < 0:
				best = c
			case isAbove(parents, c, best):
				best = c
			case isAbove(parents, best, c):
			case ls[c].At.Before(ls[best].At):
				best = c
			}
		}
		return best
	}
	var fatal, optional []int
	for l := range ls {
		if !failed[l] || ls[l].Cascade {
			continue
		}
		r := ls[l].Result
		if o := optionalRoot(parents, l); o >= 0 && r != ResultTimeout && r != ResultInterrupted {
			optional = append(optional, l)
			continue
		}
		fatal = append(fatal, l)
	}
	fatal = decidedAfterOwn(fatal, ls)
	// A fan-out whose branches all failed reached nobody.
	for l := range ls {
		kids := parents[l].Children
		if len(kids) == 0 || optionalRoot(parents, l) >= 0 {
			// Inside an optional branch, it is that branch's failure.
			continue
		}
		all := true
		for _, c := range kids {
			all = all && (failed[c] || ls[c].Cascade)
		}
		if all && len(fatal) == 0 {
			if c := pick(kidsFailed(kids, failed, ls)); c >= 0 {
				fatal = append(fatal, c)
			}
		}
	}
	if len(fatal) == 0 {
		// Cascades only (they cannot be alone, but decide anyway).
		for l := range ls {
			if failed[l] && optionalRoot(parents, l) < 0 {
				fatal = append(fatal, l)
			}
		}
	}
	if len(fatal) > 0 {
		root := pick(fatal)
		tv.Result, tv.Line, tv.Signal = ls[root].Result, root, ls[root].Signal
		if tv.Result == ResultSuccess {
			tv.Result = ResultFailed
		}
		tv.Msg = msgOf(root)
		switch {
		case tv.Result == ResultInterrupted:
			// A signal to pipespool stops every line at once: whichever
			// saw it first is not its cause, and no branch is blamed.
			tv.Line = -1
			tv.Msg = (&proc.InterruptedError{Signal: tv.Signal}).Error()
		case tv.Result == ResultTimeout:
			// The job's timeout is the run's, which every line sees at
			// once: no branch is named either.
			tv.Line = -1
		case ls[root].Parent >= 0:
			tv.Msg = ls[root].Label + ": " + tv.Msg
		}
		for l := range tv.Discard {
			tv.Discard[l] = true
		}
		return tv
	}
	seen := map[int]bool{}
	for _, l := range optional {
		o := optionalRoot(parents, l)
		tv.Discard[o] = true
		for _, b := range below(parents, o) {
			tv.Discard[b] = true
		}
		if !seen[o] {
			seen[o] = true
			tv.Warnings = append(tv.Warnings, fmt.Sprintf("optional %s failed, its output was discarded: %s", ls[o].Label, msgOf(l)))
		}
	}
	tv.Msg = strings.Join(tv.Warnings, "; ")
	return tv
}

// decidedAfterOwn drops from fatal the lines stopped by a timeout or a
// signal after a line among them had failed on its own: that failure came
// first and is what failed the run; the timeout or the signal came while it
// waited for its trunk's judgement. A stalled stage killed stays: it is a
// line's own, and the usual order (upstream first, else earliest) ranks
// it.
func decidedAfterOwn(fatal []int, ls []lineFacts) []int {
	var first time.Time
	for _, l := range fatal {
		if !ls[l].Decided && (first.IsZero() || ls[l].At.Before(first)) {
			first = ls[l].At
		}
	}
	if first.IsZero() {
		return fatal
	}
	return slices.DeleteFunc(fatal, func(l int) bool {
		r := ls[l].Result
		return ls[l].Decided && (r == ResultTimeout || r == ResultInterrupted) && ls[l].At.After(first)
	})
}

// kidsFailed returns the lines among kids that failed of their own.
func kidsFailed(kids []int, failed []bool, ls []lineFacts) []int {
	var out []int
	for _, c := range kids {
		if failed[c] && !ls[c].Cascade {
			out = append(out, c)
		}
	}
	return out
}

// isAbove reports whether line a feeds line b, directly or not.
func isAbove(ls []line, a, b int) bool {
	for p := ls[b].Parent; p >= 0; p = ls[p].Parent {
		if p == a {
			return true
		}
	}
	return false
}
