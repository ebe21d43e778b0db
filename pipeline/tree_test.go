package pipeline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLoadTreeErrorsNameLineAndKey: every rule of a tree has an error that
// names the line and the key.
func TestLoadTreeErrorsNameLineAndKey(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "real.out"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real.out", filepath.Join(dir, "link.out")); err != nil {
		t.Fatal(err)
	}
	const src = "[input]\npath = \"none\"\n[[stage]]\nname = \"send\"\ncommand = [\"cat\"]\n" // stage 1 on line 3
	for _, tc := range []struct {
		name, body string
		line       int
		key, msg   string
	}{
		{"unknown producer", src + "[[stage]]\nname = \"a\"\nfrom = \"sned\"\ncommand = [\"cat\"]\n", 8, "stage[2].from", `no stage is called "sned"`},
		{"from a later stage", src + "[[stage]]\nname = \"a\"\nfrom = \"b\"\ncommand = [\"cat\"]\n[[stage]]\nname = \"b\"\ncommand = [\"cat\"]\n", 8, "stage[2].from", "comes after this one"},
		{"from itself", src + "[[stage]]\nname = \"a\"\nfrom = \"a\"\ncommand = [\"cat\"]\n", 8, "stage[2].from", "cannot read from itself"},
		{"first stage from", "[[stage]]\nname = \"a\"\nfrom = \"a\"\ncommand = [\"cat\"]\n", 3, "stage[1].from", "reads the run's input"},
		{"reads past an output", src + "output = \"x.out\"\n[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\n", 7, "stage[2]", `the stage above it ("send") ends its branch in output`},
		{"from a stage with output", src + "[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\noutput = \"a.out\"\n[[stage]]\nname = \"b\"\nfrom = \"a\"\ncommand = [\"cat\"]\n", 12, "stage[3].from", `stage "a" ends its branch in output`},
		{"two branches without output", src + "[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\n[[stage]]\nname = \"b\"\nfrom = \"send\"\ncommand = [\"cat\"]\n", 9, "stage[3]", "two branches end without an output of their own"},
		{"optional in a line", src + "[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\noptional = true\n", 9, "stage[2].optional", "only the first stage of a branch"},
		{"optional past a branch's start", src + "[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\noutput = \"a.out\"\n[[stage]]\nname = \"b\"\nfrom = \"send\"\ncommand = [\"cat\"]\n[[stage]]\nname = \"c\"\ncommand = [\"cat\"]\noptional = true\n", 17, "stage[4].optional", "only the first stage of a branch"},
		{"optional on the first stage", "[[stage]]\ncommand = [\"cat\"]\noptional = true\n", 3, "stage[1].optional", "only the first stage of a branch"},
		{"same output", src + "[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\noutput = \"x.out\"\n[[stage]]\nname = \"b\"\nfrom = \"send\"\ncommand = [\"cat\"]\noutput = \"./x.out\"\n", 14, "stage[3].output", `writes the same file as stage "a"`},
		{"same file through a link", src + "[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\noutput = \"real.out\"\n[[stage]]\nname = \"b\"\nfrom = \"send\"\ncommand = [\"cat\"]\noutput = \"" + filepath.Join(dir, "link.out") + "\"\n", 14, "stage[3].output", `writes the same file as stage "a"`},
		{"stdout twice", src + "[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\noutput = \"-\"\n[[stage]]\nname = \"b\"\nfrom = \"send\"\ncommand = [\"cat\"]\n", 9, "stage[2].output", "writes the same file as [output]"},
		{"stdout by two spellings", src + "[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\noutput = \"/dev/stdout\"\n[[stage]]\nname = \"b\"\nfrom = \"send\"\ncommand = [\"cat\"]\noutput = \"-\"\n", 14, "stage[3].output", `writes the same file as stage "a"`},
		{"none twice is fine but stdout is not", src + "[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\noutput = \"none\"\n[[stage]]\nname = \"b\"\nfrom = \"send\"\ncommand = [\"cat\"]\noutput = \"none\"\n[[stage]]\nname = \"c\"\nfrom = \"send\"\ncommand = [\"cat\"]\noutput = \"-\"\n[[stage]]\nname = \"d\"\nfrom = \"send\"\ncommand = [\"cat\"]\noutput = \"/dev/fd/1\"\n", 24, "stage[5].output", `writes the same file as stage "c"`},
		{"[output] unused", "[output]\npath = \"x.out\"\n" + strings.TrimPrefix(src, "") + "[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\noutput = \"a.out\"\n[[stage]]\nname = \"b\"\nfrom = \"send\"\ncommand = [\"cat\"]\noutput = \"b.out\"\n", 2, "output.path", "belongs to none"},
		{"output_mode without output", src + "output_mode = \"0600\"\n", 6, "stage[1].output_mode", "needs output on the same stage"},
		{"bad output_mode", src + "output = \"a.out\"\noutput_mode = \"rw\"\n", 7, "stage[1].output_mode", "octal"},
		{"empty output", src + "output = \"\"\n", 6, "stage[1].output", "must not be empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(dir, "job.toml"), []byte(tc.body))
			var je *JobError
			if !errors.As(err, &je) {
				t.Fatalf("error %v (%T), want *JobError", err, err)
			}
			if je.Line != tc.line || je.Key != tc.key || !strings.Contains(je.Msg, tc.msg) {
				t.Fatalf("got line %d key %q msg %q; want line %d key %q msg containing %q", je.Line, je.Key, je.Msg, tc.line, tc.key, tc.msg)
			}
		})
	}
}

