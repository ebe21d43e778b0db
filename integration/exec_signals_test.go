package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startedRun is pipespool started in the background by a test.
type startedRun struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	done   chan error
	waited bool // the test's goroutine received from done
}

// startPipespool starts the binary with args (through sh -c wrap when
// wrap is not "", with "$@" standing for the binary and its arguments) and
// waits until want processes with marker run and, when file is not "",
// until a file matching that glob exists.
func startPipespool(t *testing.T, env []string, wrap, marker string, want int, file string, args ...string) *startedRun {
	t.Helper()
	var cmd *exec.Cmd
	if wrap != "" {
		cmd = exec.Command("sh", append([]string{"-c", wrap, "sh", pipespoolBin}, args...)...)
	} else {
		cmd = exec.Command(pipespoolBin, args...)
	}
	cmd.Env = append(os.Environ(), env...)
	sr := &startedRun{cmd: cmd, stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = sr.stderr
	// A process left behind holding stderr must not hold the test.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { sr.done <- cmd.Wait() }()
	sr.cleanupOnFailure(t)
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		ready := len(processesWithMarker(marker)) >= want
		if ready && file != "" {
			m, _ := filepath.Glob(file)
			ready = len(m) > 0
		}
		if ready {
			return sr
		}
		select {
		case err := <-sr.done:
			sr.waited = true
			t.Fatalf("pipespool ended (%v) before its stages ran\nstderr: %s", err, sr.stderr.String())
		default:
		}
		if time.Now().After(end) {
			cmd.Process.Kill()
			<-sr.done
			sr.waited = true
			t.Fatalf("the stages never ran\nstderr: %s", sr.stderr.String())
		}
	}
}

// cleanupOnFailure makes sure a test that fails before it waited for
// pipespool leaves it not running.
func (sr *startedRun) cleanupOnFailure(t *testing.T) {
	t.Cleanup(func() {
		if !sr.waited {
			sr.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-sr.done:
			case <-time.After(10 * time.Second):
				sr.cmd.Process.Kill()
				<-sr.done
			}
		}
	})
}

// wait waits for pipespool to exit and returns its exit status (-1 when a
// signal killed it).
func (sr *startedRun) wait(t *testing.T) int {
	t.Helper()
	sr.waited = true
	select {
	case <-sr.done:
	case <-time.After(30 * time.Second):
		sr.cmd.Process.Kill()
		<-sr.done
		t.Fatalf("pipespool still running 30 s after the signal\nstderr: %s", sr.stderr.String())
	}
	return sr.cmd.ProcessState.ExitCode()
}

// tempsOf lists the temporary files of output path out.
func tempsOf(out string) []string {
	m, _ := filepath.Glob(filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+".pipespool-*.tmp"))
	return m
}

// slowJob writes a job whose first stage writes a line every 50 ms, marked
// with marker, and whose last stage copies it to the output.
func slowJob(t *testing.T, dir, marker string) string {
	return writeFile(t, dir, "slow.toml", fmt.Sprintf(`
[[stage]]
name = "ticker"
shell = "while :; do echo tick; sleep 0.05; done # %[1]s"
[[stage]]
name = "copy"
shell = "cat # %[1]s"
`, marker))
}

func signalName(s syscall.Signal) string {
	return map[syscall.Signal]string{syscall.SIGHUP: "SIGHUP", syscall.SIGINT: "SIGINT",
		syscall.SIGQUIT: "SIGQUIT", syscall.SIGTERM: "SIGTERM"}[s]
}

