package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExecProducerJobInputNone: a producer job (tar c, zfs send as the
// first stage) reads nothing: `[input] path = "none"` gives its first
// stage /dev/null. It passed check and failed exec ("none: cannot open
// input"); -i none likewise.
func TestExecProducerJobInputNone(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	writeFile(t, src, "a.txt", "alpha\n")
	writeFile(t, filepath.Join(src, "sub"), "b.txt", "beta\n")
	job := writeFile(t, dir, "backup.toml", `
[input]
path = "none"
[output]
path = "out.tar"
[[stage]]
shell = "tar -C tree -cf - . && cat"
dir = "."
`)
	if res := runPipespool(t, runOpts{}, "check", job); res.Code != 0 || !strings.Contains(string(res.Stdout), "input:  none") {
		t.Fatalf("check: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	report := filepath.Join(dir, "report.json")
	res := runPipespool(t, runOpts{Stdin: strings.NewReader("must not be read")}, "exec", job, "--report", report)
	if res.Code != 0 {
		t.Fatalf("exec: exit %d\n%s", res.Code, res.Stderr)
	}
	list := must(t, dir, nil, nil, "tar", "-tf", filepath.Join(dir, "out.tar"))
	if !strings.Contains(list, "./sub/b.txt") || strings.Contains(list, "must not") {
		t.Fatalf("archive holds:\n%s", list)
	}
	if rep := readReport(t, report); rep.Stages[0].BytesIn != 0 {
		t.Errorf("the producer read %d bytes, want 0", rep.Stages[0].BytesIn)
	}
	// -i none overrides a job's input the same way.
	job2 := writeFile(t, dir, "j2.toml", "[[stage]]\nshell = \"printf x; cat\"\n")
	if res := runPipespool(t, runOpts{Stdin: strings.NewReader("stdin")}, "exec", job2, "-i", "none", "-o", "-"); res.Code != 0 || string(res.Stdout) != "x" {
		t.Fatalf("-i none: exit %d, stdout %q\n%s", res.Code, res.Stdout, res.Stderr)
	}
}

// TestCheckAndExecShareValidation: check accepted a stage whose dir does
// not exist, which exec then failed on (after 2 s, saying "start
// /usr/bin/cat: no such file or directory"). Both now refuse it the same
// way, exit 2, naming the dir, before anything runs or is created.
func TestCheckAndExecShareValidation(t *testing.T) {
	dir := t.TempDir()
	job := writeFile(t, dir, "job.toml", `
[output]
path = "out.bin"
[[stage]]
command = ["cat"]
dir = "/nonexistent/work"
`)
	want := `stage[1].dir: stage "cat": dir /nonexistent/work: no such directory`
	for _, args := range [][]string{{"check", job}, {"exec", job, "--dry-run"}, {"exec", job, "-i", "/dev/null"}} {
		res := runPipespool(t, runOpts{}, args...)
		if res.Code != 2 || !strings.Contains(string(res.Stderr), want) {
			t.Errorf("%v: exit %d, want 2 and %q\nstderr: %s", args, res.Code, want, res.Stderr)
		}
	}
	noOutputLeft(t, dir, "job.toml")
}

// TestExecStageThatCannotStartFailsAtOnce: a stage that passes validation
// but cannot be started (its #! interpreter is missing) waited 2 s for the
// stages upstream of it (as an own failure that bad data could explain),
// was reported as "failed: start ..." with exit_code -1. A stage that did
// not start read nothing: the run fails at once, the message says it did
// not start, and the report has no exit code for it (docs/report.md).
func TestExecStageThatCannotStartFailsAtOnce(t *testing.T) {
	dir := t.TempDir()
	bad := writeFile(t, dir, "bad.sh", "#!/nonexistent/interpreter\ncat\n")
	os.Chmod(bad, 0o755)
	writeFile(t, dir, "empty", "")
	job := writeFile(t, dir, "job.toml", `
[input]
path = "empty"
[[stage]]
command = ["sleep", "30"]
[[stage]]
name = "bad"
command = ["./bad.sh"]
`)
	report := filepath.Join(dir, "report.json")
	res := runPipespool(t, runOpts{}, "exec", job, "-o", "none", "--report", report)
	rep := readReport(t, report)
	if res.Code != 1 || rep.RootCause != "bad" || !strings.Contains(rep.Message, `stage "bad" did not start:`) ||
		!strings.Contains(rep.Message, "is the interpreter on its #! line missing?") {
		t.Fatalf("exit %d, root %q, message %q\nstderr: %s", res.Code, rep.RootCause, rep.Message, res.Stderr)
	}
	if rep.Stages[1].ExitCode != nil {
		t.Errorf("exit_code %d for a stage that never started, want none", *rep.Stages[1].ExitCode)
	}
	// Not the 2 s an own failure waits for the stages upstream of it.
	if res.Elapsed >= 1900*time.Millisecond {
		t.Errorf("the run took %v: it waited for sleep before failing", res.Elapsed)
	}
}

// TestExecUnwritableReportRefusedBeforeRun: --report or --metrics-file in a
// directory that does not exist was found only after the run, logged, and
// the run exited 0: a backup that then looked unmonitored. Both are checked
// before the run now: exit 2, nothing runs.
func TestExecUnwritableReportRefusedBeforeRun(t *testing.T) {
	dir := t.TempDir()
	ran := filepath.Join(dir, "ran")
	job := writeFile(t, dir, "job.toml", "[[stage]]\nshell = \"touch "+ran+"; cat\"\n")
	for _, flag := range []string{"--report", "--metrics-file"} {
		for _, path := range []string{"/nonexistent/dir/out", dir} {
			res := runPipespool(t, runOpts{}, "exec", job, "-i", "/dev/null", "-o", "none", flag, path)
			if res.Code != 2 || !strings.Contains(string(res.Stderr), flag+" cannot be written") {
				t.Errorf("%s %s: exit %d, want 2\nstderr: %s", flag, path, res.Code, res.Stderr)
			}
			if _, err := os.Stat(ran); err == nil {
				t.Fatalf("%s %s: the pipeline ran", flag, path)
			}
		}
	}
	noOutputLeft(t, dir, "job.toml")
}
