package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestExecThreeStagesMatchShell: cat | tr | sha256sum through pipespool
// gives the shell pipeline's answer, for files and for stdin/stdout.
func TestExecThreeStagesMatchShell(t *testing.T) {
	dir := t.TempDir()
	in, _ := randomFile(t, dir, "in.bin", 8<<20+12345, 1)
	job := writeFile(t, dir, "job.toml", `
[[stage]]
command = ["cat"]
[[stage]]
command = ["tr", "a-z", "A-Z"]
[[stage]]
command = ["sha256sum"]
`)
	want, err := exec.Command("sh", "-c", "cat "+in+" | tr a-z A-Z | sha256sum").Output()
	if err != nil {
		t.Fatal(err)
	}
	// Input as a file handed to the first stage, output to stdout.
	res := runPipespool(t, runOpts{}, "exec", job, "-i", in)
	if res.Code != 0 || !bytes.Equal(res.Stdout, want) {
		t.Fatalf("exit %d, stdout %q, want %q\nstderr: %s", res.Code, res.Stdout, want, res.Stderr)
	}
	// Input through stdin (a pipe: pumped, never made non-blocking).
	f, err := os.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cat := exec.Command("cat")
	cat.Stdin = f
	pipe, err := cat.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cat.Start(); err != nil {
		t.Fatal(err)
	}
	res = runPipespool(t, runOpts{Stdin: pipe}, "exec", job)
	cat.Wait()
	if res.Code != 0 || !bytes.Equal(res.Stdout, want) {
		t.Fatalf("stdin: exit %d, stdout %q, want %q\nstderr: %s", res.Code, res.Stdout, want, res.Stderr)
	}
	if len(res.Stderr) != 0 {
		t.Errorf("a successful run wrote to stderr: %s", res.Stderr)
	}
}