// TestExecStopSignals: SIGHUP, SIGINT, SIGQUIT and SIGTERM to pipespool
// each stop every stage, remove the temporary output and exit 128 + the
// signal; SIGQUIT prints no Go stack dump. SIGHUP and SIGQUIT used to kill
// pipespool at once (129; 2 with a dump), leaving the stages running and
// the temporary file behind.
func TestExecStopSignals(t *testing.T) {
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGHUP, 129}, {syscall.SIGINT, 130}, {syscall.SIGQUIT, 131}, {syscall.SIGTERM, 143}} {
		t.Run(signalName(tc.sig), func(t *testing.T) {
			dir := t.TempDir()
			marker := fmt.Sprintf("pipespool-stopsig-%d", time.Now().UnixNano())
			job := slowJob(t, dir, marker)
			out := filepath.Join(dir, "out.bin")
			sr := startPipespool(t, nil, "", marker, 2, filepath.Join(dir, ".out.bin.pipespool-*.tmp"), "exec", job, "-o", out)
			sr.cmd.Process.Signal(tc.sig)
			if code := sr.wait(t); code != tc.code {
				t.Errorf("exit %d, want %d\nstderr: %s", code, tc.code, sr.stderr.String())
			}
			assertNoProcesses(t, marker)
			if m := tempsOf(out); len(m) > 0 {
				t.Errorf("temporary output left: %v", m)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("output committed by an interrupted run")
			}
			if strings.Contains(sr.stderr.String(), "goroutine ") {
				t.Errorf("a Go stack dump on stderr:\n%s", sr.stderr.String())
			}
			if !strings.Contains(sr.stderr.String(), "interrupted by "+signalName(tc.sig)) {
				t.Errorf("stderr does not say it was interrupted by %s:\n%s", signalName(tc.sig), sr.stderr.String())
			}
		})
	}
}

// signalEveryProcess sends sig to pipespool (pid) and to every process it
// started, 600 ms in, once at least stages of them run: pipespool first
// (systemd's order when it stops a service, KillMode=control-group), or
// last, 20 ms after the others (at a shutdown, or on a loaded machine,
// pipespool's handler may run well after a stage died of the same signal;
// 20 ms is far below the margin pipespool allows for it).
func signalEveryProcess(sig syscall.Signal, pipespoolFirst bool, stages int) func(pid int) {
	return func(pid int) {
		time.Sleep(600 * time.Millisecond)
		var kids []string
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			out, _ := exec.Command("ps", "-o", "pid=", "--ppid", fmt.Sprint(pid)).Output()
			// A loaded machine may not have started them all yet: the
			// stages-first order must reach them, or the case is not
			// the one it names.
			if kids = strings.Fields(string(out)); len(kids) >= stages || time.Now().After(deadline) {
				break
			}
		}
		if pipespoolFirst {
			syscall.Kill(pid, sig)
		}
		for _, f := range kids {
			var p int
			if _, err := fmt.Sscan(f, &p); err == nil {
				syscall.Kill(p, sig)
			}
		}
		if !pipespoolFirst {
			time.Sleep(20 * time.Millisecond)
			syscall.Kill(pid, sig)
		}
	}
}

