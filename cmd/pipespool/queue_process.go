package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipespool/pipespool/fsutil"
	"github.com/pipespool/pipespool/pipeline"
	"github.com/pipespool/pipespool/proc"
	"github.com/pipespool/pipespool/queue"
)

// processFlags are the options queue-process and stdin-process share.
type processFlags struct {
	AllowJobParams bool
	IgnorePayload  bool
	Timeout        uint64 // seconds, 0: none
	JobFile        string // --job: pipeline mode
}

func (f *processFlags) bind(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVar(&f.AllowJobParams, "allow-job-params", false, "append the packet's parameters to the command line (after -- PARAMS)")
	fl.BoolVar(&f.IgnorePayload, "ignore-payload", false, "do not pass the payload to the command (its stdin is /dev/null)")
	fl.Uint64Var(&f.Timeout, "timeout", 0, "kill the job (SIGKILL to its process group) after SECONDS; 0: no timeout")
	fl.StringVar(&f.JobFile, "job", "", "run each packet through the pipeline of this job file instead of COMMAND")
}

// queueProcessOptions are queue-process's options.
type queueProcessOptions struct {
	queueDirOptions
	processFlags
	MaxJobs     int
	NeverDelete bool
	OrderBy     string
	OnError     string
	OutputTo    string
	Report      string
	MetricsFile string
	Lock        string
	LockWait    time.Duration
	// QueueDirs are the -q values; Parallel and QueueLockWait are
	// --parallel and --queue-lock-wait.
	QueueDirs     []string
	Parallel      int
	QueueLockWait time.Duration

	Dirs    []string // the queue directories, once the command line is parsed
	Dir     string   // the first of them
	Command []string // COMMAND and -- PARAMS; empty in pipeline mode
}

