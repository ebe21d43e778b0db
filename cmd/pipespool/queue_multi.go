package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pipespool/pipespool/pipeline"
	"github.com/pipespool/pipespool/proc"
	"github.com/pipespool/pipespool/queue"
)

// queueState is what became of one queue of a multi-queue run.
type queueState int

const (
	queueNotRun    queueState = iota // not started: the run was interrupted first
	queueDone                        // processed (its err says how it ended)
	queueSetupFail                   // its job file or decoder could not be set up
	queueLocked                      // another process held its lock: skipped
)

// queueResult is the outcome of one queue of a multi-queue run.
type queueResult struct {
	dir   string
	state queueState
	err   error
	// rec holds the queue's report and metrics (--report, --metrics-file)
	// once it ran; nil otherwise.
	rec *queueRecorder
	// job is the metrics' job label of a queue that could not be set up.
	job string
}

// code is the queue's exit status as a run of it alone would have had it.
func (r *queueResult) code() int {
	if r.err == nil {
		return 0
	}
	return exitCodeOf(r.err)
}

// multiRun is queue-process over several queues.
type multiRun struct {
	opts    *queueProcessOptions
	base    queue.ProcessOptions
	results []queueResult
	// jobLabel is the name of --job's job ("" without): the metrics' job
	// label of a queue that could not be set up.
	jobLabel string
	// errMu serializes the lines written to stderr, one per queue.
	errMu sync.Mutex
}

// runQueues processes opts.Dirs, up to opts.Parallel at once: each queue
// is set up, locked and processed by one of opts.Parallel workers, so that
// at most that many queues hold memory, processes and locks at any time,
// whatever the number of queues. A queue that fails is reported and the
// others go on.
func runQueues(opts *queueProcessOptions, base queue.ProcessOptions) error {
	g := opts.g
	for i, d := range opts.Dirs {
		// A glob such as /backup/queues/*/ matches directories only, and
		// leaves a slash that would be doubled in every path shown.
		if t := strings.TrimRight(d, "/"); t != "" {
			opts.Dirs[i] = t
		}
	}
	if err := distinctDirs(opts.Dirs); err != nil {
		return err
	}
	if !takesWritesWhole(g.streams.ErrOut) {
		// The queues write to stderr at once (their commands, the log,
		// the lines of tell): a file takes each write whole, anything
		// else (a test's buffer) must be given one write at a time.
		shared := *g
		streams := *g.streams
		streams.ErrOut = &lockedWriter{w: streams.ErrOut}
		shared.streams = &streams
		if err := shared.setupLogger(); err != nil {
			return err
		}
		g, opts.g = &shared, &shared
	}
	jobLabel := ""
	if opts.JobFile != "" {
		// --job is every queue's: a bad one is a usage error before
		// anything runs, as for one queue.
		job, err := pipeline.Load(opts.JobFile)
		if err != nil {
			return err
		}
		jobLabel = job.Name
	}
	survivePipeErrors()
	ctx, stop := signalContext(g.streams.ErrOut)
	defer stop()
	lock, err := runLock(ctx, opts.Lock, opts.LockWait)
	if err != nil {
		return err
	}
	defer lock.Release()
	start := time.Now()
	m := &multiRun{opts: opts, base: base, results: make([]queueResult, len(opts.Dirs)), jobLabel: jobLabel}
	all := make([]int, len(opts.Dirs))
	for i, d := range opts.Dirs {
		m.results[i].dir = d
		all[i] = i
	}
	final := opts.QueueLockWait == 0
	m.round(ctx, all, 0, final)
	if !final {
		// Locked queues are waited for only once every other queue had
		// its turn, so that one busy queue holds up no other.
		var locked []int
		for i := range m.results {
			if m.results[i].state == queueLocked {
				locked = append(locked, i)
			}
		}
		m.round(ctx, locked, opts.QueueLockWait, true)
	}
	err = m.verdict(ctx)
	m.write(start, err)
	return err
}

// round runs the queues idx with opts.Parallel workers; wait is how long each waits
// for its lock. final says whether a queue still locked is given up
// (reported) or will be tried again.
func (m *multiRun) round(ctx context.Context, idx []int, wait time.Duration, final bool) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(m.opts.Parallel, len(idx)) {
		wg.Go(func() {
			for ctx.Err() == nil {
				k := int(next.Add(1)) - 1
				if k >= len(idx) {
					return
				}
				r := &m.results[idx[k]]
				m.one(ctx, r, wait)
				m.tell(r, final)
			}
		})
	}
	wg.Wait()
}

