package integration

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipespool/pipespool/queue"
)

// multiQueues makes queues dir/NAME for each name, with n command packets
// each (payload "NAME-i\n") made by pipespool prepare and written by
// pipespool queue-write, and returns their paths.
func multiQueues(t *testing.T, dir string, n int, names ...string) []string {
	t.Helper()
	var qs []string
	for _, name := range names {
		q := filepath.Join(dir, name)
		must(t, dir, nil, nil, pipespoolBin, "queue-init", "-q", q)
		for i := 1; i <= n; i++ {
			p := must(t, dir, []byte(fmt.Sprintf("%s-%d\n", name, i)), nil, pipespoolBin, "prepare", "-s", q+".seq", "-i", "-")
			must(t, dir, []byte(p), nil, pipespoolBin, "queue-write", "-q", q)
		}
		qs = append(qs, q)
	}
	return qs
}

// nextseqOf reads a queue's nextseq.
func nextseqOf(t *testing.T, q string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(readFile(t, filepath.Join(q, "nextseq"))))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// appendPayload is a command that appends its payload to DIR/out, DIR being
// the queue's parent, named after the queue.
var appendPayload = []string{"sh", "--", "-c", `cat >>"$FSPL_JOB_QUEUEDIR.out"`}

// TestQueueMultiCommandMode: -q repeated in command mode runs every queue
// in its own order, prints nothing on success, and leaves queues fspl
// reads as processed.
func TestQueueMultiCommandMode(t *testing.T) {
	fspl := needFspl(t)
	dir := t.TempDir()
	qs := multiQueues(t, dir, 4, "a", "b", "c")
	if out := must(t, dir, nil, nil, fspl, "queue-ls", "-q", qs[1]); strings.Count(out, "\n") != 5 {
		t.Fatalf("fspl queue-ls of a pipespool queue before the run:\n%s", out)
	}
	args := []string{"queue-process", "--parallel", "2"}
	for _, q := range qs {
		args = append(args, "-q", q)
	}
	r := run(t, dir, nil, nil, pipespoolBin, append(args, appendPayload...)...)
	if r.code != 0 || r.err != "" || r.out != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 0 and nothing printed", r.code, r.out, r.err)
	}
	for _, q := range qs {
		name := filepath.Base(q)
		want := ""
		for i := 1; i <= 4; i++ {
			want += fmt.Sprintf("%s-%d\n", name, i)
		}
		if got := readFile(t, q+".out"); got != want {
			t.Errorf("queue %s ran %q, want %q in order", name, got, want)
		}
		if n := nextseqOf(t, q); n != 5 {
			t.Errorf("queue %s: nextseq %d, want 5", name, n)
		}
	}
	// fspl sees the queue processed: no job left, its next number 5.
	if out := must(t, dir, nil, nil, fspl, "queue-ls", "-q", qs[1]); strings.Count(out, "\n") != 1 {
		t.Errorf("fspl queue-ls after the run:\n%s", out)
	}
	if got := strings.TrimSpace(must(t, dir, nil, nil, fspl, "queue-get-next", "-q", qs[1])); got != "5" {
		t.Errorf("fspl queue-get-next: %q", got)
	}
}

// TestQueueMultiPipelineModePositional: directories as arguments, each
// with its pipespool.toml; one without is that queue's error, named, and
// the others run.
func TestQueueMultiPipelineModePositional(t *testing.T) {
	dir := t.TempDir()
	qs := multiQueues(t, dir, 2, "a", "b", "c")
	for _, q := range []string{qs[0], qs[2]} {
		writeFile(t, q, "pipespool.toml", fmt.Sprintf("[[stage]]\nname = \"keep\"\ncommand = [\"sh\", \"-c\", \"cat >>%s.out\"]\n", q))
	}
	// A glob with a trailing slash, as /backup/queues/*/ gives it.
	r := run(t, dir, nil, nil, pipespoolBin, "queue-process", "a/", "b/", "c/")
	if r.code != 2 {
		t.Fatalf("exit %d, want 2 (queue b has no job file)\nstderr: %s", r.code, r.err)
	}
	lines := strings.Split(strings.TrimSpace(r.err), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "pipespool: queue b: ") || !strings.Contains(lines[0], "no COMMAND, no --job and no b/pipespool.toml") ||
		!strings.Contains(lines[1], "1 of 3 queues did not succeed: 1 failed (b)") {
		t.Errorf("stderr: want one line for queue b and a summary, got:\n%s", r.err)
	}
	for _, q := range []string{qs[0], qs[2]} {
		name := filepath.Base(q)
		if got := readFile(t, q+".out"); got != name+"-1\n"+name+"-2\n" {
			t.Errorf("queue %s: %q", name, got)
		}
	}
	if n := nextseqOf(t, qs[1]); n != 1 {
		t.Errorf("queue b moved to %d", n)
	}

	// --job applies to every queue, b included.
	job := writeFile(t, dir, "job.toml", "[[stage]]\nname = \"keep\"\ncommand = [\"sh\", \"-c\", \"cat >>\\\"$FSPL_JOB_QUEUEDIR.job\\\"\"]\n")
	makeMore := multiQueues(t, dir, 1, "d")
	r = run(t, dir, nil, nil, pipespoolBin, "queue-process", "--job", job, "b", "d")
	if r.code != 0 || r.err != "" {
		t.Fatalf("--job: exit %d\nstderr: %s", r.code, r.err)
	}
	if got := readFile(t, qs[1]+".job") + readFile(t, makeMore[0]+".job"); got != "b-1\nb-2\nd-1\n" {
		t.Errorf("--job over b and d ran %q", got)
	}
}

