package integration

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestQueueProcessStopsWhatTheJobLeft: what a job's command, or a shell
// step of the decoder, leaves running (in its process group, or in a
// session of its own, re-parented to pipespool) is stopped at the end of
// the job, and the log names it; the job still succeeds. Before, the
// command ran on plain os/exec: `sleep 300 &` outlived queue-process.
func TestQueueProcessStopsWhatTheJobLeft(t *testing.T) {
	for _, tc := range []struct {
		name   string
		leave  string // the shell fragment that leaves MARK running
		decode bool   // left by a decoder step rather than by the command
		warn   bool   // the log names what was stopped
	}{
		{"command, in its group", "sleep %s &", false, false},
		{"command, own session", "setsid sleep %[1]s & %[2]s;", false, true},
		{"decoder, in its group", "sleep %s >/dev/null 2>&1 &", true, false},
		{"decoder, own session", "setsid sleep %[1]s >/dev/null 2>&1 </dev/null & %[2]s;", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			makeQueue(t, dir, 1, 10)
			mark := fmt.Sprintf("300.%d", time.Now().UnixNano()%1000000)
			leave := tc.leave
			if strings.Contains(leave, "%[2]s") {
				// Wait until it runs: before setsid it is still in
				// the group, stopped with it, and nothing is logged.
				leave = fmt.Sprintf(leave, mark, waitFor(mark))
			} else {
				leave = fmt.Sprintf(leave, mark)
			}
			args := []string{"queue-process", filepath.Join(dir, "q")}
			if tc.decode {
				args = append(args, "-d", leave+" cat", "sh", "--", "-c", "cat >/dev/null")
			} else {
				args = append(args, "sh", "--", "-c", "cat >/dev/null; "+leave+" exit 0")
			}
			res := runPipespool(t, runOpts{Timeout: 30 * time.Second}, args...)
			if res.Code != 0 {
				t.Fatalf("exit %d, want 0\nstderr: %s", res.Code, res.Stderr)
			}
			assertNoProcesses(t, mark)
			if jobs := listJobs(t, filepath.Join(dir, "q")); len(jobs) != 0 {
				t.Errorf("jobs left: %v", jobs)
			}
			if res.Elapsed > 15*time.Second {
				t.Errorf("took %s: waited for the leftover instead of stopping it", res.Elapsed)
			}
			stopped := strings.Contains(string(res.Stderr), "left running: sleep (pid ")
			if tc.warn && (!stopped || !strings.Contains(string(res.Stderr), `may_outlive = [\"sleep\"]`)) {
				t.Errorf("the log does not name the process it stopped:\n%s", res.Stderr)
			}
		})
	}
}

// TestStdinProcessStopsWhatTheJobLeft: the same for stdin-process.
func TestStdinProcessStopsWhatTheJobLeft(t *testing.T) {
	dir := t.TempDir()
	mark := fmt.Sprintf("300.%d", time.Now().UnixNano()%1000000)
	pkt := must(t, dir, []byte("payload\n"), nil, pipespoolBin, "prepare", "-s", filepath.Join(dir, "seq"), "-i", "-")
	res := runPipespool(t, runOpts{Stdin: strings.NewReader(pkt), Timeout: 30 * time.Second},
		"stdin-process", "sh", "--", "-c", "cat >/dev/null; setsid sleep "+mark+" & exit 0")
	if res.Code != 0 {
		t.Fatalf("exit %d, want 0\nstderr: %s", res.Code, res.Stderr)
	}
	assertNoProcesses(t, mark)
}