// one processes the queue of r, waiting up to wait for its lock.
func (m *multiRun) one(ctx context.Context, r *queueResult, wait time.Duration) {
	opts := m.opts
	log := opts.g.Logger().With("queue", r.dir)
	po := m.base
	po.LockWait = wait
	po, jobFile, err := opts.setupQueue(r.dir, po, log)
	if err != nil {
		r.state, r.err = queueSetupFail, err
		r.job = m.jobLabel
		if r.job == "" {
			r.job = queueName(r.dir)
		}
		return
	}
	q := queue.Open(r.dir, log)
	var rec *queueRecorder
	if opts.Report != "" || opts.MetricsFile != "" {
		rec = newQueueRecorder(opts, po, jobFile, q)
		rec.labels = []pipeline.Label{{Name: "queue", Value: r.dir}}
		po.OnJob = rec.onJob
	}
	err = q.Process(ctx, po)
	var lh *queue.LockHeldError
	if errors.As(err, &lh) && lh.Path == q.NextSeqFile().LockPath() {
		r.state, r.err, r.rec = queueLocked, err, nil
		return
	}
	if rec != nil {
		rec.complete(err)
	}
	r.state, r.err, r.rec = queueDone, err, rec
}

// tell writes the line of a queue that did not succeed: nothing for one
// that did, as cron wants it. final: a locked queue is given up.
func (m *multiRun) tell(r *queueResult, final bool) {
	var line string
	switch {
	case r.state == queueLocked && !final:
		return
	case r.state == queueLocked:
		line = lockedLine(r.dir, r.err)
	case r.err != nil:
		line = fmt.Sprintf("pipespool: queue %s: %v\n", r.dir, r.err)
	default:
		m.opts.g.Logger().Debug("queue processed", "queue", r.dir)
		return
	}
	m.errMu.Lock()
	defer m.errMu.Unlock()
	fmt.Fprint(m.opts.g.streams.ErrOut, line)
}

// lockedLine says that the queue in dir was skipped because err, a
// *LockHeldError, and who holds the lock when /proc/locks says.
func lockedLine(dir string, err error) string {
	var lh *queue.LockHeldError
	errors.As(err, &lh)
	who := "pid unknown"
	if pid, comm, ok := proc.LockHolder(lh.Path); ok {
		who = fmt.Sprintf("pid %d", pid)
		if comm != "" {
			who += ", " + comm
		}
	}
	waited := ""
	if lh.Waited > 0 {
		waited = fmt.Sprintf("; waited %s", lh.Waited)
	}
	return fmt.Sprintf("pipespool: queue %s is locked by another process (%s)%s; skipped\n", dir, who, waited)
}

// exitRank orders exit codes by how bad they are for a multi-queue run:
// a queue locked (75) is only worth a retry, a job that failed (1) is
// worse, bad usage or a bad job file (2) worse still.
func exitRank(code int) int {
	switch code {
	case 0:
		return 0
	case 75:
		return 1
	case 1:
		return 2
	}
	return 3
}

// multiQueueError is the outcome of a multi-queue run that did not
// succeed: its summary line and exit status.
type multiQueueError struct {
	msg   string
	code  int
	cause error // the signal, when interrupted
}

func (e *multiQueueError) Error() string { return e.msg }
func (e *multiQueueError) Unwrap() error { return e.cause }

// ExitCode is the worst of the queues' codes (exitRank), or 128 + the
// signal.
func (e *multiQueueError) ExitCode() int { return e.code }

// verdict is the run's result: nil when every queue succeeded.
func (m *multiRun) verdict(ctx context.Context) error {
	var failed, locked, notRun []string
	code := 0
	for i := range m.results {
		r := &m.results[i]
		switch {
		case r.state == queueNotRun:
			notRun = append(notRun, r.dir)
		case r.state == queueLocked:
			locked = append(locked, r.dir)
		case r.err != nil:
			failed = append(failed, r.dir)
		}
		if c := r.code(); r.state != queueNotRun && exitRank(c) > exitRank(code) {
			code = c
		}
	}
	total := len(m.results)
	var ie *proc.InterruptedError
	if errors.As(context.Cause(ctx), &ie) {
		msg := fmt.Sprintf("%v: %d of %d queues done", ie, total-len(notRun), total)
		if len(notRun) > 0 {
			msg += fmt.Sprintf(", %d not started", len(notRun))
		}
		return &multiQueueError{msg: msg + "; a job that was stopped was not committed and runs again next time", code: ie.ExitCode(), cause: ie}
	}
	if code == 0 {
		return nil
	}
	var parts []string
	if len(failed) > 0 {
		parts = append(parts, fmt.Sprintf("%d failed (%s)", len(failed), listDirs(failed)))
	}
	if len(locked) > 0 {
		parts = append(parts, fmt.Sprintf("%d locked by another process, skipped (%s)", len(locked), listDirs(locked)))
	}
	return &multiQueueError{msg: fmt.Sprintf("%d of %d queues did not succeed: %s", len(failed)+len(locked), total, strings.Join(parts, "; ")), code: code}
}

// listDirs names a few queues of a summary line; each has its own line
// above it.
func listDirs(dirs []string) string {
	const most = 5
	if len(dirs) <= most {
		return strings.Join(dirs, ", ")
	}
	return strings.Join(dirs[:most], ", ") + fmt.Sprintf(" and %d more", len(dirs)-most)
}

