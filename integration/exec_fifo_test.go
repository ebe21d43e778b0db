package integration

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// FIFO and device inputs and outputs (docs/exec.md, "The boundaries of a
// run").

func mkfifo(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const catJob = `name = "fifo"
[[stage]]
command = ["cat"]
[[stage]]
name = "last"
command = ["cat"]
`

// TestExecFIFOOutputTakesEveryByte: a FIFO output was opened by Go's
// os.OpenFile, which made it non-blocking, and handed to the last stage
// with the flag: cat wrote 64 KiB, then failed with "write error: Resource
// temporarily unavailable". A pump writes it now, and counts the bytes.
func TestExecFIFOOutputTakesEveryByte(t *testing.T) {
	dir := t.TempDir()
	in, sum := randomFile(t, dir, "in.bin", 5<<20, 9)
	fifo := mkfifo(t, dir, "out.fifo")
	out := filepath.Join(dir, "out.bin")
	reader := exec.Command("sh", "-c", `exec cat "$1" > "$2"`, "sh", fifo, out)
	if err := reader.Start(); err != nil {
		t.Fatal(err)
	}
	job := writeFile(t, dir, "job.toml", catJob)
	report := filepath.Join(dir, "report.json")
	res := runPipespool(t, runOpts{}, "exec", job, "-i", in, "-o", fifo, "--report", report)
	if err := reader.Wait(); err != nil {
		t.Fatalf("reader: %v", err)
	}
	rep := readReport(t, report)
	if res.Code != 0 || fileSHA256(t, out) != sum || rep.Stages[1].BytesOut != 5<<20 {
		t.Fatalf("exit %d, last stage bytes_out %d\nstderr: %s", res.Code, rep.Stages[1].BytesOut, res.Stderr)
	}
}

// TestExecDeviceOutputCountsBytes: -o /dev/null (a device written in
// place) reported bytes_out 0 for the last stage.
func TestExecDeviceOutputCountsBytes(t *testing.T) {
	dir := t.TempDir()
	in, _ := randomFile(t, dir, "in.bin", 3<<20, 4)
	job := writeFile(t, dir, "job.toml", catJob)
	report := filepath.Join(dir, "report.json")
	res := runPipespool(t, runOpts{}, "exec", job, "-i", in, "-o", "/dev/null", "--report", report)
	if rep := readReport(t, report); res.Code != 0 || rep.Stages[1].BytesOut != 3<<20 {
		t.Fatalf("exit %d, last stage bytes_out %d, want 0 and %d\nstderr: %s", res.Code, rep.Stages[1].BytesOut, 3<<20, res.Stderr)
	}
}

// TestExecFIFOWithoutPeerEndsAtTimeout: opening a FIFO output that has no
// reader blocked in open(2) before the run started, deaf to the job's
// timeout (and to SIGTERM, below).
func TestExecFIFOWithoutPeerEndsAtTimeout(t *testing.T) {
	dir := t.TempDir()
	fifo := mkfifo(t, dir, "out.fifo")
	job := writeFile(t, dir, "job.toml", "timeout = \"1s\"\n"+catJob)
	res := runPipespool(t, runOpts{Timeout: 30 * time.Second}, "exec", job, "-i", "/dev/null", "-o", fifo)
	if res.Code != 1 || !strings.Contains(string(res.Stderr), "timed out waiting for a reader of the output FIFO "+fifo) || res.Elapsed > 10*time.Second {
		t.Fatalf("exit %d after %v\nstderr: %s", res.Code, res.Elapsed, res.Stderr)
	}
}

// startWaiting starts pipespool with args and returns once it logged that
// it waits for a FIFO's peer.
func startWaiting(t *testing.T, args ...string) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(pipespoolBin, args...)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var log strings.Builder
	seen := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(r)
		said := false
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if !said && strings.Contains(sc.Text(), "waiting for a") {
				said = true
				seen <- true
			}
		}
		if !said {
			seen <- false
		}
	}()
	select {
	case ok := <-seen:
		if !ok {
			t.Fatalf("pipespool ended without waiting for the FIFO")
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("pipespool did not say it waits for the FIFO's peer")
	}
	return cmd, &log
}

// TestExecFIFOWithoutPeerEndsAtSIGTERM: both directions, a FIFO without
// its peer and SIGTERM: exit 143 at once.
func TestExecFIFOWithoutPeerEndsAtSIGTERM(t *testing.T) {
	dir := t.TempDir()
	fifo := mkfifo(t, dir, "x.fifo")
	job := writeFile(t, dir, "job.toml", catJob)
	for _, args := range [][]string{{"-i", "/dev/null", "-o", fifo}, {"-i", fifo, "-o", "none"}} {
		cmd, _ := startWaiting(t, append([]string{"exec", job}, args...)...)
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%v: still running 10 s after SIGTERM", args)
		}
		if code := cmd.ProcessState.ExitCode(); code != 143 {
			t.Errorf("%v: exit %d after %v, want 143", args, code, time.Since(start))
		}
	}
}

// TestExecFIFOInputWaitsForItsWriter: a FIFO input whose writer comes
// later: pipespool waits for it (as the shell's < does), then reads every
// byte; a writer that comes and goes without writing is an empty input.
func TestExecFIFOInputWaitsForItsWriter(t *testing.T) {
	dir := t.TempDir()
	in, sum := randomFile(t, dir, "in.bin", 2<<20, 6)
	fifo := mkfifo(t, dir, "in.fifo")
	job := writeFile(t, dir, "job.toml", catJob)
	for _, c := range []struct {
		src, sum string
	}{{in, sum}, {"/dev/null", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}} {
		out := filepath.Join(dir, "out.bin")
		cmd, log := startWaiting(t, "exec", job, "-i", fifo, "-o", out)
		if b, err := exec.Command("sh", "-c", `cat "$1" > "$2"`, "sh", c.src, fifo).CombinedOutput(); err != nil {
			t.Fatalf("writer: %v %s", err, b)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%s: %v\n%s", c.src, err, log)
		}
		if got := fileSHA256(t, out); got != c.sum {
			t.Fatalf("%s: output %s, want %s", c.src, got, c.sum)
		}
	}
}
