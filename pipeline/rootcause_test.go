package pipeline

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Facts of typical stage ends, for the table below.
func okStage(name string) stageFacts {
	return stageFacts{Name: name, Attempted: true, Status: "exit 0", InputEOF: true}
}

func exitStage(name string, code int) stageFacts {
	return stageFacts{Name: name, Attempted: true, Failed: true, Status: "exit " + itoa(code)}
}

func sigpipeStage(name string) stageFacts {
	return stageFacts{Name: name, Attempted: true, Failed: true, BrokenPipe: true, Status: "killed by signal SIGPIPE", OutputCut: true}
}

func stoppedStage(name string) stageFacts {
	return stageFacts{Name: name, Attempted: true, Failed: true, Stopped: true, Status: "killed by signal SIGTERM"}
}

func itoa(n int) string { return strconv.Itoa(n) }

func with(f stageFacts, change func(*stageFacts)) stageFacts {
	change(&f)
	return f
}

// TestDecideRun has one row per rule of docs/exec.md ("Failure and its root
// cause") and per bug of docs/internals/reliability.md that landed in the decision.
func TestDecideRun(t *testing.T) {
	tests := []struct {
		name       string
		facts      runFacts
		result     string
		root       int
		msg        string   // a part of the message
		statuses   []string // per stage; "" skips
		noteSubstr []string // per stage; "" skips
	}{
		{
			name:     "every stage succeeded",
			facts:    runFacts{Stages: []stageFacts{okStage("a"), okStage("b")}},
			result:   ResultSuccess,
			root:     -1,
			statuses: []string{"ok", "ok"},
		},
		{
			name:     "rule: a non-zero exit is an own failure, the producer's SIGPIPE a consequence",
			facts:    runFacts{Stages: []stageFacts{sigpipeStage("producer"), exitStage("filter", 3), stoppedStage("sink")}, Stop: &stopCause{Own: true, Stage: 1}},
			result:   ResultFailed,
			root:     1,
			msg:      `stage "filter" failed: exit 3`,
			statuses: []string{"consequence", "failed", "stopped"},
		},
		{
			name: "rule: killed by a signal of its own (not SIGPIPE, not by pipespool)",
			facts: runFacts{Stages: []stageFacts{okStage("a"), with(exitStage("b", 0), func(f *stageFacts) {
				f.Status = "killed by signal SIGSEGV"
			})}, Stop: &stopCause{Own: true, Stage: 1}},
			result: ResultFailed, root: 1, msg: "SIGSEGV",
		},
		{
			name: "rule: exit 0 without reading all its input is a failure",
			facts: runFacts{Stages: []stageFacts{okStage("gen"), with(okStage("head"), func(f *stageFacts) {
				f.Partial, f.Unread, f.InputEOF = true, 4096, false
			})}, Stop: &stopCause{Own: true, Stage: 1}},
			result: ResultFailed, root: 1, msg: "without reading all its input (at least 4096 bytes left unread)",
			statuses: []string{"ok", "partial-read"},
		},
		{
			name: "rule: exit 0 without reading all its input, all that was left known (a file, or past the hop's end of file)",
			facts: runFacts{Stages: []stageFacts{okStage("gen"), with(okStage("head"), func(f *stageFacts) {
				f.Partial, f.Unread, f.UnreadAll, f.InputEOF = true, 4096, true, true
			})}, Stop: &stopCause{Own: true, Stage: 1}},
			result: ResultFailed, root: 1, msg: "without reading all its input (4096 bytes left unread)",
			statuses: []string{"ok", "partial-read"},
		},
		{
			name: "rule: allow_partial_read makes an early stop and the producer's SIGPIPE fine",
			facts: runFacts{Stages: []stageFacts{sigpipeStage("gen"), with(okStage("head"), func(f *stageFacts) {
				f.Partial, f.Unread, f.InputEOF, f.AllowPartialRead = true, 10, false, true
			})}},
			result: ResultSuccess, root: -1,
			statuses:   []string{"ok", "ok"},
			noteSubstr: []string{"which may stop reading", "stopped reading early (allow_partial_read); at least 10 bytes unread"},
		},
		{
			name: "rule: the most upstream own failure is the root cause, whichever was judged first (bugs 5 and 8)",
			facts: runFacts{Stages: []stageFacts{okStage("gen"), exitStage("decrypt", 2), exitStage("zstd", 1)},
				Stop: &stopCause{Own: true, Stage: 2}},
			result: ResultFailed, root: 1, msg: `stage "decrypt" failed: exit 2`,
			statuses: []string{"ok", "failed", "failed"},
		},
		{
			name: "rule: a stage that died of SIGPIPE first, then was stopped, is a consequence, never the root",
			facts: runFacts{Stages: []stageFacts{with(sigpipeStage("a"), func(f *stageFacts) { f.Stopped = true }), exitStage("b", 4)},
				Stop: &stopCause{Own: true, Stage: 1}},
			result: ResultFailed, root: 1, statuses: []string{"consequence", "failed"},
		},
		{
			name: "rule: a stage stopped by pipespool is never the root cause",
			facts: runFacts{Stages: []stageFacts{stoppedStage("a"), exitStage("b", 4), stoppedStage("c")},
				Stop: &stopCause{Own: true, Stage: 1}},
			result: ResultFailed, root: 1, statuses: []string{"stopped", "failed", "stopped"},
		},
		{
			name: "rule: a timeout decides the run, stages stopped, no root cause",
			facts: runFacts{Stages: []stageFacts{stoppedStage("a"), stoppedStage("b")},
				Stop: &stopCause{Stage: -1, Result: ResultTimeout, Msg: "timed out after 2s (timeout in job.toml)"}},
			result: ResultTimeout, root: -1, msg: "timed out after 2s", statuses: []string{"stopped", "stopped"},
		},
		{
			name: "rule: a timeout that came first wins over an own failure found after it",
			facts: runFacts{Stages: []stageFacts{exitStage("a", 1), stoppedStage("b")},
				Stop: &stopCause{Stage: -1, Result: ResultTimeout, Msg: "timed out after 2s"}},
			result: ResultTimeout, root: -1,
		},
		{
			name: "rule: a signal to pipespool interrupts the run",
			facts: runFacts{Stages: []stageFacts{stoppedStage("a")},
				Stop: &stopCause{Stage: -1, Result: ResultInterrupted, Msg: "interrupted by terminated", Signal: syscall.SIGTERM}},
			result: ResultInterrupted, root: -1, statuses: []string{"stopped"},
		},
		{
			name: "rule: an own failure that stopped the run first wins over a later signal",
			facts: runFacts{Stages: []stageFacts{exitStage("a", 5), stoppedStage("b")},
				Stop: &stopCause{Own: true, Stage: 0}},
			result: ResultFailed, root: 0,
		},
		{
			name: "rule: a stage killed for a stall is the root cause, with the stall's message",
			facts: runFacts{Stages: []stageFacts{with(sigpipeStage("zero"), func(f *stageFacts) { f.Stopped = true }), stoppedStage("sleeper")},
				Stop: &stopCause{Stage: 1, Result: ResultFailed, Msg: `stage "sleeper" stalled: no progress for 1.0s`}},
			result: ResultFailed, root: 1, msg: "stalled", statuses: []string{"consequence", "failed"},
		},
		{
			name: "rule: a stage that could not start is the root cause",
			facts: runFacts{Stages: []stageFacts{okStage("a"), {Name: "b", Attempted: true, Failed: true, StartErr: "fork/exec: no such file"}},
				Stop: &stopCause{Own: true, Stage: 1}},
			result: ResultFailed, root: 1, msg: `stage "b" did not start: fork/exec`,
		},
		{
			name: "rule: pipes that could not be set up: nothing started",
			facts: runFacts{Stages: []stageFacts{{Name: "a"}, {Name: "b"}},
				Stop: &stopCause{Stage: -1, Result: ResultFailed, Msg: "setting up pipes: too many open files"}},
			result: ResultFailed, root: -1, statuses: []string{"not-started", "not-started"},
		},
		{
			name:   "rule: a consumer that stopped reading while its producer had more to give (SIGPIPE, nothing queued)",
			facts:  runFacts{Stages: []stageFacts{sigpipeStage("gen"), with(okStage("reader"), func(f *stageFacts) { f.InputEOF = false })}},
			result: ResultFailed, root: 1, msg: `stage "reader" exited 0 without reading all its input`,
			statuses: []string{"consequence", "partial-read"},
		},
		{
			name: "rule: a late partial reader does not displace an own failure downstream",
			facts: runFacts{Stages: []stageFacts{sigpipeStage("gen"), with(okStage("head"), func(f *stageFacts) { f.InputEOF = false }), exitStage("check", 9)},
				Stop: &stopCause{Own: true, Stage: 2}},
			result: ResultFailed, root: 2, statuses: []string{"consequence", "partial-read", "failed"},
		},
		{
			name: "bug 1: a producer's own failure with nothing to write after its consumer closed is the root cause",
			facts: runFacts{Stages: []stageFacts{sigpipeStage("gen"), exitStage("fails", 54), with(okStage("closein"), func(f *stageFacts) {
				f.AllowPartialRead, f.Partial, f.InputEOF = true, true, false
			})}, Stop: &stopCause{Own: true, Stage: 1}},
			result: ResultFailed, root: 1, msg: "exit 54",
		},
		{
			name: "bug 3: a shell stage exiting 141 after its consumer ended is a consequence",
			facts: runFacts{Stages: []stageFacts{sigpipeStage("gen"), with(exitStage("sh", 141), func(f *stageFacts) {
				f.ConsumerGone, f.OutputCut = true, true
			}), with(okStage("head"), func(f *stageFacts) { f.AllowPartialRead, f.Partial, f.InputEOF = true, true, false })}},
			result: ResultSuccess, root: -1, statuses: []string{"ok", "ok", "ok"},
		},
		{
			name: "bug 4: a stage whose background worker died of SIGPIPE after its consumer stopped is not a partial reader",
			facts: runFacts{Stages: []stageFacts{sigpipeStage("gen"), with(okStage("sh"), func(f *stageFacts) {
				f.Partial, f.OutputCut, f.InputEOF = true, true, false
			}), with(okStage("closein"), func(f *stageFacts) { f.AllowPartialRead, f.Partial, f.InputEOF = true, true, false })}},
			result: ResultSuccess, root: -1,
			statuses: []string{"ok", "ok", "ok"},
		},
		{
			name: "bug 4: ... and another stage's own failure is still named",
			facts: runFacts{Stages: []stageFacts{sigpipeStage("gen"), with(okStage("sh"), func(f *stageFacts) {
				f.Partial, f.OutputCut, f.InputEOF = true, true, false
			}), exitStage("fails", 9)}, Stop: &stopCause{Own: true, Stage: 2}},
			result: ResultFailed, root: 2, statuses: []string{"consequence", "ok", "failed"},
		},
		{
			name: "bug 6: the search for the reader that stopped walks through a stage whose consumer ended first",
			facts: runFacts{Stages: []stageFacts{
				sigpipeStage("gen"),
				with(sigpipeStage("head"), func(f *stageFacts) { f.AllowPartialRead = true }),
				with(okStage("sh"), func(f *stageFacts) { f.OutputCut, f.InputEOF = true, false }),
				with(okStage("closein"), func(f *stageFacts) { f.AllowPartialRead, f.Partial, f.InputEOF = true, true, false }),
			}},
			result: ResultSuccess, root: -1,
		},
		{
			name:   "the check before commit fails the run",
			facts:  runFacts{Stages: []stageFacts{okStage("a")}, CheckErr: errors.New("openpgp: integrity check failed")},
			result: ResultFailed, root: -1, msg: "input check after the last byte: openpgp: integrity check failed",
		},
		{
			name:   "a commit that fails fails the run",
			facts:  runFacts{Stages: []stageFacts{okStage("a")}, Sink: sinkFacts{CommitErr: errors.New("output out.img: fsync: input/output error")}},
			result: ResultFailed, root: 1, msg: "fsync",
		},
		{
			name:   "a stage's file beside the output (sha256's digest) that cannot be committed fails the run",
			facts:  runFacts{Stages: []stageFacts{okStage("sha256"), okStage("cat")}, Sidecar: &sidecarFailure{Stage: 0, Err: errors.New("writing its digest: read-only file system")}},
			result: ResultFailed, root: 0, msg: `stage "sha256": writing its digest: read-only file system (the output was committed)`,
		},
		{
			name: "the output is a party: its reader went away, the last stage's SIGPIPE is a consequence",
			facts: runFacts{Stages: []stageFacts{sigpipeStage("zero"), sigpipeStage("cat")},
				Sink: sinkFacts{Name: "(stdout)", Bytes: 1 << 20, Gone: true}, Stop: &stopCause{Own: true, Stage: 2}},
			result: ResultFailed, root: 2, msg: "output (stdout): its reader went away after 1048576 bytes",
			statuses: []string{"consequence", "consequence"},
		},
		{
			name: "the output is a party: a write to it failed (pipespool > /dev/full)",
			facts: runFacts{Stages: []stageFacts{sigpipeStage("cat")},
				Sink: sinkFacts{Name: "(stdout)", Err: fmt.Errorf("copying x to y: %w", syscall.ENOSPC)}},
			result: ResultFailed, root: 1, msg: "output (stdout): no space left on device after 0 bytes",
		},
		{
			name: "the output is named when the last stage failed writing it directly onto a full file system",
			facts: runFacts{Stages: []stageFacts{sigpipeStage("gen"), exitStage("cat", 1)},
				Sink: sinkFacts{Name: "/mnt/out", Full: true}, Stop: &stopCause{Own: true, Stage: 1}},
			result: ResultFailed, root: 2, msg: `output /mnt/out: no space left on device (stage "cat" failed: exit 1)`,
		},
		{
			name: "the output is named when the last stage left input unread because the worker it left writing the file hit a full file system",
			facts: runFacts{Stages: []stageFacts{sigpipeStage("gen"),
				{Name: "bgcat", Attempted: true, Status: "exit 0", Partial: true, Unread: 131072}},
				Sink: sinkFacts{Name: "/mnt/out", Full: true}, Stop: &stopCause{Own: true, Stage: 1}},
			result: ResultFailed, root: 2,
			msg: `output /mnt/out: no space left on device (stage "bgcat" exited 0 without reading all its input (at least 131072 bytes left unread): set allow_partial_read = true if that is expected)`,
		},
		{
			name: "the output is named when the last stage's producer died of SIGPIPE after the worker it left writing the file hit a full file system (torture seed 1796122264373500688 run 93)",
			facts: runFacts{Stages: []stageFacts{okStage("src"), sigpipeStage("cat"),
				{Name: "bgcat", Attempted: true, Status: "exit 0"}},
				Sink: sinkFacts{Name: "/mnt/out", Full: true}},
			result: ResultFailed, root: 3,
			msg: `output /mnt/out: no space left on device (stage "bgcat" exited 0 without reading all its input: set allow_partial_read = true if that is expected)`,
		},
		{
			name: "a stage that failed on its own upstream is named before the output",
			facts: runFacts{Stages: []stageFacts{exitStage("decrypt", 2), sigpipeStage("cat")},
				Sink: sinkFacts{Name: "(stdout)", Gone: true}, Stop: &stopCause{Own: true, Stage: 2}},
			result: ResultFailed, root: 0,
		},
		{
			name: "a timeout that came first wins over the output",
			facts: runFacts{Stages: []stageFacts{stoppedStage("cat")},
				Sink: sinkFacts{Name: "(stdout)", Gone: true}, Stop: &stopCause{Stage: -1, Result: ResultTimeout, Msg: "timed out"}},
			result: ResultTimeout, root: -1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := decideRun(tt.facts)
			if v.Result != tt.result || v.Root != tt.root {
				t.Fatalf("result %q root %d (%q), want %q root %d", v.Result, v.Root, v.Msg, tt.result, tt.root)
			}
			if !strings.Contains(v.Msg, tt.msg) {
				t.Errorf("message %q, want it to contain %q", v.Msg, tt.msg)
			}
			if tt.result == ResultInterrupted && v.Signal != tt.facts.Stop.Signal {
				t.Errorf("signal %v, want %v", v.Signal, tt.facts.Stop.Signal)
			}
			for i, want := range tt.statuses {
				if want != "" && v.Stages[i].Status != want {
					t.Errorf("stage %d status %q (%q), want %q", i, v.Stages[i].Status, v.Stages[i].Note, want)
				}
			}
			for i, want := range tt.noteSubstr {
				if !strings.Contains(v.Stages[i].Note, want) {
					t.Errorf("stage %d note %q, want it to contain %q", i, v.Stages[i].Note, want)
				}
			}
		})
	}
}

// TestConsumerWentIsAConsequenceOnly: the one predicate for "failed because
// its consumer went".
func TestConsumerWentIsAConsequenceOnly(t *testing.T) {
	for _, f := range []stageFacts{
		sigpipeStage("a"),
		with(exitStage("a", 141), func(f *stageFacts) { f.ConsumerGone = true }),
		with(exitStage("a", 1), func(f *stageFacts) { f.ConsumerGone = true }),
	} {
		if !f.consumerWent() || f.ownFailure() {
			t.Errorf("%+v: consumerWent %v ownFailure %v, want true false", f, f.consumerWent(), f.ownFailure())
		}
	}
	if f := okStage("a"); f.consumerWent() {
		t.Errorf("a stage that succeeded did not fail because of its consumer")
	}
}