// TestExecOutputFileIsAtomic: the output appears whole on success, and on
// failure nothing appears under the final name and no temp file is left.
func TestExecOutputFileIsAtomic(t *testing.T) {
	dir := t.TempDir()
	in, sum := randomFile(t, dir, "in.bin", 5<<20, 2)
	out := filepath.Join(dir, "out.bin")
	ok := writeFile(t, dir, "ok.toml", `
[output]
mode = "0640"
[[stage]]
command = ["cat"]
[[stage]]
command = ["cat"]
`)
	res := runPipespool(t, runOpts{}, "exec", ok, "-i", in, "-o", out)
	if res.Code != 0 {
		t.Fatalf("exit %d: %s", res.Code, res.Stderr)
	}
	if got := fileSHA256(t, out); got != sum {
		t.Fatalf("output sha256 %s, want %s", got, sum)
	}
	if st, _ := os.Stat(out); st.Mode().Perm() != 0o640 {
		t.Errorf("output mode %v, want 0640", st.Mode().Perm())
	}
	// A failing last stage after writing half: no output, no temp file.
	bad := writeFile(t, dir, "bad.toml", `
[[stage]]
command = ["cat"]
[[stage]]
shell = "head -c 1000000; exit 7"
allow_partial_read = true
`)
	out2 := filepath.Join(dir, "out2.bin")
	res = runPipespool(t, runOpts{}, "exec", bad, "-i", in, "-o", out2)
	if res.Code != 1 {
		t.Fatalf("exit %d, want 1: %s", res.Code, res.Stderr)
	}
	if _, err := os.Stat(out2); !os.IsNotExist(err) {
		t.Fatalf("output of a failed run exists: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
	// An existing output file is untouched by a failed run.
	if err := os.WriteFile(out2, []byte("previous backup"), 0o644); err != nil {
		t.Fatal(err)
	}
	runPipespool(t, runOpts{}, "exec", bad, "-i", in, "-o", out2)
	if b, _ := os.ReadFile(out2); string(b) != "previous backup" {
		t.Errorf("a failed run changed the existing output: %q", b)
	}
}

// TestExecStageSeesOnlyStdFds: a stage's fd table holds 0, 1, 2 and
// nothing else, even when pipespool itself inherited more.
func TestExecStageSeesOnlyStdFds(t *testing.T) {
	dir := t.TempDir()
	job := writeFile(t, dir, "fds.toml", `
[[stage]]
command = ["cat"]
[[stage]]
shell = "cat >/dev/null; ls /proc/$$/fd"
[[stage]]
command = ["cat"]
`)
	extra, err := os.Open(job)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	cmd := exec.Command(pipespoolBin, "exec", job)
	cmd.Stdin = strings.NewReader("some input\n")
	cmd.ExtraFiles = []*os.File{extra} // fd 3 in pipespool, not close-on-exec
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	fds := strings.Fields(string(out))
	if strings.Join(fds, " ") != "0 1 2" {
		t.Fatalf("the stage saw fds %v, want 0 1 2", fds)
	}
}

// TestExecRootCauseIsTheFailingStage: a middle stage that fails is named,
// with its exit status and stderr; its producer's SIGPIPE is a consequence.
func TestExecRootCauseIsTheFailingStage(t *testing.T) {
	dir := t.TempDir()
	job := writeFile(t, dir, "fail.toml", `
[[stage]]
name = "producer"
command = ["cat", "/dev/zero"]
[[stage]]
name = "filter"
shell = "head -c 300000 >/dev/null; echo 'filter: disk on fire' >&2; exit 3"
[[stage]]
name = "sink"
command = ["cat"]
`)
	report := filepath.Join(dir, "report.json")
	res := runPipespool(t, runOpts{}, "exec", job, "-o", "none", "--report", report)
	if res.Code != 1 {
		t.Fatalf("exit %d, want 1: %s", res.Code, res.Stderr)
	}
	stderr := string(res.Stderr)
	for _, want := range []string{`stage "filter" failed: exit 3`, "disk on fire", "* 2 filter"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("summary lacks %q:\n%s", want, stderr)
		}
	}
	var rep struct {
		Result    string `json:"result"`
		RootCause string `json:"root_cause"`
		Stages    []struct {
			Name, Status, Signal string
			ExitCode             *int `json:"exit_code"`
		} `json:"stages"`
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Result != "failed" || rep.RootCause != "filter" {
		t.Fatalf("result %q root cause %q, want failed/filter", rep.Result, rep.RootCause)
	}
	// The producer dies of SIGPIPE when the pump closes its pipe, or of
	// the SIGTERM pipespool sends every stage once the run has failed,
	// whichever comes first: either way it is not the cause.
	if s := rep.Stages[0]; !(s.Status == "consequence" && s.Signal == "SIGPIPE" || s.Status == "stopped" && s.Signal == "SIGTERM") {
		t.Errorf("producer: status %q signal %q, want consequence/SIGPIPE or stopped/SIGTERM", s.Status, s.Signal)
	}
	if s := rep.Stages[1]; s.Status != "failed" || s.ExitCode == nil || *s.ExitCode != 3 {
		t.Errorf("filter: %+v", s)
	}
}

// TestExecPartialRead: a stage that exits 0 before reading all of its
// input fails the run unless it has allow_partial_read; then its
// producer's SIGPIPE is no failure at all.
func TestExecPartialRead(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		allow    bool
		wantCode int
	}{{true, 0}, {false, 1}} {
		job := writeFile(t, dir, fmt.Sprintf("head-%v.toml", tc.allow), fmt.Sprintf(`
[[stage]]
command = ["cat", "/dev/zero"]
[[stage]]
command = ["head", "-c", "100"]
allow_partial_read = %v
[[stage]]
command = ["wc", "-c"]
`, tc.allow))
		res := runPipespool(t, runOpts{}, "exec", job)
		if res.Code != tc.wantCode {
			t.Fatalf("allow_partial_read=%v: exit %d, want %d: %s", tc.allow, res.Code, tc.wantCode, res.Stderr)
		}
		// On failure the other stages are stopped, so only a successful
		// run promises the whole output.
		if tc.allow && strings.TrimSpace(string(res.Stdout)) != "100" {
			t.Errorf("stdout %q, want 100", res.Stdout)
		}
		if !tc.allow && !strings.Contains(string(res.Stderr), `stage "head" exited 0 without reading all its input`) {
			t.Errorf("summary does not blame head:\n%s", res.Stderr)
		}
	}
	// A stage that reads everything it is given is no partial read, even
	// if its producer is slow to finish.
	job := writeFile(t, dir, "full.toml", `
[[stage]]
shell = "printf abc; sleep 0.3; printf def"
[[stage]]
command = ["cat"]
`)
	res := runPipespool(t, runOpts{}, "exec", job)
	if res.Code != 0 || string(res.Stdout) != "abcdef" {
		t.Fatalf("exit %d stdout %q: %s", res.Code, res.Stdout, res.Stderr)
	}
}

// TestExecPartialReadSaysHowMuchWasLeft: the summary's count of bytes a
// stage left unread is exact only when it is all that was left of the
// input (a regular file handed to the stage, or a producer that had ended
// with every byte in the stage's pipe); else it is a lower bound, and says
// so: the producer's rest was never written.
func TestExecPartialReadSaysHowMuchWasLeft(t *testing.T) {
	dir := t.TempDir()
	input := func(name string, n int) string {
		return writeFile(t, dir, name, strings.Repeat("x", n))
	}
	big, small := input("big", 5<<20), input("small", 1000)
	for _, tc := range []struct {
		name, input, stages, want string
	}{
		{"a file handed to the stage", big, `
[[stage]]
command = ["head", "-c", "100"]
`, fmt.Sprintf("(%d bytes left unread)", 5<<20-100)},
		// The producer writes all 1000 bytes and ends before the stage
		// reads: the pump reached their end.
		{"a producer that had ended", small, `
[[stage]]
command = ["cat"]
[[stage]]
shell = "sleep 0.5; head -c 100"
`, "(900 bytes left unread)"},
		// The producer is blocked on a full pipe with most of 5 MiB to
		// go when the stage exits: only what was queued is known.
		{"a producer with more to write", big, `
[[stage]]
command = ["cat"]
[[stage]]
shell = "sleep 0.5; head -c 100"
`, "(at least "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := writeFile(t, dir, "job.toml", fmt.Sprintf("[input]\npath = %q\n[output]\npath = \"none\"\n%s", tc.input, tc.stages))
			res := runPipespool(t, runOpts{}, "exec", job)
			if res.Code != 1 || !strings.Contains(string(res.Stderr), "without reading all its input "+tc.want) {
				t.Fatalf("exit %d, want 1 and %q in the summary:\n%s", res.Code, tc.want, res.Stderr)
			}
		})
	}
}

