package queue

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pipespool/pipespool/fsutil"
)

// Order is the order in which queue-process runs jobs.
type Order int

const (
	// OrderSequence runs the job whose seq is nextseq, then the next, and
	// stops at the first missing number (fspl's default).
	OrderSequence Order = iota
	// OrderTimestamp runs every job present, oldest ctime first, and does
	// not use nextseq.
	OrderTimestamp
)

// OnError is what queue-process does with a failed job.
type OnError int

const (
	// OnErrorRetry stops: the job stays and nextseq does not move; exit 1.
	OnErrorRetry OnError = iota
	// OnErrorDelete deletes the failed job and goes on.
	OnErrorDelete
	// OnErrorLeave leaves the failed job file in jobs/ and goes on.
	OnErrorLeave
)

// OutputTo is where a job's stdout and stderr go.
type OutputTo int

const (
	// PassBoth: pipespool's own stdout and stderr.
	PassBoth OutputTo = iota
	// SaveBoth: both into jobs/<file>.out, truncated for each run.
	SaveBoth
)

// ParseOrder, ParseOnError and ParseOutputTo accept fspl's spellings
// (case-insensitive).
func ParseOrder(s string) (Order, error) {
	switch strings.ToLower(s) {
	case "sequence":
		return OrderSequence, nil
	case "timestamp":
		return OrderTimestamp, nil
	}
	return 0, fmt.Errorf("--order-by %q: use Sequence or Timestamp", s)
}

// ParseOnError parses --on-error.
func ParseOnError(s string) (OnError, error) {
	switch strings.ToLower(s) {
	case "retry":
		return OnErrorRetry, nil
	case "delete":
		return OnErrorDelete, nil
	case "leave":
		return OnErrorLeave, nil
	}
	return 0, fmt.Errorf("--on-error %q: use Retry, Delete or Leave", s)
}

// ParseOutputTo parses --output-to.
func ParseOutputTo(s string) (OutputTo, error) {
	switch strings.ToLower(s) {
	case "passboth":
		return PassBoth, nil
	case "saveboth":
		return SaveBoth, nil
	}
	return 0, fmt.Errorf("--output-to %q: use PassBoth or SaveBoth", s)
}

// Run is one job handed to a Runner.
type Run struct {
	Header *Header
	// Env is the FSPL_* environment of the job (JobEnv).
	Env []string
	// Params are the packet params to append to the command line; empty
	// unless --allow-job-params.
	Params []string
	// Payload is the job's stdin, positioned at the payload: the job file
	// itself without a decoder, the decoder's output with one, /dev/null
	// with --ignore-payload. The Runner does not close it.
	Payload *os.File
	// Output, when not nil, receives both stdout and stderr (SaveBoth).
	Output *os.File
	// PayloadDone, when not nil, waits for the decoder that produces
	// Payload and returns its error: an OpenPGP integrity check fails only
	// after the last byte. Call it only once the payload has been read.
	PayloadDone func() error
}

// Runner runs one job; nil means success.
type Runner interface {
	RunJob(ctx context.Context, r *Run) error
}

// ProcessOptions are queue-process's and stdin-process's options.
type ProcessOptions struct {
	Decoder        *Decoder
	Runner         Runner
	OrderBy        Order
	OnError        OnError
	OutputTo       OutputTo
	MaxJobs        int // 0: no limit
	NeverDelete    bool
	AllowJobParams bool
	IgnorePayload  bool
	// OnJob, when not nil, is told what became of each job that ran
	// (queue-process --report and --metrics-file).
	OnJob func(JobOutcome)
}

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
func (q *Queue) Process(ctx context.Context, opts ProcessOptions) (err error) {
	sf := q.NextSeqFile()
	lock, err := sf.Lock(false)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: not a processable queue (missing nextseq.lock: run queue-init without --append-only): %w", q.Dir, err)
		}
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
	fresh := true // bySeq reflects jobs/ as of after the last job ran
	for ran := 0; opts.MaxJobs <= 0 || ran < opts.MaxJobs; ran++ {
		cands := bySeq[next]
		if len(cands) == 0 {
			if fresh {
				q.Logger.Debug("no job with the next sequence number", "seq", next)
				return nil
			}
			// Jobs may have arrived while the last one ran.
			if err := scan(); err != nil {
				return err
			}
			fresh = true
			ran--
			continue
		}
		if len(cands) > 1 {
			return &DuplicateSeqError{Seq: next, First: q.JobPath(cands[0].Name), Second: q.JobPath(cands[1].Name)}
		}
		job := cands[0]
		if next == math.MaxUint64 {
			// fspl wraps nextseq to 0 here, and the queue would start
			// over below every job it has run.
			return &SeqExhaustedError{Path: QuoteName(q.JobPath(job.Name)), Seq: next}
		}
		fresh = false
		start := time.Now()
		jobErr, err := q.runJob(ctx, job, opts)
		q.report(ctx, opts, job, start, jobErr, err)
		if err != nil {
			return err
		}
		if jobErr != nil {
			if opts.OnError == OnErrorRetry {
				return &JobFailedError{Seq: next, File: q.JobPath(job.Name), Err: jobErr}
			}
			q.Logger.Error("job failed", "seq", next, "file", q.JobPath(job.Name), "err", jobErr.Error(),
				"on_error", map[OnError]string{OnErrorDelete: "Delete", OnErrorLeave: "Leave"}[opts.OnError])
		}
		del := (jobErr == nil || opts.OnError == OnErrorDelete) && !opts.NeverDelete
		if err := c.start(next, job.Name, del); err != nil {
			return err
		}
		delete(bySeq, next)
		next++
	}
	return nil
}

