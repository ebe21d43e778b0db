package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// oneJobQueue makes dir/q holding one command packet and returns it.
func oneJobQueue(t *testing.T, dir string) string {
	t.Helper()
	writeQueue(t, pipespoolBin, dir, prepare(t, pipespoolBin, dir, []packetSpec{{kind: "cmd", payload: []byte("x\n")}}))
	return filepath.Join(dir, "q")
}

// groupGone waits up to 2 s for the process group whose leader wrote its
// pid to pidfile to be gone, and fails the test if it is not.
func groupGone(t *testing.T, pidfile string) {
	t.Helper()
	b, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatalf("the command never ran: %v", err)
	}
	pgid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(2 * time.Second); ; {
		if syscall.Kill(-pgid, 0) == syscall.ESRCH {
			return
		}
		if time.Now().After(end) {
			syscall.Kill(-pgid, syscall.SIGKILL)
			t.Fatalf("process group %d of the command is still running after queue-process exited", pgid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// jobKept checks that a job that did not finish is still queued, and that
// nextseq did not move past it.
func jobKept(t *testing.T, q string) {
	t.Helper()
	if jobs := listJobs(t, q); len(jobs) != 1 {
		t.Errorf("jobs/ holds %v, want the one job kept", jobs)
	}
	if b, _ := os.ReadFile(filepath.Join(q, "nextseq")); strings.TrimSpace(string(b)) != "1" {
		t.Errorf("nextseq = %q, want 1: the job did not finish", b)
	}
}

// TestQueueProcessCommandTimeout: --timeout kills the command's whole group
// (SIGKILL, as fspl does), the job fails with the timeout named, and it
// stays queued.
func TestQueueProcessCommandTimeout(t *testing.T) {
	dir := t.TempDir()
	q := oneJobQueue(t, dir)
	pidfile := filepath.Join(dir, "pid")
	res := runPipespool(t, runOpts{Timeout: time.Minute}, "queue-process", "-q", q, "--timeout", "1",
		"sh", "--", "-c", "echo $$ > "+pidfile+"; sleep 30 & wait")
	if res.Code == 0 {
		t.Fatalf("exit 0 after a timed-out job\nstderr: %s", res.Stderr)
	}
	if !bytes.Contains(res.Stderr, []byte("killed after the timeout of 1s")) {
		t.Errorf("stderr does not name the timeout:\n%s", res.Stderr)
	}
	if res.Elapsed > 10*time.Second {
		t.Errorf("queue-process took %v with a 1 s timeout", res.Elapsed)
	}
	groupGone(t, pidfile)
	jobKept(t, q)
}

// TestQueueProcessCommandInterrupted: SIGTERM to queue-process stops the
// running command's group, SIGTERM first and SIGKILL after the grace period
// for a command that ignores it; the job stays queued, and queue-process
// exits non-zero.
func TestQueueProcessCommandInterrupted(t *testing.T) {
	for _, tt := range []struct {
		name    string
		script  string
		minTime time.Duration // the grace period before SIGKILL, when TERM is ignored
	}{
		{"command ends on SIGTERM", "sleep 30 & wait", 0},
		{"command ignores SIGTERM", "trap '' TERM; sleep 30", 5 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			q := oneJobQueue(t, dir)
			pidfile := filepath.Join(dir, "pid")
			cmd := exec.Command(pipespoolBin, "queue-process", "-q", q, "sh", "--", "-c", "echo $$ > "+pidfile+"; "+tt.script)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			for end := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if b, _ := os.ReadFile(pidfile); len(b) > 0 && b[len(b)-1] == '\n' {
					break
				}
				select {
				case err := <-done:
					t.Fatalf("queue-process ended (%v) before the command started\nstderr: %s", err, stderr.String())
				default:
				}
				if time.Now().After(end) {
					cmd.Process.Kill()
					<-done
					t.Fatalf("the command did not start\nstderr: %s", stderr.String())
				}
			}
			time.Sleep(100 * time.Millisecond) // let sh reach sleep
			sent := time.Now()
			cmd.Process.Signal(syscall.SIGTERM)
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatalf("queue-process still running 30 s after SIGTERM\nstderr: %s", stderr.String())
			}
			took := time.Since(sent)
			if err == nil {
				t.Errorf("exit 0 after SIGTERM\nstderr: %s", stderr.String())
			}
			if took < tt.minTime || took > tt.minTime+5*time.Second {
				t.Errorf("queue-process exited %v after SIGTERM, want %v to %v", took, tt.minTime, tt.minTime+5*time.Second)
			}
			t.Logf("exited %v after SIGTERM: %v\nstderr: %s", took, err, stderr.String())
			groupGone(t, pidfile)
			jobKept(t, q)
		})
	}
}
