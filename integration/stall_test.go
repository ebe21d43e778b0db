package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Stall tests use stall_timeout = 1s: the monitor then samples every 250 ms.

// stageRep and runRep are the parts of a --report file the tests check.
type stageRep struct {
	Name      string   `json:"name"`
	Status    string   `json:"status"`
	Stalls    int      `json:"stalls"`
	Nudges    int      `json:"nudges"`
	Diagnoses []string `json:"stall_diagnoses"`
	Note      string   `json:"note"`
	BytesIn   int64    `json:"bytes_in"`
	BytesOut  int64    `json:"bytes_out"`
	ExitCode  *int     `json:"exit_code"`
	Error     string   `json:"error"`
	Stderr    string   `json:"stderr_tail"`
}

type runRep struct {
	Result    string     `json:"result"`
	RootCause string     `json:"root_cause"`
	Message   string     `json:"message"`
	Stages    []stageRep `json:"stages"`
}

// readReport reads a --report file.
func readReport(t *testing.T, path string) runRep {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r runRep
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return r
}

var (
	stuckOnce sync.Once
	stuckBin  string
	stuckErr  error
)

// stuckReader builds testdata/fixtures/stuckreader once: a copy program that
// misses its epoll wake-ups until a nudge makes epoll_wait return EINTR.
func stuckReader(t *testing.T) string {
	t.Helper()
	stuckOnce.Do(func() {
		stuckBin = filepath.Join(filepath.Dir(pipespoolBin), "stuckreader")
		out, err := exec.Command("go", "build", "-o", stuckBin, "../testdata/fixtures/stuckreader").CombinedOutput()
		if err != nil {
			stuckErr = err
			stuckBin = string(out)
		}
	})
	if stuckErr != nil {
		t.Fatalf("building the stuckreader fixture: %v\n%s", stuckErr, stuckBin)
	}
	return stuckBin
}

// TestStallStageThatStopsReadingIsBlamed: `cat /dev/zero | sleep` — sleep
// never reads, cat blocks writing. The stall is noticed within
// stall_timeout + 1 s, sleep (not cat, which only waits on it) is the root
// cause, on_stall = kill ends the run with exit 1 and nothing left running.
func TestStallStageThatStopsReadingIsBlamed(t *testing.T) {
	dir := t.TempDir()
	const marker = "30.0701" // sleep's argument marks its process
	job := writeFile(t, dir, "job.toml", `
stall_timeout = "1s"
on_stall = "kill"
[output]
path = "none"
[[stage]]
name = "zero"
command = ["cat", "/dev/zero"]
[[stage]]
name = "sleeper"
command = ["sleep", "`+marker+`"]
`)
	rp := filepath.Join(dir, "report.json")
	res := runPipespool(t, runOpts{}, "exec", job, "--report", rp)
	if res.Code != 1 {
		t.Fatalf("exit %d, want 1\nstderr: %s", res.Code, res.Stderr)
	}
	// Detection at 1s + one tick, then SIGTERM: well within 1s + 1s.
	if res.Elapsed > 2*time.Second {
		t.Errorf("stall handled after %s, want within stall_timeout + 1s", res.Elapsed)
	}
	rep := readReport(t, rp)
	if rep.RootCause != "sleeper" || !strings.Contains(rep.Message, `stage "sleeper" stalled`) {
		t.Errorf("root cause %q, message %q; want sleeper stalled", rep.RootCause, rep.Message)
	}
	if rep.Stages[0].Stalls != 0 || rep.Stages[1].Stalls != 1 {
		t.Errorf("stalls zero=%d sleeper=%d, want 0 and 1", rep.Stages[0].Stalls, rep.Stages[1].Stalls)
	}
	if len(rep.Stages[1].Diagnoses) != 1 {
		t.Fatalf("diagnoses: %q", rep.Stages[1].Diagnoses)
	}
	d := rep.Stages[1].Diagnoses[0]
	for _, want := range []string{`stage "sleeper" (pid `, "no progress for 1.", "state S (sleeping)", "nanosleep(", "input pipe ", `waiting on it: "zero"`} {
		if !strings.Contains(d, want) {
			t.Errorf("diagnosis %q lacks %q", d, want)
		}
	}
	if strings.Contains(d, "missed wake-up") {
		t.Errorf("sleep is no missed wake-up: %q", d)
	}
	for _, want := range []string{"stall: " + d, `job "job" failed: stage "sleeper" stalled`} {
		if !strings.Contains(string(res.Stderr), want) {
			t.Errorf("stderr lacks %q:\n%s", want, res.Stderr)
		}
	}
	assertNoProcesses(t, marker)
}