// TestTreeLines: a job splits into the lines the run runs, and a job
// without from is the line it always was.
func TestTreeLines(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		fansOut    bool
		lines      [][]int
		parents    []int
		optional   []bool
	}{
		{"a line", "[[stage]]\ncommand = [\"cat\"]\n[[stage]]\ncommand = [\"cat\"]\n[[stage]]\ncommand = [\"cat\"]\n", false, [][]int{{0, 1, 2}}, []int{-1}, []bool{false}},
		{"a line with an explicit from", "[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\n[[stage]]\nfrom = \"a\"\ncommand = [\"cat\"]\n", false, [][]int{{0, 1}}, []int{-1}, []bool{false}},
		{"the spec's example", `[input]
path = "none"
[[stage]]
name = "send"
command = ["cat"]
[[stage]]
name = "local"
builtin = "zstd-compress"
output = "tank.zst"
[[stage]]
name = "digest"
from = "send"
command = ["sha256sum"]
output = "tank.sha256"
`, true, [][]int{{0}, {1}, {2}}, []int{-1, 0, 0}, []bool{false, false, false}},
		{"branches of branches", `[[stage]]
name = "a"
command = ["cat"]
[[stage]]
name = "b"
command = ["cat"]
[[stage]]
name = "c"
command = ["cat"]
output = "c.out"
[[stage]]
name = "d"
from = "b"
optional = true
command = ["cat"]
output = "d.out"
[[stage]]
name = "e"
from = "a"
command = ["cat"]
[[stage]]
name = "f"
command = ["cat"]
`, true, [][]int{{0}, {1}, {2}, {3}, {4, 5}}, []int{-1, 0, 1, 1, 0}, []bool{false, false, false, true, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job, err := Parse(filepath.Join(t.TempDir(), "job.toml"), []byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if job.FansOut() != tc.fansOut {
				t.Fatalf("FansOut %v, want %v", job.FansOut(), tc.fansOut)
			}
			var got [][]int
			var parents []int
			var optional []bool
			for _, l := range job.lines() {
				got = append(got, l.Stages)
				parents = append(parents, l.Parent)
				optional = append(optional, l.Optional)
			}
			if !reflect.DeepEqual(got, tc.lines) || !reflect.DeepEqual(parents, tc.parents) || !reflect.DeepEqual(optional, tc.optional) {
				t.Fatalf("lines %v parents %v optional %v; want %v %v %v", got, parents, optional, tc.lines, tc.parents, tc.optional)
			}
		})
	}
}

