package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/pipespool/pipespool/queue"
)

// TestQueueProcessArgs: which arguments are queues and which the COMMAND,
// a row per rule of queueProcessArgs.
func TestQueueProcessArgs(t *testing.T) {
	dirs := map[string]bool{"/qa": true, "/qb": true, "/qc": true, "cat": false, "sh": false}
	isDir := func(p string) bool { return dirs[p] }
	for _, tc := range []struct {
		name          string
		flag          []string
		before, after []string
		dirs, command []string
		err           string
	}{
		{name: "one queue, COMMAND", before: []string{"/qa", "cat"}, dirs: []string{"/qa"}, command: []string{"cat"}},
		{name: "one queue, COMMAND and PARAMS", before: []string{"/qa", "sh"}, after: []string{"-c", "x"}, dirs: []string{"/qa"}, command: []string{"sh", "-c", "x"}},
		{name: "one queue, pipeline mode", before: []string{"/qa"}, dirs: []string{"/qa"}, command: []string{""}},
		{name: "a queue that is not there yet is still the first argument", before: []string{"/missing", "cat"}, dirs: []string{"/missing"}, command: []string{"cat"}},
		{name: "-q, COMMAND", flag: []string{"/qa"}, before: []string{"cat"}, dirs: []string{"/qa"}, command: []string{"cat"}},
		{name: "-q twice, COMMAND", flag: []string{"/qa", "/qb"}, before: []string{"sh"}, after: []string{"-c", "x"}, dirs: []string{"/qa", "/qb"}, command: []string{"sh", "-c", "x"}},
		{name: "-q twice, pipeline mode", flag: []string{"/qa", "/qb"}, dirs: []string{"/qa", "/qb"}, command: []string{""}},
		{name: "with -q a directory argument is the COMMAND", flag: []string{"/qa"}, before: []string{"/qb"}, dirs: []string{"/qa"}, command: []string{"/qb"}},
		{name: "directories only: several queues", before: []string{"/qa", "/qb", "/qc"}, dirs: []string{"/qa", "/qb", "/qc"}, command: []string{""}},
		{name: "directories only, PARAMS for the last stage", before: []string{"/qa", "/qb"}, after: []string{"x"}, dirs: []string{"/qa", "/qb"}, command: []string{"", "x"}},
		{name: "the first need not exist", before: []string{"/missing", "/qb"}, dirs: []string{"/missing", "/qb"}, command: []string{""}},
		{name: "directories then a COMMAND", before: []string{"/qa", "/qb", "cat"}, err: `queue directories /qa /qb and then "cat"`},
		{name: "COMMAND then more", before: []string{"/qa", "sh", "x"}, err: `unexpected argument "x" after COMMAND "sh"`},
		{name: "-q and two arguments", flag: []string{"/qa"}, before: []string{"sh", "x"}, err: `unexpected argument "x" after COMMAND "sh"`},
		{name: "nothing", err: "no queue directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, c, err := queueProcessArgs(tc.flag, tc.before, tc.after, isDir)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || exitCodeOf(err) != 2 {
					t.Fatalf("got %v %v, err %v; want usage error %q", d, c, err, tc.err)
				}
				return
			}
			if err != nil || !slices.Equal(d, tc.dirs) || !slices.Equal(c, tc.command) {
				t.Errorf("got dirs %q command %q err %v; want %q %q", d, c, err, tc.dirs, tc.command)
			}
		})
	}
}

