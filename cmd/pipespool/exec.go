package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipespool/pipespool/fsutil"
	"github.com/pipespool/pipespool/pipeline"
	"github.com/pipespool/pipespool/units"
)

// execOptions are the flags of exec.
type execOptions struct {
	g           *globalOptions
	JobFile     string
	Input       string
	Output      string
	Progress    string
	Report      string
	MetricsFile string
	Lock        string
	LockWait    time.Duration
	DryRun      bool
	RateLimit   string
	Buffer      string
}

// NewCmdExec builds the exec command; runF does the work (nil: runExec).
func NewCmdExec(g *globalOptions, runF func(*execOptions) error) *cobra.Command {
	opts := &execOptions{g: g}
	if runF == nil {
		runF = runExec
	}
	cmd := &cobra.Command{
		Use:   "exec JOB.toml",
		Short: "Run the pipeline of a job file",
		Long: `Run the pipeline described by a job file: start every stage, wire them with
pipes pipespool owns, copy the bytes between them, and wait for all of them.

A regular output file is written under a temporary name and renamed into
place only when every stage succeeded. On failure, a summary naming the
stage that caused it is printed to stderr and the exit status is 1.

A stage that makes no progress for its stall_timeout is diagnosed in the
log (where it is blocked, what is queued around it) and, as on_stall says,
left alone, nudged (SIGSTOP+SIGCONT) or killed. In cron (stderr not a
terminal) a successful run prints nothing but what its stages write.

Exit status: 0 success, 1 the pipeline failed, 2 invalid job file or
unreadable input, 75 --lock held, 129/130/131/143 interrupted by
SIGHUP/SIGINT/SIGQUIT/SIGTERM (every stage stopped first).`,
		Example: `  pipespool exec restore.toml
  pipespool exec restore.toml -i backup.zst.gpg -o restored.img
  zfs send tank@snap | pipespool exec send.toml -i - -o -
  pipespool exec restore.toml --dry-run
  pipespool exec restore.toml --rate-limit 50MiB/s
  zfs send tank@snap | pipespool exec send.toml -i - --buffer 1GiB
  pipespool exec backup.toml --lock /run/lock/backup.lock --metrics-file /var/lib/node_exporter/textfile/backup.prom`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.JobFile = args[0]
			return runF(opts)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.Input, "input", "i", "", "input file, - for stdin (overrides the job file)")
	f.StringVarP(&opts.Output, "output", "o", "", "output file, - for stdout, none to discard (overrides the job file)")
	f.StringVar(&opts.Progress, "progress", "auto", "per-stage progress on stderr: auto, always, never")
	f.StringVar(&opts.Report, "report", "", "write a JSON run report to this file (schema: docs/report.md)")
	f.StringVar(&opts.MetricsFile, "metrics-file", "", "write Prometheus text-format metrics to this file, atomically")
	f.StringVar(&opts.Lock, "lock", "", "hold flock(2) on this file for the run; exit 75 if another process holds it")
	f.DurationVar(&opts.LockWait, "lock-wait", 0, "with --lock: wait up to this long for the lock before exiting 75")
	f.BoolVar(&opts.DryRun, "dry-run", false, "validate and print the resolved stage graph, run nothing")
	f.StringVar(&opts.RateLimit, "rate-limit", "", "limit the run's input to RATE, e.g. 50MiB/s or 50M (pv -L, mbuffer -r); replaces the first stage's rate_limit")
	f.StringVar(&opts.Buffer, "buffer", "", "a memory buffer of SIZE on the run's input, e.g. 1GiB (mbuffer -m); sets or resizes the first stage's buffer")
	return cmd
}

// exactArgs is cobra.ExactArgs with a usage error (exit 2).
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("%s: expects %d argument(s), got %d (see --help)", cmd.CommandPath(), n, len(args))
		}
		return nil
	}
}

