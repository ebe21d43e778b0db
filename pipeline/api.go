package pipeline

import (
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/pipespool/pipespool/progress"
)

// Options change how Run runs a job without changing the job file.
type Options struct {
	// InputPath and OutputPath override the job's [input] and [output]
	// paths ("" keeps the job's). Relative paths are relative to the
	// current directory, as on a command line.
	InputPath, OutputPath string
	// Input, when not nil, is the pipeline's input instead of any path
	// (queue-process hands a packet's payload this way). Run does not
	// close it; it reads from its current offset.
	Input *os.File
	// Stdin and Stdout are pipespool's own standard files, used for "-".
	// Run never changes their flags. nil means os.Stdin / os.Stdout.
	Stdin, Stdout *os.File
	// Env is added to the environment of every external stage (after the
	// inherited environment, before the stage's own env).
	Env []string
	// ExtraArgs are appended to the last stage's argv (queue-process
	// --allow-job-params). It is an error if the last stage is a built-in.
	ExtraArgs []string
	// StderrTo, when not nil, receives the stderr of every external stage
	// (queue-process --output-to SaveBoth) instead of its stderr setting.
	StderrTo *os.File
	// Logger receives stage stderr lines and diagnostics; nil discards.
	Logger *slog.Logger
	// Grace is how long a stopped stage has between SIGTERM and SIGKILL;
	// 0 means DefaultGrace.
	Grace time.Duration
	// BeforeCommit, when not nil, is called once every stage has
	// succeeded, before the output is committed. An error fails the run
	// (exit 1) and the output is discarded: queue-process uses it to wait
	// for a decoder whose integrity check ends after the last byte.
	BeforeCommit func() error
	// RateLimit, when > 0, is the limit of the run's input hop in bytes
	// per second (exec --rate-limit): the first stage's rate_limit, set or
	// replaced.
	RateLimit int64
	// Buffer, when > 0, is the size in bytes of a memory buffer on the
	// run's input hop (exec --buffer): the first stage's buffer, set or
	// resized (its buffer_start_at and buffer_resume_at still apply).
	Buffer int64
	// Progress, when not nil, shows the run's progress: drawn about every
	// Progress.Interval(), and closed with the final state once every
	// stage is over (progress.Term on a terminal, progress.Log in a log).
	Progress progress.Display
	// ExpectedSize, when > 0, is the expected size of the stream entering
	// the pipeline (exec --size, as pv -s), for the percentage and the
	// time left; it replaces the job's expected_size and the size of a
	// regular input file.
	ExpectedSize int64
}

// DefaultGrace is the time between SIGTERM and SIGKILL when stopping a
// stage's process group: short, since a stage being stopped has
// nothing left to finish that the run still wants.
const DefaultGrace = 5 * time.Second

// JobError is an invalid job file: it names the file, the line and the key.
type JobError struct {
	File string // job file path as given
	Line int    // 1-based, 0 when unknown
	Key  string // dotted key such as "stage[2].stall_timeout", "" when none
	Msg  string
}

func (e *JobError) Error() string {
	s := e.File
	if e.Line > 0 {
		s += ":" + strconv.Itoa(e.Line)
	}
	s += ": "
	if e.Key != "" {
		s += e.Key + ": "
	}
	return s + e.Msg
}

// ExitCode is 2: invalid job file.
func (e *JobError) ExitCode() int { return 2 }

// InputError is an input or output that cannot be opened: exit 2.
type InputError struct {
	Path string
	Err  error
}

func (e *InputError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// ExitCode is 2: unreadable input.
func (e *InputError) ExitCode() int { return 2 }

// RunError is a failed run: a stage failed, stalled and was killed, or the
// run timed out. Its message is the one-line reason; Report has the rest.
type RunError struct {
	Msg    string
	Report *Report
}

func (e *RunError) Error() string { return e.Msg }

// ExitCode is 1: the pipeline failed.
func (e *RunError) ExitCode() int { return 1 }
