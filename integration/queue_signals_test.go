package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestQueueProcessStopSignals: SIGHUP and SIGQUIT to queue-process (command
// and pipeline mode) and stdin-process stop the running command's group,
// keep the job queued, and exit 129 and 131, as SIGTERM exits 143. They
// used to kill pipespool at once (129; 2 and a Go dump for SIGQUIT) and
// leave the command running.
func TestQueueProcessStopSignals(t *testing.T) {
	for _, mode := range []string{"command", "pipeline", "stdin"} {
		for _, tc := range []struct {
			sig  syscall.Signal
			code int
		}{{syscall.SIGHUP, 129}, {syscall.SIGQUIT, 131}} {
			t.Run(mode+"/"+signalName(tc.sig), func(t *testing.T) {
				dir := t.TempDir()
				q := oneJobQueue(t, dir)
				marker := fmt.Sprintf("pipespool-queuesig-%d", time.Now().UnixNano())
				script := "sleep 300 & wait # " + marker
				var args []string
				var stdin []byte
				switch mode {
				case "command":
					args = []string{"queue-process", "-q", q, "sh", "--", "-c", script}
				case "pipeline":
					job := writeFile(t, dir, "job.toml", fmt.Sprintf("[[stage]]\nshell = %q\n", script))
					args = []string{"queue-process", "-q", q, "--job", job}
				case "stdin":
					jobs := listJobs(t, q)
					var err error
					if stdin, err = os.ReadFile(filepath.Join(q, "jobs", jobs[0])); err != nil {
						t.Fatal(err)
					}
					args = []string{"stdin-process", "sh", "--", "-c", script}
				}
				// The marker is in pipespool's own command line too,
				// but in command and stdin mode.
				want := 2
				if mode == "pipeline" {
					want = 1
				}
				sr := startWithStdin(t, stdin, marker, want, args...)
				sr.cmd.Process.Signal(tc.sig)
				if code := sr.wait(t); code != tc.code {
					t.Errorf("exit %d, want %d\nstderr: %s", code, tc.code, sr.stderr.String())
				}
				assertNoProcesses(t, marker)
				if mode != "stdin" {
					jobKept(t, q)
				}
			})
		}
	}
}

// startWithStdin starts pipespool with stdin and waits for want processes
// with marker.
func startWithStdin(t *testing.T, stdin []byte, marker string, want int, args ...string) *startedRun {
	t.Helper()
	sr := &startedRun{stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	sr.cmd = exec.Command(pipespoolBin, args...)
	sr.cmd.Stdin = bytes.NewReader(stdin)
	sr.cmd.Stderr = sr.stderr
	// A process left behind holding stderr must not hold the test.
	sr.cmd.WaitDelay = 5 * time.Second
	if err := sr.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { sr.done <- sr.cmd.Wait() }()
	sr.cleanupOnFailure(t)
	for end := time.Now().Add(20 * time.Second); len(processesWithMarker(marker)) < want; time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-sr.done:
			sr.waited = true
			t.Fatalf("pipespool ended (%v) before the command ran\nstderr: %s", err, sr.stderr.String())
		default:
		}
		if time.Now().After(end) {
			sr.cmd.Process.Kill()
			<-sr.done
			sr.waited = true
			t.Fatalf("the command never ran\nstderr: %s", sr.stderr.String())
		}
	}
	return sr
}
