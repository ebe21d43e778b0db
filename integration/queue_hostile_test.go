package integration

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipespool/pipespool/queue"
)

// Hostile queue directories and packets: what anyone who can drop a file
// into jobs/, or send a packet, can make pipespool do. Every run of every
// case is held to the same bounds: its exit status and message, a peak RSS
// under 64 MiB, a wall time under a minute (a hang detector on a shared
// machine, not a speed target), no file outside the queue touched (a
// canary's content and mtime), and no command run for a hostile packet
// (the command appends its job's number to a marker file).

const (
	hostileRSS  = 64 << 20
	hostileWall = time.Minute
)

// hostileDir is one case's directory: the queue q, the canary beside it,
// the marker file the command writes.
type hostileDir struct {
	dir, q, canary, ran string
	canaryMtime         time.Time
	canaryContent       string
}

// The command of every case: it records that its job ran, then reads the
// payload.
func (h *hostileDir) command() []string {
	return []string{"sh", "--", "-c", `echo "$FSPL_SEQ" >> "$0"; cat >/dev/null`, h.ran}
}

func newHostileDir(t *testing.T) *hostileDir {
	t.Helper()
	dir := t.TempDir()
	h := &hostileDir{dir: dir, q: filepath.Join(dir, "q"), canary: filepath.Join(dir, "canary"), ran: filepath.Join(dir, "ran"),
		canaryContent: "1\n", canaryMtime: time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)}
	must(t, dir, nil, nil, pipespoolBin, "queue-init", "q")
	if err := os.WriteFile(h.canary, []byte(h.canaryContent), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(h.canary, h.canaryMtime, h.canaryMtime); err != nil {
		t.Fatal(err)
	}
	return h
}

// job writes a packet into jobs/ under name ("" for a fresh one) and
// returns the name.
func (h *hostileDir) job(t *testing.T, name string, packet []byte) string {
	t.Helper()
	if name == "" {
		name = queue.NewJobFilename()
	}
	if err := os.WriteFile(filepath.Join(h.q, "jobs", name), packet, 0o644); err != nil {
		t.Fatal(err)
	}
	return name
}

func packetOf(hd *queue.Header, payload string) []byte {
	if hd.CTimeSecs == 0 {
		hd.CTimeSecs = uint64(time.Now().Unix())
	}
	return append(queue.Encode(hd), payload...)
}

// checkOutside fails if the canary was touched or the marker says other
// jobs ran than ran.
func (h *hostileDir) checkOutside(t *testing.T, ran string) {
	t.Helper()
	fi, err := os.Lstat(h.canary)
	if err != nil || !fi.Mode().IsRegular() || !fi.ModTime().Equal(h.canaryMtime) {
		t.Errorf("the canary outside the queue was touched: %v, %v", fi, err)
	} else if b, _ := os.ReadFile(h.canary); string(b) != h.canaryContent {
		t.Errorf("the canary outside the queue was written: %q", b)
	}
	got, err := os.ReadFile(h.ran)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if string(got) != ran {
		t.Errorf("jobs run: %q, want %q", got, ran)
	}
}

// boundedResult is a run of pipespool, measured.
type boundedResult struct {
	out, err string
	outLen   int64
	code     int
	rss      int64 // peak resident set, bytes
	wall     time.Duration
	hung     bool
}