// TestExecSignalToEveryProcessIsAnInterruption: a signal sent to
// pipespool and to its stages at once (systemctl stop, a shutdown) makes
// the run interrupted (128 + the signal), not failed naming the stage that
// died of it, or exited its own way, a moment before pipespool saw the
// signal. A line reported "stage producer failed: killed by signal
// SIGTERM" and exit 1 every time with the stages signalled first, and
// about 1 run in 30 in systemd's order; a tree every time with the stages
// first.
func TestExecSignalToEveryProcessIsAnInterruption(t *testing.T) {
	line := func(producer string) string {
		return fmt.Sprintf("[input]\npath = \"none\"\n[output]\npath = \"none\"\n[[stage]]\nname = \"producer\"\n%s\n[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\n", producer)
	}
	tree := func(producer string) string {
		return line(producer) + "[[stage]]\nname = \"b\"\nfrom = \"producer\"\ncommand = [\"cat\"]\noutput = \"none\"\n"
	}
	sleep := `command = ["sleep", "30"]`
	// A program that exits its own way on SIGTERM, as ssh (255) does.
	own := `shell = "trap 'exit 255' TERM; sleep 30 & wait"`
	for _, tc := range []struct {
		name, job string
		sig       syscall.Signal
		first     bool
		stages    int
	}{
		{"line, stages first", line(sleep), syscall.SIGTERM, false, 2},
		{"line, pipespool first", line(sleep), syscall.SIGTERM, true, 2},
		{"line, SIGINT, stages first", line(sleep), syscall.SIGINT, false, 2},
		{"line, a program's own exit on SIGTERM", line(own), syscall.SIGTERM, true, 2},
		{"tree, stages first", tree(sleep), syscall.SIGTERM, false, 3},
		{"tree, pipespool first", tree(sleep), syscall.SIGTERM, true, 3},
		{"tree, SIGHUP, stages first", tree(sleep), syscall.SIGHUP, false, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			job := writeFile(t, dir, "job.toml", tc.job)
			res := runPipespoolWith(t, runOpts{}, signalEveryProcess(tc.sig, tc.first, tc.stages), "exec", job)
			want := "interrupted by " + signalName(tc.sig)
			if res.Code != 128+int(tc.sig) || !strings.Contains(string(res.Stderr), want) {
				t.Fatalf("exit %d, want %d saying %q\n%s", res.Code, 128+int(tc.sig), want, res.Stderr)
			}
		})
	}
}

// TestExecStageKilledAloneIsItsFailure: a stage killed by somebody else's
// SIGTERM while pipespool gets no signal is the run's failure, named (the
// wait for pipespool's own signal, which may be on its way, ends).
func TestExecStageKilledAloneIsItsFailure(t *testing.T) {
	dir := t.TempDir()
	job := writeFile(t, dir, "job.toml", "[input]\npath = \"none\"\n[output]\npath = \"none\"\n[[stage]]\nname = \"producer\"\nshell = \"sleep 0.5; kill -TERM $$\"\n[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\n")
	res := runPipespool(t, runOpts{}, "exec", job)
	if res.Code != 1 || !strings.Contains(string(res.Stderr), `stage "producer" failed: killed by signal SIGTERM`) {
		t.Fatalf("exit %d, want 1 naming the stage\n%s", res.Code, res.Stderr)
	}
}

// TestExecQuitDumpsStacksWhenDebugging: with GOTRACEBACK set (someone asks
// for stacks), SIGQUIT prints every goroutine's stack first, and still
// stops the stages and exits 131.
func TestExecQuitDumpsStacksWhenDebugging(t *testing.T) {
	dir := t.TempDir()
	marker := fmt.Sprintf("pipespool-quitdump-%d", time.Now().UnixNano())
	job := slowJob(t, dir, marker)
	sr := startPipespool(t, []string{"GOTRACEBACK=all"}, "", marker, 2, "", "exec", job, "-o", "none")
	sr.cmd.Process.Signal(syscall.SIGQUIT)
	if code := sr.wait(t); code != 131 {
		t.Errorf("exit %d, want 131\nstderr: %s", code, sr.stderr.String())
	}
	if !strings.Contains(sr.stderr.String(), "goroutine ") {
		t.Errorf("no goroutine stacks on stderr:\n%s", sr.stderr.String())
	}
	assertNoProcesses(t, marker)
}

// TestExecIgnoredHangupStaysIgnored: under nohup (SIGHUP ignored when
// pipespool starts) a SIGHUP does nothing; the SIGTERM after it ends the
// run with 143, not 129.
func TestExecIgnoredHangupStaysIgnored(t *testing.T) {
	dir := t.TempDir()
	marker := fmt.Sprintf("pipespool-nohup-%d", time.Now().UnixNano())
	job := slowJob(t, dir, marker)
	sr := startPipespool(t, nil, `trap "" HUP; exec "$@"`, marker, 2, "", "exec", job, "-o", "none")
	sr.cmd.Process.Signal(syscall.SIGHUP)
	sr.cmd.Process.Signal(syscall.SIGTERM)
	if code := sr.wait(t); code != 143 {
		t.Errorf("exit %d, want 143 (SIGHUP ignored, then SIGTERM)\nstderr: %s", code, sr.stderr.String())
	}
	assertNoProcesses(t, marker)
}