// TestQueueProcessMayOutlive: a program named by the may_outlive of
// --decoder-config is left running when it left the job's process group.
// The command waits until the program runs: before its exec, or before
// setsid, the child is another program in the job's group.
func TestQueueProcessMayOutlive(t *testing.T) {
	dir := t.TempDir()
	makeQueue(t, dir, 1, 10)
	mark := fmt.Sprintf("300.%d", time.Now().UnixNano()%1000000)
	cfg := writeFile(t, dir, "cfg.toml", "may_outlive = [\"sleep\"]\n")
	t.Cleanup(func() {
		for _, p := range processesWithMarker(mark) {
			if pid, err := strconv.Atoi(strings.Fields(p)[0]); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	res := runPipespool(t, runOpts{Timeout: 30 * time.Second}, "queue-process", filepath.Join(dir, "q"), "--decoder-config", cfg,
		"sh", "--", "-c", "cat >/dev/null; setsid sleep "+mark+" </dev/null >/dev/null 2>&1 & "+waitFor(mark))
	if res.Code != 0 {
		t.Fatalf("exit %d, want 0\nstderr: %s", res.Code, res.Stderr)
	}
	if left := processesWithMarker(mark); len(left) != 1 {
		t.Fatalf("want the sleep left running, found %v\nstderr: %s", left, res.Stderr)
	}
}

// waitFor is a shell loop that waits until a process "sleep MARK" runs.
func waitFor(mark string) string {
	return "until pgrep -xf 'sleep " + mark + "' >/dev/null; do sleep 0.01; done"
}

// TestQueueCommandsStopWhatTheDecoderLeft: the commands that decode a
// packet without running it (queue-ls, queue-payload, stdin-payload) stop
// what a shell decoder step left running in a session of its own, too.
func TestQueueCommandsStopWhatTheDecoderLeft(t *testing.T) {
	dir := t.TempDir()
	makeQueue(t, dir, 1, 10)
	qdir := filepath.Join(dir, "q")
	pkt := must(t, dir, []byte("payload\n"), nil, pipespoolBin, "prepare", "-s", "-", "-i", "-")
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
	}{
		{"queue-ls", "", []string{"queue-ls", qdir}},
		{"queue-payload", "", []string{"queue-payload", "-q", qdir, "-j", "1"}},
		{"stdin-payload", pkt, []string{"stdin-payload"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mark := fmt.Sprintf("300.%d", time.Now().UnixNano()%1000000)
			dec := "setsid sleep " + mark + " >/dev/null 2>&1 </dev/null & " + waitFor(mark) + "; cat"
			res := runPipespool(t, runOpts{Stdin: strings.NewReader(tc.stdin), Timeout: 30 * time.Second},
				append(tc.args, "-d", dec)...)
			if res.Code != 0 {
				t.Fatalf("exit %d, want 0\nstderr: %s", res.Code, res.Stderr)
			}
			assertNoProcesses(t, mark)
			if !strings.Contains(string(res.Stderr), "left running: sleep (pid ") {
				t.Errorf("the log does not name the process it stopped:\n%s", res.Stderr)
			}
		})
	}
}

// TestQueueProcessFailureOfWhatTheJobLeft: a process the job's command
// left in its group that fails on its own (after its parent exited, so
// that only pipespool, its subreaper, sees its status) fails the job, as
// it fails an exec stage: the job stays in the queue under the default
// --on-error Retry and nextseq does not move.
func TestQueueProcessFailureOfWhatTheJobLeft(t *testing.T) {
	dir := t.TempDir()
	makeQueue(t, dir, 1, 10)
	res := runPipespool(t, runOpts{Timeout: 30 * time.Second}, "queue-process", filepath.Join(dir, "q"),
		"sh", "--", "-c", `cat >/dev/null; (sh -c 'exit 3' &); sleep 0.5`)
	if res.Code != 1 {
		t.Fatalf("exit %d, want 1\nstderr: %s", res.Code, res.Stderr)
	}
	if !strings.Contains(string(res.Stderr), "exited 3, left running by it") {
		t.Errorf("the error does not name the process that failed:\n%s", res.Stderr)
	}
	if jobs := listJobs(t, filepath.Join(dir, "q")); len(jobs) != 1 {
		t.Errorf("jobs left: %v, want the failed one", jobs)
	}
}
