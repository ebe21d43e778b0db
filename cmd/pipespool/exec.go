package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/pipespool/pipespool/fsutil"
	"github.com/pipespool/pipespool/pipeline"
	"github.com/pipespool/pipespool/progress"
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
	Size        string
	// ProgressInterval is the interval between two lines of --progress log.
	ProgressInterval time.Duration
	Buffer           string
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

At a terminal, progress is drawn on stderr: elapsed time, bytes, and with
a known size (a regular input file, [input] expected_size, --size) the
percentage and ETA, then one line per stage; its final lines stay.
--progress log writes one plain key=value line per interval instead, for
journald and cron mail.

Exit status: 0 success, 1 the pipeline failed, 2 invalid job file or
unreadable input, 75 --lock held, 129/130/131/143 interrupted by
SIGHUP/SIGINT/SIGQUIT/SIGTERM (every stage stopped first).`,
		Example: `  pipespool exec restore.toml
  pipespool exec restore.toml -i backup.zst.gpg -o restored.img
  zfs send tank@snap | pipespool exec send.toml -i - -o -
  pipespool exec restore.toml --dry-run
  pipespool exec restore.toml --rate-limit 50MiB/s
  zfs send tank@snap | pipespool exec send.toml -i - --buffer 1GiB
  zfs send tank@snap | pipespool exec send.toml -i - --size 120GiB
  pipespool exec backup.toml --progress log --progress-interval 1m
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
	f.StringVar(&opts.Progress, "progress", "auto", "progress on stderr: auto (on a terminal only), always, never, log (one plain line per interval); always into a non-terminal is log")
	f.StringVar(&opts.Size, "size", "", "expected size of the stream entering the pipeline, e.g. 4GiB, for the percentage and ETA (pv -s); replaces [input] expected_size and a regular input file's size")
	f.DurationVar(&opts.ProgressInterval, "progress-interval", progress.DefaultLogInterval, "with --progress log: the interval between two lines (at least 1s)")
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
	case "auto", "always", "never", "log":
	default:
		return usageErrorf("--progress %q: use auto, always, never or log", opts.Progress)
	}
	if opts.ProgressInterval < time.Second {
		return usageErrorf("--progress-interval %s: use at least 1s", opts.ProgressInterval)
	}
	var size int64
	if opts.Size != "" {
		var err error
		if size, err = units.ParseSizeString(opts.Size); err != nil {
			return usageErrorf("--size: %v", err)
		}
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
	popts := pipeline.Options{InputPath: opts.Input, OutputPath: opts.Output, RateLimit: rate, ExpectedSize: size, Buffer: buffer,
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
	survivePipeErrors()
	ctx, stop := signalContext(opts.g.streams.ErrOut)
	defer stop()
	lock, err := runLock(ctx, opts.Lock, opts.LockWait)
	if err != nil {
		return err
	}
	defer lock.Release()
	switch mode := progressMode(opts.Progress, opts.g.streams.ErrIsTerminal); mode {
	case "term":
		// Log lines go through the display, which clears its frame,
		// lets them pass and draws the frame again below them.
		term := progress.NewTerm(opts.g.streams.ErrOut, opts.g.streams.errWidth())
		popts.Progress = term
		defer followWidth(opts.g.streams, term)()
		g := *opts.g
		streams := *g.streams
		streams.ErrOut = term.Log()
		g.streams = &streams
		if err := g.setupLogger(); err != nil {
			return err
		}
		popts.Logger = g.Logger()
		if d, ok := opts.g.streams.ErrOut.(*diagWriter); ok {
			// A notice of dropped messages written under the frame
			// would be drawn over at once.
			d.setNoticeWriter(term.Log())
			defer d.setNoticeWriter(nil)
		}
	case "log":
		// The progress lines and the logs share stderr through one lock,
		// so that a long line of one is never split by a line of the
		// other (two handlers would each hold only their own lock).
		g := *opts.g
		streams := *g.streams
		streams.ErrOut = &lockedWriter{w: streams.ErrOut}
		g.streams = &streams
		if err := g.setupLogger(); err != nil {
			return err
		}
		popts.Logger = g.Logger()
		popts.Progress = progress.NewLog(progressLogger(&g), opts.ProgressInterval)
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

// progressMode is how --progress shows: "term" (frames redrawn in place),
// "log" (plain lines) or "" (nothing). always into a non-terminal (a file,
// a pipe, journald) is log: frames redrawn with cursor movements would
// pile up there as escape codes.
func progressMode(flag string, errIsTerminal bool) string {
	switch {
	case flag == "log", flag == "always" && !errIsTerminal:
		return "log"
	case flag == "always", flag == "auto" && errIsTerminal:
		return "term"
	}
	return ""
}

// progressLogger writes the lines of --progress log: in the format of the
// logs (--log-format), at level info whatever --log-level says, since they
// were asked for.
func progressLogger(g *globalOptions) *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if strings.EqualFold(g.LogFormat, "json") {
		return slog.New(slog.NewJSONHandler(g.streams.ErrOut, opts))
	}
	return slog.New(newTextHandler(g.streams.ErrOut, opts))
}

// followWidth redraws term at the terminal's new width on every SIGWINCH,
// until the returned stop is called.
func followWidth(s *IOStreams, term *progress.Term) (stop func()) {
	if s.ErrWidth == nil {
		return func() {}
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, unix.SIGWINCH)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-ch:
				term.Resize(s.ErrWidth())
			case <-done:
				return
			}
		}
	})
	return func() {
		signal.Stop(ch)
		close(done)
		wg.Wait()
	}
}

// lockedWriter serialises the writes of several writers sharing w.
type lockedWriter struct {
	mu sync.Mutex // serialises writes to w
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