// TestExecBadJobFile: invalid job files exit 2 with file, line and key.
func TestExecBadJobFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, body, want string }{
		{"unknown-key", "[[stage]]\ncommand = [\"cat\"]\nstall_timout = \"5m\"\n", "unknown-key.toml:3: stage[1].stall_timout: unknown key"},
		{"wrong-type", "timeout = 5\n[[stage]]\ncommand = [\"cat\"]\n", "wrong-type.toml:1"},
		{"bad-duration", "[[stage]]\ncommand = [\"cat\"]\n\n[[stage]]\ncommand = [\"cat\"]\nstall_timeout = \"5 minutes\"\n", "bad-duration.toml:6: stage[2].stall_timeout"},
		{"no-stages", "name = \"x\"\n", "no stages"},
		{"two-kinds", "[[stage]]\ncommand = [\"cat\"]\nshell = \"cat\"\n", "bad: exactly one of command, shell or builtin"},
		{"dup-name", "[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\n[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\n", "dup-name.toml:5: stage[2].name"},
		{"syntax", "[[stage]\ncommand = [\"cat\"]\n", "syntax.toml:1"},
		{"missing-program", "[[stage]]\ncommand = [\"no-such-program-xyz\"]\n", "missing-program.toml:1: stage[1]: stage \"no-such-program-xyz\": program \"no-such-program-xyz\" not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := writeFile(t, dir, tc.name+".toml", tc.body)
			res := runPipespool(t, runOpts{}, "exec", job)
			if res.Code != 2 {
				t.Fatalf("exit %d, want 2: %s", res.Code, res.Stderr)
			}
			want := strings.Replace(tc.want, "bad: ", "", 1)
			if !strings.Contains(string(res.Stderr), want) {
				t.Fatalf("stderr %q lacks %q", res.Stderr, want)
			}
			if res := runPipespool(t, runOpts{}, "check", job); res.Code != 2 {
				t.Errorf("check: exit %d, want 2", res.Code)
			}
		})
	}
	// A missing input file: exit 2, and no output file is created.
	job := writeFile(t, dir, "ok.toml", "[[stage]]\ncommand = [\"cat\"]\n")
	out := filepath.Join(dir, "never.bin")
	res := runPipespool(t, runOpts{}, "exec", job, "-i", filepath.Join(dir, "missing.bin"), "-o", out)
	if res.Code != 2 || !strings.Contains(string(res.Stderr), "missing.bin") {
		t.Fatalf("missing input: exit %d: %s", res.Code, res.Stderr)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("output created for a run that could not start")
	}
}