// TestExecKilledTakesItsStagesAndTheNextRunCleansUp: pipespool killed with
// SIGKILL leaves no stage running a second later (their parent-death
// signal), and the next run of the same output removes the temporary file
// the killed run left.
func TestExecKilledTakesItsStagesAndTheNextRunCleansUp(t *testing.T) {
	dir := t.TempDir()
	marker := fmt.Sprintf("pipespool-kill9-%d", time.Now().UnixNano())
	// A stage that touches none of its pipes (sleep) outlives pipespool
	// but for its parent-death signal; the others end on EOF or EPIPE.
	sleepArg := fmt.Sprintf("1000.%d", time.Now().UnixNano()%1000000)
	job := writeFile(t, dir, "k.toml", fmt.Sprintf(`
[[stage]]
name = "ticker"
shell = "while :; do echo tick; sleep 0.05; done # %[1]s"
[[stage]]
name = "ignores-term"
shell = "trap '' TERM HUP; cat # %[1]s"
[[stage]]
name = "pipeline-in-a-stage"
shell = "sh -c 'cat; :' %[1]s | sh -c 'cat; :' %[1]s"
[[stage]]
name = "sleeper"
command = ["sleep", "%[2]s"]
`, marker, sleepArg))
	out := filepath.Join(dir, "out.bin")
	sr := startPipespool(t, nil, "", marker, 4, filepath.Join(dir, ".out.bin.pipespool-*.tmp"), "exec", job, "-o", out)
	for end := time.Now().Add(10 * time.Second); len(processesWithMarker(sleepArg)) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the sleeper stage never ran")
		}
	}
	sr.cmd.Process.Kill()
	sr.wait(t)
	killed := time.Now()
	for {
		left := append(processesWithMarker(marker), processesWithMarker(sleepArg)...)
		if len(left) == 0 {
			break
		}
		if time.Since(killed) > time.Second {
			for _, p := range left {
				var pid int
				fmt.Sscan(p, &pid)
				syscall.Kill(pid, syscall.SIGKILL)
			}
			t.Fatalf("stages still running a second after pipespool was killed: %v", left)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("stages gone %s after the kill", time.Since(killed))
	if len(tempsOf(out)) == 0 {
		t.Fatalf("the killed run left no temporary file: the test proves nothing")
	}
	quick := writeFile(t, dir, "q.toml", "[[stage]]\ncommand = [\"cat\"]\n")
	res := runPipespool(t, runOpts{Stdin: strings.NewReader("fresh\n")}, "exec", quick, "-o", out)
	if res.Code != 0 {
		t.Fatalf("the next run: exit %d\n%s", res.Code, res.Stderr)
	}
	if m := tempsOf(out); len(m) > 0 {
		t.Errorf("the next run left the killed run's temporary file: %v", m)
	}
	if b, _ := os.ReadFile(out); string(b) != "fresh\n" {
		t.Errorf("output %q", b)
	}
}

// TestExecStageStderrCannotDriveTheTerminal: what a failing stage writes
// to stderr (escape sequences that clear the screen, set the window title,
// hide text) reaches pipespool's stderr with its control characters
// written out, in the log lines and in the failure summary, in both log
// formats. The summary printed them raw.
func TestExecStageStderrCannotDriveTheTerminal(t *testing.T) {
	dir := t.TempDir()
	job := writeFile(t, dir, "esc.toml", `
[[stage]]
name = "noisy"
shell = "printf 'plain\\tline\\n\\033[2J\\033]0;owned\\007cleared\\n' >&2; exit 3"
`)
	for _, format := range []string{"text", "json"} {
		res := runPipespool(t, runOpts{}, "--log-format", format, "exec", job, "-o", "none")
		if res.Code != 1 {
			t.Fatalf("%s: exit %d\n%s", format, res.Code, res.Stderr)
		}
		for i, c := range res.Stderr {
			if c < 0x20 && c != '\n' && c != '\t' || c == 0x7f {
				t.Fatalf("%s: stderr holds control byte %#x at %d:\n%q", format, c, i, res.Stderr)
			}
		}
		if !strings.Contains(string(res.Stderr), "cleared") {
			t.Errorf("%s: the stage's stderr is not shown:\n%s", format, res.Stderr)
		}
	}
}

// TestExecStderrReaderGoneDoesNotStopTheRun: pipespool's own stderr losing
// its reader (`2>&1 | head`, a logger that died) loses its messages, not
// the run: the stage goes on, the output is committed, the exit status is
// the run's. pipespool died of SIGPIPE (141) half-way, its stage killed
// with it and its temporary output left behind.
func TestExecStderrReaderGoneDoesNotStopTheRun(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.bin")
	job := writeFile(t, dir, "job.toml", fmt.Sprintf(`[input]
path = "none"
[output]
path = %q
[[stage]]
name = "noisy"
shell = "for i in $(seq 2000); do echo line $i >&2; done; head -c 1000000 /dev/zero"
`, out))
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(pipespoolBin, "exec", job)
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// The reader takes the first message, then goes away.
	buf := make([]byte, 1)
	for buf[0] != '\n' {
		if _, err := r.Read(buf); err != nil {
			t.Fatalf("reading pipespool's stderr: %v", err)
		}
	}
	r.Close()
	if err := waitStarted(t, cmd, "pipespool whose stderr's reader went away"); err != nil {
		t.Fatalf("pipespool: %v, want exit 0", err)
	}
	if fi, err := os.Stat(out); err != nil || fi.Size() != 1000000 {
		t.Errorf("output: %v, want 1000000 bytes committed", err)
	}
	if m := tempsOf(out); len(m) > 0 {
		t.Errorf("temporary output left: %v", m)
	}
}

// TestExecStalledStderrDoesNotHoldTheRun: pipespool's own stderr taken by
// a reader that stopped reading (a terminal stopped with Ctrl-S, an ssh
// session whose connection hangs, a stuck logger) holds neither the run
// nor its timeout: messages are dropped, the run ends as it would have.
// Before, the stage blocked on its stderr, pipespool on its log, and the
// job's timeout never ended it.
func TestExecStalledStderrDoesNotHoldTheRun(t *testing.T) {
	noisy := `shell = "for i in $(seq 5000); do echo line $i of the chatter of a stage >&2; done; head -c 1000000 /dev/zero"`
	for _, tc := range []struct {
		name, head, stage, msg string
		code                   int
	}{
		{"the run succeeds", "", noisy, "", 0},
		{"its timeout ends it", "timeout = \"2s\"\n", `shell = "while :; do echo chatter of a stage that never ends >&2; done"`, "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "out.bin")
			job := writeFile(t, dir, "job.toml", fmt.Sprintf("%s[input]\npath = \"none\"\n[output]\npath = %q\n[[stage]]\nname = \"noisy\"\n%s\n", tc.head, out, tc.stage))
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close() // held open, never read
			cmd := exec.Command(pipespoolBin, "exec", job)
			cmd.Stderr = w
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			w.Close()
			err = waitStarted(t, cmd, "pipespool with a stderr nobody reads")
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code {
				t.Errorf("exit %d, want %d", code, tc.code)
			}
			fi, err := os.Stat(out)
			switch {
			case tc.code == 0 && (err != nil || fi.Size() != 1000000):
				t.Errorf("output: %v, want 1000000 bytes committed", err)
			case tc.code != 0 && err == nil:
				t.Errorf("output committed by a failed run")
			}
			if m := tempsOf(out); len(m) > 0 {
				t.Errorf("temporary output left: %v", m)
			}
		})
	}
}
