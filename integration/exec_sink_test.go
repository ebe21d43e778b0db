package integration

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The run's output is a party of the run: a run is a success only if every
// byte reached it (docs/exec.md, "The output").

// sinkJob writes a job that copies a file of size bytes to stdout through
// cat; last is the last stage.
func sinkJob(t *testing.T, dir string, size int64, last string) (job, report, metrics string) {
	t.Helper()
	in, _ := randomFile(t, dir, "in.bin", size, 3)
	job = writeFile(t, dir, "job.toml", `name = "sink"
[input]
path = "`+in+`"
[output]
path = "-"
[[stage]]
command = ["cat"]
[[stage]]
name = "last"
`+last+"\n")
	return job, filepath.Join(dir, "report.json"), filepath.Join(dir, "metrics.prom")
}

// TestExecStdoutDevNullTakesEveryByte: the usual cron line `pipespool exec
// job.toml > /dev/null`. stdout is a device epoll refuses: the pump gave
// up about 1 MiB in, the last stage died of SIGPIPE as a consequence, and
// the run succeeded, so a last stage that fails at its end (as a decrypter
// checking the message's integrity does) was never heard of.
func TestExecStdoutDevNullTakesEveryByte(t *testing.T) {
	dir := t.TempDir()
	const size = 20 << 20
	job, report, _ := sinkJob(t, dir, size, `command = ["cat"]`)
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0) // as the shell's > /dev/null
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	res := runPipespool(t, runOpts{Stdout: null}, "exec", job, "--report", report)
	rep := readReport(t, report)
	if res.Code != 0 || rep.Result != "success" || rep.Stages[1].BytesOut != size {
		t.Fatalf("exit %d, result %s, last stage wrote %d of %d bytes\nstderr: %s", res.Code, rep.Result, rep.Stages[1].BytesOut, size, res.Stderr)
	}

	// A last stage that fails after its last byte is heard.
	job, report, _ = sinkJob(t, t.TempDir(), size, `shell = "cat; echo integrity check failed >&2; exit 2"`)
	res = runPipespool(t, runOpts{Stdout: null}, "exec", job, "--report", report)
	rep = readReport(t, report)
	if res.Code != 1 || rep.RootCause != "last" {
		t.Fatalf("exit %d, root cause %q, want 1 and the last stage\nstderr: %s", res.Code, rep.RootCause, res.Stderr)
	}
}

// TestExecStdoutReaderGoneIsTheRootCause: `pipespool exec job -o - | ssh
// host 'cat > f'` with the connection dropped: the reader of stdout exits
// after 64 KiB. That used to be a success (the last stage's SIGPIPE a
// consequence); now the output is the root cause, exit 1, report failed
// and pipespool_run_success 0.
func TestExecStdoutReaderGoneIsTheRootCause(t *testing.T) {
	dir := t.TempDir()
	job, report, metrics := sinkJob(t, dir, 20<<20, `command = ["cat"]`)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int64, 1)
	go func() {
		n, _ := io.CopyN(io.Discard, r, 64<<10)
		r.Close()
		got <- n
	}()
	res := runPipespool(t, runOpts{Stdout: w}, "exec", job, "--report", report, "--metrics-file", metrics)
	w.Close()
	<-got
	rep := readReport(t, report)
	if res.Code != 1 || rep.Result != "failed" || rep.RootCause != "output" ||
		!strings.Contains(rep.Message, "output (stdout): its reader went away after") {
		t.Fatalf("exit %d, result %s, root cause %q, message %q\nstderr: %s", res.Code, rep.Result, rep.RootCause, rep.Message, res.Stderr)
	}
	for _, s := range rep.Stages {
		if s.Status != "consequence" {
			t.Errorf("stage %s: status %s, want consequence", s.Name, s.Status)
		}
	}
	if m := parseMetricsFile(t, metrics); m[`pipespool_run_success{job=sink}`] != 0 {
		t.Errorf("pipespool_run_success = %v, want 0", m[`pipespool_run_success{job=sink}`])
	}
	validateReport(t, report)
	if !strings.Contains(string(res.Stderr), "* 3 output") {
		t.Errorf("the summary does not mark the output as the root cause:\n%s", res.Stderr)
	}
}