// TestQueueProcessSeveralQueuesOptions: the command line as cobra gives
// it, with real directories for the positional form.
func TestQueueProcessSeveralQueuesOptions(t *testing.T) {
	tmp := t.TempDir()
	a, b := filepath.Join(tmp, "a"), filepath.Join(tmp, "b")
	for _, d := range []string{a, b} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	o := captured(t, NewCmdQueueProcess, "queue-process", "--parallel", "4", a, b)
	if !slices.Equal(o.Dirs, []string{a, b}) || o.Dir != a || o.Command[0] != "" || o.Parallel != 4 {
		t.Errorf("positional: %+v", *o)
	}
	o = captured(t, NewCmdQueueProcess, "queue-process", "-q", a, "-q", b, "--queue-lock-wait", "2m", "cat")
	if !slices.Equal(o.Dirs, []string{a, b}) || !slices.Equal(o.Command, []string{"cat"}) || o.QueueLockWait.Minutes() != 2 || o.Parallel != 1 {
		t.Errorf("-q: %+v", *o)
	}
	o = captured(t, NewCmdQueueProcess, "queue-process", a, "--job", "r.toml", b)
	if !slices.Equal(o.Dirs, []string{a, b}) || o.JobFile != "r.toml" {
		t.Errorf("--job: %+v", *o)
	}
	for _, tc := range []struct {
		msg  string
		args []string
	}{
		{"--parallel 0", []string{"--parallel", "0", a, b}},
		{"given twice", []string{"-q", a, "-q", a + "/", "cat"}},
		{"given twice", []string{"-q", a, "-q", filepath.Join(b, "..", "a"), "cat"}},
		{"--queue-lock-wait -1s", []string{"--queue-lock-wait", "-1s", a, b}},
		{"both COMMAND", []string{"-q", a, "-q", b, "--job", "r.toml", "cat"}},
	} {
		code, stderr := runCmd(t, func(g *globalOptions) *cobra.Command { return NewCmdQueueProcess(g, nil) },
			append([]string{"queue-process"}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.msg) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.msg)
		}
	}
}

// TestExitRank: a multi-queue run exits with the worst of its queues'
// codes; a lock held is the least bad failure.
func TestExitRank(t *testing.T) {
	worst := func(codes ...int) int {
		w := 0
		for _, c := range codes {
			if exitRank(c) > exitRank(w) {
				w = c
			}
		}
		return w
	}
	for _, tc := range []struct {
		codes []int
		want  int
	}{
		{[]int{0, 0}, 0},
		{[]int{0, 75}, 75},
		{[]int{75, 1, 0}, 1},
		{[]int{1, 75}, 1},
		{[]int{2, 1, 75}, 2},
		{[]int{75, 2}, 2},
	} {
		if got := worst(tc.codes...); got != tc.want {
			t.Errorf("%v: %d, want %d", tc.codes, got, tc.want)
		}
	}
}

// TestQueueProcessSeveralQueuesInProcess runs queue-process over real
// queues in this process (for the race detector), in command and pipeline
// mode: six queues of three jobs, one of which fails its second, three at
// a time, with a report and metrics.
func TestQueueProcessSeveralQueuesInProcess(t *testing.T) {
	for _, mode := range []string{"command", "pipeline"} {
		t.Run(mode, func(t *testing.T) {
			tmp := t.TempDir()
			args := []string{"queue-process", "--parallel", "3", "--report", filepath.Join(tmp, "r.json"), "--metrics-file", filepath.Join(tmp, "m.prom")}
			var bad string
			for i := range 6 {
				q := filepath.Join(tmp, fmt.Sprintf("q%d", i))
				if err := queue.Init(q, false); err != nil {
					t.Fatal(err)
				}
				for seq := uint64(1); seq <= 3; seq++ {
					h := &queue.Header{Seq: seq, CTimeSecs: 1700000000}
					if i == 4 && seq == 2 {
						h.Type, bad = queue.CmdFail, q
					}
					if err := os.WriteFile(filepath.Join(q, "jobs", queue.NewJobFilename()), queue.Encode(h), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				args = append(args, "-q", q)
			}
			if mode == "command" {
				args = append(args, "sh", "--", "-c", "cat >/dev/null; echo to stderr >&2")
			} else {
				job := filepath.Join(tmp, "job.toml")
				if err := os.WriteFile(job, []byte("[[stage]]\nname = \"drain\"\nshell = \"cat >/dev/null; echo to stderr >&2\"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--job", job)
			}
			code, stderr := runCmd(t, func(g *globalOptions) *cobra.Command { return NewCmdQueueProcess(g, nil) }, args...)
			if code != 1 || !strings.Contains(stderr, "pipespool: queue "+bad+": job 2 (") || !strings.Contains(stderr, "1 of 6 queues did not succeed") {
				t.Errorf("exit %d, stderr %q", code, stderr)
			}
			for i := range 6 {
				q := filepath.Join(tmp, fmt.Sprintf("q%d", i))
				want := "4\n"
				if q == bad {
					want = "2\n"
				}
				if b, _ := os.ReadFile(filepath.Join(q, "nextseq")); string(b) != want {
					t.Errorf("%s: nextseq %q, want %q", q, b, want)
				}
			}
		})
	}
}
