package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Regression tests for what the torture harness found (docs/internals/reliability.md).

// regressRun runs job (with $T standing for the torturer binary) n times and
// checks the exit status and the report's root cause each time.
func regressRun(t *testing.T, n int, body string, wantCode int, wantRoot string) {
	t.Helper()
	torturer := buildTorturer(t)
	dir := t.TempDir()
	job := writeFile(t, dir, "job.toml", fmt.Sprintf(body, torturer))
	report := filepath.Join(dir, "report.json")
	for i := 0; i < n; i++ {
		// A report left by the try before must not stand in for a
		// missing one.
		os.Remove(report)
		res := runPipespool(t, runOpts{}, "exec", job, "-o", "none", "--report", report, "--log-level", "error")
		var rep struct {
			RootCause string `json:"root_cause"`
		}
		b, err := os.ReadFile(report)
		if err != nil {
			t.Fatalf("try %d: exit %d and no report: %v\nstderr: %s", i, res.Code, err, res.Stderr)
		}
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatalf("try %d: report does not parse: %v\n%s", i, err, b)
		}
		if res.Code != wantCode || rep.RootCause != wantRoot {
			t.Fatalf("try %d: exit %d root cause %q, want %d %q\nstderr: %s\nreport: %s", i, res.Code, rep.RootCause, wantCode, wantRoot, res.Stderr, b)
		}
	}
}

// TestRegressionProducerFailingAfterConsumerClosedIsRootCause: TORTURE_SEED=1
// run 16. A stage that fails on its own (exit 54) with nothing to write,
// after its consumer closed its stdin, was called a consequence ("its
// consumer had gone") and the run succeeded. Fixed in pump: splice's EPIPE
// on a drained, hung-up source is EOF.
func TestRegressionProducerFailingAfterConsumerClosedIsRootCause(t *testing.T) {
	regressRun(t, 5, `
[[stage]]
command = ["%[1]s", "gen", "300000", "7"]
[[stage]]
name = "fails"
command = ["%[1]s", "exitafter", "1000", "54"]
[[stage]]
command = ["%[1]s", "closein", "0", ""]
allow_partial_read = true
`, 1, "fails")
}

// TestRegressionShellStageExit141AfterConsumerEnded: TORTURE_SEED=2 run 104.
// A shell stage (`cat | cat`) whose consumer chain ended early (a built-in
// that got EPIPE, because `head` downstream may stop reading) exits 141:
// its last command's SIGPIPE, as an exit status. The pump feeding the
// built-in had been stopped (not EPIPE'd) when the built-in ended, so the
// shell stage was not seen as a consequence and was blamed as the root
// cause. Fixed in pipeline: a pump stopped because its consumer was over
// counts as the consumer gone.
func TestRegressionShellStageExit141AfterConsumerEnded(t *testing.T) {
	regressRun(t, 5, `
pipe_size = "64KiB"
[[stage]]
command = ["%[1]s", "gen", "4000000", "3"]
[[stage]]
shell = "cat | tr a-z A-Z | cat"
[[stage]]
builtin = "zstd-compress"
[[stage]]
builtin = "zstd-decompress"
[[stage]]
command = ["head", "-c", "1309"]
allow_partial_read = true
`, 0, "")
}

// TestRegressionZstdEmptyStreamRoundTrip: TORTURE_SEED=2 runs 128 and 158.
// An empty stream through zstd-compress -> zstd-decompress failed ("empty
// input: not a zstd frame"): the compressor wrote no frame, and the
// decompressor judged emptiness by its output. See also the unit test
// stage.TestRegressionZstdEmptyInputRoundTrip.
func TestRegressionZstdEmptyStreamRoundTrip(t *testing.T) {
	regressRun(t, 1, `
[[stage]]
command = ["%[1]s", "gen", "0", "1"]
[[stage]]
builtin = "zstd-compress"
[[stage]]
builtin = "zstd-decompress"
`, 0, "")
}