// TestExecStdoutReaderGoneWithTheTailInThePipe: a stream smaller than the
// stdout pipe is all written into it before the reader has read it; the
// reader reads a part and goes (an ssh that lost its connection). Those
// bytes never reached it: the run waits until its stdout pipe is read
// empty, and fails, naming the output, when its reader goes first. It once
// exited 0: every write had succeeded.
func TestExecStdoutReaderGoneWithTheTailInThePipe(t *testing.T) {
	dir := t.TempDir()
	job, report, _ := sinkJob(t, dir, 40000, `command = ["cat"]`)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan int64, 1)
	go func() {
		// Let the whole stream land in the pipe first (pipespool waits
		// for its reader either way: this only makes the old bug show).
		buf := make([]byte, 1)
		n, _ := io.ReadFull(r, buf)
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if q, err := unix.IoctlGetInt(int(r.Fd()), unix.TIOCINQ); err == nil && q >= 40000-1 {
				break
			}
		}
		m, _ := io.CopyN(io.Discard, r, 1000)
		r.Close()
		read <- int64(n) + m
	}()
	res := runPipespoolWith(t, runOpts{Stdout: w}, func(int) { w.Close() }, "exec", job, "--report", report)
	n := <-read
	rep := readReport(t, report)
	if res.Code != 1 || rep.RootCause != "output" || !strings.Contains(rep.Message, fmt.Sprintf("its reader went away after %d bytes", n)) {
		t.Fatalf("exit %d, root cause %q, message %q (the reader took %d bytes)\nstderr: %s", res.Code, rep.RootCause, rep.Message, n, res.Stderr)
	}
}

// TestExecFullOutputIsTheRootCause: stdout /dev/full, and -o /dev/full (a
// device written in place): every write fails with ENOSPC. Both used to
// succeed (stdout) or blame the last stage (the device handed to it).
func TestExecFullOutputIsTheRootCause(t *testing.T) {
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	for _, c := range []struct {
		name string
		args []string
		out  *os.File
		want string
	}{
		{"stdout", nil, full, "output (stdout): no space left on device after 0 bytes"},
		{"-o", []string{"-o", "/dev/full"}, nil, "output /dev/full: no space left on device after 0 bytes"},
	} {
		dir := t.TempDir()
		job, report, _ := sinkJob(t, dir, 5<<20, `command = ["cat"]`)
		res := runPipespool(t, runOpts{Stdout: c.out}, append([]string{"exec", job, "--report", report}, c.args...)...)
		rep := readReport(t, report)
		if res.Code != 1 || rep.RootCause != "output" || rep.Message != c.want {
			t.Errorf("%s: exit %d, root cause %q, message %q, want 1, output, %q\nstderr: %s", c.name, res.Code, rep.RootCause, rep.Message, c.want, res.Stderr)
		}
	}
}

// TestExecClosedStdoutIsRefused: `pipespool exec job >&-`. fd 1 is not
// open, so the Go runtime puts /dev/null there (read-write) before main:
// the stream went nowhere and the run succeeded. Output "-" is refused now,
// exit 2, before anything runs; -o FILE still works.
func TestExecClosedStdoutIsRefused(t *testing.T) {
	dir := t.TempDir()
	job, report, _ := sinkJob(t, dir, 1<<20, `command = ["cat"]`)
	cmd := exec.Command("sh", "-c", `exec "$@" >&-`, "sh", pipespoolBin, "exec", job, "--report", report)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	if code != 2 || !strings.Contains(string(out), "stdout is closed") {
		t.Fatalf("exit %d, want 2 and 'stdout is closed'\n%s", code, out)
	}
	if _, err := os.Stat(report); err == nil {
		t.Errorf("a report was written for a run that did not start")
	}
	outFile := filepath.Join(dir, "out.bin")
	cmd = exec.Command("sh", "-c", `exec "$@" >&-`, "sh", pipespoolBin, "exec", job, "-o", outFile)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("-o FILE with stdout closed: %v\n%s", err, b)
	}
	if fi, err := os.Stat(outFile); err != nil || fi.Size() != 1<<20 {
		t.Fatalf("output %v %v", fi, err)
	}
}

// TestExecStdoutSharedWithStderrCountsTheStage: `> log 2>&1`: stdout is a
// regular file whose offset pipespool's stderr (its log lines, a stage's
// inherited stderr) moves too. The last stage's bytes_out was the offset,
// inflated by them.
func TestExecStdoutSharedWithStderrCountsTheStage(t *testing.T) {
	dir := t.TempDir()
	const size = 3 << 20
	job, report, _ := sinkJob(t, dir, size, "shell = \"cat; echo to stderr >&2\"\nstderr = \"inherit\"")
	log := filepath.Join(dir, "log")
	cmd := exec.Command("sh", "-c", `exec "$@" > "$LOG" 2>&1`, "sh", pipespoolBin, "exec", job, "--report", report, "--log-level", "debug")
	cmd.Env = append(os.Environ(), "LOG="+log)
	start := time.Now()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	rep := readReport(t, report)
	fi, _ := os.Stat(log)
	if rep.Stages[1].BytesOut != size || fi.Size() <= size {
		t.Fatalf("last stage wrote %d bytes (want %d); the log holds %d bytes (%v)", rep.Stages[1].BytesOut, size, fi.Size(), time.Since(start))
	}
}
