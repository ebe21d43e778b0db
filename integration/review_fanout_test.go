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

// TestReviewOptionalBranchToStdoutCutIsNotASuccess: an optional branch
// whose output is stdout (an output that cannot be discarded: its bytes are
// gone to the reader as they are written) fails half way. The run exits 0
// and says the branch's output "was discarded", while the reader of stdout
// got a cut stream. A run is a success only if every byte reached its
// sink: either the job must be refused (optional on a branch whose output
// is not a regular file written atomically) or the run must fail.
func TestReviewOptionalBranchToStdoutCutIsNotASuccess(t *testing.T) {
	dir := t.TempDir()
	in, _ := randomFile(t, dir, "in.bin", 5<<20, 1)
	job := writeFile(t, dir, "job.toml", fmt.Sprintf(`
[input]
path = %q

[[stage]]
name = "src"
command = ["cat"]

[[stage]]
name = "a"
command = ["cat"]
output = "a.out"

[[stage]]
name = "b"
from = "src"
command = ["sh", "-c", "head -c 100000; exit 1"]
output = "-"
optional = true
`, in))
	res := runPipespool(t, runOpts{}, "exec", job)
	if res.Code == 2 {
		return // refused as a job error: fine
	}
	if res.Code == 0 && len(res.Stdout) != 0 && len(res.Stdout) != 5<<20 {
		t.Fatalf("exit 0 with %d of %d bytes on stdout (a cut stream); stderr:\n%s", len(res.Stdout), 5<<20, res.Stderr)
	}
}

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
