package integration

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pipespool/pipespool/queue"
)

// needTool fails the test when a tool it needs is missing.
func needTool(t testing.TB, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is needed for this test and is not installed: %s", name, install)
	}
	return p
}

func needFspl(t testing.TB) string { return needTool(t, "fspl", "apt-get install -y filespooler") }

type result struct {
	out, err string
	code     int
}

// run runs a program in dir with stdin and extra environment.
func run(t testing.TB, dir string, stdin []byte, env []string, name string, args ...string) result {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return result{out.String(), errb.String(), code}
}

// must runs and fails the test on a non-zero exit.
func must(t testing.TB, dir string, stdin []byte, env []string, name string, args ...string) string {
	t.Helper()
	r := run(t, dir, stdin, env, name, args...)
	if r.code != 0 {
		t.Fatalf("%s %s: exit %d\nstderr: %s", filepath.Base(name), strings.Join(args, " "), r.code, r.err)
	}
	return r.out
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// packetSpec is one packet of the interop tests.
type packetSpec struct {
	kind    string // "cmd", "nop", "fail"
	payload []byte // nil: no -i
	params  []string
	env     []string // FSPL_SET_...=...
}

func interopPackets(t testing.TB) []packetSpec {
	return []packetSpec{
		{kind: "cmd", payload: []byte("one\n"), params: []string{"a1", "pé\u0080ü", "with space", ""},
			env: []string{"FSPL_SET_ML=line1\nline2\n", "FSPL_SET_X=y=z"}},
		{kind: "cmd"}, // no payload at all
		{kind: "nop"},
		{kind: "cmd", payload: randomBytes(t, 1<<20+7)},
		{kind: "fail"},
		{kind: "cmd", payload: []byte{}, params: []string{"--looks-like-a-flag"}},
		{kind: "cmd", payload: []byte("six")},
	}
}

// prepare makes the packets with tool (fspl or pipespool) and returns them.
func prepare(t testing.TB, tool, dir string, specs []packetSpec) [][]byte {
	t.Helper()
	seq := filepath.Join(dir, "seq-"+filepath.Base(tool))
	var out [][]byte
	for i, s := range specs {
		var args []string
		switch s.kind {
		case "nop":
			args = []string{"prepare-nop", "-s", seq}
		case "fail":
			args = []string{"prepare-fail", "-s", seq}
		default:
			args = []string{"prepare", "-s", seq}
			if s.payload != nil {
				p := filepath.Join(dir, fmt.Sprintf("payload-%d", i))
				if err := os.WriteFile(p, s.payload, 0o644); err != nil {
					t.Fatal(err)
				}
				args = append(args, "-i", p)
			}
			if len(s.params) > 0 {
				args = append(append(args, "--"), s.params...)
			}
		}
		out = append(out, []byte(must(t, dir, nil, s.env, tool, args...)))
	}
	return out
}

// writeQueue initializes dir/q with tool and writes packets in a shuffled
// order with tool's queue-write.
func writeQueue(t testing.TB, tool, dir string, packets [][]byte) {
	t.Helper()
	must(t, dir, nil, nil, tool, "queue-init", "-q", "q")
	order := mrand.Perm(len(packets))
	for _, i := range order {
		must(t, dir, packets[i], nil, tool, "queue-write", "-q", "q")
	}
}

func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	must(t, "/", nil, nil, "cp", "-a", src, dst)
}

