package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestExecDescendantHoldingStdoutIsAStall: a stage whose main process
// exits while a process it left behind holds its stdout (in its group, or
// in a session of its own) used to hang the run with no stall line, and
// on_stall = "kill" never fired. Now it is a stall with its own diagnosis:
// kill and nudge stop the holder and fail the run with the stage as the
// root cause; warn says so and waits for the run's timeout; nothing is
// left running either way.
func TestExecDescendantHoldingStdoutIsAStall(t *testing.T) {
	for _, tc := range []struct {
		name, spawn, onStall string
		timeout              string
		result               string
	}{
		{"in its group, kill", "sleep %s &", "kill", "", "failed"},
		{"own session, kill", "setsid sleep %s &", "kill", "", "failed"},
		{"own session, nudge", "setsid sleep %s &", "nudge", "", "failed"},
		{"in its group, warn", "sleep %s &", "warn", "4s", "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			sleepArg := fmt.Sprintf("300.%d", time.Now().UnixNano()%1000000)
			extra := ""
			if tc.timeout != "" {
				extra = "timeout = \"" + tc.timeout + "\"\n"
			}
			job := writeFile(t, dir, "job.toml", extra+fmt.Sprintf(`
stall_timeout = "1s"
on_stall = %q
[[stage]]
name = "leaver"
shell = "%s cat"
[[stage]]
name = "sink"
command = ["cat"]
`, tc.onStall, fmt.Sprintf(tc.spawn, sleepArg)))
			rp := filepath.Join(dir, "report.json")
			res := runPipespool(t, runOpts{Stdin: strings.NewReader("hello\n"), Timeout: 30 * time.Second},
				"exec", job, "--report", rp)
			if res.Code != 1 {
				t.Fatalf("exit %d, want 1\nstderr: %s", res.Code, res.Stderr)
			}
			if string(res.Stdout) != "hello\n" {
				t.Errorf("stdout %q", res.Stdout)
			}
			rep := readReport(t, rp)
			if rep.Result != tc.result {
				t.Errorf("result %q, want %q", rep.Result, tc.result)
			}
			d := strings.Join(rep.Stages[0].Diagnoses, "\n")
			for _, want := range []string{`stage "leaver" (pid `, "exited (exit 0); PID ", "(sleep " + sleepArg + ") still holds its stdout"} {
				if !strings.Contains(d, want) {
					t.Errorf("diagnosis %q lacks %q", d, want)
				}
			}
			if tc.onStall != "warn" {
				if rep.RootCause != "leaver" || !strings.Contains(rep.Message, "still holds its stdout") {
					t.Errorf("root %q message %q", rep.RootCause, rep.Message)
				}
				if res.Elapsed > 5*time.Second {
					t.Errorf("took %s: the holder was not stopped at the stall", res.Elapsed)
				}
			}
			if tc.onStall == "nudge" && !strings.Contains(rep.Message, "a nudge cannot make a process close a pipe") {
				t.Errorf("message %q does not say why a nudge kills", rep.Message)
			}
			if len(rep.Stages[1].Diagnoses) != 0 {
				t.Errorf("sink, starved by the held pipe, was diagnosed too: %q", rep.Stages[1].Diagnoses)
			}
			assertNoProcesses(t, sleepArg)
		})
	}
}

// TestExecStopsWhatStagesLeaveBehind: processes a stage leaves running
// outside its process group (setsid, a double fork that daemonises) are
// stopped at the end of a successful run, and the log names them and the
// may_outlive key; may_outlive lets them live. (Each stage waits until its
// child has left its group and become sleep: until then the child is a
// member of the stage's group, stopped with it when the stage ends.)
func TestExecStopsWhatStagesLeaveBehind(t *testing.T) {
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("may_outlive=%v", keep), func(t *testing.T) {
			dir := t.TempDir()
			n := time.Now().UnixNano() % 1000000
			a, b := fmt.Sprintf("301.%d", n), fmt.Sprintf("302.%d", n)
			extra := ""
			if keep {
				extra = "may_outlive = [\"sleep\"]\n"
			}
			job := writeFile(t, dir, "job.toml", extra+fmt.Sprintf(`
[[stage]]
name = "setsid"
shell = "setsid sleep %s </dev/null >/dev/null 2>&1 & p=$!; until [ \"$(cat /proc/$p/comm)\" = sleep ]; do :; done; cat"
[[stage]]
name = "daemon"
shell = "setsid sh -c 'sleep %s </dev/null >/dev/null 2>&1 & exit 0'; cat"
`, a, b))
			res := runPipespool(t, runOpts{Stdin: strings.NewReader("data\n")}, "exec", job)
			if res.Code != 0 || string(res.Stdout) != "data\n" {
				t.Fatalf("exit %d, stdout %q\nstderr: %s", res.Code, res.Stdout, res.Stderr)
			}
			if keep {
				defer killMarked(a, b)
				for _, m := range []string{a, b} {
					if len(processesWithMarker(m)) == 0 {
						t.Errorf("sleep %s was stopped though may_outlive names it", m)
					}
				}
				if len(res.Stderr) != 0 {
					t.Errorf("stderr: %s", res.Stderr)
				}
				return
			}
			assertNoProcesses(t, a)
			assertNoProcesses(t, b)
			for _, want := range []string{"stopped 2 process(es) the stages left running: sleep (pid ", `may_outlive = [\"sleep\"]`} {
				if !strings.Contains(string(res.Stderr), want) {
					t.Errorf("stderr lacks %q:\n%s", want, res.Stderr)
				}
			}
		})
	}
}