// TestQueueMultiFailingQueueReport: a queue whose second job fails stops
// there (Retry) and the others finish; exit 1; the report has one entry
// per queue and the metrics one series per queue.
func TestQueueMultiFailingQueueReport(t *testing.T) {
	dir := t.TempDir()
	qs := multiQueues(t, dir, 3, "a", "bad", "c")
	// The second job of "bad" fails: its payload says so.
	cmd := []string{"sh", "--", "-c", `p=$(cat); [ "$p" != bad-2 ] && echo "$p" >>"$FSPL_JOB_QUEUEDIR.out"`}
	rep, prom := filepath.Join(dir, "r.json"), filepath.Join(dir, "m.prom")
	args := []string{"queue-process", "--report", rep, "--metrics-file", prom}
	for _, q := range qs {
		args = append(args, "-q", q)
	}
	r := run(t, dir, nil, nil, pipespoolBin, append(args, cmd...)...)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1\nstderr: %s", r.code, r.err)
	}
	if !strings.Contains(r.err, "pipespool: queue "+qs[1]+": job 2 (") || !strings.Contains(r.err, "1 of 3 queues did not succeed: 1 failed ("+qs[1]+")") {
		t.Errorf("stderr:\n%s", r.err)
	}
	for q, want := range map[string]int{qs[0]: 4, qs[1]: 2, qs[2]: 4} {
		if n := nextseqOf(t, q); n != want {
			t.Errorf("%s: nextseq %d, want %d", q, n, want)
		}
	}
	m := validateReportSchema(t, rep, "queue-multi-report.schema.json")
	if m["result"] != "failed" || m["exit_code"] != 1.0 || m["queues_total"] != 3.0 || m["queues_failed"] != 1.0 || m["queues_succeeded"] != 2.0 {
		t.Errorf("report: %v", m)
	}
	entries := m["queues"].([]any)
	for i, e := range entries {
		e := e.(map[string]any)
		wantResult, wantJobs := "success", 3.0
		if i == 1 {
			wantResult, wantJobs = "failed", 2.0
		}
		if e["queue"] != qs[i] || e["result"] != wantResult || e["jobs_processed"] != wantJobs {
			t.Errorf("entry %d: queue %v result %v jobs %v; want %s %s %v", i, e["queue"], e["result"], e["jobs_processed"], qs[i], wantResult, wantJobs)
		}
	}
	metrics := readFile(t, prom)
	for i, q := range qs {
		want := fmt.Sprintf("pipespool_run_success{job=%q,queue=%q} %d\n", filepath.Base(q), q, map[bool]int{true: 1}[i != 1])
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q:\n%s", want, metrics)
		}
	}
	if strings.Count(metrics, "# TYPE pipespool_run_success gauge\n") != 1 {
		t.Errorf("metrics: one TYPE line per family wanted:\n%s", metrics)
	}
}