// TestDecideTree has a row per rule of decideTree.
func TestDecideTree(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	ok := func(label string, parent int) lineFacts {
		return lineFacts{Label: label, Parent: parent, Result: ResultSuccess, At: at(100)}
	}
	fail := func(label string, parent int, msg string, when int) lineFacts {
		return lineFacts{Label: label, Parent: parent, Result: ResultFailed, Msg: msg, At: at(when)}
	}
	cascade := func(f lineFacts) lineFacts { f.Cascade = true; f.Msg = "stopped"; return f }
	optional := func(f lineFacts) lineFacts { f.Optional = true; return f }
	forks := func(f lineFacts) lineFacts { f.Forks = true; return f }
	// decided: stopped by a timeout, a signal (SIGTERM) or a stall kill
	// (ResultFailed).
	decided := func(result, label string, parent, when int) lineFacts {
		f := lineFacts{Label: label, Parent: parent, Result: result, At: at(when), Decided: true}
		switch result {
		case ResultTimeout:
			f.Msg = "timed out"
		case ResultInterrupted:
			f.Msg, f.Signal = "interrupted by SIGTERM", syscall.SIGTERM
		default:
			f.Msg = `stage "b" stalled, killed`
		}
		return f
	}
	for _, tc := range []struct {
		name     string
		lines    []lineFacts
		result   string
		root     int
		msg      string
		discard  []bool
		warnings int
	}{
		{"every line succeeded", []lineFacts{forks(ok("the trunk", -1)), ok(`branch "a"`, 0), ok(`branch "b"`, 0)},
			ResultSuccess, -1, "", []bool{false, false, false}, 0},
		{"the trunk failed, the branches saw a clean end", []lineFacts{forks(fail("the trunk", -1, `stage "tar" failed: exit 2`, 5)), ok(`branch "a"`, 0), ok(`branch "b"`, 0)},
			ResultFailed, 0, `stage "tar" failed: exit 2`, []bool{true, true, true}, 0},
		{"a branch failed: the others were stopped", []lineFacts{forks(cascade(fail("the trunk", -1, "", 6))), fail(`branch "a"`, 0, `stage "a" failed: exit 3`, 5), cascade(fail(`branch "b"`, 0, "", 6))},
			ResultFailed, 1, `branch "a": stage "a" failed: exit 3`, []bool{true, true, true}, 0},
		{"the trunk cut the stream after a branch failed on it: upstream first", []lineFacts{forks(fail("the trunk", -1, `stage "src" failed: exit 7`, 9)), fail(`branch "a"`, 0, `stage "zstd" failed: exit 1`, 5), ok(`branch "b"`, 0)},
			ResultFailed, 0, `stage "src" failed: exit 7`, []bool{true, true, true}, 0},
		{"two branches failed: the earliest", []lineFacts{forks(cascade(fail("the trunk", -1, "", 6))), fail(`branch "a"`, 0, "a failed", 8), fail(`branch "b"`, 0, "b failed", 5)},
			ResultFailed, 2, `branch "b": b failed`, []bool{true, true, true}, 0},
		{"an optional branch failed: warned, discarded", []lineFacts{forks(ok("the trunk", -1)), ok(`branch "a"`, 0), optional(fail(`branch "b"`, 0, "b failed", 5))},
			ResultSuccess, -1, `optional branch "b" failed, its output was discarded: b failed`, []bool{false, false, true}, 1},
		{"an optional branch's own branch failed: the optional branch goes", []lineFacts{forks(ok("the trunk", -1)), ok(`branch "a"`, 0), forks(optional(ok(`branch "b"`, 0))), fail(`branch "c"`, 2, "c failed", 5), cascade(fail(`branch "d"`, 2, "", 6))},
			ResultSuccess, -1, `optional branch "b" failed, its output was discarded: c failed`, []bool{false, false, true, true, true}, 1},
		{"every branch of a fan-out failed, all optional: the stream reached nobody", []lineFacts{forks(lineFacts{Label: "the trunk", Parent: -1, Result: ResultFailed, Msg: "output gone", FanOutGone: true, At: at(9)}), optional(fail(`branch "a"`, 0, "a failed", 5)), optional(fail(`branch "b"`, 0, "b failed", 4))},
			ResultFailed, 2, `branch "b": b failed`, []bool{true, true, true}, 0},
		{"every branch stopped reading, as it may: success", []lineFacts{forks(lineFacts{Label: "the trunk", Parent: -1, Result: ResultFailed, Msg: "output gone", FanOutGone: true, At: at(9)}), ok(`branch "a"`, 0), ok(`branch "b"`, 0)},
			ResultSuccess, -1, "", []bool{false, false, false}, 0},
		{"a timeout in an optional branch fails the run", []lineFacts{forks(ok("the trunk", -1)), ok(`branch "a"`, 0), optional(lineFacts{Label: `branch "b"`, Parent: 0, Result: ResultTimeout, Msg: "timed out", At: at(5)})},
			ResultTimeout, -1, "timed out", []bool{true, true, true}, 0},
		{"the fan-out could not deliver to a branch", []lineFacts{forks(ok("the trunk", -1)), lineFacts{Label: `branch "a"`, Parent: 0, Result: ResultSuccess, FanOutErr: "the fan-out could not deliver to branch \"a\": EIO", At: at(5)}, ok(`branch "b"`, 0)},
			ResultFailed, 1, `branch "a": the fan-out could not deliver to branch "a": EIO`, []bool{true, true, true}, 0},
		{"interrupted", []lineFacts{forks(lineFacts{Label: "the trunk", Parent: -1, Result: ResultInterrupted, Msg: "interrupted", Signal: syscall.SIGTERM, At: at(5)}), lineFacts{Label: `branch "a"`, Parent: 0, Result: ResultInterrupted, Msg: "interrupted", Signal: syscall.SIGTERM, At: at(5)}},
			ResultInterrupted, -1, "interrupted by SIGTERM", []bool{true, true}, 0},
		// A signal to pipespool seen first by an optional branch is the
		// run's: no branch is named.
		{"interrupted, an optional branch first", []lineFacts{forks(lineFacts{Label: "the trunk", Parent: -1, Result: ResultInterrupted, Msg: "interrupted by SIGHUP", Signal: syscall.SIGHUP, At: at(6), Cascade: true}), lineFacts{Label: `branch "a"`, Parent: 0, Result: ResultSuccess, At: at(7)}, lineFacts{Label: `branch "c"`, Parent: 0, Optional: true, Result: ResultInterrupted, Msg: "interrupted by SIGHUP", Signal: syscall.SIGHUP, At: at(5)}},
			ResultInterrupted, -1, "interrupted by SIGHUP", []bool{true, true, true}, 0},
		// A branch that failed before the signal came stays the root cause.
		{"a failure, then a signal", []lineFacts{forks(lineFacts{Label: "the trunk", Parent: -1, Result: ResultInterrupted, Msg: "interrupted by SIGTERM", Signal: syscall.SIGTERM, At: at(6), Cascade: true}), lineFacts{Label: `branch "a"`, Parent: 0, Result: ResultFailed, Msg: "stage \"a\" failed: exit 1", At: at(5)}},
			ResultFailed, 1, `branch "a": stage "a" failed: exit 1`, []bool{true, true}, 0},
		// A branch's own failure waits for its trunk's judgement; a
		// reason of the run's that stopped the lines meanwhile came after
		// it.
		{"a branch failed, the run timed out while it waited", []lineFacts{forks(decided(ResultTimeout, "the trunk", -1, 7)), fail(`branch "a"`, 0, `stage "a" failed: exit 3`, 5), decided(ResultTimeout, `branch "b"`, 0, 7)},
			ResultFailed, 1, `branch "a": stage "a" failed: exit 3`, []bool{true, true, true}, 0},
		{"a branch failed, a signal came while it waited", []lineFacts{forks(decided(ResultInterrupted, "the trunk", -1, 7)), fail(`branch "a"`, 0, `stage "a" failed: exit 3`, 5), decided(ResultInterrupted, `branch "b"`, 0, 7)},
			ResultFailed, 1, `branch "a": stage "a" failed: exit 3`, []bool{true, true, true}, 0},
		{"a branch failed, another branch's stall was killed while it waited", []lineFacts{forks(cascade(fail("the trunk", -1, "", 8))), fail(`branch "a"`, 0, `stage "a" failed: exit 3`, 5), decided(ResultFailed, `branch "b"`, 0, 7)},
			ResultFailed, 1, `branch "a": stage "a" failed: exit 3`, []bool{true, true, true}, 0},
		{"the trunk's stall was killed while a branch's failure waited: upstream first", []lineFacts{forks(decided(ResultFailed, "the trunk", -1, 7)), fail(`branch "a"`, 0, `stage "a" failed: exit 124`, 5), cascade(fail(`branch "b"`, 0, "", 8))},
			ResultFailed, 0, `stage "b" stalled, killed`, []bool{true, true, true}, 0},
		{"the run timed out before a failure of a branch's own", []lineFacts{forks(decided(ResultTimeout, "the trunk", -1, 5)), fail(`branch "a"`, 0, `stage "a" failed: exit 3`, 6), decided(ResultTimeout, `branch "b"`, 0, 5)},
			ResultTimeout, -1, "timed out", []bool{true, true, true}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := decideTree(tc.lines)
			if v.Result != tc.result || v.Line != tc.root || v.Msg != tc.msg || !reflect.DeepEqual(v.Discard, tc.discard) || len(v.Warnings) != tc.warnings {
				t.Fatalf("got %s root %d msg %q discard %v warnings %q; want %s root %d msg %q discard %v %d warnings",
					v.Result, v.Line, v.Msg, v.Discard, v.Warnings, tc.result, tc.root, tc.msg, tc.discard, tc.warnings)
			}
		})
	}
}

