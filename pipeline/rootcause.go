package pipeline

import (
	"errors"
	"fmt"
	"slices"
	"syscall"
)

// This file is the run's decision: success or failure, which party is the
// root cause, and what each stage's status is. It is a pure function over
// plain facts (decideRun); the supervisor (supervise.go) gathers the facts
// and acts on the answer. docs/exec.md, "Failure and its root cause", is
// the rule written for users; each rule has a row in rootcause_test.go.

// stageFacts is what the decision needs to know about one stage once it is
// over.
type stageFacts struct {
	Name string
	// Attempted: pipespool tried to start it (false when setting up the
	// pipes failed first).
	Attempted bool
	// StartErr is why it could not start; "" when it started.
	StartErr string
	// Failed: it exited non-zero, was killed by a signal, or (a built-in)
	// returned an error. Status says how ("exit 3", "killed by signal
	// SIGPIPE", the error).
	Failed bool
	Status string
	// BrokenPipe: it died of SIGPIPE or (a built-in) got EPIPE.
	BrokenPipe bool
	// ConsumerGone: its output link found its consumer gone (EPIPE), or was
	// stopped because its consumer was over while bytes were refused or
	// the stage's status says SIGPIPE.
	ConsumerGone bool
	// Stopped: pipespool stopped it before it ended on its own.
	Stopped bool
	// OutputCut: its consumer ended before its output reached EOF.
	OutputCut bool
	// Partial: it exited leaving bytes of its input unread (Unread of them,
	// when known: all that was left of the input when UnreadAll, else what
	// was queued for it, the producer's rest unknown).
	Partial   bool
	Unread    int64
	UnreadAll bool
	// InputEOF: its input link delivered everything up to end of file.
	InputEOF         bool
	AllowPartialRead bool
}

// consumerWent reports whether the stage failed because its consumer went
// first (SIGPIPE, EPIPE, or a non-zero exit after its consumer had gone):
// a consequence, never a cause.
func (f *stageFacts) consumerWent() bool {
	return f.Failed && (f.BrokenPipe || f.ConsumerGone)
}

// ownFailure reports whether the stage failed for a reason of its own: it
// could not start, or it failed neither because its consumer went nor
// because pipespool stopped it, or it exited 0 without reading all its
// input (unless it may, or its consumer had stopped reading first: what it
// left unread was not wanted anyway).
func (f *stageFacts) ownFailure() bool {
	switch {
	case f.StartErr != "":
		return true
	case f.consumerWent():
		return false
	case f.Failed && f.Stopped:
		return false
	case f.Failed:
		return true
	}
	return f.Partial && !f.AllowPartialRead && !f.OutputCut
}

// endedEarly reports whether the stage ended before its output was all
// taken, because of its consumer: it failed because its consumer went, or
// it succeeded while its consumer stopped reading first.
func (f *stageFacts) endedEarly() bool {
	return f.consumerWent() || !f.Failed && f.OutputCut
}

// failureMessage is the one-line reason of a run whose root cause is this
// stage.
func (f *stageFacts) failureMessage() string {
	switch {
	case !f.Failed && f.Partial:
		what := "input"
		if f.Unread > 0 {
			what = fmt.Sprintf("input (%s left unread)", f.unreadBytes())
		}
		return fmt.Sprintf("stage %q exited 0 without reading all its %s: set allow_partial_read = true if that is expected", f.Name, what)
	case f.StartErr != "":
		return fmt.Sprintf("stage %q did not start: %s", f.Name, f.StartErr)
	}
	return fmt.Sprintf("stage %q failed: %s", f.Name, f.Status)
}

// sinkFacts is what the decision knows about the run's output, the last
// party of the run: a run is a success only if every byte reached it.
type sinkFacts struct {
	Name  string // how messages name it: a path, "(stdout)"
	Bytes int64  // bytes it took
	// Gone: its reader went away (EPIPE) before the stream's end.
	Gone bool
	// Err: a write to it failed (ENOSPC, EIO).
	Err error
	// Full: the last stage writes it directly and its file system is
	// full: a failure of the last stage is the output's.
	Full bool
	// CommitErr: making the output final failed (fsync, rename).
	CommitErr error
}

