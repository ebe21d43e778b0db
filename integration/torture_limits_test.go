package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pipespool/pipespool/queue"
)

// Resource exhaustion and hostile input. Each case must end with a
// clear error, its documented exit status, and nothing half-done: no
// output file, no temporary file, no process left.

// noOutputLeft fails if dir holds anything but the names in keep.
func noOutputLeft(t *testing.T, dir string, keep ...string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		found := false
		for _, k := range keep {
			found = found || e.Name() == k
		}
		if !found {
			t.Errorf("left behind in %s: %s", dir, e.Name())
		}
	}
}

// TestLimitFewFileDescriptors runs a 5-stage pipeline under RLIMIT_NOFILE
// 12 (and 8): pipespool needs about six fds per pump, so wiring fails. That
// must be a clear "too many open files", exit 1 or 2, nothing created,
// nothing running.
func TestLimitFewFileDescriptors(t *testing.T) {
	needTools(t, "prlimit")
	dir := t.TempDir()
	marker := fmt.Sprintf("nofile-%dx", time.Now().UnixNano())
	in, _ := randomFile(t, dir, "in.bin", 1<<20, 3)
	job := writeFile(t, dir, "job.toml", fmt.Sprintf(`
[[stage]]
shell = "cat # %[1]s"
[[stage]]
shell = "cat # %[1]s"
[[stage]]
builtin = "zstd-compress"
[[stage]]
builtin = "zstd-decompress"
[[stage]]
shell = "cat # %[1]s"
`, marker))
	outDir := filepath.Join(dir, "out")
	os.Mkdir(outDir, 0o755)
	for _, n := range []string{"12", "8"} {
		cmd := exec.Command("prlimit", "--nofile="+n+":"+n, pipespoolBin, "exec", job, "-i", in, "-o", filepath.Join(outDir, "out.bin"))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		code := cmd.ProcessState.ExitCode()
		if err == nil || (code != 1 && code != 2) || !strings.Contains(stderr.String(), "too many open files") {
			t.Errorf("nofile %s: exit %d, stderr %q; want 1 or 2 and \"too many open files\"", n, code, stderr.String())
		}
		noOutputLeft(t, outDir)
		assertNoProcesses(t, marker)
	}
}