// killMarked kills the processes whose command line holds one of markers,
// and what they fork meanwhile: a scan of /proc misses a child forked
// after it, whose parent is then killed too late to stop it (a `setsid -f`
// of a killed run, forking its escapee as the scan runs). It scans again
// until two scans in a row, killMarkedQuiet apart, find nothing alive: a
// process sent SIGKILL forks no more, so each round leaves only what the
// one before missed, and a process caught in execve (its command line
// reads empty while the new program's is set up) shows in the next scan.
// It returns what still lives after killMarkedWait.
func killMarked(markers ...string) (left []string) {
	deadline := time.Now().Add(killMarkedWait)
	quiet := 0
	for {
		left = left[:0]
		for _, m := range markers {
			for _, p := range processesWithMarker(m) {
				if strings.Contains(p, " (zombie) ") {
					continue
				}
				left = append(left, p)
				pid, _ := strconv.Atoi(strings.Fields(p)[0])
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if len(left) == 0 {
			quiet++
		} else {
			quiet = 0
		}
		if quiet == 2 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(killMarkedQuiet)
	}
}

// killMarkedWait bounds killMarked: SIGKILL ends a process at once unless
// it is stuck in the kernel. killMarkedQuiet is the pause between its
// scans: far longer than an execve.
const (
	killMarkedWait  = 5 * time.Second
	killMarkedQuiet = 20 * time.Millisecond
)

// TestExecGpgAgentMayOutlive: a gpg tool starts gpg-agent, which
// daemonises; the run stops it at its end unless the job says it may
// outlive the run.
func TestExecGpgAgentMayOutlive(t *testing.T) {
	needTools(t, "gpg-connect-agent", "gpgconf")
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("may_outlive=%v", keep), func(t *testing.T) {
			home, err := os.MkdirTemp("/tmp", "ps-gnupg-") // short: the agent's socket path is limited
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(home)
			os.Chmod(home, 0o700)
			defer runPipespoolGpgconfKill(home)
			dir := t.TempDir()
			extra := ""
			if keep {
				extra = "may_outlive = [\"gpg-agent\"]\n"
			}
			job := writeFile(t, dir, "job.toml", extra+fmt.Sprintf(`
[[stage]]
command = ["gpg-connect-agent", "--homedir", %q, "/bye"]
stderr = "discard"
`, home))
			res := runPipespool(t, runOpts{}, "exec", job)
			if res.Code != 0 {
				t.Fatalf("exit %d\nstderr: %s", res.Code, res.Stderr)
			}
			var agents []string
			for _, p := range processesWithMarker(home) {
				if strings.Contains(p, "gpg-agent") {
					agents = append(agents, p)
				}
			}
			if keep != (len(agents) > 0) {
				t.Errorf("may_outlive=%v: gpg-agent processes after the run: %v\nstderr: %s", keep, agents, res.Stderr)
			}
			// The log's text format escapes the quotes.
			if !keep && !strings.Contains(string(res.Stderr), `may_outlive = [\"gpg-agent\"]`) {
				t.Errorf("stderr does not name gpg-agent and the key:\n%s", res.Stderr)
			}
		})
	}
}

// runPipespoolGpgconfKill stops the gpg-agent of home, if any.
func runPipespoolGpgconfKill(home string) {
	exec.Command("gpgconf", "--homedir", home, "--kill", "gpg-agent").Run()
}