// failed reports whether the output refused bytes while the run ran.
func (s *sinkFacts) failed() bool { return s.Gone || s.Err != nil }

func (s *sinkFacts) failureMessage() string {
	if s.Gone {
		return fmt.Sprintf("output %s: its reader went away after %d bytes", s.Name, s.Bytes)
	}
	return fmt.Sprintf("output %s: %v after %d bytes", s.Name, errnoText(s.Err), s.Bytes)
}

// errnoText is the system error at the bottom of err ("no space left on
// device"), or err itself.
func errnoText(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// stopCause is the first thing that stopped the run while it ran.
type stopCause struct {
	// Own: a stage failed on its own (Stage names which); the root cause
	// is then decided from the facts, since a stage upstream may have
	// failed on its own too.
	Own bool
	// Otherwise Result and Msg are the run's, and Stage the root cause
	// (-1 for none): a timeout, a signal, a stalled stage that was killed,
	// or pipes that could not be set up.
	Stage  int
	Result string
	Msg    string
	Signal syscall.Signal
	// Cascade: a line of a tree stopped because another line failed
	// (fanout.go); never a root cause of the tree.
	Cascade bool
}

// runFacts is everything the decision looks at.
type runFacts struct {
	Stages []stageFacts
	Stop   *stopCause // nil when nothing stopped the run
	Sink   sinkFacts
	// CheckErr is the caller's check before commit (Options.BeforeCommit),
	// made only when everything else succeeded.
	CheckErr error
	// Sidecar is a stage's file beside the output (sha256's digest) that
	// could not be committed after the output was.
	Sidecar *sidecarFailure
}

// verdict is the decision.
type verdict struct {
	Result string // ResultSuccess, ResultFailed, ResultTimeout, ResultInterrupted
	Root   int    // index of the root-cause stage, len(Stages) for the output, -1 for none
	Msg    string
	Signal syscall.Signal // for ResultInterrupted
	Stages []stageVerdict
}

// stageVerdict is one stage's status in the report.
type stageVerdict struct {
	Status  string // see StageReport.Status
	Note    string
	Partial bool // it left input unread (found when every stage was over)
}

// decideRun decides a run from its facts:
//
//  1. A timeout, a signal, a stall that was killed (or pipes that could not
//     be set up) that stopped the run first decides it.
//  2. Else the most upstream stage that failed on its own is the root cause
//     (bad data shows up downstream first: the stage that made it is named).
//  3. Else a stage that stopped reading while its producer had more to give
//     (the producer died of SIGPIPE) left input unread: it is the root cause
//     unless it may stop reading (allow_partial_read).
//  4. Else the output, if it stopped taking bytes (its reader went away, a
//     write failed); the output is also named when the last stage failed
//     writing it directly onto a full file system.
//  5. Else the check before commit, then the commit of the output, then
//     the commit of the stages' files beside it (sha256's digest).
func decideRun(rf runFacts) verdict {
	n := len(rf.Stages)
	v := verdict{Result: ResultSuccess, Root: -1, Stages: make([]stageVerdict, n)}
	failed := false
	setRoot := func(root int, result, msg string) {
		if !failed {
			failed, v.Root, v.Result, v.Msg = true, root, result, msg
		}
	}
	if s := rf.Stop; s != nil && !s.Own {
		setRoot(s.Stage, s.Result, s.Msg)
		v.Signal = s.Signal
	}
	for i := range rf.Stages {
		if rf.Stages[i].ownFailure() {
			setRoot(i, ResultFailed, rf.Stages[i].failureMessage())
		}
	}
	if s := rf.Stop; s != nil && s.Own && s.Stage >= 0 && s.Stage < n {
		// Not reached while the facts agree with what stopped the run.
		setRoot(s.Stage, ResultFailed, rf.Stages[s.Stage].failureMessage())
	}
	// A producer that failed because its consumer went had more to give:
	// the consumer that stopped reading did not read all its input, even
	// if nothing was queued when it exited.
	for i := range rf.Stages {
		f := &rf.Stages[i]
		if !f.consumerWent() || f.Stopped {
			continue
		}
		j := stoppedReader(rf.Stages, i)
		if j < 0 {
			continue
		}
		v.Stages[j].Partial = true
		if !rf.Stages[j].AllowPartialRead {
			c := rf.Stages[j]
			c.Partial = true
			setRoot(j, ResultFailed, c.failureMessage())
		}
	}
	if n > 0 && v.Root == n-1 && (rf.Stop == nil || rf.Stop.Own) && rf.Sink.Full {
		// The last stage failed, by its status or by leaving input
		// unread (the worker it left to write the file died of ENOSPC:
		// found by the queue left behind or by its producer's SIGPIPE),
		// writing to a full file system: the output could not take the
		// stream.
		v.Root, v.Msg = n, fmt.Sprintf("output %s: no space left on device (%s)", rf.Sink.Name, v.Msg)
	}
	if rf.Sink.failed() {
		setRoot(n, ResultFailed, rf.Sink.failureMessage())
	}
	if rf.CheckErr != nil {
		setRoot(-1, ResultFailed, fmt.Sprintf("input check after the last byte: %v", rf.CheckErr))
	}
	if rf.Sink.CommitErr != nil {
		setRoot(n, ResultFailed, rf.Sink.CommitErr.Error())
	}
	if sc := rf.Sidecar; sc != nil && sc.Stage >= 0 && sc.Stage < n {
		setRoot(sc.Stage, ResultFailed, fmt.Sprintf("stage %q: %v (the output was committed)", rf.Stages[sc.Stage].Name, sc.Err))
	}
	merged := slices.Clone(rf.Stages)
	for i := range merged {
		merged[i].Partial = merged[i].Partial || v.Stages[i].Partial
	}
	for i := range merged {
		v.Stages[i].Status, v.Stages[i].Note = stageStatus(merged, i, i == v.Root)
	}
	return v
}

// stoppedReader returns the stage downstream of i that stopped reading
// while it still succeeded, walking through stages that themselves ended
// because of their consumer; -1 if there is none.
func stoppedReader(stages []stageFacts, i int) int {
	for j := i + 1; j < len(stages); j++ {
		f := &stages[j]
		if f.endedEarly() {
			continue
		}
		if f.Failed || f.InputEOF {
			return -1
		}
		return j
	}
	return -1
}

// consumerAllowedStop reports whether a stage after i stopped reading early
// with allow_partial_read, so that i's SIGPIPE is expected.
func consumerAllowedStop(stages []stageFacts, i int) bool {
	for j := i + 1; j < len(stages); j++ {
		f := &stages[j]
		if f.Partial && f.AllowPartialRead && !f.Failed {
			return true
		}
		if !f.endedEarly() {
			return false
		}
	}
	return false
}

// stageStatus is the status and note of stage i in the report; stages are
// the facts with what the decision found (a late partial read) folded in.
func stageStatus(stages []stageFacts, i int, root bool) (status, note string) {
	f := &stages[i]
	switch {
	case !f.Attempted || f.StartErr != "" && !root:
		return "not-started", ""
	case root:
		if !f.Failed && f.Partial {
			return "partial-read", ""
		}
		return "failed", ""
	case f.Failed && f.Stopped && !f.BrokenPipe:
		// Stopped by pipespool (SIGTERM/SIGKILL) before anything else
		// could end it: say so, even if its consumer had gone too.
		return "stopped", "stopped by pipespool"
	case f.consumerWent():
		if consumerAllowedStop(stages, i) {
			return "ok", "stopped by its consumer, which may stop reading (allow_partial_read)"
		}
		return "consequence", "its consumer had gone"
	case f.Failed:
		return "failed", ""
	case f.Partial && f.OutputCut && !f.AllowPartialRead:
		return "ok", "its consumer stopped reading first; input left unread"
	case f.Partial && !f.AllowPartialRead:
		return "partial-read", ""
	case f.Partial:
		return "ok", fmt.Sprintf("stopped reading early (allow_partial_read); %s unread", f.unreadBytes())
	}
	return "ok", ""
}

// unreadBytes says how many bytes of its input the stage left: "N bytes"
// when that is all that was left of the input, else "at least N bytes"
// (what was queued for it when it exited; what its producer had not
// written yet is not known).
func (f *stageFacts) unreadBytes() string {
	if f.UnreadAll {
		return fmt.Sprintf("%d bytes", f.Unread)
	}
	return fmt.Sprintf("at least %d bytes", f.Unread)
}