func listJobs(t testing.TB, qdir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(qdir, "jobs"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The command of the interop tests prints everything a job sees.
var dumpCommand = []string{"sh", "--", "-c", `echo "argv: $*"; env | grep '^FSPL_' | sort; echo "payload: $(sha256sum)"`, "x"}

// processBoth processes copies of the same queue with fspl and pipespool,
// in dirs that look alike (the queue is "q" relative to each), and
// compares what the jobs saw and what is left.
func processBoth(t *testing.T, dir string, extra ...string) {
	t.Helper()
	fsplDir, psDir := filepath.Join(dir, "with-fspl"), filepath.Join(dir, "with-pipespool")
	for _, d := range []string{fsplDir, psDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		copyDir(t, filepath.Join(dir, "q"), filepath.Join(d, "q"))
	}
	args := append(append([]string{"queue-process", "-q", "q"}, extra...), dumpCommand...)
	rf := run(t, fsplDir, nil, nil, needFspl(t), args...)
	rp := run(t, psDir, nil, nil, pipespoolBin, args...)
	if rf.code != rp.code {
		t.Errorf("exit status: fspl %d, pipespool %d\nfspl stderr: %s\npipespool stderr: %s", rf.code, rp.code, rf.err, rp.err)
	}
	if rf.out != rp.out {
		t.Errorf("jobs saw different things:\n--- fspl\n%s\n--- pipespool\n%s", rf.out, rp.out)
	}
	if f, p := readFile(t, filepath.Join(fsplDir, "q/nextseq")), readFile(t, filepath.Join(psDir, "q/nextseq")); f != p {
		t.Errorf("nextseq: fspl %q, pipespool %q", f, p)
	}
	if f, p := listJobs(t, filepath.Join(fsplDir, "q")), listJobs(t, filepath.Join(psDir, "q")); strings.Join(f, " ") != strings.Join(p, " ") {
		t.Errorf("jobs left: fspl %v, pipespool %v", f, p)
	}
	if !strings.Contains(rp.out, "FSPL_SEQ=") {
		t.Errorf("no job ran: %q", rp.out)
	}
}

func TestQueueFsplPreparePipespoolProcess(t *testing.T) {
	fspl := needFspl(t)
	for _, extra := range [][]string{
		{"--on-error", "Delete"},
		{"--on-error", "Delete", "--allow-job-params"},
		{"--on-error", "Leave", "--ignore-payload", "-n", "4"},
		{}, // Retry: stops at the Fail packet with exit 1
		{"--order-by", "Timestamp", "--on-error", "Delete"},
	} {
		t.Run(strings.Join(extra, " "), func(t *testing.T) {
			dir := t.TempDir()
			writeQueue(t, fspl, dir, prepare(t, fspl, dir, interopPackets(t)))
			processBoth(t, dir, extra...)
		})
	}
}

func TestQueuePipespoolPrepareFsplProcess(t *testing.T) {
	fspl := needFspl(t)
	dir := t.TempDir()
	packets := prepare(t, pipespoolBin, dir, interopPackets(t))
	writeQueue(t, pipespoolBin, dir, packets)
	// fspl reads what pipespool wrote, and lists it as pipespool does.
	if f, p := must(t, dir, nil, nil, fspl, "queue-ls", "-q", "q"), must(t, dir, nil, nil, pipespoolBin, "queue-ls", "-q", "q"); f != p {
		t.Errorf("queue-ls differs:\n--- fspl\n%s--- pipespool\n%s", f, p)
	}
	for seq := 1; seq <= len(packets); seq++ {
		id := strconv.Itoa(seq)
		if f, p := must(t, dir, nil, nil, fspl, "queue-info", "-q", "q", "-j", id), must(t, dir, nil, nil, pipespoolBin, "queue-info", "q", "-j", id); f != p {
			t.Errorf("queue-info -j %s differs:\n--- fspl\n%s--- pipespool\n%s", id, f, p)
		}
		if f, p := run(t, dir, nil, nil, fspl, "queue-payload", "-q", "q", "-j", id), run(t, dir, nil, nil, pipespoolBin, "queue-payload", "q", "-j", id); f.out != p.out || f.code != p.code {
			t.Errorf("queue-payload -j %s differs (exit %d/%d)", id, f.code, p.code)
		}
	}
	for i, p := range packets {
		if f, q := run(t, dir, p, nil, fspl, "stdin-info"), run(t, dir, p, nil, pipespoolBin, "stdin-info"); f.out != q.out {
			t.Errorf("stdin-info of packet %d differs:\n--- fspl\n%s--- pipespool\n%s", i, f.out, q.out)
		}
	}
	if f, p := must(t, dir, nil, nil, fspl, "queue-get-next", "-q", "q"), must(t, dir, nil, nil, pipespoolBin, "queue-get-next", "q"); f != p {
		t.Errorf("queue-get-next: fspl %q pipespool %q", f, p)
	}
	processBoth(t, dir, "--on-error", "Delete", "--allow-job-params")
}

// TestPrepareBytesMatchFspl compares pipespool's and fspl's packets byte for
// byte (with fspl's creation time put into pipespool's header).
func TestPrepareBytesMatchFspl(t *testing.T) {
	fspl := needFspl(t)
	dir := t.TempDir()
	specs := interopPackets(t)
	fp, pp := prepare(t, fspl, dir, specs), prepare(t, pipespoolBin, dir, specs)
	for i := range specs {
		hf, offF, err := queue.DecodeHeader(fp[i])
		if err != nil {
			t.Fatalf("fspl packet %d: %v", i, err)
		}
		hp, offP, err := queue.DecodeHeader(pp[i])
		if err != nil {
			t.Fatalf("pipespool packet %d: %v", i, err)
		}
		hp.CTimeSecs, hp.CTimeNanos = hf.CTimeSecs, hf.CTimeNanos
		if !bytes.Equal(queue.Encode(hp), fp[i][:offF]) {
			t.Errorf("packet %d: header differs from fspl's:\n%x\n%x", i, queue.Encode(hp), fp[i][:offF])
		}
		if !bytes.Equal(fp[i][offF:], pp[i][offP:]) {
			t.Errorf("packet %d: payload differs", i)
		}
	}
	// The seqfiles advanced alike.
	if f, p := readFile(t, filepath.Join(dir, "seq-fspl")), readFile(t, filepath.Join(dir, "seq-pipespool")); f != p {
		t.Errorf("seqfile: fspl %q pipespool %q", f, p)
	}
}

func TestQueueZstdEncoded(t *testing.T) {
	fspl := needFspl(t)
	zstd := needTool(t, "zstd", "apt-get install -y zstd")
	dir := t.TempDir()
	packets := prepare(t, fspl, dir, interopPackets(t))
	for i, p := range packets {
		packets[i] = []byte(must(t, dir, p, nil, zstd, "-q", "-c"))
	}
	writeQueue(t, fspl, dir, packets)
	processBoth(t, dir, "--on-error", "Delete", "-d", "zstd -d")
	// The built-in decoder sees the same as the shell one.
	d2 := filepath.Join(dir, "builtin")
	os.Mkdir(d2, 0o755)
	copyDir(t, filepath.Join(dir, "q"), filepath.Join(d2, "q"))
	args := append([]string{"queue-process", "-q", "q", "--on-error", "Delete", "-d", "zstd"}, dumpCommand...)
	rb := run(t, d2, nil, nil, pipespoolBin, args...)
	d3 := filepath.Join(dir, "ref")
	os.Mkdir(d3, 0o755)
	copyDir(t, filepath.Join(dir, "q"), filepath.Join(d3, "q"))
	rs := run(t, d3, nil, nil, pipespoolBin, append([]string{"queue-process", "-q", "q", "--on-error", "Delete", "-d", "zstd -d"}, dumpCommand...)...)
	if rb.out != rs.out || rb.code != rs.code || rb.out == "" {
		t.Errorf("-d zstd and -d 'zstd -d' differ:\n--- builtin\n%s\n--- shell\n%s\nstderr: %s", rb.out, rs.out, rb.err)
	}
	if f, p := must(t, dir, nil, nil, fspl, "queue-ls", "-q", "q", "-d", "zstd -d"), must(t, dir, nil, nil, pipespoolBin, "queue-ls", "q", "-d", "zstd"); f != p {
		t.Errorf("queue-ls -d differs:\n%s\n%s", f, p)
	}
}

func TestQueueLargePayload(t *testing.T) {
	size := 256 << 20
	if testing.Short() {
		size = 32 << 20
	}
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.Reader, int64(size)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	want := hex.EncodeToString(h.Sum(nil))
	must(t, dir, nil, nil, pipespoolBin, "queue-init", "q")
	sh := fmt.Sprintf("%s prepare -s seq -i big | %s queue-write q", pipespoolBin, pipespoolBin)
	must(t, dir, nil, nil, "sh", "-c", sh)
	out := must(t, dir, nil, nil, pipespoolBin, "queue-process", "q", "sha256sum")
	if !strings.HasPrefix(out, want) {
		t.Fatalf("payload hash %q, want %s", out, want)
	}
}

func TestQueueLockExcludesFspl(t *testing.T) {
	fspl := needFspl(t)
	dir := t.TempDir()
	must(t, dir, nil, nil, pipespoolBin, "queue-init", "q")
	must(t, dir, nil, nil, "sh", "-c", pipespoolBin+" prepare -s seq | "+pipespoolBin+" queue-write q")

	// Held by this process (flock, as fspl takes it): pipespool exits 75.
	lf, err := os.OpenFile(filepath.Join(dir, "q/nextseq.lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"queue-process", "q", "true"}, {"queue-get-next", "q"}, {"queue-set-next", "q", "3"}} {
		if r := run(t, dir, nil, nil, pipespoolBin, args...); r.code != 75 || !strings.Contains(r.err, "locked") {
			t.Errorf("%v with the lock held: exit %d, stderr %q; want 75", args, r.code, r.err)
		}
	}
	lf.Close()

	// Held by pipespool (a job is running): fspl fails.
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(pipespoolBin, "queue-process", "q", "sh", "--", "-c", "echo started; cat fifo >/dev/null")
	cmd.Dir = dir
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, len("started\n"))
	if _, err := io.ReadFull(stdout, line); err != nil {
		t.Fatal(err)
	}
	r := run(t, dir, nil, nil, fspl, "queue-process", "-q", "q", "true")
	if r.code == 0 || !strings.Contains(r.err, "Resource temporarily unavailable") {
		t.Errorf("fspl while pipespool processes: exit %d, stderr %q", r.code, r.err)
	}
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("pipespool queue-process: %v", err)
	}
	if got := readFile(t, filepath.Join(dir, "q/nextseq")); got != "2\n" {
		t.Errorf("nextseq %q after the job", got)
	}
}

func TestQueueBadFilesSkippedAndDuplicates(t *testing.T) {
	dir := t.TempDir()
	must(t, dir, nil, nil, pipespoolBin, "queue-init", "q")
	p1 := must(t, dir, nil, nil, pipespoolBin, "prepare", "-s", "seq")
	p2 := must(t, dir, []byte("two"), nil, pipespoolBin, "prepare", "-s", "seq", "-i", "-")
	must(t, dir, []byte(p1), nil, pipespoolBin, "queue-write", "q")
	must(t, dir, []byte(p2), nil, pipespoolBin, "queue-write", "q")
	// Hostile files from the fuzz corpus, under job names.
	seeds, _ := filepath.Glob("../queue/testdata/fuzz/FuzzDecodePacket/hostile-*")
	if len(seeds) == 0 {
		t.Fatal("no hostile seeds in ../queue/testdata/fuzz/FuzzDecodePacket")
	}
	for _, s := range seeds {
		b := corpusBytes(t, s)
		if err := os.WriteFile(filepath.Join(dir, "q/jobs", "fspl-"+filepath.Base(s)+".fspl"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "q/jobs/not-a-job.txt"), []byte("x"), 0o644)
	r := run(t, dir, nil, nil, pipespoolBin, "queue-ls", "q")
	if r.code != 0 || strings.Count(r.out, "\n") != 3 {
		t.Fatalf("queue-ls: exit %d\n%s\n%s", r.code, r.out, r.err)
	}
	if !strings.Contains(r.err, "fspl-hostile-len-2p63.fspl") || !strings.Contains(r.err, "exceeds the limit") {
		t.Errorf("the skipped files are not named with a reason:\n%s", r.err)
	}
	out := must(t, dir, nil, nil, pipespoolBin, "queue-process", "q", "cat")
	if out != "two" {
		t.Errorf("queue-process output %q", out)
	}
	// Two packets with seq 3: an error naming both.
	p3 := must(t, dir, nil, nil, pipespoolBin, "prepare", "-s", "seq")
	must(t, dir, []byte(p3), nil, pipespoolBin, "queue-write", "q")
	must(t, dir, []byte(p3), nil, pipespoolBin, "queue-write", "q")
	r = run(t, dir, nil, nil, pipespoolBin, "queue-process", "q", "true")
	if last := lastLine(r.err); r.code != 1 || !strings.Contains(last, "two jobs have sequence number 3") || strings.Count(last, "q/jobs/fspl-") != 2 {
		t.Errorf("duplicate seq: exit %d, stderr %q", r.code, r.err)
	}
	// stdin-* on a bad packet: exit 2 with the reason.
	for _, c := range []string{"stdin-info", "stdin-payload"} {
		if r := run(t, dir, []byte("garbage"), nil, pipespoolBin, c); r.code != 2 || !strings.Contains(r.err, "packet") {
			t.Errorf("%s on garbage: exit %d, %q", c, r.code, r.err)
		}
	}
	if r := run(t, dir, []byte("garbage"), nil, pipespoolBin, "stdin-process", "true"); r.code != 2 {
		t.Errorf("stdin-process on garbage: exit %d, %q", r.code, r.err)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// corpusBytes reads a "go test fuzz v1" file holding one []byte.
func corpusBytes(t testing.TB, path string) []byte {
	t.Helper()
	lines := strings.SplitN(readFile(t, path), "\n", 3)
	s := strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")")
	u, err := strconv.Unquote(s)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return []byte(u)
}

// makeQueue writes n command packets (seq 1..n) straight into dir/q.
func makeQueue(t testing.TB, dir string, n, payload int) {
	t.Helper()
	must(t, dir, nil, nil, pipespoolBin, "queue-init", "q")
	for i := 1; i <= n; i++ {
		h := &queue.Header{Seq: uint64(i), CTimeSecs: uint64(time.Now().Unix())}
		b := append(queue.Encode(h), bytes.Repeat([]byte{'x'}, payload)...)
		if err := os.WriteFile(filepath.Join(dir, "q/jobs", queue.NewJobFilename()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func randDuration(max time.Duration) time.Duration {
	n, _ := rand.Int(rand.Reader, big.NewInt(int64(max)))
	return time.Duration(n.Int64())
}

// killAfter starts cmd and SIGKILLs it after d (a random crash point; the
// sleep picks the instant, it does not wait for an event). It reports
// whether the process was killed before it finished.
func killAfter(t testing.TB, cmd *exec.Cmd, d time.Duration) bool {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%v exited before the kill: %v", cmd.Args, err)
		}
		return false
	case <-time.After(d):
		cmd.Process.Signal(syscall.SIGKILL)
		err := <-done
		if ee, ok := err.(*exec.ExitError); ok && ee.Sys().(syscall.WaitStatus).Signaled() {
			return true
		}
		if err != nil {
			t.Fatalf("%v: %v", cmd.Args, err)
		}
		return false
	}
}

func crashBudget() (trials int, budget time.Duration) {
	if testing.Short() {
		return 60, 10 * time.Second
	}
	return 300, 25 * time.Second
}

// TestQueueWriteCrash kills queue-write at random instants: a job file is
// either absent or complete, and one that queue-write reported is present.
func TestQueueWriteCrash(t *testing.T) {
	dir := t.TempDir()
	must(t, dir, nil, nil, pipespoolBin, "queue-init", "q")
	packet := append(queue.Encode(&queue.Header{Seq: 7}), randomBytes(t, 4<<20)...)
	pf := filepath.Join(dir, "packet")
	if err := os.WriteFile(pf, packet, 0o644); err != nil {
		t.Fatal(err)
	}
	trials, budget := crashBudget()
	deadline := time.Now().Add(budget)
	completed, killed := 0, 0
	for i := 0; i < trials && time.Now().Before(deadline); i++ {
		in, err := os.Open(pf)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(pipespoolBin, "queue-write", "q")
		cmd.Dir, cmd.Stdin = dir, in
		if killAfter(t, cmd, randDuration(30*time.Millisecond)) {
			killed++
		} else {
			completed++
		}
		in.Close()
	}
	n := 0
	for _, name := range listJobs(t, filepath.Join(dir, "q")) {
		if !queue.IsJobFilename(name) {
			continue
		}
		n++
		if b := readFile(t, filepath.Join(dir, "q/jobs", name)); b != string(packet) {
			t.Errorf("%s is partial: %d of %d bytes", name, len(b), len(packet))
		}
	}
	if n < completed || n > completed+killed {
		t.Errorf("%d job files after %d completed and %d killed queue-writes", n, completed, killed)
	}
	t.Logf("queue-write: %d killed, %d completed, %d complete job files, no partial one", killed, completed, n)
}

// TestQueueProcessCrash kills queue-process at random instants and re-runs
// it: every job runs, in order, at least once; none is skipped; nextseq
// ends past the last job.
func TestQueueProcessCrash(t *testing.T) {
	const jobs = 12
	trials, budget := crashBudget()
	deadline := time.Now().Add(budget)
	kills, runs := 0, 0
	for trial := 0; trial < trials/6 && time.Now().Before(deadline); trial++ {
		dir := t.TempDir()
		makeQueue(t, dir, jobs, 1000)
		for attempt := 0; ; attempt++ {
			// A child the killed run was starting (forked, not yet
			// exec'd) holds a copy of the lock for a moment; a re-run
			// then rightly exits 75. Wait until nobody has it open.
			waitLockFree(t, filepath.Join(dir, "q/nextseq.lock"))
			cmd := exec.Command(pipespoolBin, "queue-process", "q", "sh", "--", "-c", `echo $FSPL_SEQ >> log`)
			cmd.Dir = dir
			runs++
			if attempt < 8 && killAfter(t, cmd, randDuration(40*time.Millisecond)) {
				kills++
				continue
			}
			if attempt >= 8 {
				if err := cmd.Run(); err != nil {
					t.Fatalf("final run: %v", err)
				}
			}
			break
		}
		checkLog(t, dir, jobs)
	}
	t.Logf("queue-process: %d runs, %d killed at random points, every job ran in order", runs, kills)
}

func checkLog(t testing.TB, dir string, jobs int) {
	t.Helper()
	seen := map[int]bool{}
	var first []int
	for _, l := range strings.Fields(readFile(t, filepath.Join(dir, "log"))) {
		n, _ := strconv.Atoi(l)
		if n < 1 || n > jobs {
			t.Fatalf("job %d ran, not in the queue", n)
		}
		if !seen[n] {
			seen[n] = true
			first = append(first, n)
		}
	}
	if len(first) != jobs || !sort.IntsAreSorted(first) {
		t.Fatalf("jobs ran (first time) in order %v, want 1..%d", first, jobs)
	}
	if got := readFile(t, filepath.Join(dir, "q/nextseq")); got != strconv.Itoa(jobs+1)+"\n" {
		t.Fatalf("nextseq %q, want %d", got, jobs+1)
	}
	// A crash between the nextseq commit and the unlink may leave a job
	// file below nextseq: never run again, never partial.
	for _, name := range listJobs(t, filepath.Join(dir, "q")) {
		if !queue.IsJobFilename(name) {
			continue
		}
		h, _, err := queue.DecodeHeader([]byte(readFile(t, filepath.Join(dir, "q/jobs", name))))
		if err != nil || h.Seq > uint64(jobs) {
			t.Fatalf("leftover %s: %v", name, err)
		}
	}
}

// TestQueuePipelineMode runs fspl-made packets through a pipeline: from
// DIR/pipespool.toml, and from --job with a built-in stage, against the
// same jobs run as a command.
func TestQueuePipelineMode(t *testing.T) {
	fspl := needFspl(t)
	zstd := needTool(t, "zstd", "apt-get install -y zstd")
	dir := t.TempDir()
	specs := []packetSpec{
		{kind: "cmd", payload: randomBytes(t, 300000), params: []string{"p1"}, env: []string{"FSPL_SET_A=b\nc"}},
		{kind: "nop"},
		{kind: "cmd", payload: []byte("second\n")},
	}
	// The payloads are zstd-compressed, the packets not.
	for i := range specs {
		if specs[i].payload != nil {
			p := filepath.Join(dir, "raw")
			os.WriteFile(p, specs[i].payload, 0o644)
			specs[i].payload = []byte(must(t, dir, nil, nil, zstd, "-q", "-c", p))
		}
	}
	writeQueue(t, fspl, dir, prepare(t, fspl, dir, specs))
	shell := `echo "argv: $*"; env | grep '^FSPL_' | sort; echo "payload: $(sha256sum)"`

	// Reference: command mode, with zstd in the shell.
	ref := filepath.Join(dir, "ref")
	os.Mkdir(ref, 0o755)
	copyDir(t, filepath.Join(dir, "q"), filepath.Join(ref, "q"))
	want := must(t, ref, nil, nil, pipespoolBin, "queue-process", "q", "--allow-job-params", "sh", "--", "-c", "zstd -dc | { "+shell+"; }", "x", "extra")

	// DIR/pipespool.toml, picked up when no COMMAND is given.
	auto := filepath.Join(dir, "auto")
	os.Mkdir(auto, 0o755)
	copyDir(t, filepath.Join(dir, "q"), filepath.Join(auto, "q"))
	toml := fmt.Sprintf("[[stage]]\nbuiltin = \"zstd-decompress\"\n\n[[stage]]\nname = \"dump\"\ncommand = [\"sh\", \"-c\", %q, \"x\"]\n", shell)
	if err := os.WriteFile(filepath.Join(auto, "q/pipespool.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	got := must(t, auto, nil, nil, pipespoolBin, "queue-process", "q", "--allow-job-params", "--", "extra")
	if got != want {
		t.Errorf("pipeline mode (DIR/pipespool.toml) differs from command mode:\n--- pipeline\n%s\n--- command\n%s", got, want)
	}
	if n := len(listJobs(t, filepath.Join(auto, "q"))); n != 0 {
		t.Errorf("%d jobs left", n)
	}

	// --job, SaveBoth, and a failing pipeline under Retry.
	job := filepath.Join(dir, "job.toml")
	os.WriteFile(job, []byte("[[stage]]\nbuiltin = \"zstd-decompress\"\n\n[[stage]]\ncommand = [\"sh\", \"-c\", \"wc -c; echo to-stderr >&2; test $FSPL_SEQ != 3\"]\n"), 0o644)
	jd := filepath.Join(dir, "jobflag")
	os.Mkdir(jd, 0o755)
	copyDir(t, filepath.Join(dir, "q"), filepath.Join(jd, "q"))
	r := run(t, jd, nil, nil, pipespoolBin, "queue-process", "--job", job, "-q", "q", "--output-to", "SaveBoth")
	if r.code != 1 {
		t.Fatalf("failing pipeline under Retry: exit %d, stderr %s", r.code, r.err)
	}
	if got := readFile(t, filepath.Join(jd, "q/nextseq")); got != "3\n" {
		t.Errorf("nextseq %q after job 3 failed, want 3", got)
	}
	outs, _ := filepath.Glob(filepath.Join(jd, "q/jobs/*.out"))
	if len(outs) != 2 {
		t.Fatalf("SaveBoth files: %v", outs)
	}
	for _, o := range outs {
		if s := readFile(t, o); !strings.Contains(s, "to-stderr") {
			t.Errorf("%s: %q lacks the stage's stderr", o, s)
		}
	}
}

// TestPreparePayloadIntoFileAndPipe: prepare's payload is copied by the
// kernel (copy_file_range into a file, splice into a pipe); both must carry
// the input exactly, and a reader that goes away early must end prepare
// with SIGPIPE, as it ends fspl and any shell tool, not hang it.
func TestPreparePayloadIntoFileAndPipe(t *testing.T) {
	dir := t.TempDir()
	in, sum := randomFile(t, dir, "payload", 5<<20+3, 42)
	payloadOf := func(packet []byte) string {
		t.Helper()
		_, off, err := queue.DecodeHeader(packet)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(packet[off:])
		return hex.EncodeToString(h[:])
	}

	outPath := filepath.Join(dir, "packet.fspl")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	res := runPipespool(t, runOpts{Stdout: out}, "prepare", "-s", "-", "-i", in)
	out.Close()
	if res.Code != 0 {
		t.Fatalf("prepare > file: exit %d: %s", res.Code, res.Stderr)
	}
	if got := payloadOf([]byte(readFile(t, outPath))); got != sum {
		t.Errorf("prepare > file: payload sha256 %s, want %s", got, sum)
	}

	res = runPipespool(t, runOpts{}, "prepare", "-s", "-", "-i", in) // stdout: a pipe
	if res.Code != 0 {
		t.Fatalf("prepare | reader: exit %d: %s", res.Code, res.Stderr)
	}
	if got := payloadOf(res.Stdout); got != sum {
		t.Errorf("prepare | reader: payload sha256 %s, want %s", got, sum)
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(pipespoolBin, "prepare", "-s", "-", "-i", in)
	cmd.Stdout = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	io.ReadFull(r, make([]byte, 10))
	r.Close()
	err = waitStarted(t, cmd, "prepare into a pipe whose reader went away")
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGPIPE {
		t.Errorf("prepare into a closed pipe: %v, want killed by SIGPIPE", err)
	}
}