// TestLimitPipeSizeNotGranted asks for 1 GiB pipes without
// CAP_SYS_RESOURCE (dropped with setpriv, as we run as root), so
// F_SETPIPE_SZ above /proc/sys/fs/pipe-max-size fails: best effort, the
// run goes on with smaller pipes and delivers every byte.
func TestLimitPipeSizeNotGranted(t *testing.T) {
	needTools(t, "setpriv")
	dir := t.TempDir()
	in, sum := randomFile(t, dir, "in.bin", 3<<20, 4)
	job := writeFile(t, dir, "job.toml", "pipe_size = \"1GiB\"\n[[stage]]\ncommand = [\"cat\"]\n[[stage]]\nbuiltin = \"zstd-compress\"\n[[stage]]\nbuiltin = \"zstd-decompress\"\n")
	out := filepath.Join(dir, "out.bin")
	cmd := exec.Command("setpriv", "--inh-caps=-sys_resource", "--bounding-set=-sys_resource", pipespoolBin, "exec", job, "-i", in, "-o", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if got := fileSHA256(t, out); got != sum {
		t.Fatalf("output sha256 %s, want %s", got, sum)
	}
}

// TestLimitFullDisk writes the output to a 1 MiB tmpfs: the last stage (an
// external cat writing the temp file directly, or a built-in) gets ENOSPC;
// the output, whose file system is full, is the root cause (it was the
// last stage before); exit 1; no output and no temp file.
func TestLimitFullDisk(t *testing.T) {
	dir := t.TempDir()
	full := filepath.Join(dir, "full")
	os.Mkdir(full, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", full).CombinedOutput(); err != nil {
		t.Fatalf("this test mounts a 1 MiB tmpfs and needs root (or CAP_SYS_ADMIN): %v: %s", err, out)
	}
	defer exec.Command("umount", full).Run()
	in, _ := randomFile(t, dir, "in.bin", 3<<20, 5)
	for _, last := range []string{`command = ["cat"]`, `builtin = "zstd-decompress"`} {
		input := in
		if strings.Contains(last, "zstd") {
			input = filepath.Join(dir, "in.zst")
			must(t, dir, nil, nil, "zstd", "-q", "-f", "-o", input, in)
		}
		job := writeFile(t, dir, "job.toml", "[[stage]]\ncommand = [\"cat\"]\n[[stage]]\nname = \"last\"\n"+last+"\n")
		report := filepath.Join(dir, "report.json")
		res := runPipespool(t, runOpts{}, "exec", job, "-i", input, "-o", filepath.Join(full, "out.bin"), "--report", report)
		if res.Code != 1 || !strings.Contains(strings.ToLower(string(res.Stderr)), "no space left on device") || !strings.Contains(string(res.Stderr), `stage "last" failed`) {
			t.Errorf("%s: exit %d, stderr %s", last, res.Code, res.Stderr)
		}
		if rep := readReport(t, report); rep.RootCause != "output" || !strings.HasPrefix(rep.Message, "output "+filepath.Join(full, "out.bin")+": no space left on device") {
			t.Errorf("%s: root cause %q, message %q: want the output named", last, rep.RootCause, rep.Message)
		}
		noOutputLeft(t, full)
	}
}

// TestLimitReadOnlyQueue: a queue directory on a read-only mount (a
// read-only bind mount: chmod does not stop root). queue-write,
// queue-process and queue-init fail with the path and "read-only file
// system", exit 1, and the queue is as it was.
func TestLimitReadOnlyQueue(t *testing.T) {
	dir := t.TempDir()
	must(t, dir, nil, nil, pipespoolBin, "queue-init", "q")
	packet := must(t, dir, []byte("payload"), nil, pipespoolBin, "prepare", "-s", "seq", "-i", "-")
	must(t, dir, []byte(packet), nil, pipespoolBin, "queue-write", "q")
	ro := filepath.Join(dir, "ro")
	os.Mkdir(ro, 0o755)
	if out, err := exec.Command("mount", "--bind", filepath.Join(dir, "q"), ro).CombinedOutput(); err != nil {
		t.Fatalf("this test needs a bind mount (root): %v: %s", err, out)
	}
	defer exec.Command("umount", ro).Run()
	if out, err := exec.Command("mount", "-o", "remount,ro,bind", ro).CombinedOutput(); err != nil {
		t.Fatalf("remount read-only: %v: %s", err, out)
	}
	before := listJobs(t, ro)
	for _, c := range []struct {
		stdin []byte
		args  []string
	}{
		{[]byte(packet), []string{"queue-write", "ro"}},
		{nil, []string{"queue-process", "ro", "cat"}},
		{nil, []string{"queue-init", "ro/sub"}},
	} {
		r := run(t, dir, c.stdin, nil, pipespoolBin, c.args...)
		if r.code != 1 || !strings.Contains(r.err, "read-only file system") || !strings.Contains(r.err, "ro/") {
			t.Errorf("%v: exit %d, stderr %q; want 1 naming the path and \"read-only file system\"", c.args, r.code, r.err)
		}
	}
	if after := listJobs(t, ro); strings.Join(after, " ") != strings.Join(before, " ") {
		t.Errorf("jobs changed: %v -> %v", before, after)
	}
	if got := readFile(t, filepath.Join(ro, "nextseq")); got != "1\n" {
		t.Errorf("nextseq %q", got)
	}
}

// TestLimitBadStageProgram: a program that is not executable, a directory,
// or a script whose interpreter is missing. The first two are job errors
// found before anything runs (exit 2, no output file); the third can only
// fail at exec: the stage fails (exit 1) and is the root cause.
func TestLimitBadStageProgram(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "bin"), 0o755)
	writeFile(t, dir, "bin/noexec", "#!/bin/sh\ncat\n") // 0644
	writeFile(t, dir, "bin/badinterp", "#!/nonexistent/interpreter\n")
	os.Chmod(filepath.Join(dir, "bin/badinterp"), 0o755)
	in, _ := randomFile(t, dir, "in.bin", 1<<20, 6)
	out := filepath.Join(dir, "out", "out.bin")
	os.Mkdir(filepath.Dir(out), 0o755)
	for _, c := range []struct {
		prog, want string
		code       int
	}{
		{"./bin/noexec", "is not executable", 2},
		{"./bin", "is not executable", 2},
		{"./bin/missing", "no such file or directory", 2},
		{"./bin/badinterp", `stage "badinterp" did not start`, 1},
	} {
		job := writeFile(t, dir, "job.toml", fmt.Sprintf("[[stage]]\ncommand = [\"cat\"]\n[[stage]]\ncommand = [%q]\n", c.prog))
		res := runPipespool(t, runOpts{Dir: "/"}, "exec", job, "-i", in, "-o", out)
		if res.Code != c.code || !strings.Contains(string(res.Stderr), c.want) {
			t.Errorf("%s: exit %d, stderr %q; want %d and %q", c.prog, res.Code, res.Stderr, c.code, c.want)
		}
		noOutputLeft(t, filepath.Dir(out))
	}
}