// NewCmdQueueProcess processes a queue, as fspl queue-process, with a
// command or a pipeline; runF does the work (nil: runQueueProcess).
func NewCmdQueueProcess(g *globalOptions, runF func(*queueProcessOptions) error) *cobra.Command {
	opts := &queueProcessOptions{queueDirOptions: queueDirOptions{g: g}}
	if runF == nil {
		runF = runQueueProcess
	}
	cmd := &cobra.Command{
		Use:   "queue-process [-q] DIR [options] [COMMAND [-- PARAMS...]] | -q DIR... [COMMAND] | DIR... (no COMMAND)",
		Short: "Process a queue",
		Long: `Run the queue's jobs in order under the queue's lock (nextseq.lock; exit 75
if another pipespool or fspl holds it). Each job runs COMMAND (with PARAMS,
then with --allow-job-params the packet's params), its payload on stdin and
the FSPL_* variables in its environment; or, in pipeline mode (--job
JOB.toml, or DIR/pipespool.toml when no COMMAND is given), the job file's
pipeline with the payload as its input.

After a job succeeds, nextseq is advanced durably and the job file deleted.
A failed job stops processing with exit 1 under --on-error Retry (the
default); with Delete or Leave, nextseq moves on and processing continues.
Delivery is at-least-once: see docs/queue.md.

-d openpgp decrypts job files with the key of the [decoder.openpgp] table
of the job file (--job, DIR/pipespool.toml, or --decoder-config FILE).
--report writes a JSON report of the run with one entry per job, and
--metrics-file Prometheus metrics (docs/report.md); --lock PATH holds an
extra flock for the run, as exec does.

Several queues: -q DIR repeated (any mode: the arguments are then COMMAND
and -- PARAMS), or, without -q, several directories as arguments and no
COMMAND (pipeline mode: --job for all, else each DIR/pipespool.toml); this
is so when every argument after the first names an existing directory.
Each queue runs in its own order under its own lock, up to --parallel at
once; a queue another process holds is skipped with a message (or waited
for: --queue-lock-wait), and a failing queue does not stop the others.
Nothing is printed for a queue that succeeded; one line for each that did
not, then a summary. See docs/queue.md.

Exit status: 0 success (also: empty queue, --maxjobs reached, a failure
under --on-error Delete/Leave), 1 a job failed under --on-error Retry, 2
invalid usage or job file, 75 the queue's lock or --lock held,
129/130/131/143 interrupted by SIGHUP/SIGINT/SIGQUIT/SIGTERM. With several
queues: the worst of the queues' codes, where 2 is worse than 1 and 1 than
75 (75 only when every queue that did not succeed was locked).`,
		Example: `  pipespool queue-process -q /q sh -- -c 'zstd -d | zfs receive -u tank/backup'
  pipespool queue-process /q --on-error Leave -n 10 ./restore.sh -- --verbose
  pipespool queue-process /q --job restore.toml
  pipespool queue-process /q -d zstd cat
  pipespool queue-process /q -d openpgp -d zstd --job restore.toml --report /var/log/restore.json
  pipespool queue-process /q --lock /run/lock/restore.lock --metrics-file /var/lib/node_exporter/textfile/restore.prom sh -- -c 'zfs receive -u tank/b'
  pipespool queue-process --parallel 4 /backup/queues/*/
  pipespool queue-process --parallel 4 --job restore.toml /backup/queues/*/
  pipespool queue-process -q /backup/queues/a -q /backup/queues/b ./restore.sh`,
		RunE: func(cmd *cobra.Command, args []string) error {
			before, after := splitAtDash(cmd, args)
			dirs, cmdv, err := queueProcessArgs(opts.QueueDirs, before, after, isDir)
			if err != nil {
				return err
			}
			opts.Dirs, opts.Dir, opts.Command = dirs, dirs[0], cmdv
			return runF(opts)
		},
	}
	cmd.Flags().StringArrayVarP(&opts.QueueDirs, "queuedir", "q", nil, "a queue directory (or give it as the first argument); repeat for several queues")
	opts.bindDecoder(cmd)
	opts.processFlags.bind(cmd)
	fl := cmd.Flags()
	fl.IntVarP(&opts.MaxJobs, "maxjobs", "n", 0, "process at most JOBS jobs; 0: no limit")
	fl.BoolVar(&opts.NeverDelete, "never-delete", false, "never delete processed job files")
	fl.StringVar(&opts.OrderBy, "order-by", "Sequence", "Sequence (nextseq order) or Timestamp (every job, oldest first)")
	fl.StringVar(&opts.OnError, "on-error", "Retry", "what to do with a failed job: Retry, Delete or Leave")
	fl.StringVar(&opts.OutputTo, "output-to", "PassBoth", "PassBoth, or SaveBoth (stdout and stderr into jobs/<file>.out)")
	fl.StringVar(&opts.Report, "report", "", "write a JSON report of the run, one entry per job, to this file (schema: docs/report.md)")
	fl.StringVar(&opts.MetricsFile, "metrics-file", "", "write Prometheus text-format metrics of the run to this file, atomically")
	fl.StringVar(&opts.Lock, "lock", "", "hold flock(2) on this file for the run; exit 75 if another process holds it")
	fl.DurationVar(&opts.LockWait, "lock-wait", 0, "with --lock: wait up to this long for the lock before exiting 75")
	fl.IntVar(&opts.Parallel, "parallel", 1, "with several queues: process up to N queues at once")
	fl.DurationVar(&opts.QueueLockWait, "queue-lock-wait", 0, "wait up to this long for a queue's lock that another process holds (with several queues: after the others ran); 0: skip it at once (exit 75 for one queue)")
	return cmd
}

// queueProcessArgs finds the queue directories, COMMAND and PARAMS of
// queue-process in its arguments before -- (before) and after it (after),
// flagDirs being the -q values:
//   - with -q, the -q values are the queues, and the arguments are
//     COMMAND and its -- PARAMS, as for one queue;
//   - without, the first argument is a queue; when every argument after it
//     names an existing directory (isDir), so do they, and there is no
//     COMMAND (pipeline mode); otherwise the second argument is COMMAND,
//     as for one queue. A directory cannot be run, so no command line
//     that ran a COMMAND before means something else now.
func queueProcessArgs(flagDirs, before, after []string, isDir func(string) bool) (dirs, command []string, err error) {
	if len(flagDirs) > 0 {
		command, err = commandArgs(before, after)
		return flagDirs, command, err
	}
	if len(before) == 0 {
		return nil, nil, usageErrorf("no queue directory: give -q DIR or DIR as the first argument")
	}
	rest := before[1:]
	if len(rest) > 0 && !slices.ContainsFunc(rest, func(a string) bool { return !isDir(a) }) {
		command, err = commandArgs(nil, after)
		return before, command, err
	}
	if len(rest) > 1 && isDir(rest[0]) {
		i := slices.IndexFunc(rest, func(a string) bool { return !isDir(a) })
		return nil, nil, usageErrorf("queue directories %s and then %q, which is not a directory: with several queues "+
			"give each as -q DIR before COMMAND (-q A -q B COMMAND), or give only directories and no COMMAND (pipeline mode)",
			strings.Join(before[:i+1], " "), rest[i])
	}
	command, err = commandArgs(rest, after)
	return before[:1], command, err
}

