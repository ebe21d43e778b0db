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
	needTools(t, "setpriv", "perl")
	// A directory the unprivileged user can reach (t.TempDir's parent is
	// private to root).
	dir, err := os.MkdirTemp("", "pipespool-pipes-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	bin := filepath.Join(dir, "pipespool")
	data, err := os.ReadFile(pipespoolBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	writeFile(t, dir, "empty", "")
	b.WriteString("[input]\npath = \"empty\"\n[[stage]]\nshell = \"head -c 1000000 /dev/zero\"\n")
	for i := 2; i <= 50; i++ {
		if i == 49 {
			// F_GETPIPE_SZ (1032) of its stdin, on stderr (kept in the report).
			b.WriteString("[[stage]]\nname = \"probe\"\nshell = \"perl -e 'print STDERR fcntl(STDIN, 1032, 0), qq(\\\\n)'; cat\"\n")
			continue
		}
		b.WriteString("[[stage]]\ncommand = [\"cat\"]\n")
	}
	job := writeFile(t, dir, "long.toml", b.String())
	os.Chmod(job, 0o644)
	report := filepath.Join(dir, "report.json")
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
		bin, "exec", job, "-o", "none", "--report", report, "--log-level", "debug")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	rep := readReport(t, report)
	got, _ := strconv.Atoi(strings.TrimSpace(rep.Stages[48].Stderr))
	if got < 64<<10 {
		t.Fatalf("the 49th stage's stdin pipe holds %d bytes, want at least 64 KiB\n%s", got, out)
	}
	if !strings.Contains(string(out), "pipes: 98 of 256.0 KiB each (pipe_size 1.0 MiB lowered: half of pipe-user-pages") {
		t.Errorf("no debug line saying how the pipes were sized:\n%s", out)
	}
	t.Log(fmt.Sprintf("49th stage's pipe: %d bytes", got))
}