// TestHostileQueueTenThousandJunkFiles: 10 000 junk files under job names
// and one good job: queue-process skips the junk (warning per file), runs
// the job, and does so in bounded time.
func TestHostileQueueTenThousandJunkFiles(t *testing.T) {
	dir := t.TempDir()
	makeQueue(t, dir, 1, 100)
	junk := make([]byte, 256)
	for i := 0; i < 10000; i++ {
		for j := range junk {
			junk[j] = byte(i*31 + j*7)
		}
		// Some start like a packet, to get past the magic check.
		b := junk[:16+i%240]
		if i%3 == 0 {
			b = append([]byte("*FILESPOOLER\x00\x01"), b...)
		}
		if err := os.WriteFile(filepath.Join(dir, "q/jobs", fmt.Sprintf("fspl-junk-%05d.fspl", i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	r := run(t, dir, nil, nil, pipespoolBin, "queue-process", "q", "--log-level", "error", "wc", "--", "-c")
	if r.code != 0 || strings.TrimSpace(r.out) != "100" {
		t.Fatalf("exit %d stdout %q stderr %.500s", r.code, r.out, r.err)
	}
	if d := time.Since(start); d > 60*time.Second {
		t.Errorf("queue-process took %s with 10 000 junk files", d)
	}
	t.Logf("10 000 junk files and one job: %s", time.Since(start).Round(time.Millisecond))
}

// TestHostilePacketHugeParamsAndEnv: a packet whose params and environment
// are 1 MiB each. Listing and info work; processing cannot exec a 1 MiB
// argument or variable (the kernel's MAX_ARG_STRLEN is 128 KiB): the job
// fails with a clear error (E2BIG), exit 1 under Retry, and stays queued.
func TestHostilePacketHugeParamsAndEnv(t *testing.T) {
	dir := t.TempDir()
	must(t, dir, nil, nil, pipespoolBin, "queue-init", "q")
	big := bytes.Repeat([]byte("p"), 1<<20)
	h := &queue.Header{Seq: 1, CTimeSecs: uint64(time.Now().Unix()), Params: [][]byte{big},
		Env: []queue.EnvVar{{Name: []byte("BIG"), Value: big}}}
	if err := os.WriteFile(filepath.Join(dir, "q/jobs", queue.NewJobFilename()), append(queue.Encode(h), "payload"...), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := run(t, dir, nil, nil, pipespoolBin, "queue-ls", "q"); r.code != 0 || !strings.Contains(r.out, "1") {
		t.Errorf("queue-ls: exit %d %q %q", r.code, r.out, r.err)
	}
	r := run(t, dir, nil, nil, pipespoolBin, "queue-process", "q", "--allow-job-params", "cat")
	if r.code != 1 || !strings.Contains(r.err, "argument list too long") {
		t.Errorf("queue-process: exit %d, stderr %.300q; want 1 and \"argument list too long\"", r.code, r.err)
	}
	if got := readFile(t, filepath.Join(dir, "q/nextseq")); got != "1\n" || len(listJobs(t, filepath.Join(dir, "q"))) != 1 {
		t.Errorf("the failed job did not stay: nextseq %q, jobs %v", got, listJobs(t, filepath.Join(dir, "q")))
	}
}

// TestHostileHighBytesInArgvAndEnv: argv and environment bytes >= 0x80
// reach the stage unchanged, from a job file (UTF-8, as TOML requires) and
// from a packet (any bytes, msgpack byte arrays).
func TestHostileHighBytesInArgvAndEnv(t *testing.T) {
	dir := t.TempDir()
	job := writeFile(t, dir, "job.toml", "[[stage]]\ncommand = [\"printf\", \"%s|%s\", \"é\u0080ü\u00ff\", \"x\"]\nenv = { HIGH = \"ß\u00a0ñ\" }\n[[stage]]\nshell = 'cat; printf \"|%s\" \"$HIGH\"'\nenv = { HIGH = \"ß\u00a0ñ\" }\n")
	res := runPipespool(t, runOpts{}, "exec", job)
	if want := "é\u0080ü\u00ff|x|ß\u00a0ñ"; res.Code != 0 || string(res.Stdout) != want {
		t.Errorf("job file: exit %d stdout %q, want %q: %s", res.Code, res.Stdout, want, res.Stderr)
	}
	must(t, dir, nil, nil, pipespoolBin, "queue-init", "q")
	raw := []byte{0xff, 0xfe, 0x80, 'a', 0xc3}
	h := &queue.Header{Seq: 1, Params: [][]byte{raw},
		Env: []queue.EnvVar{{Name: []byte("RAW"), Value: raw}}}
	if err := os.WriteFile(filepath.Join(dir, "q/jobs", queue.NewJobFilename()), queue.Encode(h), 0o644); err != nil {
		t.Fatal(err)
	}
	out := must(t, dir, nil, nil, pipespoolBin, "queue-process", "q", "--allow-job-params", "sh", "--", "-c", `printf '%s|%s' "$1" "$FSPL_SET_RAW"`, "x")
	if want := string(raw) + "|" + string(raw); out != want {
		t.Errorf("packet: stdout %q, want %q", out, want)
	}
}