// isDir says whether path names a directory (following links).
func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// splitAtDash splits args into those before -- and those after it.
func splitAtDash(cmd *cobra.Command, args []string) (before, after []string) {
	if dash := cmd.Flags().ArgsLenAtDash(); dash >= 0 {
		return args[:dash], args[dash:]
	}
	return args, nil
}

// commandArgs joins COMMAND and the PARAMS after --. Like fspl, anything
// after COMMAND other than -- PARAMS is an error, so that a command's own
// options cannot be mistaken for ours.
func commandArgs(before, after []string) ([]string, error) {
	if len(before) > 1 {
		return nil, usageErrorf("unexpected argument %q after COMMAND %q: give the command's arguments after --, as in: COMMAND -- ARGS", before[1], before[0])
	}
	if len(before) == 0 {
		// Pipeline mode: PARAMS go to the last stage. An empty slice
		// (not nil) keeps "-- PARAMS" apart from COMMAND.
		return append([]string{""}, after...), nil
	}
	return append([]string{before[0]}, after...), nil
}

func runQueueProcess(opts *queueProcessOptions) error {
	g := opts.g
	po, err := opts.processOptions()
	if err != nil {
		return err
	}
	if len(opts.Dirs) > 1 {
		return runQueues(opts, po)
	}
	po, jobFile, err := opts.setupQueue(opts.Dir, po, g.Logger())
	if err != nil {
		return err
	}
	survivePipeErrors()
	ctx, stop := signalContext(g.streams.ErrOut)
	defer stop()
	lock, err := runLock(ctx, opts.Lock, opts.LockWait)
	if err != nil {
		return err
	}
	defer lock.Release()
	q := queue.Open(opts.Dir, g.Logger())
	if opts.Report == "" && opts.MetricsFile == "" {
		return q.Process(ctx, po)
	}
	rec := newQueueRecorder(opts, po, jobFile, q)
	po.OnJob = rec.onJob
	err = q.Process(ctx, po)
	rec.finish(err)
	return err
}

// processOptions checks what the command line says for every queue and
// returns the queue options it makes (Decoder and Runner are per queue).
func (opts *queueProcessOptions) processOptions() (queue.ProcessOptions, error) {
	po := queue.ProcessOptions{MaxJobs: opts.MaxJobs, NeverDelete: opts.NeverDelete,
		AllowJobParams: opts.AllowJobParams, IgnorePayload: opts.IgnorePayload, LockWait: opts.QueueLockWait}
	var err error
	if po.OrderBy, err = queue.ParseOrder(opts.OrderBy); err != nil {
		return po, &usageError{err}
	}
	if po.OnError, err = queue.ParseOnError(opts.OnError); err != nil {
		return po, &usageError{err}
	}
	if po.OutputTo, err = queue.ParseOutputTo(opts.OutputTo); err != nil {
		return po, &usageError{err}
	}
	if opts.MaxJobs < 0 {
		return po, usageErrorf("--maxjobs %d: must be positive", opts.MaxJobs)
	}
	if opts.Parallel < 1 {
		return po, usageErrorf("--parallel %d: must be 1 or more", opts.Parallel)
	}
	if opts.QueueLockWait < 0 {
		return po, usageErrorf("--queue-lock-wait %s: must not be negative", opts.QueueLockWait)
	}
	if opts.Command[0] != "" && opts.JobFile != "" {
		return po, usageErrorf("queue-process: both COMMAND %q and --job %s: give one", opts.Command[0], opts.JobFile)
	}
	return po, nil
}

// setupQueue completes po for the queue in dir: its job file in pipeline
// mode (--job, else dir/pipespool.toml), its decoder and its runner, which
// log to log. It returns the job file ("" in command mode).
func (opts *queueProcessOptions) setupQueue(dir string, po queue.ProcessOptions, log *slog.Logger) (queue.ProcessOptions, string, error) {
	jobFile := opts.JobFile
	commandMode := opts.Command[0] != ""
	if !commandMode && jobFile == "" {
		p := filepath.Join(dir, "pipespool.toml")
		if _, err := os.Stat(p); err == nil {
			jobFile = p
		} else if errors.Is(err, fs.ErrNotExist) {
			return po, "", usageErrorf("queue-process: no COMMAND, no --job and no %s: say what to run", p)
		}
	}
	var err error
	if po.Decoder, err = opts.decoder(dir, jobFile); err != nil {
		return po, "", err
	}
	po.Decoder.Logger = log
	if po.Runner, err = newRunner(opts.g, commandMode, opts.Command, jobFile, &opts.processFlags); err != nil {
		return po, "", err
	}
	if p, ok := po.Runner.(*pipelineRunner); ok {
		p.log = log
	}
	if po.MayOutlive, err = opts.mayOutlive(po.Runner); err != nil {
		return po, "", err
	}
	po.Decoder.MayOutlive = po.MayOutlive
	return po, jobFile, nil
}

