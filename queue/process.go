package queue

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// JobFailedError is a job that failed under --on-error Retry, or the packet
// of stdin-process.
type JobFailedError struct {
	Seq  uint64
	File string // "" for stdin
	Err  error
}

func (e *JobFailedError) Error() string {
	where := "stdin"
	if e.File != "" {
		where = QuoteName(e.File)
	}
	return fmt.Sprintf("job %d (%s) failed: %v; it stays in the queue and will be retried", e.Seq, where, e.Err)
}

func (e *JobFailedError) Unwrap() error { return e.Err }

// ExitCode is 1: the job failed.
func (e *JobFailedError) ExitCode() int { return 1 }

// SeqExhaustedError is a job numbered 2^64-1, the largest sequence number:
// nextseq could not move past it (fspl wraps it to 0), so it is not run.
type SeqExhaustedError struct {
	Path string
	Seq  uint64
}

func (e *SeqExhaustedError) Error() string {
	return fmt.Sprintf("job %d (%s) has the largest sequence number there is: nextseq could not move past it, so it is not run; "+
		"number the sender's packets lower (prepare-set-next) and set the queue's next number to match (queue-set-next)", e.Seq, e.Path)
}

// errFailPacket is the result of a Fail packet.
var errFailPacket = errors.New("Fail packet: fails by design")

// Process runs the queue's jobs under its lock, in opts.OrderBy order, until
// the next job is missing, opts.MaxJobs jobs ran, or a job fails under
// OnErrorRetry (a *JobFailedError). A held lock is a *LockHeldError.
//
// The commit of a job, in sequence order, is the durable replacement of
// nextseq; the job file is then unlinked and jobs/ fsynced. A crash before
// the commit runs the job again (at-least-once); a crash after it leaves at
// most a stale job file below nextseq, which is never run again.
//
// When the decoder verifies (require_signed_by), a packet it does not
// verify is no job: it is skipped with a warning and left in place, it
// never moves nextseq, and a verified packet with the same number is the
// one that runs (see choose).
func (q *Queue) Process(ctx context.Context, opts ProcessOptions) (err error) {
	sf := q.NextSeqFile()
	lock, err := q.lockNextSeqWait(ctx, opts.LockWait)
	if err != nil {
		return err
	}
	defer lock.Release()
	if opts.OrderBy == OrderTimestamp {
		return q.processByTimestamp(ctx, opts)
	}
	next, err := sf.Read()
	if err != nil {
		return err
	}
	// One scanner for the run: a rescan reads only the files that are new
	// or changed since the last one.
	sc := q.newScanner(opts.Decoder)
	var bySeq map[uint64][]Job
	scan := func() error {
		jobs, err := sc.scan(ctx)
		if err != nil {
			return err
		}
		bySeq = make(map[uint64][]Job, len(jobs))
		for _, j := range jobs {
			bySeq[j.Seq] = append(bySeq[j.Seq], j)
		}
		return nil
	}
	if err := scan(); err != nil {
		return err
	}
	// The commit of job k (nextseq = k+1 made durable, then the job file
	// unlinked) runs in its own goroutine while job k+1 runs, so that its
	// fsyncs cost no wall time. It is waited for before the next commit,
	// before returning, and before a failure is reported. Until it is
	// durable a crash runs job k again: the at-least-once window.
	c := &committer{q: q, sf: sf, opts: opts}
	if next < math.MaxUint64 {
		c.prepare(next + 1)
	}
	defer func() {
		if cerr := c.finish(); err == nil {
			err = cerr
		}
	}()
	skipped := unverifiedSet{}
	fresh := true // bySeq reflects jobs/ as of after the last job ran
	for ran := 0; opts.MaxJobs <= 0 || ran < opts.MaxJobs; {
		job, op, err := q.choose(ctx, opts, bySeq[next], skipped)
		if err != nil {
			return err
		}
		if op == nil {
			if fresh {
				q.Logger.Debug("no job with the next sequence number", "seq", next)
				return nil
			}
			// Jobs may have arrived while the last one ran.
			if err := scan(); err != nil {
				return err
			}
			fresh = true
			continue
		}
		if next == math.MaxUint64 {
			// fspl wraps nextseq to 0 here, and the queue would start
			// over below every job it has run.
			op.Close()
			return &SeqExhaustedError{Path: QuoteName(q.JobPath(job.Name)), Seq: next}
		}
		fresh = false
		del, err := q.runOne(ctx, opts, job, op)
		if err != nil {
			return err
		}
		if err := c.start(next, job.Name, del); err != nil {
			return err
		}
		delete(bySeq, next)
		next++
		ran++
	}
	return nil
}

