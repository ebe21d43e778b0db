package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// stuckStdout is pipespool's stdout for these tests: a unix socket (as a
// supervisor or a Python subprocess hands out) whose other end is never
// read once it holds 16 KiB or so. pipespool writes it without changing its
// flags; a blocking write there used to hold pipespool past its timeout, a
// SIGTERM and a stage's failure.
func stuckStdout(t *testing.T) *os.File {
	w, _ := stuckStdoutAndReader(t)
	return w
}

// stuckStdoutAndReader is stuckStdout with the socket's other end, which
// the test never reads.
func stuckStdoutAndReader(t *testing.T) (w, r *os.File) {
	t.Helper()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(sp[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 16<<10); err != nil {
		t.Fatal(err)
	}
	w, r = os.NewFile(uintptr(sp[0]), "stdout"), os.NewFile(uintptr(sp[1]), "reader")
	t.Cleanup(func() { w.Close(); r.Close() })
	return w, r
}

const stuckJobHead = `
[input]
path = "/dev/zero"

[output]
path = "-"
`

func TestExecStuckOutputEndsAtTimeout(t *testing.T) {
	dir := t.TempDir()
	job := writeFile(t, dir, "job.toml", "name = \"stuck\"\ntimeout = \"2s\"\n"+stuckJobHead+`
[[stage]]
command = ["cat"]
`)
	res := runPipespool(t, runOpts{Dir: dir, Stdout: stuckStdout(t), Timeout: time.Minute}, "exec", job)
	if res.Code != 1 || !strings.Contains(string(res.Stderr), "timed out after 2s") {
		t.Fatalf("exit %d after %v, want 1 and the timeout named\nstderr:\n%s", res.Code, res.Elapsed, res.Stderr)
	}
	// 2 s, then the stage's grace to end (cat ends at SIGTERM at once) and
	// a second for its output: nothing waits for the socket.
	if res.Elapsed > 20*time.Second {
		t.Errorf("took %v after a 2 s timeout", res.Elapsed)
	}
	t.Logf("exit %d after %v", res.Code, res.Elapsed)
}

func TestExecStuckOutputEndsAtSIGTERM(t *testing.T) {
	dir := t.TempDir()
	job := writeFile(t, dir, "job.toml", "name = \"stuck\"\n"+stuckJobHead+`
[[stage]]
command = ["cat"]
`)
	cmd := exec.Command(pipespoolBin, "exec", job)
	cmd.Dir = dir
	stdout, reader := stuckStdoutAndReader(t)
	cmd.Stdout = stdout
	errf, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	cmd.Stderr = errf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// SIGTERM once bytes have reached the socket: pipespool is copying (its
	// signal handling is set up), and the socket fills at once after that.
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := unix.IoctlGetInt(int(reader.Fd()), unix.SIOCINQ)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("no byte reached pipespool's stdout in 30 s")
		}
		time.Sleep(10 * time.Millisecond) // a poll tick, bounded by the deadline
	}
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Signal(syscall.SIGQUIT) // a goroutine dump into stderr
		<-done
		b, _ := os.ReadFile(errf.Name())
		t.Fatalf("pipespool still running 30 s after SIGTERM, its stdout a full socket\nstderr:\n%s", b)
	}
	if code := cmd.ProcessState.ExitCode(); code != 143 {
		b, _ := os.ReadFile(errf.Name())
		t.Fatalf("exit %d after SIGTERM, want 143\nstderr:\n%s", code, b)
	}
	t.Logf("exit 143 %v after SIGTERM", time.Since(start))
}

// The last stage fails on its own with its output stuck: pipespool reports
// it after a second, rather than waiting for the socket to take the rest.
func TestExecStuckOutputLastStageFails(t *testing.T) {
	dir := t.TempDir()
	job := writeFile(t, dir, "job.toml", "name = \"stuck\"\n"+stuckJobHead+`
[[stage]]
name = "emit"
command = ["sh", "-c", "head -c 1000000 /dev/zero; exit 3"]
`)
	res := runPipespool(t, runOpts{Dir: dir, Stdout: stuckStdout(t), Timeout: time.Minute}, "exec", job)
	if res.Code != 1 || !strings.Contains(string(res.Stderr), `stage "emit" failed: exit 3`) {
		t.Fatalf("exit %d after %v, want 1 and emit named as failed with exit 3\nstderr:\n%s", res.Code, res.Elapsed, res.Stderr)
	}
	t.Logf("exit %d after %v", res.Code, res.Elapsed)
}