// stuckJob writes a job feeding in through cat into the stuckreader
// fixture, with on_stall and an optional run timeout.
func stuckJob(t *testing.T, dir, onStall, timeout string) string {
	bin := stuckReader(t)
	extra := ""
	if timeout != "" {
		extra = "timeout = \"" + timeout + "\"\n"
	}
	return writeFile(t, dir, "job.toml", extra+`
stall_timeout = "1s"
on_stall = "`+onStall+`"
[[stage]]
name = "feed"
command = ["cat"]
[[stage]]
name = "stuck"
command = ["`+bin+`"]
`)
}

// TestStallNudgeRescuesMissedWakeup: the fixture strands data in its input
// pipe; the diagnosis calls it a probable missed wake-up; the nudge makes
// its epoll_wait return EINTR, it drains its input and the run succeeds
// with every byte.
func TestStallNudgeRescuesMissedWakeup(t *testing.T) {
	dir := t.TempDir()
	in, sum := randomFile(t, dir, "in.bin", 300<<10, 6)
	out := filepath.Join(dir, "out.bin")
	job := stuckJob(t, dir, "nudge", "")
	rp := filepath.Join(dir, "report.json")
	res := runPipespool(t, runOpts{Timeout: 30 * time.Second}, "exec", job, "-i", in, "-o", out, "--report", rp)
	if res.Code != 0 {
		t.Fatalf("exit %d, want 0 (rescued by the nudge)\nstderr: %s", res.Code, res.Stderr)
	}
	if got := fileSHA256(t, out); got != sum {
		t.Errorf("output differs from input")
	}
	rep := readReport(t, rp)
	st := rep.Stages[1]
	if st.Stalls != 1 || st.Nudges != 1 || !strings.Contains(st.Note, "recovered after nudge") {
		t.Errorf("stuck: stalls %d nudges %d note %q; want 1, 1, recovered after nudge", st.Stalls, st.Nudges, st.Note)
	}
	if len(st.Diagnoses) != 1 || !strings.Contains(st.Diagnoses[0], "probable missed wake-up") || !strings.Contains(st.Diagnoses[0], "epoll_") {
		t.Errorf("diagnoses %q: want one probable missed wake-up in epoll_wait", st.Diagnoses)
	}
	for _, want := range []string{"nudged (SIGSTOP, SIGCONT", "recovered after nudge"} {
		if !strings.Contains(string(res.Stderr), want) {
			t.Errorf("stderr lacks %q:\n%s", want, res.Stderr)
		}
	}
}

// TestStallWarnDoesNotRescue: with on_stall = warn the fixture stays stuck
// (the monitor only looks, it must not wake it by looking) until the run's
// timeout.
func TestStallWarnDoesNotRescue(t *testing.T) {
	dir := t.TempDir()
	in, _ := randomFile(t, dir, "in.bin", 300<<10, 7)
	out := filepath.Join(dir, "out.bin")
	job := stuckJob(t, dir, "warn", "4s")
	rp := filepath.Join(dir, "report.json")
	res := runPipespool(t, runOpts{Timeout: 30 * time.Second}, "exec", job, "-i", in, "-o", out, "--report", rp)
	if res.Code != 1 {
		t.Fatalf("exit %d, want 1 (timeout)\nstderr: %s", res.Code, res.Stderr)
	}
	rep := readReport(t, rp)
	if rep.Result != "timeout" {
		t.Errorf("result %q, want timeout", rep.Result)
	}
	st := rep.Stages[1]
	if st.Stalls != 1 || st.Nudges != 0 {
		t.Errorf("stuck: stalls %d nudges %d, want 1 and 0", st.Stalls, st.Nudges)
	}
	if len(st.Diagnoses) == 0 || !strings.Contains(st.Diagnoses[0], "probable missed wake-up") {
		t.Errorf("diagnoses %q: want a probable missed wake-up", st.Diagnoses)
	}
	if strings.Contains(string(res.Stderr), "moving again") || strings.Contains(string(res.Stderr), "recovered") {
		t.Errorf("the stage moved under warn:\n%s", res.Stderr)
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("output written by a failed run")
	}
}