// TestRunTreeRefusesJobParams: job parameters go to the last stage's
// command line, and a tree has no one last stage: a job error (exit 2),
// before anything runs.
func TestRunTreeRefusesJobParams(t *testing.T) {
	dir := t.TempDir()
	job, err := Parse(filepath.Join(dir, "job.toml"), []byte("[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\n[[stage]]\ncommand = [\"cat\"]\n[[stage]]\nfrom = \"a\"\ncommand = [\"cat\"]\noutput = \"b.out\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Run(context.Background(), job, Options{ExtraArgs: []string{"x"}})
	var je *JobError
	if !errors.As(err, &je) || !strings.Contains(je.Msg, "need a job that is a line") {
		t.Fatalf("error %v, want a *JobError about job parameters", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "b.out")); !os.IsNotExist(err) {
		t.Fatalf("b.out exists: %v", err)
	}
}

// TestRunTreeStopsBranchesStartedAfterTheFailure: a line may be stopped
// (its trunk failed at once) before its own stages have started; a stage
// started after that is stopped as soon as it starts, not left running
// until the job's timeout (the torture harness found a run hung on a
// branch stage so: a stage's Stop before its Start does nothing).
func TestRunTreeStopsBranchesStartedAfterTheFailure(t *testing.T) {
	var b strings.Builder
	b.WriteString("timeout = \"20s\"\n[input]\npath = \"none\"\n[[stage]]\nname = \"trunk\"\nshell = \"exit 3\"\n")
	for i := range 6 {
		fmt.Fprintf(&b, "[[stage]]\nname = \"b%d\"\nfrom = \"trunk\"\ncommand = [\"sleep\", \"1000\"]\noutput = \"none\"\n", i)
	}
	for round := range 15 {
		job, err := Parse(filepath.Join(t.TempDir(), "job.toml"), []byte(b.String()))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		rep, err := Run(context.Background(), job, Options{Grace: time.Second})
		if err == nil || rep == nil || rep.Result != ResultFailed || rep.RootCause != "trunk" {
			t.Fatalf("round %d: %v (%+v), want a failure of the trunk", round, err, rep)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("round %d: the run took %s: a branch stage was left running", round, d)
		}
	}
}