// TestExecTimeoutLeavesNothing: a run past its timeout fails with exit 1
// and no stage, nor anything a stage started, is left running.
func TestExecTimeoutLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	marker := fmt.Sprintf("pipespool-timeout-%d", time.Now().UnixNano())
	job := writeFile(t, dir, "slow.toml", fmt.Sprintf(`
timeout = "1s"
[[stage]]
shell = "sleep 300 # %[1]s"
[[stage]]
# ignores SIGTERM, and leaves a grandchild behind
shell = "trap '' TERM; sleep 301 & sleep 302; cat # %[1]s"
`, marker))
	res := runPipespool(t, runOpts{Timeout: 60 * time.Second}, "exec", job, "--log-level", "error")
	if res.Code != 1 || !strings.Contains(string(res.Stderr), "timed out after 1s") {
		t.Fatalf("exit %d: %s", res.Code, res.Stderr)
	}
	assertNoProcesses(t, marker)
}

// TestExecSignalsStopEverything: SIGTERM and SIGINT to pipespool stop every
// stage, then exit 143 and 130.
func TestExecSignalsStopEverything(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGTERM, 143}, {syscall.SIGINT, 130}} {
		marker := fmt.Sprintf("pipespool-signal-%d", time.Now().UnixNano())
		job := writeFile(t, dir, "sig.toml", fmt.Sprintf(`
[[stage]]
command = ["cat", "/dev/zero"]
[[stage]]
shell = "sleep 300; cat # %s"
`, marker))
		cmd := exec.Command(pipespoolBin, "exec", job, "-o", "none")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Wait until the stages run, then signal.
		deadline := time.Now().Add(10 * time.Second)
		for len(processesWithMarker(marker)) == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		cmd.Process.Signal(tc.sig)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("%v: pipespool did not exit", tc.sig)
		}
		if got := cmd.ProcessState.ExitCode(); got != tc.code {
			t.Errorf("%v: exit %d, want %d: %s", tc.sig, got, tc.code, stderr.String())
		}
		assertNoProcesses(t, marker)
	}
}