// TestExecOutputFileHeldByWhatAStageLeftBehind: the output file is handed
// to the last stage directly, so no end of file tells when its writers are
// done. A writer the stage left in the background (`zfs send ... &` in a
// shell stage) was killed at the stage's end and a cut file committed with
// exit 0 (0 of 2000 bytes here); it is now waited for. One that only holds
// the file without writing is the stall of a held output, as for a pipe.
func TestExecOutputFileHeldByWhatAStageLeftBehind(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.bin")
	job := writeFile(t, dir, "writer.toml", `
[input]
path = "none"
[[stage]]
shell = "(sleep 0.2; head -c 1000 /dev/zero; sleep 1.5; head -c 1000 /dev/zero) &"
stderr = "discard"
`)
	res := runPipespool(t, runOpts{}, "exec", job, "-o", out)
	if res.Code != 0 {
		t.Fatalf("background writer: exit %d: %s", res.Code, res.Stderr)
	}
	if fi, err := os.Stat(out); err != nil || fi.Size() != 2000 {
		t.Fatalf("background writer: output %v %v, want 2000 bytes", fi, err)
	}

	sleepArg := fmt.Sprintf("300.%d", time.Now().UnixNano()%1000000)
	job = writeFile(t, dir, "holder.toml", fmt.Sprintf(`
stall_timeout = "1s"
on_stall = "kill"
[[stage]]
name = "leaver"
shell = "cat; sleep %s &"
stderr = "discard"
`, sleepArg))
	out2 := filepath.Join(dir, "out2.bin")
	rp := filepath.Join(dir, "report.json")
	res = runPipespool(t, runOpts{Stdin: strings.NewReader("hello\n"), Timeout: 30 * time.Second}, "exec", job, "-o", out2, "--report", rp)
	if res.Code != 1 {
		t.Fatalf("holder: exit %d, want 1\nstderr: %s", res.Code, res.Stderr)
	}
	rep := readReport(t, rp)
	if rep.RootCause != "leaver" || !strings.Contains(rep.Message, "(sleep "+sleepArg+") still holds its stdout") {
		t.Errorf("holder: root %q message %q", rep.RootCause, rep.Message)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "out2") || strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("holder: %s left", e.Name())
		}
	}
	if left := processesWithMarker(sleepArg); len(left) > 0 {
		t.Errorf("holder left running: %v", left)
	}
}

// TestExecFailureOfWhatAStageLeftRunning: a shell stage whose work is done
// by a process it left running in its group (`(cat; exit 3) &`, the shape
// of a background writer that hits ENOSPC) exits 0 at once; the process
// fails later, after its parent is gone, and only pipespool (its
// subreaper) sees that. The run used to report success on whatever that
// process wrote. Now the stage failed, named with the process and its
// status; the output file is not committed. A left-behind process that
// exits 0 changes nothing.
func TestExecFailureOfWhatAStageLeftRunning(t *testing.T) {
	for _, tc := range []struct {
		name, shell, output string
		code                int
	}{
		// A background command's stdin is /dev/null unless redirected:
		// fd 3 carries the stage's stdin to it.
		{"output file, exit 3", "exec 3<&0; (cat <&3 3<&-; exit 3) &", "file", 1},
		{"stdout pipe, exit 3", "exec 3<&0; (cat <&3 3<&-; exit 3) &", "-", 1},
		{"stdout pipe, killed by SIGUSR1", "exec 3<&0; (cat <&3 3<&-; exec sh -c 'kill -USR1 $$') &", "-", 1},
		{"output file, exit 0", "exec 3<&0; (cat <&3 3<&-; exit 0) &", "file", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			job := writeFile(t, dir, "job.toml", fmt.Sprintf(`
[[stage]]
name = "bgwriter"
shell = %q
`, tc.shell))
			out := filepath.Join(dir, "out.bin")
			if tc.output == "-" {
				out = "-"
			}
			rp := filepath.Join(dir, "report.json")
			res := runPipespool(t, runOpts{Stdin: strings.NewReader("payload\n"), Timeout: 30 * time.Second},
				"exec", job, "-o", out, "--report", rp)
			if res.Code != tc.code {
				t.Fatalf("exit %d, want %d\nstderr: %s", res.Code, tc.code, res.Stderr)
			}
			rep := readReport(t, rp)
			if tc.code == 0 {
				if rep.Result != "success" {
					t.Fatalf("result %q, want success: %s", rep.Result, rep.Message)
				}
				return
			}
			if rep.Result != "failed" || rep.RootCause != "bgwriter" || !strings.Contains(rep.Message, "left running by its main process") {
				t.Errorf("result %q root cause %q message %q; want failed, bgwriter, naming the process left running", rep.Result, rep.RootCause, rep.Message)
			}
			if tc.output == "file" {
				if _, err := os.Stat(out); !os.IsNotExist(err) {
					t.Errorf("the output was committed (stat: %v)", err)
				}
			}
		})
	}
}