func runExec(opts *execOptions) error {
	switch opts.Progress {
	case "auto", "always", "never":
	default:
		return usageErrorf("--progress %q: use auto, always or never", opts.Progress)
	}
	var rate int64
	if opts.RateLimit != "" {
		var err error
		if rate, err = units.ParseRate(opts.RateLimit); err != nil {
			return usageErrorf("--rate-limit: %v", err)
		}
	}
	var buffer int64
	if opts.Buffer != "" {
		var err error
		if buffer, err = units.ParseSizeString(opts.Buffer); err != nil {
			return usageErrorf("--buffer: %v", err)
		}
	}
	job, err := pipeline.Load(opts.JobFile)
	if err != nil {
		return err
	}
	popts := pipeline.Options{InputPath: opts.Input, OutputPath: opts.Output, RateLimit: rate, Buffer: buffer,
		Stdin: opts.g.streams.In, Stdout: opts.g.streams.Out, Logger: opts.g.Logger()}
	if opts.DryRun {
		desc, err := pipeline.Describe(job, popts)
		if err != nil {
			return err
		}
		_, err = fmt.Fprint(opts.g.streams.ErrOut, desc)
		return err
	}
	// The report and the metrics are written after the run: a path that
	// cannot be written is found now, before the run (exit 2), not after
	// a backup that then looks unmonitored.
	for _, f := range []struct{ flag, path string }{{"--report", opts.Report}, {"--metrics-file", opts.MetricsFile}} {
		if err := checkWritable(f.path); err != nil {
			return &pipeline.InputError{Path: f.path, Err: fmt.Errorf("%s cannot be written: %w", f.flag, err)}
		}
	}
	becomeSubreaper(opts.g)
	ctx, stop := signalContext(opts.g.streams.ErrOut)
	defer stop()
	lock, err := runLock(ctx, opts.Lock, opts.LockWait)
	if err != nil {
		return err
	}
	defer lock.Release()
	var display *pipeline.TermProgress
	if opts.Progress == "always" || opts.Progress == "auto" && opts.g.streams.ErrIsTerminal {
		// Log lines go through the display, which clears its frame,
		// lets them pass and draws the frame again below them.
		display = pipeline.NewTermProgress(opts.g.streams.ErrOut)
		popts.Progress = display
		g := *opts.g
		streams := *g.streams
		streams.ErrOut = display.Log()
		g.streams = &streams
		if err := g.setupLogger(); err != nil {
			return err
		}
		popts.Logger = g.Logger()
	}
	rep, err := pipeline.Run(ctx, job, popts)
	if rep != nil && opts.Report != "" {
		if werr := writeJSONAtomic(opts.Report, rep); werr != nil {
			opts.g.Logger().Error("cannot write the report", "path", opts.Report, "err", werr)
		}
	}
	if rep != nil && opts.MetricsFile != "" {
		if werr := pipeline.WriteMetrics(opts.MetricsFile, rep); werr != nil {
			opts.g.Logger().Error("cannot write the metrics file", "path", opts.MetricsFile, "err", werr)
		}
	}
	if err != nil && rep != nil {
		if strings.EqualFold(opts.g.LogFormat, "json") {
			// A log processor reading JSON lines gets the summary as one
			// record, with every stage's status and bytes as fields.
			opts.g.Logger().Error(rep.Message, "job", rep.Job, "result", rep.Result,
				"root_cause", rep.RootCause, "stages", rep.Stages)
		} else {
			fmt.Fprint(opts.g.streams.ErrOut, "pipespool: "+pipeline.Summary(rep))
		}
		return reported{err}
	}
	return err
}

// reported is an error whose summary was already printed: Main only maps
// it to its exit code.
type reported struct{ error }

func (r reported) Unwrap() error  { return r.error }
func (r reported) Reported() bool { return true }

// writeJSONAtomic writes v as indented JSON to path via a temporary file,
// fsync and rename.
func writeJSONAtomic(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(path, append(data, '\n'), 0o644)
}

// checkWritable reports why a file written atomically at path after the run
// (the report, the metrics) could not be: it creates the temporary file
// the write would, and removes it. "" is fine.
func checkWritable(path string) error {
	if path == "" {
		return nil
	}
	t, err := fsutil.ResolveForWrite(path)
	if err != nil {
		return err
	}
	if t.Special() {
		return nil // written in place (/dev/stdout, a FIFO)
	}
	a, err := fsutil.CreateAtomic(t, fsutil.AtomicOptions{Perm: 0o644})
	if err != nil {
		return err
	}
	a.Discard()
	return nil
}