// committer makes jobs' commits durable in the background, one at a time.
//
// nextseq.temp for the number after a job is written and fsynced ahead of
// time, so that the commit of job k is a rename of an already durable file
// followed by an fsync of the queue directory; then, in the same goroutine,
// the job file is unlinked and the next nextseq.temp written and fsynced.
// All of it overlaps the run of job k+1. (The two fsyncs once ran in two
// goroutines, at the same time: with the command's wait that made three
// threads blocked in syscalls on two CPUs, and 2 000 tiny jobs cost 52 000
// context switches against 45 000 now, for no gain in wall time.)
type committer struct {
	q       *Queue
	sf      SeqFile
	opts    ProcessOptions
	pending chan error // result of the work in flight; nil when none
	deleted bool       // a job file was unlinked since jobs/ was last fsynced
	temp    uint64     // the value nextseq.temp holds, durably, once pending is done; 0 none
}

func (c *committer) tempPath() string { return c.sf.Path + ".temp" }

// wait waits for the work in flight.
func (c *committer) wait() error {
	if c.pending == nil {
		return nil
	}
	err := <-c.pending
	c.pending = nil
	return err
}

// prepare writes nextseq.temp = n and fsyncs it, in the background.
func (c *committer) prepare(n uint64) {
	c.pending = make(chan error, 1)
	c.temp = n
	go func() { c.pending <- writeTempDurably(c.tempPath(), n) }()
}

// start waits for the work in flight, then commits job seq: nextseq.temp
// (seq+1, already durable) is renamed over nextseq and the queue directory
// fsynced; once that is done the job file is unlinked when del is set.
// Meanwhile nextseq.temp = seq+2 is prepared for the next job.
func (c *committer) start(seq uint64, name string, del bool) error {
	if err := c.wait(); err != nil {
		return err
	}
	if c.temp != seq+1 {
		if err := writeTempDurably(c.tempPath(), seq+1); err != nil {
			return fmt.Errorf("job %d ran but nextseq could not be advanced (it will run again): %w", seq, err)
		}
	}
	if err := os.Rename(c.tempPath(), c.sf.Path); err != nil {
		c.temp = 0
		return fmt.Errorf("job %d ran but nextseq could not be advanced (it will run again): %w", seq, err)
	}
	if del {
		c.deleted = true
	}
	c.pending = make(chan error, 1)
	c.temp = seq + 2
	if seq+1 == math.MaxUint64 {
		c.temp = 0 // no number after it to prepare
	}
	go func() {
		err := fsutil.SyncDir(filepath.Dir(c.sf.Path))
		if err != nil {
			err = fmt.Errorf("job %d ran but nextseq could not be made durable (it may run again): %w", seq, err)
		} else if del {
			c.q.Logger.Debug("deleting job file", "file", c.q.JobPath(name))
			if rerr := os.Remove(filepath.Join(c.q.JobsDir(), name)); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				err = fmt.Errorf("delete processed job: %w", rerr)
			}
		}
		if seq+1 < math.MaxUint64 {
			if terr := writeTempDurably(c.tempPath(), seq+2); err == nil && terr != nil {
				err = terr
			}
		}
		c.pending <- err
	}()
	return nil
}

// finish waits for the work in flight, removes the prepared nextseq.temp
// and makes the unlinks durable. Losing an unlink to a crash would be
// harmless (a job file below nextseq is never run), so jobs/ is fsynced once
// per run rather than once per job.
func (c *committer) finish() error {
	err := c.wait()
	if c.temp != 0 {
		if rerr := os.Remove(c.tempPath()); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
			err = rerr
		}
	}
	if c.deleted {
		if ferr := fsutil.SyncDir(c.q.JobsDir()); err == nil {
			err = ferr
		}
	}
	return err
}

func (q *Queue) processByTimestamp(ctx context.Context, opts ProcessOptions) error {
	jobs, err := q.Scan(ctx, opts.Decoder)
	if err != nil {
		return err
	}
	slices.SortStableFunc(jobs, func(a, b Job) int {
		if c := a.CTime().Compare(b.CTime()); c != 0 {
			return c
		}
		return 0 // Scan sorted by seq, then name
	})
	for i, job := range jobs {
		if opts.MaxJobs > 0 && i >= opts.MaxJobs {
			return nil
		}
		start := time.Now()
		jobErr, err := q.runJob(ctx, job, opts)
		q.report(ctx, opts, job, start, jobErr, err)
		if err != nil {
			return err
		}
		if jobErr != nil {
			if opts.OnError == OnErrorRetry {
				return &JobFailedError{Seq: job.Seq, File: q.JobPath(job.Name), Err: jobErr}
			}
			q.Logger.Error("job failed", "seq", job.Seq, "file", q.JobPath(job.Name), "err", jobErr.Error())
			if opts.OnError == OnErrorLeave {
				continue
			}
		}
		if err := q.deleteJob(job.Name, opts); err != nil {
			return err
		}
	}
	return nil
}

// deleteJob unlinks a processed job and makes that durable.
func (q *Queue) deleteJob(name string, opts ProcessOptions) error {
	if opts.NeverDelete {
		return nil
	}
	q.Logger.Debug("deleting job file", "file", q.JobPath(name))
	if err := os.Remove(filepath.Join(q.JobsDir(), name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete processed job: %w", err)
	}
	return fsutil.SyncDir(q.JobsDir())
}