// newRunner returns the command runner, or the pipeline runner for jobFile
// (then args are extra arguments for the last stage).
func newRunner(g *globalOptions, commandMode bool, args []string, jobFile string, f *processFlags) (queue.Runner, error) {
	timeout := time.Duration(f.Timeout) * time.Second
	if commandMode {
		return &queue.CommandRunner{Argv: args, Timeout: timeout, Stdout: g.streams.Out, Stderr: g.streams.ErrOut}, nil
	}
	if jobFile == "" {
		return nil, usageErrorf("no COMMAND and no --job: say what to run")
	}
	args = args[1:] // the empty COMMAND of pipeline mode
	job, err := pipeline.Load(jobFile)
	if err != nil {
		return nil, err
	}
	return &pipelineRunner{g: g, job: job, extra: args, timeout: timeout}, nil
}

// mayOutlive returns the programs a job's processes may leave running: the
// may_outlive of the pipeline's job file, else of --decoder-config.
func (o *queueDirOptions) mayOutlive(r queue.Runner) ([]string, error) {
	if p, ok := r.(*pipelineRunner); ok {
		return p.job.MayOutlive, nil
	}
	if o.DecoderConfig == "" {
		return nil, nil
	}
	job, err := pipeline.LoadDecoderConfig(o.DecoderConfig)
	if err != nil {
		return nil, err
	}
	return job.MayOutlive, nil
}

// runLock takes --lock (nil when path is empty): exit 75 if another
// process holds it past wait.
func runLock(ctx context.Context, path string, wait time.Duration) (*fsutil.Lock, error) {
	if path == "" {
		return nil, nil
	}
	return fsutil.Acquire(ctx, path, fsutil.LockOptions{Create: true, Wait: wait})
}

// becomeSubreaper makes pipespool the subreaper of what it starts (see
// proc.BecomeSubreaper), so that what a stage or a job's command leaves
// running outside its process group is found and stopped at its end.
func becomeSubreaper(g *globalOptions) {
	if err := proc.BecomeSubreaper(); err != nil {
		g.Logger().Warn("processes left behind outside their process groups cannot be found and stopped: " + err.Error())
	}
}

// lastReporter is a runner that keeps the pipeline report of its last job.
type lastReporter interface {
	takeReport() *pipeline.Report
}

// pipelineRunner runs each packet through a pipeline: the payload is its
// input, the FSPL_* variables are in every external stage's environment.
type pipelineRunner struct {
	g       *globalOptions
	job     *pipeline.Job
	extra   []string
	timeout time.Duration
	log     *slog.Logger     // the pipeline's logger
	last    *pipeline.Report // report of the last job run, for queue-process --report
}

func (p *pipelineRunner) logger() *slog.Logger {
	if p.log != nil {
		return p.log
	}
	return p.g.Logger()
}

func (p *pipelineRunner) takeReport() *pipeline.Report {
	r := p.last
	p.last = nil
	return r
}

// RunJob implements queue.Runner.
func (p *pipelineRunner) RunJob(ctx context.Context, r *queue.Run) error {
	if p.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, p.timeout, fmt.Errorf("--timeout of %s expired", p.timeout))
		defer cancel()
	}
	o := pipeline.Options{
		Input:     r.Payload,
		Stdin:     p.g.streams.In,
		Stdout:    p.g.streams.Out,
		Env:       r.Env,
		ExtraArgs: append(append([]string(nil), p.extra...), r.Params...),
		Logger:    p.logger(),
		// The output is committed only once the decoder, if any, has
		// vouched for the whole payload (integrity check, signature).
		BeforeCommit: r.PayloadDone,
	}
	if r.Output != nil {
		o.Stdout, o.OutputPath, o.StderrTo = r.Output, "-", r.Output
	}
	rep, err := pipeline.Run(ctx, p.job, o)
	p.last = rep
	if err != nil && ctx.Err() != nil && context.Cause(ctx) != nil {
		return fmt.Errorf("%w (%v)", err, context.Cause(ctx))
	}
	return err
}