// TestRegressionBackgroundWorkerOfStoppedConsumer: TORTURE_SEED=3 runs 181,
// 252, 299, 313, 365. A stage whose main process exits 0 at once, leaving a
// background process to copy its input (`exec 3<&0; cat <&3 &`), before a
// consumer that stops reading (allowed): the background cat dies of
// SIGPIPE, the stage's input is left unread, and the stage was blamed for
// a partial read (or, when another stage failed on its own, blamed instead
// of it). Fixed in pipeline: a stage whose consumer ended before its output
// reached EOF is not blamed for leaving input unread.
func TestRegressionBackgroundWorkerOfStoppedConsumer(t *testing.T) {
	regressRun(t, 5, `
pipe_size = "1MiB"
[[stage]]
command = ["%[1]s", "gen", "4000000", "5"]
[[stage]]
shell = "exec 3<&0; cat <&3 3<&- &"
[[stage]]
command = ["%[1]s", "closein", "5", "closed"]
allow_partial_read = true
`, 0, "")
	regressRun(t, 5, `
[[stage]]
command = ["%[1]s", "gen", "4000000", "5"]
[[stage]]
shell = "exec 3<&0; cat <&3 3<&- &"
[[stage]]
name = "fails"
command = ["%[1]s", "exitafter", "100000", "9"]
`, 1, "fails")
	// TORTURE_SEED=20261124 run 3996: the producer before such a stage
	// died of SIGPIPE while nothing was queued for the stage, which was
	// then blamed as the reader that stopped (fixed: a stage whose
	// consumer ended first is walked through, partial or not).
	regressRun(t, 10, `
pipe_size = "8KiB"
[[stage]]
command = ["%[1]s", "gen", "661784", "5"]
[[stage]]
command = ["head", "-c", "400000"]
allow_partial_read = true
[[stage]]
shell = "exec 3<&0; cat <&3 3<&- &"
[[stage]]
command = ["%[1]s", "closein", "0", "x"]
allow_partial_read = true
`, 0, "")
}

// TestRegressionTruncatingStageIsRootCauseNotItsDecoder: found while
// extending the harness with a stage that passes N bytes on and exits 7,
// between zstd-compress and zstd-decompress. The decoder then fails on the
// truncated stream, and whichever stage's end was processed first was
// blamed: the decoder in 15 runs out of 20. Fixed in pipeline: an own
// failure waits for the judgement of the upstream stages that ended before
// its input did.
func TestRegressionTruncatingStageIsRootCauseNotItsDecoder(t *testing.T) {
	regressRun(t, 10, `
[[stage]]
command = ["%[1]s", "gen", "3000000", "11"]
[[stage]]
builtin = "zstd-compress"
[[stage]]
name = "cutter"
command = ["%[1]s", "passafter", "100000", "7"]
[[stage]]
builtin = "zstd-decompress"
[[stage]]
command = ["cat"]
`, 1, "cutter")
}

// TestRegressionUpstreamFailingAfterItsConsumerIsRootCause: CI of
// 2026-12-01, bug 8 in docs/internals/reliability.md. A consumer failed on its own on
// what it read (zstd on a modified OpenPGP message) while its producer,
// still running, was about to fail on its own for the reason (the message's
// integrity check): the consumer was blamed. Here "checker" fails on the
// 1000 bytes "maker" wrote, while maker waits half a second before it fails.
func TestRegressionUpstreamFailingAfterItsConsumerIsRootCause(t *testing.T) {
	regressRun(t, 3, `
[[stage]]
command = ["%[1]s", "gen", "1000", "5"]
[[stage]]
name = "maker"
command = ["sh", "-c", "cat; sleep 0.5; exit 5"]
[[stage]]
name = "checker"
command = ["%[1]s", "exitafter", "1000", "3"]
`, 1, "maker")
}

// TestRegressionKillMarkedCatchesForksInFlight: TORTURE_SEED=20261201 runs
// 4637 and 5989 (SIGKILL, then a setsid stage's escapee found alive after
// the next run). After SIGKILL a `setsid -f` of the killed run was still
// forking its escapee; killMarked scanned /proc once, killed the parent
// after its child was forked and past the scan, and the escapee lived on.
// Here a marked shell forks marked sleeps as fast as it can while they
// are killed: every one of them must be gone.
func TestRegressionKillMarkedCatchesForksInFlight(t *testing.T) {
	marker := fmt.Sprintf("killmarked%dx", os.Getpid())
	bin := filepath.Join(t.TempDir(), "bin-"+marker)
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(sleep, filepath.Join(bin, "sleep")); err != nil {
		t.Fatal(err)
	}
	// At most 500 sleeps: bounded even if nothing kills the shell.
	sh := exec.Command("sh", "-c", `i=0; while [ $i -lt 500 ]; do "$0" 30 & i=$((i+1)); done; wait`, filepath.Join(bin, "sleep"))
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { sh.Wait(); close(done) }()
	defer func() {
		killMarked(marker)
		<-done
	}()
	// Kill once the shell is forking: a few sleeps run.
	deadline := time.Now().Add(10 * time.Second)
	for len(processesWithMarker(marker)) < 5 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if left := killMarked(marker); len(left) > 0 {
		t.Fatalf("killMarked returned with processes alive: %v", left)
	}
	assertNoProcesses(t, marker)
}