// TestStallNudgeThenKill: a stage a nudge does not help (sleep) is killed
// one stall_timeout after the nudge.
func TestStallNudgeThenKill(t *testing.T) {
	dir := t.TempDir()
	const marker = "30.0702"
	job := writeFile(t, dir, "job.toml", `
stall_timeout = "1s"
on_stall = "nudge"
[[stage]]
name = "sleeper"
command = ["sleep", "`+marker+`"]
`)
	rp := filepath.Join(dir, "report.json")
	res := runPipespool(t, runOpts{}, "exec", job, "--report", rp)
	if res.Code != 1 {
		t.Fatalf("exit %d, want 1\nstderr: %s", res.Code, res.Stderr)
	}
	if res.Elapsed > 4*time.Second {
		t.Errorf("killed after %s, want about 2 stall timeouts", res.Elapsed)
	}
	rep := readReport(t, rp)
	st := rep.Stages[0]
	if rep.RootCause != "sleeper" || st.Nudges != 1 || st.Stalls != 2 || !strings.Contains(rep.Message, "after a nudge") {
		t.Errorf("root %q message %q nudges %d stalls %d", rep.RootCause, rep.Message, st.Nudges, st.Stalls)
	}
	assertNoProcesses(t, marker)
}

// TestStallBusyStageIsNotStalled: a stage computing for longer than
// stall_timeout without moving a byte is not stalled, and neither is the
// stage blocked writing to it.
func TestStallBusyStageIsNotStalled(t *testing.T) {
	dir := t.TempDir()
	in, sum := randomFile(t, dir, "in.bin", 4<<20, 8)
	out := filepath.Join(dir, "out.bin")
	job := writeFile(t, dir, "job.toml", `
stall_timeout = "1s"
on_stall = "kill"
[[stage]]
name = "feed"
command = ["cat"]
[[stage]]
name = "busy"
shell = 'i=0; while [ $i -lt 2000000 ]; do i=$((i+1)); done; cat'
`)
	rp := filepath.Join(dir, "report.json")
	res := runPipespool(t, runOpts{}, "exec", job, "-i", in, "-o", out, "--report", rp)
	if res.Code != 0 {
		t.Fatalf("exit %d, want 0\nstderr: %s", res.Code, res.Stderr)
	}
	if res.Elapsed < 1500*time.Millisecond {
		t.Logf("the busy loop took only %s: the test proves less than it should", res.Elapsed)
	}
	if got := fileSHA256(t, out); got != sum {
		t.Errorf("output differs from input")
	}
	for _, st := range readReport(t, rp).Stages {
		if st.Stalls != 0 {
			t.Errorf("stage %s: %d stalls, want 0: %q", st.Name, st.Stalls, st.Diagnoses)
		}
	}
	if len(res.Stderr) != 0 {
		t.Errorf("stderr: %s", res.Stderr)
	}
}

// TestStallStoppedStageIsNotAMissedWakeup: a stage stopped by SIGSTOP sits
// in the write it was making when it stopped, with its output pipe
// drained; that is no missed wake-up, and the diagnosis says what it is and
// how to continue it. The run still ends at its timeout, with nothing left.
func TestStallStoppedStageIsNotAMissedWakeup(t *testing.T) {
	dir := t.TempDir()
	marker := fmt.Sprintf("zero-%d", time.Now().UnixNano())
	if err := os.Symlink("/dev/zero", filepath.Join(dir, marker)); err != nil {
		t.Fatal(err)
	}
	job := writeFile(t, dir, "job.toml", `
stall_timeout = "1s"
timeout = "4s"
[output]
path = "none"
[[stage]]
name = "zero"
command = ["cat", "`+marker+`"]
[[stage]]
name = "sink"
command = ["cat"]
`)
	rp := filepath.Join(dir, "report.json")
	cmd := exec.Command(pipespoolBin, "exec", job, "--report", rp)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var pid int
	for end := time.Now().Add(10 * time.Second); pid == 0; time.Sleep(10 * time.Millisecond) {
		if left := processesWithMarker(marker); len(left) > 0 {
			pid, _ = strconv.Atoi(strings.Fields(left[0])[0])
		} else if time.Now().After(end) {
			t.Fatalf("the stage never ran\nstderr: %s", stderr.String())
		}
	}
	syscall.Kill(pid, syscall.SIGSTOP)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("pipespool still running 30 s after the stop\nstderr: %s", stderr.String())
	}
	rep := readReport(t, rp)
	if rep.Result != "timeout" {
		t.Errorf("result %q, want timeout", rep.Result)
	}
	d := strings.Join(rep.Stages[0].Diagnoses, "\n")
	for _, want := range []string{"state T (stopped)", "stopped by a signal (SIGSTOP or SIGTSTP): continue it with kill -CONT " + strconv.Itoa(pid)} {
		if !strings.Contains(d, want) {
			t.Errorf("diagnosis %q lacks %q", d, want)
		}
	}
	if strings.Contains(d, "missed wake-up") {
		t.Errorf("a stopped stage was called a missed wake-up: %q", d)
	}
	assertNoProcesses(t, marker)
}
