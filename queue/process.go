package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

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
		where = e.File
	}
	return fmt.Sprintf("job %d (%s) failed: %v; it stays in the queue and will be retried", e.Seq, where, e.Err)
}

func (e *JobFailedError) Unwrap() error { return e.Err }

// ExitCode is 1: the job failed.
func (e *JobFailedError) ExitCode() int { return 1 }

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
	var bySeq map[uint64][]Job
	scan := func() error {
		jobs, err := q.Scan(ctx, opts.Decoder)
		if err != nil {
			return err
		}
		bySeq = make(map[uint64][]Job, len(jobs))
		for _, j := range jobs {
			bySeq[j.Header.Seq] = append(bySeq[j.Header.Seq], j)
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
	c.prepare(next + 1)
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
		if terr := writeTempDurably(c.tempPath(), seq+2); err == nil && terr != nil {
			err = terr
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
		if c := a.Header.CTime().Compare(b.Header.CTime()); c != 0 {
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
				return &JobFailedError{Seq: job.Header.Seq, File: q.JobPath(job.Name), Err: jobErr}
			}
			q.Logger.Error("job failed", "seq", job.Header.Seq, "file", q.JobPath(job.Name), "err", jobErr.Error())
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

// runJob runs one job. jobErr is the job's own failure (command failed, Fail
// packet); err is anything that must stop processing without committing the
// job (I/O error, interruption).
func (q *Queue) runJob(ctx context.Context, job Job, opts ProcessOptions) (jobErr, err error) {
	path := filepath.Join(q.JobsDir(), job.Name)
	f, err := fsutil.Open(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("job %d: %w", job.Header.Seq, err)
	}
	defer f.Close()
	var stream *Stream
	payload := f
	var h *Header
	if opts.Decoder.Empty() {
		h, err = ReadHeader(f)
	} else {
		if stream, err = opts.Decoder.Start(ctx, f); err != nil {
			return nil, fmt.Errorf("job %d (%s): start decoder: %w", job.Header.Seq, path, err)
		}
		defer stream.Abort()
		payload = stream.Out
		h, err = ReadHeader(stream.Out)
	}
	if err != nil {
		if stream != nil {
			if derr := stream.Abort(); derr != nil {
				err = derr
			}
		}
		return nil, fmt.Errorf("job %s: header no longer readable: %w", path, err)
	}
	if h.Seq != job.Header.Seq {
		return nil, fmt.Errorf("job %s changed while the queue was processed (seq %d, was %d)", path, h.Seq, job.Header.Seq)
	}
	q.Logger.Debug("running job", "seq", h.Seq, "file", job.Name, "type", h.Type.String())
	run := &Run{Header: h, Env: JobEnv(h, q, job.Name), Payload: payload}
	decoderLeft := decoderOf(run, stream)
	jobErr, err = runPacket(ctx, q.Logger, run, opts, func() (*os.File, error) {
		return os.OpenFile(path+".out", os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_CLOEXEC, 0o644)
	})
	if derr := decoderLeft(jobErr); err == nil {
		jobErr = withDecoderFailure(jobErr, derr)
	}
	return jobErr, err
}

// decoderOf gives run the decoder stream's Wait as PayloadDone (nil stream:
// no decoder) and returns what to call once the run is over: it waits for
// the decoder and returns its failure, unless the runner already asked for
// it through PayloadDone and failed the job (pipeline mode's check before
// the output is committed), which then holds it already.
func decoderOf(run *Run, stream *Stream) (left func(jobErr error) error) {
	if stream == nil {
		return func(error) error { return nil }
	}
	var asked atomic.Bool
	run.PayloadDone = func() error {
		asked.Store(true)
		return stream.Wait()
	}
	return func(jobErr error) error {
		derr := stream.Wait()
		if asked.Load() && jobErr != nil {
			return nil
		}
		return derr
	}
}

// withDecoderFailure combines a job's failure with its decoder's. A decoder
// that failed on its own (a step that got EPIPE or SIGPIPE because the
// command stopped reading has not: see Stream.Wait) gave the command bad or
// short data, which is most often why the command failed too (zstd on a
// modified OpenPGP message finds its checksum wrong before the decoder,
// which checks the message's integrity at its end, says so): the decoder's
// failure is named first, the command's after it. Both stay in the chain
// for errors.Is and errors.As.
func withDecoderFailure(jobErr, derr error) error {
	switch {
	case derr == nil:
		return jobErr
	case jobErr == nil:
		return derr
	}
	return fmt.Errorf("%w (then the command failed: %w)", derr, jobErr)
}

// runPacket runs the packet of run with opts, shared by queue-process and
// stdin-process. openOutput opens the SaveBoth file.
func runPacket(ctx context.Context, log *slog.Logger, run *Run, opts ProcessOptions, openOutput func() (*os.File, error)) (jobErr, err error) {
	h := run.Header
	switch h.Type {
	case CmdNOP:
		return nil, nil
	case CmdFail:
		return errFailPacket, nil
	}
	if opts.AllowJobParams {
		for _, p := range h.Params {
			run.Params = append(run.Params, string(p))
		}
	} else if len(h.Params) > 0 {
		log.Warn("parameters given in job ignored because --allow-job-params not given", "seq", h.Seq)
	}
	if opts.IgnorePayload {
		devnull, err := os.OpenFile(os.DevNull, os.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		defer devnull.Close()
		run.Payload = devnull
	}
	if opts.OutputTo == SaveBoth && openOutput != nil {
		out, err := openOutput()
		if err != nil {
			return nil, fmt.Errorf("--output-to SaveBoth: %w", err)
		}
		run.Output = out
		defer func() {
			if cerr := out.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("--output-to SaveBoth: close %s: %w", out.Name(), cerr)
			}
		}()
	}
	jobErr = opts.Runner.RunJob(ctx, run)
	if ctx.Err() != nil {
		// Interrupted: the job did not finish, so it must not be committed.
		return nil, fmt.Errorf("job %d interrupted: %w", h.Seq, context.Cause(ctx))
	}
	return jobErr, nil
}

// ProcessStdin runs the packet read from in (stdin-process). A bad packet is
// a *PacketError (exit 2); a failed job a *JobFailedError (exit 1).
func ProcessStdin(ctx context.Context, in *os.File, log *slog.Logger, opts ProcessOptions) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h, stream, err := StdinHeader(ctx, in, opts.Decoder)
	if err != nil {
		return err
	}
	payload := in
	if stream != nil {
		defer stream.Abort()
		payload = stream.Out
	}
	run := &Run{Header: h, Env: JobEnv(h, nil, ""), Payload: payload}
	decoderLeft := decoderOf(run, stream)
	opts.OutputTo = PassBoth
	jobErr, err := runPacket(ctx, log, run, opts, nil)
	if err != nil {
		return err
	}
	jobErr = withDecoderFailure(jobErr, decoderLeft(jobErr))
	if jobErr != nil {
		return &stdinJobError{JobFailedError{Seq: h.Seq, Err: jobErr}}
	}
	return nil
}

// StdinHeader reads the header of the packet on in (stdin-*), through dec
// when it is not empty: then the payload is to be read from the returned
// Stream's Out, which the caller must Wait for (or Abort). A bad packet, or
// a decoder that fails before the header (a wrong key), is exit 2.
func StdinHeader(ctx context.Context, in *os.File, dec *Decoder) (*Header, *Stream, error) {
	if dec.Empty() {
		h, err := ReadHeader(in)
		if err != nil {
			return nil, nil, fmt.Errorf("stdin: %w", err)
		}
		return h, nil, nil
	}
	stream, err := dec.StartStream(ctx, in)
	if err != nil {
		return nil, nil, &PacketError{Reason: "stdin: cannot start the decoder", Err: err}
	}
	h, err := ReadHeader(stream.Out)
	if err != nil {
		if derr := stream.Abort(); derr != nil {
			return nil, nil, &PacketError{Reason: "stdin: the decoder failed", Err: derr}
		}
		return nil, nil, fmt.Errorf("stdin (decoded with %s): %w", dec, err)
	}
	return h, stream, nil
}

type stdinJobError struct{ JobFailedError }

func (e *stdinJobError) Error() string {
	return fmt.Sprintf("job %d (stdin) failed: %v", e.Seq, e.Err)
}

// CommandRunner runs a job as a command, as fspl does: argv, then the
// packet params, with the FSPL_* environment added to pipespool's, the
// payload on stdin, in a process group of its own.
type CommandRunner struct {
	Argv    []string
	Timeout time.Duration // 0: none; on expiry the group gets SIGKILL, as with fspl
	Stdout  *os.File      // PassBoth destinations
	Stderr  io.Writer
	// Grace is the time between SIGTERM and SIGKILL when pipespool is
	// interrupted (0: 5 s).
	Grace time.Duration
}

// RunJob implements Runner.
func (c *CommandRunner) RunJob(ctx context.Context, r *Run) error {
	argv := append(slices.Clone(c.Argv), r.Params...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), r.Env...)
	cmd.Stdin = r.Payload
	cmd.Stdout, cmd.Stderr = c.Stdout, c.Stderr
	if r.Output != nil {
		cmd.Stdout, cmd.Stderr = r.Output, r.Output
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	// The wait runs here, on this goroutine, with the timeout and an
	// interruption acting through callbacks: a goroutine for Wait and a
	// select cost each tiny job two more thread wake-ups.
	pgid := cmd.Process.Pid
	var (
		mu         sync.Mutex
		finished   bool   // Wait returned: signal nothing more, the group may be gone
		why        string // "timeout" or "interrupted", set when first signalled
		graceTimer *time.Timer
	)
	kill := func(reason string, sig syscall.Signal) {
		mu.Lock()
		defer mu.Unlock()
		if finished {
			return
		}
		if why == "" {
			why = reason
		}
		syscall.Kill(-pgid, sig)
	}
	if c.Timeout > 0 {
		t := time.AfterFunc(c.Timeout, func() { kill("timeout", syscall.SIGKILL) })
		defer t.Stop()
	}
	grace := c.Grace
	if grace <= 0 {
		grace = 5 * time.Second
	}
	stopCtx := context.AfterFunc(ctx, func() {
		kill("interrupted", syscall.SIGTERM)
		mu.Lock()
		defer mu.Unlock()
		if !finished {
			graceTimer = time.AfterFunc(grace, func() { kill("interrupted", syscall.SIGKILL) })
		}
	})
	err := cmd.Wait()
	stopCtx()
	mu.Lock()
	finished = true
	if graceTimer != nil {
		graceTimer.Stop()
	}
	reason := why
	mu.Unlock()
	if reason == "timeout" {
		return fmt.Errorf("%s: killed after the timeout of %s", argv[0], c.Timeout)
	}
	return commandErr(argv[0], err)
}

func commandErr(name string, err error) error {
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return fmt.Errorf("%s: killed by signal %s", name, ws.Signal())
		}
		return fmt.Errorf("%s: exit status %d", name, ee.ExitCode())
	}
	return fmt.Errorf("%s: %w", name, err)
}