// runBounded runs pipespool in dir; a run still going after hostileWall is
// killed (SIGKILL: a process blocked in open(2) ignores SIGTERM) and
// reported as hung. Stdout beyond 1 MiB is counted, not kept.
//
// The peak RSS is the rusage of pipespool as its parent sees it. That
// parent is not this test process but a small copy of it (see spawnRusage):
// a child's ru_maxrss starts at its parent's high-water mark, since it is
// forked from it, and this process holds the large packets the cases make.
func runBounded(t *testing.T, dir string, stdin []byte, args ...string) boundedResult {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rpipe, wpipe, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer rpipe.Close()
	cmd := exec.Command(self, append([]string{pipespoolBin}, args...)...)
	cmd.Env = append(os.Environ(), spawnRusage+"=1")
	cmd.ExtraFiles = []*os.File{wpipe}
	// Its own group, killed whole on a hang; and gone with this test
	// binary, should a timeout kill it first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Dir = dir
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out := &cappedBuffer{max: 1 << 20}
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	wpipe.Close()
	timer := time.AfterFunc(hostileWall, func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	err = cmd.Wait()
	hung := !timer.Stop()
	r := boundedResult{out: out.String(), outLen: out.n, err: errb.String(), wall: time.Since(start), hung: hung}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if hung {
		return r
	}
	report, _ := io.ReadAll(rpipe)
	if _, err := fmt.Sscan(string(report), &r.rss); err != nil {
		t.Fatalf("no rusage from the spawner (%q): %s", report, r.err)
	}
	return r
}

// spawnRusage, set in its environment, makes this test binary a spawner:
// it runs the command of its arguments, passes its exit status on, and
// writes its peak RSS in bytes to fd 3. It starts small, so the figure is
// the command's own.
const spawnRusage = "PIPESPOOL_TEST_SPAWN_RUSAGE"

func init() {
	if os.Getenv(spawnRusage) == "" {
		return
	}
	os.Unsetenv(spawnRusage)
	report := os.NewFile(3, "rusage")
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// The parent-death signal follows the thread that forked.
	runtime.LockOSThread()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	if cmd.ProcessState == nil {
		fmt.Fprintln(os.Stderr, "spawner:", err)
		os.Exit(127)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		fmt.Fprintf(report, "%d\n", ru.Maxrss*1024)
	}
	report.Close()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		os.Exit(128 + int(ws.Signal()))
	}
	os.Exit(cmd.ProcessState.ExitCode())
}