// TestExecDryRunAndCheck print the resolved graph and run nothing.
func TestExecDryRunAndCheck(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	job := writeFile(t, dir, "j.toml", fmt.Sprintf(`
name = "demo"
[[stage]]
shell = "touch %s"
[[stage]]
command = ["tr", "a", "b"]
`, marker))
	res := runPipespool(t, runOpts{}, "exec", job, "--dry-run")
	if res.Code != 0 || !strings.Contains(string(res.Stderr), "tr a b") {
		t.Fatalf("dry-run: exit %d: %s", res.Code, res.Stderr)
	}
	res = runPipespool(t, runOpts{}, "check", job)
	if res.Code != 0 || !strings.Contains(string(res.Stdout), "job demo") {
		t.Fatalf("check: exit %d: %s %s", res.Code, res.Stdout, res.Stderr)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("dry-run or check ran a stage")
	}
}

// TestExecRelativeProgramIsRelativeToJobFile: a command with a relative
// path is found next to the job file, whatever the current directory.
func TestExecRelativeProgramIsRelativeToJobFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "bin/upper", "#!/bin/sh\nexec tr a-z A-Z\n")
	os.Chmod(filepath.Join(dir, "bin/upper"), 0o755)
	job := writeFile(t, dir, "j.toml", "[[stage]]\ncommand = [\"./bin/upper\"]\n")
	res := runPipespool(t, runOpts{Dir: "/", Stdin: strings.NewReader("hello")}, "exec", job)
	if res.Code != 0 || string(res.Stdout) != "HELLO" {
		t.Fatalf("exit %d stdout %q: %s", res.Code, res.Stdout, res.Stderr)
	}
}

// TestExecJSONLogsSummaryIsOneRecord: with --log-format json every line on
// stderr is a JSON object, the failure summary included.
func TestExecJSONLogsSummaryIsOneRecord(t *testing.T) {
	dir := t.TempDir()
	job := writeFile(t, dir, "fail.toml", `
[[stage]]
name = "producer"
command = ["cat", "/dev/zero"]
[[stage]]
name = "filter"
shell = "head -c 1000 >/dev/null; echo 'filter: broken' >&2; exit 4"
`)
	res := runPipespool(t, runOpts{}, "--log-format", "json", "exec", job, "-o", "none")
	if res.Code != 1 {
		t.Fatalf("exit %d: %s", res.Code, res.Stderr)
	}
	var last map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(res.Stderr)), "\n") {
		last = nil
		if err := json.Unmarshal([]byte(line), &last); err != nil {
			t.Fatalf("stderr line is not JSON: %q", line)
		}
	}
	if last["root_cause"] != "filter" || last["result"] != "failed" || last["level"] != "ERROR" {
		t.Fatalf("last record: %v", last)
	}
	if stages, _ := last["stages"].([]any); len(stages) != 2 {
		t.Fatalf("stages: %v", last["stages"])
	}
}

// TestExecStagesRunTheDefaultPolicy: the pump threads run as SCHED_BATCH
// (see pump/sched.go), but the stages, and whatever they start, keep the
// default policy, SCHED_OTHER (0), even a stage started while pumps copy.
func TestExecStagesRunTheDefaultPolicy(t *testing.T) {
	dir := t.TempDir()
	job := writeFile(t, dir, "policy.toml", `
[[stage]]
command = ["cat"]
[[stage]]
shell = "cat >/dev/null; awk '{print $41}' /proc/$$/stat; sh -c 'awk \"{print \\$41}\" /proc/$$/stat'"
[[stage]]
command = ["cat"]
`)
	res := runPipespool(t, runOpts{Stdin: bytes.NewReader(make([]byte, 64<<20))}, "exec", job)
	if res.Code != 0 {
		t.Fatalf("exit %d: %s", res.Code, res.Stderr)
	}
	if got := strings.Fields(string(res.Stdout)); strings.Join(got, " ") != "0 0" {
		t.Fatalf("policies of the stage and of its child = %q, want 0 0 (SCHED_OTHER)", res.Stdout)
	}
}
