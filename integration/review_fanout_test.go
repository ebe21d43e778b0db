package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Review of the fan-out (branch fanout): each test here shows a bug found by
// an adversarial review. They fail on the fanout branch as reviewed.

// TestReviewFanOutEverySignalLeavesNothing: SIGINT, SIGHUP and SIGTERM to
// pipespool in the middle of a tree whose branches are of every kind (a
// stage that ignores SIGTERM and leaves a child of its own running, a
// buffered branch, an optional branch): every process is gone, no output
// and no temporary file is left, the exit status is the signal's, and the
// message does not blame a branch for a signal sent to pipespool.
func TestReviewFanOutEverySignalLeavesNothing(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGHUP, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			marker := fmt.Sprintf("review-signal-%d-%d", os.Getpid(), sig)
			job := writeFile(t, dir, "job.toml", fmt.Sprintf(`
[input]
path = "none"
[[stage]]
name = "ticker"
shell = "while :; do head -c 4096 /dev/zero; sleep 0.02; done # %[1]s"
[[stage]]
name = "a"
shell = "trap '' TERM; sleep 1000 & cat # %[1]s"
output = "a.out"
[[stage]]
name = "b"
from = "ticker"
shell = "cat # %[1]s"
buffer = "8MiB"
output = "b.out"
[[stage]]
name = "c"
from = "ticker"
shell = "cat # %[1]s"
optional = true
output = "c.out"
`, marker))
			sr := startPipespool(t, nil, "", marker, 3, filepath.Join(dir, ".c.out.pipespool-*.tmp"), "exec", job)
			sr.cmd.Process.Signal(sig)
			if code := sr.wait(t); code != 128+int(sig) {
				t.Fatalf("exit %d, want %d\n%s", code, 128+int(sig), sr.stderr)
			}
			assertNoProcesses(t, marker)
			assertOnlyFiles(t, dir, "job.toml")
			if first, _, _ := strings.Cut(sr.stderr.String(), "\n"); strings.Contains(first, "branch ") {
				t.Errorf("a signal to pipespool is blamed on a branch: %s", first)
			}
		})
	}
}
