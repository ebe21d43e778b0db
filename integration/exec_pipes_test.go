package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestExecLongPipelineUnprivilegedKeepsLargePipes: as a user without
// CAP_SYS_RESOURCE, the kernel limits all of the user's pipe buffers to
// pipe-user-pages-soft pages (64 MiB by default). 50 stages of 1 MiB pipes
// went past it, and the pipes made last silently got 8 KiB (50 stages ran
// 8 times slower than bash). The run now sizes its pipes within half of the
// limit: the 49th stage reads from a pipe of at least 64 KiB.
func TestExecLongPipelineUnprivilegedKeepsLargePipes(t *testing.T) {
	dir, bin := unprivilegedCopy(t)
	var b strings.Builder
	writeFile(t, dir, "empty", "")
	b.WriteString("[input]\npath = \"empty\"\n[[stage]]\nshell = \"head -c 1000000 /dev/zero\"\n")
	for i := 2; i <= 50; i++ {
		if i == 49 {
			b.WriteString("[[stage]]\nname = \"probe\"\n" + pipeProbe)
			continue
		}
		b.WriteString("[[stage]]\ncommand = [\"cat\"]\n")
	}
	rep, out := runUnprivileged(t, dir, bin, b.String(), "-o", "none")
	got, _ := strconv.Atoi(strings.TrimSpace(rep.Stages[48].Stderr))
	if got < 64<<10 {
		t.Fatalf("the 49th stage's stdin pipe holds %d bytes, want at least 64 KiB\n%s", got, out)
	}
	if !strings.Contains(string(out), "pipes: 98 of 256.0 KiB each (pipe_size 1.0 MiB lowered: half of pipe-user-pages") {
		t.Errorf("no debug line saying how the pipes were sized:\n%s", out)
	}
	t.Log(fmt.Sprintf("49th stage's pipe: %d bytes", got))
}

// unprivilegedCopy copies pipespool into a directory the unprivileged user
// (65534) can reach (t.TempDir's parent is private to root), which it may
// write: it returns the directory and the copy.
func unprivilegedCopy(t *testing.T) (dir, bin string) {
	t.Helper()
	needTools(t, "setpriv", "perl")
	dir, err := os.MkdirTemp("", "pipespool-pipes-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	bin = filepath.Join(dir, "pipespool")
	data, err := os.ReadFile(pipespoolBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, bin
}

// unprivileged runs argv as user 65534 with no capabilities.
func unprivileged(argv ...string) *exec.Cmd {
	return exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"}, argv...)...)
}

// TestExecPipeSizeAbovePipeMaxGetsPipeMax: a pipe_size above
// /proc/sys/fs/pipe-max-size is refused by the kernel (EPERM) to a process
// without CAP_SYS_RESOURCE, root too when it lacks it; every pipe of the
// run then kept its 64 KiB, 16 times less than the default, while the
// debug log said "pipe_size as asked". It now gets pipe-max-size, and the
// log says why.
func TestExecPipeSizeAbovePipeMaxGetsPipeMax(t *testing.T) {
	dir, bin := unprivilegedCopy(t)
	raw, err := os.ReadFile("/proc/sys/fs/pipe-max-size")
	if err != nil {
		t.Skipf("no pipe-max-size: %v", err)
	}
	most, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	if most <= 0 || 2*most > 1<<30 {
		t.Skipf("pipe-max-size %q: a pipe_size above it is not a valid one", raw)
	}
	writeFile(t, dir, "empty", "")
	rep, out := runUnprivileged(t, dir, bin, fmt.Sprintf(`pipe_size = %d
[input]
path = "empty"
[[stage]]
shell = "head -c 1000000 /dev/zero"
[[stage]]
name = "probe"
%s[[stage]]
command = ["cat"]
`, 2*most, pipeProbe), "-o", "none")
	if got, _ := strconv.Atoi(strings.TrimSpace(rep.Stages[1].Stderr)); got != most {
		t.Fatalf("the probe's stdin pipe holds %d bytes, want pipe-max-size %d\n%s", got, most, out)
	}
	if !strings.Contains(string(out), "lowered to pipe-max-size") {
		t.Errorf("no debug line saying the pipes were lowered to pipe-max-size:\n%s", out)
	}
}

// TestExecLongTreeUnprivilegedKeepsLargePipes: the lines of a tree shared
// the user's budget of pipe buffers without knowing it: each sized its
// pipes for itself, the fan-out's pipes took 1 MiB each on top, and past
// pipe-user-pages-soft the pipes made last got 8 KiB. The tree now sizes
// every pipe for all of them.
func TestExecLongTreeUnprivilegedKeepsLargePipes(t *testing.T) {
	dir, bin := unprivilegedCopy(t)
	writeFile(t, dir, "empty", "")
	var b strings.Builder
	b.WriteString("[input]\npath = \"empty\"\n[[stage]]\nname = \"src\"\nshell = \"head -c 1000000 /dev/zero\"\n")
	branches := []string{"a", "b", "c"}
	for _, br := range branches {
		for i := 1; i <= 12; i++ {
			fmt.Fprintf(&b, "[[stage]]\nname = \"%s%d\"\n", br, i)
			if i == 1 {
				b.WriteString("from = \"src\"\n")
			}
			if i == 12 {
				b.WriteString("output = \"none\"\n" + pipeProbe)
				continue
			}
			b.WriteString("command = [\"cat\"]\n")
		}
	}
	rep, out := runUnprivileged(t, dir, bin, b.String())
	sizes := map[int][]string{}
	for _, st := range rep.Stages {
		if strings.HasSuffix(st.Name, "12") {
			got, _ := strconv.Atoi(strings.TrimSpace(st.Stderr))
			sizes[got] = append(sizes[got], st.Name)
		}
	}
	// Every pipe got the size the run asked for: none was refused (it
	// then keeps 64 KiB, or 8 KiB when made past the limit).
	if len(sizes) != 1 {
		t.Fatalf("the last stages' stdin pipes differ in size (bytes: stages): %v\n%s", sizes, out)
	}
	for size := range sizes {
		if size <= 64<<10 {
			t.Fatalf("the last stages' stdin pipes hold %d bytes, want more than a pipe's default 64 KiB\n%s", size, out)
		}
	}
}

// pipeProbe is a stage that writes the size of its stdin pipe
// (F_GETPIPE_SZ, 1032) on stderr, which the report keeps, and passes its
// input on.
const pipeProbe = "shell = \"perl -e 'print STDERR fcntl(STDIN, 1032, 0), qq(\\\\n)'; cat\"\n"

// runUnprivileged runs the job body, written in dir, with bin (see
// unprivilegedCopy) as user 65534 and the debug log: it returns the report
// and what pipespool printed, and fails the test if the run failed.
func runUnprivileged(t *testing.T, dir, bin, body string, args ...string) (runRep, []byte) {
	t.Helper()
	job := writeFile(t, dir, "job.toml", body)
	os.Chmod(job, 0o644)
	report := filepath.Join(dir, "report.json")
	argv := append([]string{bin, "exec", job, "--report", report, "--log-level", "debug"}, args...)
	out, err := unprivileged(argv...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return readReport(t, report), out
}
