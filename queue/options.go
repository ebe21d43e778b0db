package queue

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/pipespool/pipespool/proc"
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

// choice is one spelling of a flag's value.
type choice[T comparable] struct {
	name  string
	value T
}

// The values of --order-by, --on-error and --output-to, as fspl spells
// them.
var (
	orderChoices    = []choice[Order]{{"Sequence", OrderSequence}, {"Timestamp", OrderTimestamp}}
	onErrorChoices  = []choice[OnError]{{"Retry", OnErrorRetry}, {"Delete", OnErrorDelete}, {"Leave", OnErrorLeave}}
	outputToChoices = []choice[OutputTo]{{"PassBoth", PassBoth}, {"SaveBoth", SaveBoth}}
)

// parseChoice returns the value spelt s (case-insensitive, as fspl) among
// choices, or an error that names flag and lists the spellings.
func parseChoice[T comparable](flag, s string, choices []choice[T]) (T, error) {
	names := make([]string, len(choices))
	for i, c := range choices {
		if strings.EqualFold(s, c.name) {
			return c.value, nil
		}
		names[i] = c.name
	}
	var zero T
	list := strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
	return zero, fmt.Errorf("%s %q: use %s", flag, s, list)
}

// nameOf is the spelling of v among choices.
func nameOf[T comparable](v T, choices []choice[T]) string {
	for _, c := range choices {
		if c.value == v {
			return c.name
		}
	}
	return fmt.Sprint(v)
}

// ParseOrder parses --order-by: Sequence or Timestamp.
func ParseOrder(s string) (Order, error) { return parseChoice("--order-by", s, orderChoices) }

// ParseOnError parses --on-error: Retry, Delete or Leave.
func ParseOnError(s string) (OnError, error) { return parseChoice("--on-error", s, onErrorChoices) }

// ParseOutputTo parses --output-to: PassBoth or SaveBoth.
func ParseOutputTo(s string) (OutputTo, error) { return parseChoice("--output-to", s, outputToChoices) }

// String is the spelling of o for --on-error.
func (o OnError) String() string { return nameOf(o, onErrorChoices) }

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
	// Scope is where the job's processes run: the runner starts its own
	// in it. Once the job and its decoder are over, the queue closes it,
	// stopping what they left running (ProcessOptions.MayOutlive aside).
	// Nil: the runner makes one of its own.
	Scope *proc.Scope
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
	// MayOutlive names the programs a job's processes (its command, its
	// decoder's shell steps) may leave running after it: a job file's
	// may_outlive. Everything else they leave is stopped at its end.
	MayOutlive []string
	// LockWait is how long queue-process waits for the queue's lock
	// while another process holds it; 0: not at all (a *LockHeldError
	// at once, as fspl).
	LockWait time.Duration
	// OnJob, when not nil, is told what became of each job that ran
	// (queue-process --report and --metrics-file).
	OnJob func(JobOutcome)
}