// processByTimestamp runs every job present, oldest first; nextseq is not
// used, and deleting a job file is its commit.
func (q *Queue) processByTimestamp(ctx context.Context, opts ProcessOptions) error {
	jobs, err := q.Scan(ctx, opts.Decoder)
	if err != nil {
		return err
	}
	slices.SortStableFunc(jobs, func(a, b Job) int {
		return a.CTime().Compare(b.CTime()) // equal: Scan sorted by seq, then name
	})
	skipped := unverifiedSet{}
	ran := 0
	for _, job := range jobs {
		if opts.MaxJobs > 0 && ran >= opts.MaxJobs {
			return nil
		}
		_, op, err := q.choose(ctx, opts, []Job{job}, skipped)
		if err != nil {
			return err
		}
		if op == nil {
			continue
		}
		ran++
		del, err := q.runOne(ctx, opts, job, op)
		if err != nil {
			return err
		}
		if del {
			if err := q.deleteJob(job.Name); err != nil {
				return err
			}
		}
	}
	return nil
}

// runOne runs job, whose packet op is open (runOne closes it), tells
// opts.OnJob, and applies --on-error: it returns whether the job file is
// to be deleted once the job is committed, a *JobFailedError under
// OnErrorRetry, or an error that stops processing with nothing committed.
func (q *Queue) runOne(ctx context.Context, opts ProcessOptions, job Job, op *OpenedPacket) (del bool, err error) {
	start := time.Now()
	jobErr, err := q.runOpened(ctx, job, op, opts)
	q.report(ctx, opts, job, start, jobErr, err)
	if err != nil {
		return false, err
	}
	if jobErr != nil {
		if opts.OnError == OnErrorRetry {
			return false, &JobFailedError{Seq: job.Seq, File: q.JobPath(job.Name), Err: jobErr}
		}
		q.Logger.Error("job failed", "seq", job.Seq, "file", q.JobPath(job.Name), "err", jobErr.Error(), "on_error", opts.OnError.String())
	}
	return (jobErr == nil || opts.OnError == OnErrorDelete) && !opts.NeverDelete, nil
}

// unverifiedSet holds the job files of a run found not verified: each is
// verified, and warned about, once per run.
type unverifiedSet map[string]bool

// choose opens the packet to run among cands, the job files that carry
// one sequence number (or, in Timestamp order, one job file), and returns
// it with its job; nil when none is to run.
//
// Without a verifying decoder, two candidates are a *DuplicateSeqError, as
// with fspl. With one (require_signed_by), a candidate is a job only once
// it is verified: one that is not (unsigned, signed by another key,
// modified) is skipped with a warning naming it and why, and left where it
// is, so that whoever can drop a file into jobs/ cannot take a number
// from the sender (under Delete it would be consumed, and the sender's
// packet with that number never run; under Retry it would stop the queue).
// The verified candidate is the one that runs; two verified ones are a
// *DuplicateSeqError.
func (q *Queue) choose(ctx context.Context, opts ProcessOptions, cands []Job, skipped unverifiedSet) (Job, *OpenedPacket, error) {
	dec := opts.Decoder
	if len(cands) > 1 && !dec.Verifies() {
		return Job{}, nil, &DuplicateSeqError{Seq: cands[0].Seq, First: q.JobPath(cands[0].Name), Second: q.JobPath(cands[1].Name)}
	}
	var (
		job Job
		op  *OpenedPacket
	)
	for _, c := range cands {
		if skipped[c.Name] {
			continue
		}
		p, err := q.openPacket(ctx, dec, c, q.jobProcs(opts, c.Seq))
		var ue *UnverifiedError
		switch {
		case ctx.Err() != nil:
			if p != nil {
				p.Close()
			}
			if op != nil {
				op.Close()
			}
			return Job{}, nil, fmt.Errorf("job %d interrupted: %w", c.Seq, context.Cause(ctx))
		case errors.As(err, &ue):
			skipped[c.Name] = true
			q.Logger.Warn("skipping job file: not verified, so it is no job: not run, left in place, nextseq not moved; remove it once you have looked at it",
				"seq", c.Seq, "file", q.JobPath(c.Name), "reason", ue.Err.Error())
			continue
		case err != nil:
			if op != nil {
				op.Close()
			}
			return Job{}, nil, err
		}
		if op != nil {
			op.Close()
			p.Close()
			return Job{}, nil, &DuplicateSeqError{Seq: c.Seq, First: q.JobPath(job.Name), Second: q.JobPath(c.Name)}
		}
		job, op = c, p
	}
	return job, op, nil
}

// jobProcs opens the scope of job seq's processes (see newJobProcs): the
// command runner starts the job's command there.
func (q *Queue) jobProcs(opts ProcessOptions, seq uint64) jobProcs {
	_, command := opts.Runner.(*CommandRunner)
	return newJobProcs(command, opts.Decoder, opts.MayOutlive, q.Logger, fmt.Sprintf("job %d", seq))
}