// holdQueueLock runs flock(1) on q's nextseq.lock with the command
// "echo locked; REST" in its own process group, until the test ends (or
// release is called), and returns the pid of the flock process once the
// lock is held. With rest "cat >/dev/null" it holds the lock until
// released.
func holdQueueLock(t *testing.T, q, rest string) (pid int, release func()) {
	t.Helper()
	needTool(t, "flock", "apt-get install -y util-linux")
	cmd := exec.Command("flock", filepath.Join(q, "nextseq.lock"), "sh", "-c", "echo locked; "+rest)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := false
	release = func() {
		if done {
			return
		}
		done = true
		stdin.Close()
		// The group: flock's child holds the lock too.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	}
	t.Cleanup(release)
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "locked\n" {
		t.Fatalf("flock: %q %v", line, err)
	}
	return cmd.Process.Pid, release
}

// TestQueueMultiLockedQueueSkipped: a queue another process holds is
// skipped at once with a line naming the holder, the others run, and the
// exit status is 75 when that is all that went wrong; with
// --queue-lock-wait it is tried again after the others.
func TestQueueMultiLockedQueueSkipped(t *testing.T) {
	dir := t.TempDir()
	qs := multiQueues(t, dir, 2, "a", "held", "c")
	pid, release := holdQueueLock(t, qs[1], "cat >/dev/null")
	rep := filepath.Join(dir, "r.json")
	r := run(t, dir, nil, nil, pipespoolBin, append([]string{"queue-process", "--parallel", "3", "--report", rep, "-q", qs[0], "-q", qs[1], "-q", qs[2]}, appendPayload...)...)
	if r.code != 75 {
		t.Fatalf("exit %d, want 75\nstderr: %s", r.code, r.err)
	}
	want := fmt.Sprintf("pipespool: queue %s is locked by another process (pid %d, flock); skipped\n", qs[1], pid)
	if !strings.Contains(r.err, want) || !strings.Contains(r.err, "1 locked by another process, skipped") {
		t.Errorf("stderr: want %q and a summary, got:\n%s", want, r.err)
	}
	if nextseqOf(t, qs[0]) != 3 || nextseqOf(t, qs[2]) != 3 || nextseqOf(t, qs[1]) != 1 {
		t.Errorf("nextseq a %d held %d c %d; want 3 1 3", nextseqOf(t, qs[0]), nextseqOf(t, qs[1]), nextseqOf(t, qs[2]))
	}
	m := validateReportSchema(t, rep, "queue-multi-report.schema.json")
	if e := m["queues"].([]any)[1].(map[string]any); m["result"] != "locked" || e["result"] != "locked" || m["exit_code"] != 75.0 {
		t.Errorf("report: result %v, exit %v, entry %v", m["result"], m["exit_code"], e)
	}

	// A failure elsewhere outranks the lock: exit 1.
	bad := multiQueues(t, dir, 1, "bad")[0]
	r = run(t, dir, nil, nil, pipespoolBin, "queue-process", "-q", qs[1], "-q", bad, "false")
	if r.code != 1 || !strings.Contains(r.err, "is locked by another process") {
		t.Errorf("locked and failed: exit %d, want 1\nstderr: %s", r.code, r.err)
	}

	// --queue-lock-wait: the held queue comes first but is waited for
	// after the others ran; the job of "c" releases the lock.
	fifo := filepath.Join(dir, "release")
	release()
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	holdQueueLock(t, qs[1], "cat "+fifo+" >/dev/null")
	c2 := multiQueues(t, dir, 1, "c2")[0]
	r = run(t, dir, nil, nil, pipespoolBin, "queue-process", "--queue-lock-wait", "60s", "-q", qs[1], "-q", c2,
		"sh", "--", "-c", `cat >>"$FSPL_JOB_QUEUEDIR.out"; [ "$FSPL_JOB_QUEUEDIR" = `+qs[1]+` ] || echo >`+fifo)
	if r.code != 0 || r.err != "" {
		t.Fatalf("--queue-lock-wait: exit %d\nstderr: %s", r.code, r.err)
	}
	if got := readFile(t, qs[1]+".out"); got != "held-1\nheld-2\n" {
		t.Errorf("the held queue, once released, ran %q", got)
	}
}

// TestQueueMultiParallelBound: 200 queues of one job each with
// --parallel 4: at most 4 jobs ever run at once, and 4 do. Each job
// registers itself in active/ (mkdir), counts who is there, and waits
// (at most 2 s) for 4 to be there before it leaves, so that the bound is
// reached whenever pipespool allows it.
func TestQueueMultiParallelBound(t *testing.T) {
	const queues, parallel = 200, 4
	dir := t.TempDir()
	var args []string
	for i := range queues {
		q := filepath.Join(dir, fmt.Sprintf("q%03d", i))
		if err := queue.Init(q, false); err != nil {
			t.Fatal(err)
		}
		h := &queue.Header{Seq: 1, CTimeSecs: uint64(time.Now().Unix())}
		if err := os.WriteFile(filepath.Join(q, "jobs", queue.NewJobFilename()), queue.Encode(h), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-q", q)
	}
	active := filepath.Join(dir, "active")
	if err := os.Mkdir(active, 0o755); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`cd %s || exit 1
me=active/$(basename "$FSPL_JOB_QUEUEDIR")
mkdir "$me" || exit 1
set -- active/*; echo $# >>counts
i=0; while set -- active/*; [ $# -lt %d ] && [ $i -lt 200 ]; do sleep 0.01; i=$((i+1)); done
rmdir "$me"`, dir, parallel)
	r := run(t, dir, nil, nil, pipespoolBin, append(append([]string{"queue-process", "--parallel", strconv.Itoa(parallel)}, args...), "sh", "--", "-c", script)...)
	if r.code != 0 {
		t.Fatalf("exit %d\nstderr: %s", r.code, r.err)
	}
	var counts []int
	for _, l := range strings.Fields(readFile(t, filepath.Join(dir, "counts"))) {
		n, _ := strconv.Atoi(l)
		counts = append(counts, n)
	}
	if len(counts) != queues {
		t.Fatalf("%d jobs ran, want %d", len(counts), queues)
	}
	if mx := slices.Max(counts); mx != parallel {
		t.Errorf("at most %d jobs ran at once, want exactly --parallel %d (counts %v)", mx, parallel, counts)
	}
}

// TestQueueMultiSignal: SIGTERM during a multi-queue run stops the running
// jobs of every queue (their process groups), commits none of them, starts
// no other queue, releases every lock, and exits 143.
func TestQueueMultiSignal(t *testing.T) {
	dir := t.TempDir()
	qs := multiQueues(t, dir, 1, "a", "b", "c")
	marker := fmt.Sprintf("pipespool-multisig-%d", time.Now().UnixNano())
	rep := filepath.Join(dir, "r.json")
	args := []string{"queue-process", "--parallel", "2", "--report", rep}
	for _, q := range qs {
		args = append(args, "-q", q)
	}
	// The marker is in pipespool's command line and in each of the two
	// running jobs' sh.
	sr := startWithStdin(t, nil, marker, 3, append(args, "sh", "--", "-c", "sleep 300 & wait # "+marker)...)
	sr.cmd.Process.Signal(syscall.SIGTERM)
	if code := sr.wait(t); code != 143 {
		t.Errorf("exit %d, want 143\nstderr: %s", code, sr.stderr.String())
	}
	assertNoProcesses(t, marker)
	if !strings.Contains(sr.stderr.String(), "interrupted by SIGTERM: 2 of 3 queues done, 1 not started") {
		t.Errorf("stderr:\n%s", sr.stderr.String())
	}
	for _, q := range qs {
		jobKept(t, q)
		// The lock is free again.
		must(t, dir, nil, nil, pipespoolBin, "queue-get-next", "-q", q)
	}
	m := validateReportSchema(t, rep, "queue-multi-report.schema.json")
	var results []any
	for _, e := range m["queues"].([]any) {
		results = append(results, e.(map[string]any)["result"])
	}
	if m["result"] != "interrupted" || m["exit_code"] != 143.0 || m["queues_not_run"] != 1.0 ||
		!slices.Equal(results, []any{"interrupted", "interrupted", "not_run"}) {
		t.Errorf("report: result %v exit %v not run %v, queues %v", m["result"], m["exit_code"], m["queues_not_run"], results)
	}
}

// TestQueueProcessQueueLockWait: one queue with --queue-lock-wait waits
// for the lock another process holds (it has the lock file open, polling)
// and processes the queue once it is released; without it, exit 75 at once.
func TestQueueProcessQueueLockWait(t *testing.T) {
	dir := t.TempDir()
	q := multiQueues(t, dir, 2, "q")[0]
	_, release := holdQueueLock(t, q, "cat >/dev/null")
	if r := run(t, dir, nil, nil, pipespoolBin, append([]string{"queue-process", q}, appendPayload...)...); r.code != 75 {
		t.Fatalf("without --queue-lock-wait: exit %d, want 75\nstderr: %s", r.code, r.err)
	}
	cmd := exec.Command(pipespoolBin, append([]string{"queue-process", "--queue-lock-wait", "2m", q}, appendPayload...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	// Waiting: it holds the lock file open while it polls for the lock.
	lockFile := filepath.Join(q, "nextseq.lock")
	fdDir := fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid)
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("pipespool ended (%v) while the lock was held\nstderr: %s", err, stderr.String())
		default:
		}
		ents, _ := os.ReadDir(fdDir)
		if slices.ContainsFunc(ents, func(e os.DirEntry) bool {
			l, _ := os.Readlink(filepath.Join(fdDir, e.Name()))
			return l == lockFile
		}) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("pipespool never opened %s", lockFile)
		}
	}
	release()
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("after the lock was released: %v\nstderr: %s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("still waiting 60 s after the lock was released")
	}
	if got := readFile(t, q+".out"); got != "q-1\nq-2\n" {
		t.Errorf("ran %q", got)
	}
}