type cappedBuffer struct {
	bytes.Buffer
	max int
	n   int64
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	if room := c.max - c.Len(); room > 0 {
		c.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// want is what one run must show.
type want struct {
	code      int
	stdout    []string // substrings of stdout
	stderr    []string // substrings of stderr
	noStdout  []string // must not appear in stdout
	emptyOut  bool     // nothing on stdout
	lines     int      // stdout lines, when > 0
	warnedFor string   // stderr names this exactly once
}

// step runs pipespool with args in h.dir and checks it against w and the
// bounds every hostile run keeps.
func (h *hostileDir) step(t *testing.T, stdin []byte, w want, args ...string) boundedResult {
	t.Helper()
	r := runBounded(t, h.dir, stdin, args...)
	name := strings.Join(args, " ")
	if len(name) > 120 {
		name = name[:120] + "..."
	}
	t.Logf("%s: exit %d, %.0f MiB peak RSS, %s", name, r.code, float64(r.rss)/(1<<20), r.wall.Round(time.Millisecond))
	if r.hung {
		t.Errorf("%s: still running after %s (blocked?), killed\nstderr: %.2000s", name, hostileWall, r.err)
		return r
	}
	if r.code != w.code {
		t.Errorf("%s: exit %d, want %d\nstderr: %.2000s", name, r.code, w.code, r.err)
	}
	if r.rss > hostileRSS {
		t.Errorf("%s: peak RSS %d MiB, want under %d MiB", name, r.rss>>20, hostileRSS>>20)
	}
	for _, s := range w.stdout {
		if !strings.Contains(r.out, s) {
			t.Errorf("%s: stdout does not contain %q:\n%.2000s", name, s, r.out)
		}
	}
	for _, s := range w.noStdout {
		if strings.Contains(r.out, s) {
			t.Errorf("%s: stdout contains %q:\n%.2000s", name, s, r.out)
		}
	}
	for _, s := range w.stderr {
		if !strings.Contains(r.err, s) {
			t.Errorf("%s: stderr does not contain %q:\n%.2000s", name, s, r.err)
		}
	}
	if w.emptyOut && r.outLen != 0 {
		t.Errorf("%s: %d bytes on stdout, want none: %.500q", name, r.outLen, r.out)
	}
	if w.lines > 0 && strings.Count(r.out, "\n") != w.lines {
		t.Errorf("%s: %d lines on stdout, want %d:\n%q", name, strings.Count(r.out, "\n"), w.lines, r.out)
	}
	if w.warnedFor != "" && strings.Count(r.err, w.warnedFor) != 1 {
		t.Errorf("%s: stderr names %s %d times, want once:\n%.2000s", name, w.warnedFor, strings.Count(r.err, w.warnedFor), r.err)
	}
	return r
}

// TestHostileQueueNotRegularFiles: what is named like a job but is not a
// regular file. A FIFO blocked every run in open(2), deaf to SIGTERM, with
// the queue's lock held; a link was followed out of the queue. Each is
// skipped with one warning naming it and what it is, and the queue's real
// job runs.
func TestHostileQueueNotRegularFiles(t *testing.T) {
	for _, tc := range []struct {
		name, kind string
		make       func(t *testing.T, h *hostileDir, path string)
	}{
		{"FIFO", "type=FIFO", func(t *testing.T, h *hostileDir, p string) { mkfifo(t, filepath.Dir(p), filepath.Base(p)) }},
		{"link to a FIFO", `type="symbolic link"`, func(t *testing.T, h *hostileDir, p string) {
			mkfifo(t, h.dir, "fifo")
			symlink(t, filepath.Join(h.dir, "fifo"), p)
		}},
		{"link to /dev/zero", `type="symbolic link"`, func(t *testing.T, h *hostileDir, p string) { symlink(t, "/dev/zero", p) }},
		{"link to a packet outside the queue", `type="symbolic link"`, func(t *testing.T, h *hostileDir, p string) {
			outside := filepath.Join(h.dir, "outside.fspl")
			if err := os.WriteFile(outside, packetOf(&queue.Header{Seq: 2}, "outside"), 0o644); err != nil {
				t.Fatal(err)
			}
			symlink(t, outside, p)
		}},
		{"directory", "type=directory", func(t *testing.T, h *hostileDir, p string) {
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHostileDir(t)
			good := h.job(t, "", packetOf(&queue.Header{Seq: 1}, "good payload"))
			bad := "fspl-hostile.fspl"
			tc.make(t, h, filepath.Join(h.q, "jobs", bad))
			warned := want{stderr: []string{bad + " " + tc.kind}, warnedFor: bad}
			ls := warned
			ls.stdout, ls.noStdout, ls.lines = []string{good}, []string{bad}, 2
			h.step(t, nil, ls, "queue-ls", "q")
			info := warned
			info.stdout = []string{"FSPL_SEQ=1\n"}
			h.step(t, nil, info, "queue-info", "q", "-j", "1")
			payload := warned
			payload.stdout = []string{"good payload"}
			h.step(t, nil, payload, "queue-payload", "q", "-j", "1")
			h.step(t, nil, warned, append([]string{"queue-process", "q"}, h.command()...)...)
			h.checkOutside(t, "1\n")
			if got := readFile(t, filepath.Join(h.q, "nextseq")); got != "2\n" {
				t.Errorf("nextseq %q, want 2", got)
			}
		})
	}
}

func symlink(t *testing.T, target, p string) {
	t.Helper()
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

// manyParams is a packet with seq 1 and n params of size bytes each.
func manyParams(n, size int) []byte { return manyParamsSeq(1, n, size) }

func manyParamsSeq(seq uint64, n, size int) []byte {
	hd := &queue.Header{Seq: seq}
	p := bytes.Repeat([]byte("x"), size)
	for range n {
		hd.Params = append(hd.Params, p)
	}
	return packetOf(hd, "payload")
}

// TestHostileQueueHeaders: headers that cost memory or lie about their
// shape. A 16 MiB header of small params cost hundreds of MB per file
// (every param its own allocation, every header kept for the whole run);
// one the command cannot be given (E2BIG) is refused, saying why, before
// anything of it is built or run; one that lies is skipped with a warning.
func TestHostileQueueHeaders(t *testing.T) {
	lying := []byte("\x83\xa3seq\x01\xa5ctime\x92\x01\x02\xa8cmd_type\x81\xa7Command\x82\xa6params\xdd\xff\xff\xff\xff")
	for _, tc := range []struct {
		name   string
		packet func() []byte
		// listed: queue-ls shows the job, and processing refuses it
		// with refuse; else the scan skips it with warning.
		listed  bool
		refuse  string
		warning string
	}{
		{name: "16 MiB header of small params", packet: func() []byte { return manyParams(1_040_000, 15) }, listed: true,
			refuse: "argument list too long"},
		{name: "a million empty params", packet: func() []byte { return manyParams(1_000_000, 0) }, listed: true,
			refuse: "argument list too long"},
		{name: "one 1 MiB param", packet: func() []byte { return manyParams(1, 1<<20) }, listed: true,
			refuse: "MAX_ARG_STRLEN"},
		{name: "more params than fspl can write", packet: func() []byte { return manyParams(queue.MaxHeaderEntries+1, 0) },
			warning: "more than the limit of 1048576"},
		{name: "truncated header", packet: func() []byte { return queue.Frame(queue.MaxHeaderLen, bytes.Repeat([]byte{0x90}, 100)) },
			warning: "header body truncated: 100 of 16777216 bytes"},
		{name: "header length beyond the limit", packet: func() []byte { return queue.Frame(1<<63, nil) },
			warning: "exceeds the limit of 16777216 bytes"},
		{name: "params count that lies", packet: func() []byte { return queue.Frame(uint64(len(lying)), lying) },
			warning: "ends in the middle of a value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHostileDir(t)
			name := h.job(t, "", tc.packet())
			proc := append([]string{"queue-process", "q", "--allow-job-params"}, h.command()...)
			if tc.listed {
				h.step(t, nil, want{stdout: []string{name}, lines: 2}, "queue-ls", "q")
				h.step(t, nil, want{stdout: []string{"FSPL_PARAM_1="}}, "queue-info", "q", "-j", "1")
				h.step(t, nil, want{code: 1, stderr: []string{name, tc.refuse, "stays in the queue"}}, proc...)
				if jobs := listJobs(t, h.q); len(jobs) != 1 {
					t.Errorf("jobs left %v, want the refused one", jobs)
				}
			} else {
				h.step(t, nil, want{lines: 1, stderr: []string{name, tc.warning}, warnedFor: name}, "queue-ls", "q")
				h.step(t, nil, want{stderr: []string{name, tc.warning}, warnedFor: name}, proc...)
			}
			h.checkOutside(t, "")
		})
	}
}

// TestHostileQueuePlantedLinks: a link planted under the name of a file
// pipespool writes in a queue (or beside a seqfile), pointing to a file
// outside. The link is replaced or refused, never written through, and
// the file outside is never touched; a seqfile is never read through one.
func TestHostileQueuePlantedLinks(t *testing.T) {
	t.Run("SaveBoth .out", func(t *testing.T) {
		h := newHostileDir(t)
		name := h.job(t, "", packetOf(&queue.Header{Seq: 1}, "x"))
		out := filepath.Join(h.q, "jobs", name+".out")
		symlink(t, h.canary, out)
		h.step(t, nil, want{}, append([]string{"queue-process", "q", "--output-to", "SaveBoth", "--never-delete"},
			"sh", "--", "-c", `echo "$FSPL_SEQ" >> "$0"; echo job output`, h.ran)...)
		h.checkOutside(t, "1\n")
		if fi, err := os.Lstat(out); err != nil || !fi.Mode().IsRegular() || readFile(t, out) != "job output\n" {
			t.Errorf(".out: %v %v, want a regular file with the job's output", fi, err)
		}
	})
	t.Run("nextseq.temp", func(t *testing.T) {
		h := newHostileDir(t)
		h.job(t, "", packetOf(&queue.Header{Seq: 1}, "x"))
		symlink(t, h.canary, filepath.Join(h.q, "nextseq.temp"))
		h.step(t, nil, want{}, append([]string{"queue-process", "q"}, h.command()...)...)
		h.checkOutside(t, "1\n")
		if got := readFile(t, filepath.Join(h.q, "nextseq")); got != "2\n" {
			t.Errorf("nextseq %q", got)
		}
	})
	t.Run("nextseq", func(t *testing.T) {
		h := newHostileDir(t)
		h.job(t, "", packetOf(&queue.Header{Seq: 1}, "x"))
		os.Remove(filepath.Join(h.q, "nextseq"))
		symlink(t, h.canary, filepath.Join(h.q, "nextseq"))
		h.step(t, nil, want{code: 1, stderr: []string{"nextseq", "symbolic link"}}, append([]string{"queue-process", "q"}, h.command()...)...)
		h.step(t, nil, want{code: 1, stderr: []string{"symbolic link"}}, "queue-get-next", "q")
		h.step(t, nil, want{code: 1, stderr: []string{"symbolic link", "remove it"}}, "queue-init", "q")
		h.checkOutside(t, "")
		// Setting the number replaces the link with the queue's own file.
		h.step(t, nil, want{}, "queue-set-next", "q", "1")
		h.checkOutside(t, "")
		if fi, _ := os.Lstat(filepath.Join(h.q, "nextseq")); !fi.Mode().IsRegular() {
			t.Errorf("nextseq is still %v after queue-set-next", fi.Mode())
		}
	})
	t.Run("nextseq.lock", func(t *testing.T) {
		h := newHostileDir(t)
		os.Remove(filepath.Join(h.q, "nextseq.lock"))
		symlink(t, h.canary, filepath.Join(h.q, "nextseq.lock"))
		h.step(t, nil, want{code: 2, stderr: []string{"symbolic link"}}, append([]string{"queue-process", "q"}, h.command()...)...)
		h.step(t, nil, want{code: 2, stderr: []string{"symbolic link"}}, "queue-init", "q")
		h.checkOutside(t, "")
	})
	t.Run("queue-set-next's nextseq.temp", func(t *testing.T) {
		h := newHostileDir(t)
		symlink(t, h.canary, filepath.Join(h.q, "nextseq.temp"))
		h.step(t, nil, want{}, "queue-set-next", "q", "7")
		h.checkOutside(t, "")
		if got := readFile(t, filepath.Join(h.q, "nextseq")); got != "7\n" {
			t.Errorf("nextseq %q", got)
		}
	})
	t.Run("prepare's seqfile and its .temp", func(t *testing.T) {
		h := newHostileDir(t)
		seq := filepath.Join(h.dir, "seq")
		os.WriteFile(seq, []byte("5\n"), 0o644)
		symlink(t, h.canary, seq+".temp")
		r := h.step(t, nil, want{}, "prepare", "-s", "seq")
		if hd, _, err := queue.DecodeHeader([]byte(r.out)); err != nil || hd.Seq != 5 || readFile(t, seq) != "6\n" {
			t.Errorf("prepare with a planted .temp: %v, seqfile %q", err, readFile(t, seq))
		}
		symlink(t, h.canary, seq+".temp")
		h.step(t, nil, want{}, "prepare-set-next", "-s", "seq", "9")
		h.step(t, nil, want{stdout: []string{"9\n"}}, "prepare-get-next", "-s", "seq")
		os.Remove(seq)
		symlink(t, h.canary, seq)
		h.step(t, nil, want{code: 1, emptyOut: true, stderr: []string{"symbolic link"}}, "prepare", "-s", "seq")
		h.checkOutside(t, "")
	})
}

// TestHostileQueueNames: a job file name with control characters forged
// queue-ls rows and reached the terminal raw: it is shown quoted.
func TestHostileQueueNames(t *testing.T) {
	h := newHostileDir(t)
	name := "fspl-\x1b[2J\n1                    2001-01-01T00:00:00+00:00   fspl-forged.fspl"
	h.job(t, name, packetOf(&queue.Header{Seq: 1}, "x"))
	r := h.step(t, nil, want{lines: 2, stdout: []string{strconv.Quote(name)}}, "queue-ls", "q")
	if strings.Contains(r.out, "\x1b") {
		t.Errorf("queue-ls wrote an escape sequence: %q", r.out)
	}
	h.step(t, nil, want{}, append([]string{"queue-process", "q"}, h.command()...)...)
	h.checkOutside(t, "1\n")
}

// TestHostileQueueLargestSeq: nextseq 2^64-1 wrapped to 0 after its job
// (fspl's does too), and a queue would start over below every job it had
// run; prepare's seqfile the same.
func TestHostileQueueLargestSeq(t *testing.T) {
	h := newHostileDir(t)
	const max = "18446744073709551615"
	h.job(t, "", packetOf(&queue.Header{Seq: 1<<64 - 1}, "x"))
	h.step(t, nil, want{}, "queue-set-next", "q", max)
	h.step(t, nil, want{code: 1, stderr: []string{"largest sequence number", "queue-set-next"}}, append([]string{"queue-process", "q"}, h.command()...)...)
	if got := readFile(t, filepath.Join(h.q, "nextseq")); got != max+"\n" {
		t.Errorf("nextseq %q, want it unchanged", got)
	}
	seq := filepath.Join(h.dir, "seq")
	os.WriteFile(seq, []byte(max+"\n"), 0o644)
	h.step(t, nil, want{code: 1, emptyOut: true, stderr: []string{"largest sequence number"}}, "prepare", "-s", "seq")
	if got := readFile(t, seq); got != max+"\n" {
		t.Errorf("seqfile %q, want it unchanged", got)
	}
	h.checkOutside(t, "")
}

// signedQueue makes OpenPGP packets the way a sender does (pipespool
// prepare | pipespool exec with openpgp-encrypt), signed or not, and the
// decoder configuration of the receiver, which requires the signer's
// signature.
type signedQueue struct {
	*hostileDir
	keys, config string
}

func newSignedQueue(t *testing.T) *signedQueue {
	t.Helper()
	keys, err := filepath.Abs("../testdata/keys")
	if err != nil {
		t.Fatal(err)
	}
	s := &signedQueue{hostileDir: newHostileDir(t), keys: keys}
	s.config = writeFile(t, s.dir, "keys.toml", fmt.Sprintf("[decoder.openpgp]\nsecret_key = %q\npassphrase_file = %q\nrequire_signed_by = %q\n",
		filepath.Join(keys, "recipient.sec.asc"), filepath.Join(keys, "recipient.pass"), filepath.Join(keys, "signer.pub.asc")))
	return s
}

// packet returns a packet with seq, params and FSPL_SET_EVIL, encrypted to
// the recipient and signed with signer ("" for none).
func (s *signedQueue) packet(t *testing.T, seq uint64, signer string) []byte {
	t.Helper()
	with := fmt.Sprintf("recipients = [%q]\n", filepath.Join(s.keys, "recipient.pub.asc"))
	switch signer {
	case "signer":
		with += fmt.Sprintf("sign_with = %q\nsign_passphrase_file = %q\n", filepath.Join(s.keys, "signer.sec.asc"), filepath.Join(s.keys, "signer.pass"))
	case "other":
		with += fmt.Sprintf("sign_with = %q\n", filepath.Join(s.keys, "other.sec.asc"))
	}
	enc := writeFile(t, s.dir, "encrypt.toml", "[[stage]]\nbuiltin = \"openpgp-encrypt\"\n[stage.with]\n"+with)
	plain := packetOf(&queue.Header{Seq: seq, Params: [][]byte{[]byte("evil-param")}, Env: []queue.EnvVar{{Name: []byte("EVIL"), Value: []byte("1")}}}, "attacker's payload")
	return []byte(must(t, s.dir, plain, nil, pipespoolBin, "exec", enc, "--log-level", "error"))
}

// TestHostileQueueUnverifiedPackets: with require_signed_by, the signature
// is known only at the end of the message; an unsigned packet (or one
// signed by another key) had its command run on its payload, with its
// params and FSPL_SET_* (again on every run under Retry). Nothing of such
// a packet reaches a command, a pipeline, stdout or a listing now. In the
// queue it is no job at all: skipped with a warning, left in place, and
// nextseq stays, under every --on-error (it once failed the queue under
// Retry, and took the number under Delete).
func TestHostileQueueUnverifiedPackets(t *testing.T) {
	for _, tc := range []struct{ signer, why string }{
		{"", "signature missing"},
		{"other", "signature by another key"},
	} {
		t.Run("signed by "+orNobody(tc.signer), func(t *testing.T) {
			s := newSignedQueue(t)
			packet := s.packet(t, 1, tc.signer)
			name := s.job(t, "", packet)
			dec := []string{"-d", "openpgp", "--decoder-config", s.config}
			skipped := want{emptyOut: true, stderr: []string{tc.why, "not verified", name}}
			for _, onError := range []string{"Retry", "Delete", "Leave"} {
				s.step(t, nil, skipped, append(append([]string{"queue-process", "q", "--on-error", onError}, dec...), append([]string{"--allow-job-params"}, s.command()...)...)...)
			}
			pipeline := writeFile(t, s.dir, "restore.toml", fmt.Sprintf("[output]\npath = %q\n[[stage]]\nshell = 'echo \"$FSPL_SEQ\" >> %s; cat'\n",
				filepath.Join(s.dir, "restored"), s.ran))
			s.step(t, nil, skipped, append(append([]string{"queue-process", "q"}, dec...), "--job", pipeline)...)
			refused := want{code: 1, emptyOut: true, stderr: []string{tc.why, "nothing of it was used"}}
			s.step(t, packet, refused, append(append([]string{"stdin-process"}, dec...), s.command()...)...)
			s.step(t, packet, refused, append([]string{"stdin-info"}, dec...)...)
			s.step(t, packet, refused, append([]string{"stdin-payload"}, dec...)...)
			s.step(t, nil, refused, append([]string{"queue-info", "q", "-j", "1"}, dec...)...)
			s.step(t, nil, refused, append([]string{"queue-payload", "q", "-j", "1"}, dec...)...)
			s.step(t, nil, want{stdout: []string{name + " [unverified]"}, stderr: []string{tc.why}, noStdout: []string{"evil"}},
				append([]string{"queue-ls", "q"}, dec...)...)
			s.checkOutside(t, "")
			if _, err := os.Stat(filepath.Join(s.dir, "restored")); err == nil {
				t.Errorf("the pipeline's output was written")
			}
			if jobs := listJobs(t, s.q); len(jobs) != 1 || readFile(t, filepath.Join(s.q, "nextseq")) != "1\n" {
				t.Errorf("jobs %v, nextseq %q: want the packet left in place and nextseq 1", jobs, readFile(t, filepath.Join(s.q, "nextseq")))
			}
		})
	}
}

// TestHostileQueueUnverifiedPacketTakesNoNumber: an attacker who can drop
// a file into jobs/ but not sign sends a packet with the next number,
// before or beside the sender's. It never makes the queue skip the
// sender's packet or run one out of order: the sender's packet with that
// number runs when it is there, under Retry and under Delete, and the
// attacker's stays, unrun.
func TestHostileQueueUnverifiedPacketTakesNoNumber(t *testing.T) {
	for _, onError := range []string{"Retry", "Delete"} {
		for _, arrives := range []string{"before", "beside"} {
			t.Run(onError+"/"+arrives, func(t *testing.T) {
				s := newSignedQueue(t)
				dec := []string{"-d", "openpgp", "--decoder-config", s.config}
				process := append(append([]string{"queue-process", "q", "--on-error", onError}, dec...), s.command()...)
				evil := s.job(t, "", s.packet(t, 1, "other"))
				if arrives == "before" {
					s.step(t, nil, want{stderr: []string{"not verified", evil}}, process...)
					s.checkOutside(t, "")
				}
				s.job(t, "", s.packet(t, 1, "signer"))
				s.job(t, "", s.packet(t, 2, "signer"))
				s.step(t, nil, want{stderr: []string{"not verified", evil}}, process...)
				s.checkOutside(t, "1\n2\n")
				if jobs := listJobs(t, s.q); len(jobs) != 1 || jobs[0] != evil || readFile(t, filepath.Join(s.q, "nextseq")) != "3\n" {
					t.Errorf("jobs %v, nextseq %q: want only the attacker's packet left, nextseq 3", jobs, readFile(t, filepath.Join(s.q, "nextseq")))
				}
			})
		}
	}
}

func orNobody(s string) string {
	if s == "" {
		return "nobody"
	}
	return s
}

// TestHostileQueueSignedPacketRuns: the counterpart: a packet signed by
// the required key runs, from stdin and from the queue, also when its job
// file belongs to another user (who could rewrite it between the
// verification and the run: it is verified and run from a private copy).
func TestHostileQueueSignedPacketRuns(t *testing.T) {
	s := newSignedQueue(t)
	packet := s.packet(t, 1, "signer")
	dec := []string{"-d", "openpgp", "--decoder-config", s.config}
	s.step(t, packet, want{stdout: []string{"FSPL_PARAM_1=evil-param", "FSPL_SET_EVIL=1"}}, append([]string{"stdin-info"}, dec...)...)
	s.step(t, packet, want{stdout: []string{"attacker's payload"}}, append([]string{"stdin-payload"}, dec...)...)
	s.step(t, packet, want{}, append(append([]string{"stdin-process"}, dec...), s.command()...)...)
	name := s.job(t, "", packet)
	if os.Geteuid() == 0 {
		// Owned by nobody: another user's file.
		if err := os.Chown(filepath.Join(s.q, "jobs", name), 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	s.step(t, nil, want{stdout: []string{name + "\n"}, noStdout: []string{"unverified"}}, append([]string{"queue-ls", "q"}, dec...)...)
	s.step(t, nil, want{}, append(append([]string{"queue-process", "q"}, dec...), s.command()...)...)
	s.checkOutside(t, "1\n1\n")
}

// TestHostileQueueAllInOne: every kind of junk at once beside one good
// job, as an attacker would leave them: the good job runs, each junk file
// is warned about once, and the run stays within its bounds.
func TestHostileQueueAllInOne(t *testing.T) {
	h := newHostileDir(t)
	h.job(t, "", packetOf(&queue.Header{Seq: 1}, "good"))
	mkfifo(t, filepath.Join(h.q, "jobs"), "fspl-fifo.fspl")
	symlink(t, "fspl-fifo.fspl", filepath.Join(h.q, "jobs", "fspl-to-fifo.fspl"))
	symlink(t, "/dev/zero", filepath.Join(h.q, "jobs", "fspl-zero.fspl"))
	os.Mkdir(filepath.Join(h.q, "jobs", "fspl-dir.fspl"), 0o755)
	h.job(t, "fspl-huge.fspl", manyParamsSeq(5, 1_040_000, 15))
	h.job(t, "fspl-lies.fspl", queue.Frame(queue.MaxHeaderLen, nil))
	h.job(t, "fspl-junk.fspl", bytes.Repeat([]byte{0xff}, 1<<20))
	r := h.step(t, nil, want{}, append([]string{"queue-process", "q", "--never-delete"}, h.command()...)...)
	for _, junk := range []string{"fspl-fifo.fspl", "fspl-to-fifo.fspl", "fspl-zero.fspl", "fspl-dir.fspl", "fspl-lies.fspl", "fspl-junk.fspl"} {
		if n := strings.Count(r.err, junk+" "); n != 1 {
			t.Errorf("%s warned about %d times, want once:\n%s", junk, n, r.err)
		}
	}
	h.checkOutside(t, "1\n")
	// The huge one (a later number) is listed.
	h.step(t, nil, want{lines: 3, stdout: []string{"fspl-huge.fspl"}}, "queue-ls", "q")
}
