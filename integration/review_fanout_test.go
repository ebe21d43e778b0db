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

// TestReviewTwoBranchesOneFileThroughDotDot: two branches write one file,
// one named "sub/../x" where sub is a link to a directory elsewhere, the
// other by the path the kernel resolves that to. The job is accepted (the
// check cleans ".." lexically before following the link), both outputs are
// reported committed, and the second rename silently replaces the first
// branch's output: 300000 bytes lost with exit 0.
func TestReviewTwoBranchesOneFileThroughDotDot(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(other, "deep"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(other, "deep"), filepath.Join(dir, "sub")); err != nil {
		t.Fatal(err)
	}
	in, _ := randomFile(t, dir, "in.bin", 300000, 2)
	job := writeFile(t, dir, "job.toml", fmt.Sprintf(`
[input]
path = %q

[[stage]]
name = "src"
command = ["cat"]

[[stage]]
name = "a"
command = ["cat"]
output = "sub/../x"

[[stage]]
name = "b"
from = "src"
command = ["head", "-c", "1000"]
allow_partial_read = true
output = %q
`, in, filepath.Join(other, "x")))
	res := runPipespool(t, runOpts{}, "exec", job)
	if res.Code == 2 && strings.Contains(string(res.Stderr), "writes the same file") {
		return
	}
	fi, err := os.Stat(filepath.Join(other, "x"))
	t.Fatalf("two branches writing %s were accepted: exit %d, the file holds %v bytes (%v); branch a's 300000 bytes are lost\n%s",
		filepath.Join(other, "x"), res.Code, sizeOf(fi), err, res.Stderr)
}

func sizeOf(fi os.FileInfo) int64 {
	if fi == nil {
		return -1
	}
	return fi.Size()
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

// TestReviewTwoBranchesOneFileThroughWriteTo: no two branches may write one
// file, but the files the built-ins keep beside the outputs (sha256's
// write_to) are not checked against the outputs nor against each other.
// Two branches' sha256 stages with one write_to: the first digest is lost
// and the run exits 0; a write_to equal to another branch's output
// replaces that output with a digest. (The second case exists on main for
// a line too: [output] and write_to naming one file.)
func TestReviewTwoBranchesOneFileThroughWriteTo(t *testing.T) {
	for _, tc := range []struct{ name, stages string }{
		{"two write_to", `
[[stage]]
name = "a"
builtin = "sha256"
output = "none"
[stage.with]
write_to = "d"
[[stage]]
name = "b"
from = "src"
builtin = "zstd-compress"
[[stage]]
name = "b2"
builtin = "sha256"
output = "none"
[stage.with]
write_to = "d"
`},
		{"write_to is another branch's output", `
[[stage]]
name = "a"
builtin = "sha256"
output = "none"
[stage.with]
write_to = "d"
[[stage]]
name = "b"
from = "src"
command = ["cat"]
output = "d"
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			randomFile(t, dir, "in.bin", 100000, 3)
			job := writeFile(t, dir, "job.toml", `
[input]
path = "in.bin"
[[stage]]
name = "src"
command = ["cat"]
`+tc.stages)
			res := runPipespool(t, runOpts{}, "exec", job)
			if res.Code == 2 {
				return // refused: fine
			}
			got, _ := os.ReadFile(filepath.Join(dir, "d"))
			t.Fatalf("two branches writing d accepted: exit %d, d holds %d bytes (%.20q...): the other's bytes are lost\n%s", res.Code, len(got), got, res.Stderr)
		})
	}
}

// TestReviewStdoutIsAnotherBranchsFile: pipespool's stdout is redirected to
// the file another branch writes (pipespool exec job > a.out). The check
// knows stdout only as "fd 1", never as the file fd 1 is: the job is
// accepted, branch a renames its output over a.out, and branch b's bytes,
// written to stdout, go to the inode that rename unlinked: exit 0, and
// a.out holds branch a's stream only.
func TestReviewStdoutIsAnotherBranchsFile(t *testing.T) {
	dir := t.TempDir()
	randomFile(t, dir, "in.bin", 100000, 4)
	job := writeFile(t, dir, "job.toml", `
[input]
path = "in.bin"
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
command = ["cat"]
`)
	out, err := os.Create(filepath.Join(dir, "a.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	res := runPipespool(t, runOpts{Stdout: out}, "exec", job)
	if res.Code == 2 {
		return // refused: fine
	}
	if res.Code == 0 {
		fi, _ := os.Stat(filepath.Join(dir, "a.out"))
		t.Fatalf("exit 0 with stdout and branch a both writing a.out (it holds %d bytes: one branch's 100000 are lost)\n%s", sizeOf(fi), res.Stderr)
	}
}
