// Package stage runs one stage of a pipeline: an external process or a
// built-in filter, behind the same Stage interface.
//
// A stage is handed its standard input and output as *os.File and owns them
// from then on: an external stage closes the parent's copies right after the
// child has started (so EOF and EPIPE reach the neighbours when they should),
// a built-in closes them when it ends.
package stage

import (
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/pipespool/pipespool/proc"
)

// Kind says what runs a stage.
type Kind string

// The kinds of stage.
const (
	KindCommand Kind = "command"
	KindBuiltin Kind = "builtin"
)

// Stage is one filter of a pipeline.
type Stage interface {
	// Name is the stage's unique name in its pipeline.
	Name() string
	// Kind says whether a process or a built-in runs the stage.
	Kind() Kind
	// Argv is the command line of an external stage, or the built-in's name.
	Argv() []string
	// Start begins the stage with stdin and stdout. It takes ownership of both
	// files whatever it returns.
	Start(stdin, stdout *os.File) error
	// Wait blocks until the stage has ended and returns its result. It may be
	// called more than once and from several goroutines.
	Wait() Result
	// Done is closed when the stage has ended.
	Done() <-chan struct{}
	// Stop ends the stage: SIGTERM to an external stage's process group, then
	// SIGKILL after grace; a built-in is cancelled. It returns at once.
	Stop(grace time.Duration)
	// Signal sends sig to an external stage's process group. Built-ins
	// ignore it (they cannot be stopped half-way but by Stop).
	Signal(sig syscall.Signal) error
	// Pid is the process id of an external stage once started, else 0.
	Pid() int
	// Counters returns the bytes a built-in read and wrote; external stages
	// report -1, -1 (the pumps around them count instead).
	Counters() (in, out int64)
}

// Result is how a stage ended.
type Result struct {
	// ExitCode is the exit status of a process, 0 or 1 for a built-in
	// (0 when Err is nil), -1 when killed by a signal or never started.
	ExitCode int
	// Signal is the signal that killed the process, or 0.
	Signal syscall.Signal
	// Err is why a stage could not start, or a built-in's failure.
	Err error
	// BrokenPipe reports that the stage ended because its consumer had
	// gone: it died of SIGPIPE or (a built-in) got EPIPE on its output.
	BrokenPipe bool
	// Stopped reports that pipespool stopped the stage (timeout, signal,
	// a failed run): its failure is a consequence, not a cause.
	Stopped bool
	// Started and Ended bound the stage's life.
	Started, Ended time.Time
	// StderrTail is the last bytes (at most StderrTailSize) the stage wrote
	// to a captured stderr, or a built-in's error text.
	StderrTail []byte
}

// StderrTailSize is how much of a stage's stderr is kept for the failure
// summary and the report: the last 4 KiB, where a tool's final error is.
const StderrTailSize = 4 << 10

// Failed reports whether the stage failed by its own result: non-zero exit,
// a signal, or an error.
func (r Result) Failed() bool {
	return r.Err != nil || r.ExitCode != 0 || r.Signal != 0
}

// Status is a short human description: "exit 0", "exit 3", "signal SIGPIPE",
// or the error.
func (r Result) Status() string {
	switch {
	case r.Err != nil:
		return r.Err.Error()
	case r.Signal != 0:
		return "killed by signal " + SignalName(r.Signal)
	default:
		return "exit " + strconv.Itoa(r.ExitCode)
	}
}

// SignalName returns "SIGPIPE" for syscall.SIGPIPE and so on.
func SignalName(s syscall.Signal) string { return proc.SignalName(s) }