// write writes --report and --metrics-file for the run that ended with
// err. When no queue ran (every one locked, or the run interrupted before
// any began) nothing is written, as for one queue whose lock is held.
func (m *multiRun) write(start time.Time, err error) {
	opts := m.opts
	if opts.Report == "" && opts.MetricsFile == "" {
		return
	}
	ran := false
	for i := range m.results {
		if s := m.results[i].state; s == queueDone || s == queueSetupFail {
			ran = true
		}
	}
	if !ran {
		return
	}
	log := opts.g.Logger()
	if opts.Report != "" {
		if werr := writeJSONAtomic(opts.Report, m.report(start, err)); werr != nil {
			log.Error("cannot write the report", "path", opts.Report, "err", werr)
		}
	}
	if opts.MetricsFile != "" {
		if werr := pipeline.WriteMetricsSeries(opts.MetricsFile, m.series()); werr != nil {
			log.Error("cannot write the metrics file", "path", opts.MetricsFile, "err", werr)
		}
	}
}

// report is the run's --report: one entry per queue, in the order given.
func (m *multiRun) report(start time.Time, err error) *queue.MultiProcessReport {
	end := time.Now()
	rep := &queue.MultiProcessReport{Kind: "queue-process-multi", Start: start, End: end,
		Duration: end.Sub(start).Seconds(), Parallel: m.opts.Parallel, ExitCode: exitCodeOf(err),
		Queues: make([]*queue.ProcessReport, len(m.results))}
	if err == nil {
		rep.ExitCode = 0
	} else {
		rep.Message = err.Error()
	}
	for i := range m.results {
		rep.Queues[i] = m.entry(&m.results[i], end)
	}
	rep.Count()
	return rep
}

// entry is the report of one queue: its own when it ran, else one that
// says why it did not.
func (m *multiRun) entry(r *queueResult, end time.Time) *queue.ProcessReport {
	if r.rec != nil {
		return &r.rec.rep
	}
	e := &queue.ProcessReport{Kind: "queue-process", Job: r.job, Queue: r.dir, JobFile: m.opts.JobFile,
		OrderBy: m.opts.OrderBy, OnError: m.opts.OnError, Start: end, End: end, Jobs: []queue.JobOutcome{}}
	if m.opts.Command[0] != "" {
		e.Command = m.opts.Command
	}
	switch r.state {
	case queueNotRun:
		e.Result, e.Message = queue.ResultNotRun, "not started: the run was interrupted"
	case queueLocked:
		e.Result, e.Message = queue.ResultLocked, strings.TrimSuffix(strings.TrimPrefix(lockedLine(r.dir, r.err), "pipespool: "), "\n")
	default:
		e.Result, e.Message = queue.ResultError, r.err.Error()
	}
	if e.Job == "" {
		e.Job = queueName(r.dir)
	}
	return e
}

// series are the run's metrics: one series per queue, labelled
// queue="DIR"; a queue that did not run keeps its series of the last run.
func (m *multiRun) series() []pipeline.MetricSeries {
	var out []pipeline.MetricSeries
	for i := range m.results {
		r := &m.results[i]
		label := []pipeline.Label{{Name: "queue", Value: r.dir}}
		switch {
		case r.rec != nil:
			out = append(out, r.rec.series())
		case r.state == queueSetupFail:
			now := time.Now()
			out = append(out, pipeline.MetricSeries{Labels: label,
				Report: &pipeline.Report{Job: r.job, Start: now, End: now, Result: pipeline.ResultFailed}})
		default:
			out = append(out, pipeline.MetricSeries{Labels: label, Keep: true})
		}
	}
	return out
}

// distinctDirs refuses a queue given twice (the second would find the
// first's lock held by this very process).
func distinctDirs(dirs []string) error {
	seen := make(map[string]string, len(dirs))
	var infos []os.FileInfo
	var named []string
	for _, d := range dirs {
		key := filepath.Clean(d)
		if abs, err := filepath.Abs(d); err == nil {
			key = abs
		}
		if prev, ok := seen[key]; ok {
			return usageErrorf("queue %s given twice (as %s and %s)", key, prev, d)
		}
		seen[key] = d
		if fi, err := os.Stat(d); err == nil {
			for j, o := range infos {
				if os.SameFile(fi, o) {
					return usageErrorf("queue %s given twice (as %s and %s, the same directory)", d, named[j], d)
				}
			}
			infos, named = append(infos, fi), append(named, d)
		}
	}
	return nil
}

// takesWritesWhole reports whether w takes concurrent writes each whole: a
// file, or pipespool's own stderr (which queues each write whole).
func takesWritesWhole(w io.Writer) bool {
	switch w.(type) {
	case *os.File, *diagWriter:
		return true
	}
	return false
}
