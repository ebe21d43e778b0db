package queue

import (
	"context"
	"errors"
	"time"

	"github.com/pipespool/pipespool/proc"
)

// Results of one job (JobOutcome.Result) and of a queue-process run
// (ProcessReport.Result).
const (
	ResultSuccess     = "success"
	ResultFailed      = "failed"
	ResultInterrupted = "interrupted"
	ResultError       = "error" // processing stopped on an I/O error, duplicate seq...
	// A queue of a multi-queue run that did not run (MultiProcessReport).
	ResultLocked = "locked"  // another process held its lock: skipped
	ResultNotRun = "not_run" // not started: the run was interrupted first
)

// What happened to a job file after its run (JobOutcome.Disposition).
const (
	DispositionDeleted = "deleted" // succeeded (or failed under --on-error Delete) and unlinked
	DispositionKept    = "kept"    // --never-delete, or the run stopped before its commit
	DispositionLeft    = "left"    // failed under --on-error Leave: stays, nextseq moved on
	DispositionRetry   = "retry"   // failed under --on-error Retry: stays, nextseq did not move
)

// JobOutcome is what queue-process did with one job: ProcessOptions.OnJob
// receives one per job it ran, and the --report of queue-process lists them
// (docs/report.md).
type JobOutcome struct {
	File        string    `json:"file"` // the job file, as DIR/jobs/NAME
	Seq         uint64    `json:"seq"`
	Type        string    `json:"type"` // Command, NOP or Fail
	CTime       time.Time `json:"ctime"`
	Start       time.Time `json:"start"`
	End         time.Time `json:"end"`
	Duration    float64   `json:"duration_seconds"`
	Result      string    `json:"result"` // success, failed, interrupted or error
	Error       string    `json:"error,omitempty"`
	Disposition string    `json:"disposition"`
	// Pipeline is the pipeline's run report in pipeline mode (the caller
	// fills it in: the queue package does not know pipelines).
	Pipeline any `json:"pipeline,omitempty"`
}

// ProcessReport is the --report of queue-process: the whole run and one
// entry per job it ran. Schema: testdata/queue-report.schema.json.
type ProcessReport struct {
	Kind          string       `json:"kind"` // always "queue-process"
	Job           string       `json:"job"`  // the metrics' job label
	Queue         string       `json:"queue"`
	JobFile       string       `json:"job_file,omitempty"` // pipeline mode
	Command       []string     `json:"command,omitempty"`  // command mode
	Decoder       string       `json:"decoder"`
	OrderBy       string       `json:"order_by"`
	OnError       string       `json:"on_error"`
	Start         time.Time    `json:"start"`
	End           time.Time    `json:"end"`
	Duration      float64      `json:"duration_seconds"`
	Result        string       `json:"result"`
	Message       string       `json:"message,omitempty"`
	NextSeqBefore *uint64      `json:"nextseq_before,omitempty"`
	NextSeqAfter  *uint64      `json:"nextseq_after,omitempty"`
	JobsProcessed int          `json:"jobs_processed"`
	JobsSucceeded int          `json:"jobs_succeeded"`
	JobsFailed    int          `json:"jobs_failed"`
	Jobs          []JobOutcome `json:"jobs"`
}

// disposition says what happens to a job file after its run.
func disposition(jobErr error, opts ProcessOptions) string {
	switch {
	case jobErr != nil && opts.OnError == OnErrorRetry:
		return DispositionRetry
	case jobErr != nil && opts.OnError == OnErrorLeave:
		return DispositionLeft
	case opts.NeverDelete:
		return DispositionKept
	}
	return DispositionDeleted
}

// report tells opts.OnJob about a job that ran from start until now.
func (q *Queue) report(ctx context.Context, opts ProcessOptions, job Job, start time.Time, jobErr, err error) {
	if opts.OnJob == nil {
		return
	}
	end := time.Now()
	o := JobOutcome{File: q.JobPath(job.Name), Seq: job.Seq, Type: job.Type.String(),
		CTime: job.CTime().UTC(), Start: start, End: end, Duration: end.Sub(start).Seconds(),
		Result: ResultSuccess, Disposition: disposition(jobErr, opts)}
	switch {
	case err != nil:
		o.Result, o.Error, o.Disposition = ResultError, err.Error(), DispositionKept
		if ctx.Err() != nil {
			o.Result = ResultInterrupted
		}
	case jobErr != nil:
		o.Result, o.Error = ResultFailed, jobErr.Error()
	}
	opts.OnJob(o)
}

// Add counts o, a job that ran, in the report.
func (r *ProcessReport) Add(o JobOutcome) {
	r.Jobs = append(r.Jobs, o)
	r.JobsProcessed++
	if o.Result == ResultSuccess {
		r.JobsSucceeded++
	} else {
		r.JobsFailed++
	}
}

// Finish completes the report at end with the result of the run: err is
// what Process returned.
func (r *ProcessReport) Finish(err error, end time.Time) {
	r.End = end
	r.Duration = end.Sub(r.Start).Seconds()
	r.Result = runResult(err, r.JobsFailed)
	if err != nil {
		r.Message = err.Error()
	}
}

// runResult is the result of a queue-process run that returned err after
// failed jobs failed. A failure under --on-error Delete or Leave exits 0
// but is no success: the report says failed.
func runResult(err error, failed int) string {
	var ie *proc.InterruptedError
	var jf *JobFailedError
	switch {
	case errors.As(err, &ie):
		return ResultInterrupted
	case errors.As(err, &jf):
		return ResultFailed
	case err != nil:
		return ResultError
	case failed > 0:
		return ResultFailed
	}
	return ResultSuccess
}

// MultiProcessReport is the --report of queue-process over several queues:
// the whole run and one ProcessReport per queue, in the order the queues
// were given. Schema: testdata/queue-multi-report.schema.json.
type MultiProcessReport struct {
	Kind     string    `json:"kind"` // always "queue-process-multi"
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Duration float64   `json:"duration_seconds"`
	Parallel int       `json:"parallel"`
	// Result is success (every queue succeeded), failed (a queue
	// failed: its result is failed or error), locked (every queue that
	// did not succeed was locked) or interrupted.
	Result          string           `json:"result"`
	ExitCode        int              `json:"exit_code"`
	Message         string           `json:"message,omitempty"`
	QueuesTotal     int              `json:"queues_total"`
	QueuesSucceeded int              `json:"queues_succeeded"`
	QueuesFailed    int              `json:"queues_failed"`
	QueuesLocked    int              `json:"queues_locked"`
	QueuesNotRun    int              `json:"queues_not_run"`
	Queues          []*ProcessReport `json:"queues"`
}

// Count fills in the counts and the result from the queues' entries.
func (r *MultiProcessReport) Count() {
	r.QueuesTotal = len(r.Queues)
	interrupted := false
	for _, q := range r.Queues {
		switch q.Result {
		case ResultSuccess:
			r.QueuesSucceeded++
		case ResultLocked:
			r.QueuesLocked++
		case ResultNotRun:
			r.QueuesNotRun++
			interrupted = true
		case ResultInterrupted:
			r.QueuesFailed++
			interrupted = true
		default:
			r.QueuesFailed++
		}
	}
	switch {
	case interrupted:
		r.Result = ResultInterrupted
	case r.QueuesFailed > 0:
		r.Result = ResultFailed
	case r.QueuesLocked > 0:
		r.Result = ResultLocked
	default:
		r.Result = ResultSuccess
	}
}
