package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fanOutReport is the part of the run report a fan-out test reads.
type fanOutReport struct {
	Result     string `json:"result"`
	RootCause  string `json:"root_cause"`
	RootBranch string `json:"root_branch"`
	Message    string `json:"message"`
	Warnings   []string
	Stages     []struct {
		Name    string `json:"name"`
		Branch  string `json:"branch"`
		From    string `json:"from"`
		Status  string `json:"status"`
		BytesIn int64  `json:"bytes_in"`
	} `json:"stages"`
	Outputs []struct {
		Branch string `json:"branch"`
		Path   string `json:"path"`
		Bytes  int64  `json:"bytes"`
		Status string `json:"status"`
	} `json:"outputs"`
	Branches []struct {
		Name     string `json:"name"`
		Optional bool   `json:"optional"`
		Result   string `json:"result"`
	} `json:"branches"`
}

func readFanOutReport(t *testing.T, path string) fanOutReport {
	t.Helper()
	validateReportSchema(t, path, "report.schema.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep fanOutReport
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("report: %v\n%s", err, data)
	}
	return rep
}

// backupFanOutJob is the backup fan-out: tar c -> built-in zstd -> {built-in
// OpenPGP to recipient A -> a.gpg, built-in OpenPGP to recipient B ->
// b.gpg, sha256sum -> digest, built-in sha256 -> its write_to}. cutB, when
// not "", is a stage put first in B's branch (optional when optB).
func backupFanOutJob(keys, src, out, cutB string, optB bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, `[input]
path = "none"
[[stage]]
name = "tar"
command = ["tar", "-C", %q, "-c", "."]
[[stage]]
name = "zstd"
builtin = "zstd-compress"
[[stage]]
name = "enc-a"
builtin = "openpgp-encrypt"
output = %q
[stage.with]
recipients = [%q]
`, src, filepath.Join(out, "a.gpg"), filepath.Join(keys, "recipient.pub.asc"))
	if cutB != "" {
		fmt.Fprintf(&b, "[[stage]]\nname = \"cut\"\nfrom = \"zstd\"\nshell = %q\noptional = %v\n", cutB, optB)
		b.WriteString("[[stage]]\nname = \"enc-b\"\n")
	} else {
		fmt.Fprintf(&b, "[[stage]]\nname = \"enc-b\"\nfrom = \"zstd\"\n")
	}
	fmt.Fprintf(&b, `builtin = "openpgp-encrypt"
output = %q
[stage.with]
recipients = [%q]
[[stage]]
name = "sum"
from = "zstd"
command = ["sha256sum"]
output = %q
[[stage]]
name = "digest"
from = "zstd"
builtin = "sha256"
output = "none"
[stage.with]
write_to = %q
`, filepath.Join(out, "b.gpg"), filepath.Join(keys, "other.pub.asc"), filepath.Join(out, "sum.txt"), filepath.Join(out, "digest.txt"))
	return b.String()
}

// backupTree makes a directory of a few files to back up.
func backupTree(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	for i, size := range []int64{3 << 20, 1 << 20, 12345, 0, 5 << 20} {
		randomFile(t, src, fmt.Sprintf("f%d", i), size, uint64(i+7))
	}
	return src
}

// gpgDecrypt decrypts path with the keys imported into GNUPGHOME.
func gpgDecrypt(t *testing.T, keys, path string) []byte {
	t.Helper()
	return []byte(must(t, "/", nil, nil, "gpg", "-q", "--batch", "--pinentry-mode", "loopback",
		"--passphrase-file", filepath.Join(keys, "recipient.pass"), "-d", path))
}

// TestExecFanOutBackup: the backup fan-out with real tools; both files
// decrypt with gpg to the same zstd stream, which holds the tar of the
// directory, and both digests are that stream's.
func TestExecFanOutBackup(t *testing.T) {
	needTools(t, "gpg", "zstd", "tar", "sha256sum")
	keys := newGPGHome(t)
	must(t, "/", nil, nil, "gpg", "--batch", "-q", "--import", filepath.Join(keys, "other.sec.asc"))
	src := backupTree(t)
	dir, out := t.TempDir(), t.TempDir()
	job := writeFile(t, dir, "backup.toml", backupFanOutJob(keys, src, out, "", false))
	res := runPipespool(t, runOpts{}, "exec", job, "--report", filepath.Join(dir, "rep.json"))
	if res.Code != 0 {
		t.Fatalf("exit %d\n%s", res.Code, res.Stderr)
	}
	a := gpgDecrypt(t, keys, filepath.Join(out, "a.gpg"))
	b := gpgDecrypt(t, keys, filepath.Join(out, "b.gpg"))
	if len(a) == 0 || string(a) != string(b) {
		t.Fatalf("a.gpg and b.gpg decrypt to %d and %d bytes, not the same stream", len(a), len(b))
	}
	zst := writeFile(t, dir, "stream.zst", string(a))
	want := fileSHA256(t, zst)
	sum, err := os.ReadFile(filepath.Join(out, "sum.txt"))
	if err != nil || !strings.HasPrefix(string(sum), want+" ") {
		t.Fatalf("sha256sum's output %q (%v), want the stream's %s", sum, err, want)
	}
	digest, err := os.ReadFile(filepath.Join(out, "digest.txt"))
	if err != nil || strings.TrimSpace(string(digest)) != want {
		t.Fatalf("sha256's write_to %q (%v), want %s", digest, err, want)
	}
	restored := t.TempDir()
	must(t, "/", nil, nil, "sh", "-c", fmt.Sprintf("zstd -d -q -c %s | tar -C %s -x", zst, restored))
	for i := range 5 {
		name := fmt.Sprintf("f%d", i)
		if fileSHA256(t, filepath.Join(src, name)) != fileSHA256(t, filepath.Join(restored, name)) {
			t.Fatalf("%s differs after the round trip", name)
		}
	}
	rep := readFanOutReport(t, filepath.Join(dir, "rep.json"))
	if rep.Result != "success" || len(rep.Outputs) != 4 || len(rep.Branches) != 4 {
		t.Fatalf("report: %+v", rep)
	}
	for _, o := range rep.Outputs {
		if o.Status != "committed" {
			t.Fatalf("output %s: %s, want committed", o.Path, o.Status)
		}
	}
	assertOnlyFiles(t, out, "a.gpg", "b.gpg", "digest.txt", "sum.txt")
}

// TestExecFanOutBranchKilledMidway: a branch killed half-way through the
// stream. Not optional: the run fails naming it, and nothing of the run is
// committed (not even the branches that finished). Optional: the run
// succeeds with a warning naming it, its output is not committed, and the
// others are, whole.
func TestExecFanOutBranchKilledMidway(t *testing.T) {
	needTools(t, "gpg", "zstd", "tar", "sha256sum", "dd")
	keys := newGPGHome(t)
	must(t, "/", nil, nil, "gpg", "--batch", "-q", "--import", filepath.Join(keys, "other.sec.asc"))
	src := backupTree(t)
	const cut = "dd bs=64k count=4 iflag=fullblock 2>/dev/null; kill -KILL $$"
	t.Run("not optional", func(t *testing.T) {
		dir, out := t.TempDir(), t.TempDir()
		job := writeFile(t, dir, "backup.toml", backupFanOutJob(keys, src, out, cut, false))
		res := runPipespool(t, runOpts{}, "exec", job, "--report", filepath.Join(dir, "rep.json"))
		if res.Code != 1 {
			t.Fatalf("exit %d, want 1\n%s", res.Code, res.Stderr)
		}
		if !strings.Contains(string(res.Stderr), `branch "cut": stage "cut" failed: killed by signal SIGKILL`) {
			t.Fatalf("the summary does not name the killed branch:\n%s", res.Stderr)
		}
		rep := readFanOutReport(t, filepath.Join(dir, "rep.json"))
		if rep.RootCause != "cut" || rep.RootBranch != "cut" {
			t.Fatalf("root cause %q in branch %q, want cut", rep.RootCause, rep.RootBranch)
		}
		for _, o := range rep.Outputs {
			if o.Status != "discarded" {
				t.Fatalf("output %s: %s, want discarded", o.Path, o.Status)
			}
		}
		assertOnlyFiles(t, out)
	})
	t.Run("optional", func(t *testing.T) {
		dir, out := t.TempDir(), t.TempDir()
		job := writeFile(t, dir, "backup.toml", backupFanOutJob(keys, src, out, cut, true))
		res := runPipespool(t, runOpts{}, "exec", job, "--report", filepath.Join(dir, "rep.json"))
		if res.Code != 0 {
			t.Fatalf("exit %d, want 0\n%s", res.Code, res.Stderr)
		}
		if !strings.Contains(string(res.Stderr), `optional branch \"cut\" failed`) || !strings.Contains(string(res.Stderr), "level=WARN") {
			t.Fatalf("no warning names the optional branch:\n%s", res.Stderr)
		}
		assertOnlyFiles(t, out, "a.gpg", "digest.txt", "sum.txt")
		a := gpgDecrypt(t, keys, filepath.Join(out, "a.gpg"))
		zst := writeFile(t, dir, "stream.zst", string(a))
		want := fileSHA256(t, zst)
		if sum, _ := os.ReadFile(filepath.Join(out, "sum.txt")); !strings.HasPrefix(string(sum), want+" ") {
			t.Fatalf("sha256sum's output %q, want the stream's %s", sum, want)
		}
		must(t, "/", nil, nil, "sh", "-c", fmt.Sprintf("zstd -d -q -c %s | tar -t >/dev/null", zst))
		rep := readFanOutReport(t, filepath.Join(dir, "rep.json"))
		if rep.Result != "success" || len(rep.Warnings) != 1 {
			t.Fatalf("report: %+v", rep)
		}
		for _, b := range rep.Branches {
			if want := map[bool]string{true: "discarded", false: "success"}[b.Name == "cut"]; b.Result != want {
				t.Fatalf("branch %s: %s, want %s", b.Name, b.Result, want)
			}
		}
	})
}

// assertOnlyFiles fails unless dir holds exactly names: no temporary file
// of an output is left behind.
func assertOnlyFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	slices.Sort(got)
	slices.Sort(names)
	if !slices.Equal(got, names) {
		t.Fatalf("%s holds %q, want %q", dir, got, names)
	}
}

// TestExecFanOutTrunkFailureIsRootCause: the branches see a clean end of
// file when the trunk's producer dies, and must not succeed on the cut
// stream: the producer is the root cause and nothing is committed; a
// branch that fails on the producer's bad data first is not blamed.
func TestExecFanOutTrunkFailureIsRootCause(t *testing.T) {
	needTools(t, "zstd")
	for _, tc := range []struct {
		name, producer, branch string
	}{
		{"cut stream, branches succeed", "head -c 3000000 /dev/zero; exit 7", "cat"},
		{"bad data, a branch fails on it first", "head -c 300000 /dev/urandom; sleep 0.5; exit 7", "zstd -d -q"},
		// The producer's exit is judged only once what it left in its
		// group is gone, a second after the branch failed: the branch's
		// line must wait for its trunk's judgement even though every
		// stage of the line is over.
		{"bad data, the trunk judged late", `sh -c 'trap "sleep 1; exit 0" TERM; while :; do sleep 0.05; done' >/dev/null 2>&1 </dev/null & head -c 300000 /dev/urandom; exit 7`, "zstd -d -q"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "out")
			if err := os.Mkdir(out, 0o755); err != nil {
				t.Fatal(err)
			}
			job := writeFile(t, dir, "job.toml", producerAB("", tc.producer,
				fmt.Sprintf("shell = %q\noutput = \"out/a\"", tc.branch), "command = [\"cat\"]\noutput = \"out/b\""))
			res := runPipespool(t, runOpts{}, "exec", job, "--report", filepath.Join(dir, "rep.json"))
			if res.Code != 1 || !strings.Contains(string(res.Stderr), `failed: stage "producer" failed: exit 7`) {
				t.Fatalf("exit %d, want 1 naming the producer\n%s", res.Code, res.Stderr)
			}
			if rep := readFanOutReport(t, filepath.Join(dir, "rep.json")); rep.RootCause != "producer" || rep.RootBranch != "" {
				t.Fatalf("root cause %q in branch %q, want producer in the trunk", rep.RootCause, rep.RootBranch)
			}
			assertOnlyFiles(t, out)
		})
	}
}

// TestExecFanOutStallNamesTheSlowBranch: a branch that stops reading holds
// up the fan-out and, through it, every other branch and the producer:
// they wait on it (back-pressure, not stalls), the log says which branch
// holds the fan-out up, and the slow branch alone is diagnosed stalled.
func TestExecFanOutStallNamesTheSlowBranch(t *testing.T) {
	dir := t.TempDir()
	in, _ := randomFile(t, dir, "in", 16<<20, 3)
	job := writeFile(t, dir, "job.toml", fmt.Sprintf(`stall_timeout = "1s"
timeout = "60s"
[input]
path = %q
[[stage]]
name = "src"
command = ["cat"]
[[stage]]
name = "fast"
command = ["cat"]
output = "none"
[[stage]]
name = "slow"
from = "src"
command = ["sleep", "60"]
stall_timeout = "3s"
on_stall = "kill"
output = "none"
`, in))
	res := runPipespool(t, runOpts{}, "exec", job)
	stderr := string(res.Stderr)
	if res.Code != 1 || !strings.Contains(stderr, `branch "slow": stage "slow" stalled`) {
		t.Fatalf("exit %d, want 1 with the slow branch stalled\n%s", res.Code, stderr)
	}
	if !strings.Contains(stderr, `the fan-out waits on branch \"slow\"`) {
		t.Fatalf("the log does not name the branch holding the fan-out up\n%s", stderr)
	}
	for _, s := range []string{"src", "fast"} {
		if strings.Contains(stderr, fmt.Sprintf(`stage \"%s\" (pid`, s)) {
			t.Fatalf("stage %s, held up by the slow branch, was diagnosed stalled\n%s", s, stderr)
		}
	}
}

// TestExecFanOutBufferedBranchDoesNotHoldOthers: a branch with a buffer
// on its first stage takes the stream into its buffer while its stage
// does not read, and the other branch gets the whole stream meanwhile:
// here the slow branch starts reading only once the other has read all.
func TestExecFanOutBufferedBranchDoesNotHoldOthers(t *testing.T) {
	dir := t.TempDir()
	in, sum := randomFile(t, dir, "in", 8<<20, 5)
	flag := filepath.Join(dir, "fast-done")
	job := writeFile(t, dir, "job.toml", fmt.Sprintf(`timeout = "60s"
[input]
path = %q
[[stage]]
name = "src"
command = ["cat"]
[[stage]]
name = "fast"
shell = "cat > fast.out && touch %s"
dir = %q
output = "none"
[[stage]]
name = "slow"
from = "src"
buffer = "32MiB"
shell = "while [ ! -e %s ]; do sleep 0.05; done; exec cat"
output = "slow.out"
`, in, flag, dir, flag))
	res := runPipespool(t, runOpts{}, "exec", job)
	if res.Code != 0 {
		t.Fatalf("exit %d\n%s", res.Code, res.Stderr)
	}
	for _, f := range []string{"fast.out", "slow.out"} {
		if got := fileSHA256(t, filepath.Join(dir, f)); got != sum {
			t.Fatalf("%s differs from the input", f)
		}
	}
}

// TestExecFanOutProgressShowsBranches: the progress log of a job that fans
// out has every stage of every branch, each branch's stages marked below
// the stage they read from, with their final counts.
func TestExecFanOutProgressShowsBranches(t *testing.T) {
	dir := t.TempDir()
	in, _ := randomFile(t, dir, "in", 3<<20, 9)
	job := writeFile(t, dir, "job.toml", fmt.Sprintf(`[input]
path = %q
[[stage]]
name = "src"
command = ["cat"]
[[stage]]
name = "a"
command = ["cat"]
output = "none"
[[stage]]
name = "b"
from = "src"
command = ["cat"]
[[stage]]
name = "b2"
command = ["cat"]
output = "none"
`, in))
	res := runPipespool(t, runOpts{}, "exec", job, "--progress", "log")
	if res.Code != 0 {
		t.Fatalf("exit %d\n%s", res.Code, res.Stderr)
	}
	var final string
	for _, l := range strings.Split(string(res.Stderr), "\n") {
		if strings.Contains(l, "final=true") {
			final = l
		}
	}
	for _, want := range []string{"s1.name=src s1.in=3145728", `s2.name="└ a" s2.in=3145728`, `s3.name="└ b" s3.in=3145728`, `s4.name="  b2" s4.in=3145728`, "result=done"} {
		if !strings.Contains(final, want) {
			t.Fatalf("the final progress line has no %q:\n%s", want, res.Stderr)
		}
	}
}

// TestExecFanOutCommitFailsHalfWay: the outputs are committed after every
// branch finished, in the job file's order; one whose rename fails (its
// final name became a directory during the run) fails the run, the outputs
// after it are discarded, and the message and the report say which were
// committed already.
func TestExecFanOutCommitFailsHalfWay(t *testing.T) {
	dir := t.TempDir()
	in, sum := randomFile(t, dir, "in", 1<<20, 11)
	job := writeFile(t, dir, "job.toml", fmt.Sprintf(`[input]
path = %q
[[stage]]
name = "src"
command = ["cat"]
[[stage]]
name = "a"
command = ["cat"]
output = "a.out"
[[stage]]
name = "b"
from = "src"
shell = "cat && mkdir -p b.out/in-the-way"
dir = %q
output = "b.out"
[[stage]]
name = "c"
from = "src"
command = ["cat"]
output = "c.out"
`, in, dir))
	res := runPipespool(t, runOpts{}, "exec", job, "--report", filepath.Join(dir, "rep.json"))
	if res.Code != 1 || !strings.Contains(string(res.Stderr), "already committed: "+filepath.Join(dir, "a.out")) {
		t.Fatalf("exit %d, want 1 naming what was committed\n%s", res.Code, res.Stderr)
	}
	if got := fileSHA256(t, filepath.Join(dir, "a.out")); got != sum {
		t.Fatalf("a.out, committed before b.out failed, is not whole")
	}
	if _, err := os.Stat(filepath.Join(dir, "c.out")); !os.IsNotExist(err) {
		t.Fatalf("c.out, after the failed commit, exists: %v", err)
	}
	rep := readFanOutReport(t, filepath.Join(dir, "rep.json"))
	status := map[string]string{}
	for _, o := range rep.Outputs {
		status[o.Branch] = o.Status
	}
	if want := map[string]string{"a": "committed", "b": "failed", "c": "discarded"}; !reflect.DeepEqual(status, want) {
		t.Fatalf("outputs %v, want %v", status, want)
	}
	if rep.RootCause != "output" || rep.RootBranch != "b" {
		t.Fatalf("root cause %q in branch %q, want b's output", rep.RootCause, rep.RootBranch)
	}
}

// TestExecFanOutSignalAndTimeout: SIGTERM to pipespool, or the job's
// timeout, in the middle of a job that fans out: every stage of every
// branch is stopped, no output and no temporary file is left, and the exit
// status is the signal's (143) or 1.
func TestExecFanOutSignalAndTimeout(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout string
		code    int
	}{{"SIGTERM", "0", 143}, {"timeout", "2s", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			marker := fmt.Sprintf("fanout-signal-%d", os.Getpid())
			job := writeFile(t, dir, "job.toml", fmt.Sprintf(`timeout = %q
[input]
path = "none"
[[stage]]
name = "ticker"
shell = "while :; do echo tick; sleep 0.05; done # %[2]s"
[[stage]]
name = "a"
shell = "cat # %[2]s"
output = "a.out"
[[stage]]
name = "b"
from = "ticker"
shell = "cat # %[2]s"
output = "b.out"
`, tc.timeout, marker))
			sr := startPipespool(t, nil, "", marker, 3, filepath.Join(dir, ".b.out.pipespool-*.tmp"), "exec", job)
			if tc.timeout == "0" {
				sr.cmd.Process.Signal(syscall.SIGTERM)
			}
			if code := sr.wait(t); code != tc.code {
				t.Fatalf("exit %d, want %d\n%s", code, tc.code, sr.stderr)
			}
			assertNoProcesses(t, marker)
			assertOnlyFiles(t, dir, "job.toml")
		})
	}
}

// TestExecFanOutOutputFlag: -o replaces the output of the branch without
// one; it is a usage error (exit 2, before anything runs) when every
// branch has its own output, or when it names another branch's output.
func TestExecFanOutOutputFlag(t *testing.T) {
	dir := t.TempDir()
	in, sum := randomFile(t, dir, "in", 200000, 13)
	tree := func(bOut string) string {
		return fmt.Sprintf("[input]\npath = %q\n[[stage]]\nname = \"src\"\ncommand = [\"cat\"]\n[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\noutput = \"a.out\"\n[[stage]]\nname = \"b\"\nfrom = \"src\"\ncommand = [\"cat\"]\n%s", in, bOut)
	}
	bare := writeFile(t, dir, "bare.toml", tree(""))
	full := writeFile(t, dir, "full.toml", tree("output = \"b.out\"\n"))
	res := runPipespool(t, runOpts{Dir: dir}, "exec", bare, "-o", "flag.out")
	if res.Code != 0 || fileSHA256(t, filepath.Join(dir, "flag.out")) != sum || fileSHA256(t, filepath.Join(dir, "a.out")) != sum {
		t.Fatalf("-o to the branch without output: exit %d\n%s", res.Code, res.Stderr)
	}
	for _, tc := range []struct{ job, out, msg string }{
		{full, "x.out", "every branch of this job ends in an output of its own"},
		{bare, "a.out", `stage "a" writes that file already`},
	} {
		res := runPipespool(t, runOpts{Dir: dir}, "exec", tc.job, "-o", tc.out)
		if res.Code != 2 || !strings.Contains(string(res.Stderr), tc.msg) {
			t.Fatalf("exec %s -o %s: exit %d, want 2 saying %q\n%s", filepath.Base(tc.job), tc.out, res.Code, tc.msg, res.Stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x.out")); !os.IsNotExist(err) {
		t.Fatalf("x.out was written by a run refused as a usage error: %v", err)
	}
}

// TestQueueProcessFanOut: queue-process runs a job that fans out on each
// packet's payload, and commits every branch's output.
func TestQueueProcessFanOut(t *testing.T) {
	dir := t.TempDir()
	must(t, dir, nil, nil, pipespoolBin, "queue-init", "q")
	writeFile(t, dir, "payload", "hello fan-out\n")
	must(t, dir, nil, nil, "sh", "-c", pipespoolBin+" prepare -s seq -i payload | "+pipespoolBin+" queue-write q")
	job := writeFile(t, dir, "job.toml", `[[stage]]
name = "src"
command = ["cat"]
[[stage]]
name = "a"
command = ["cat"]
output = "a.out"
[[stage]]
name = "b"
from = "src"
command = ["tr", "a-z", "A-Z"]
output = "b.out"
`)
	if r := run(t, dir, nil, nil, pipespoolBin, "queue-process", "q", "--job", job); r.code != 0 {
		t.Fatalf("queue-process: exit %d\n%s", r.code, r.err)
	}
	for name, want := range map[string]string{"a.out": "hello fan-out\n", "b.out": "HELLO FAN-OUT\n"} {
		if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(got) != want {
			t.Fatalf("%s = %q (%v), want %q", name, got, err, want)
		}
	}
}

// TestExecStageOutputOfALineIsItsOutput: in a job that is a line, output =
// "x.out" on the last stage is the job's output (it was ignored once: the
// bytes went to stdout, x.out was never written, exit 0, and a backup from
// cron with stdout to /dev/null wrote nothing). With [output] too, or with
// -o, the job is refused, naming both.
func TestExecStageOutputOfALineIsItsOutput(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "in.txt", "hello\n")
	stages := `
[[stage]]
name = "a"
command = ["cat"]

[[stage]]
name = "b"
command = ["cat"]
output = "x.out"
`
	job := writeFile(t, dir, "job.toml", "[input]\npath = \"in.txt\"\n"+stages)
	res := runPipespool(t, runOpts{}, "exec", job)
	got, err := os.ReadFile(filepath.Join(dir, "x.out"))
	if res.Code != 0 || err != nil || string(got) != "hello\n" || len(res.Stdout) != 0 {
		t.Fatalf("exit %d, x.out: %q (%v), stdout %q: the stage's output was not the line's\n%s", res.Code, got, err, res.Stdout, res.Stderr)
	}
	check := runPipespool(t, runOpts{}, "check", job)
	if check.Code != 0 || !strings.Contains(string(check.Stdout), "output: x.out") {
		t.Errorf("check does not show the stage's output: exit %d\n%s%s", check.Code, check.Stdout, check.Stderr)
	}
	res = runPipespool(t, runOpts{}, "exec", "-o", filepath.Join(dir, "y.out"), job)
	if res.Code != 2 || !strings.Contains(string(res.Stderr), `stage "b" ends the job in an output of its own`) {
		t.Errorf("-o with a stage's output: exit %d, want 2 naming the stage\n%s", res.Code, res.Stderr)
	}
	both := writeFile(t, dir, "both.toml", "[input]\npath = \"in.txt\"\n[output]\npath = \"y.out\"\n"+stages)
	res = runPipespool(t, runOpts{}, "exec", both)
	if res.Code != 2 || !strings.Contains(string(res.Stderr), "both.toml:13: stage[2].output") || !strings.Contains(string(res.Stderr), "(line 4)") {
		t.Errorf("[output] and a line's stage output: exit %d, want 2 naming both lines\n%s", res.Code, res.Stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "y.out")); err == nil {
		t.Error("y.out was written by a refused job")
	}
}

// TestExecFanOutTwoBranchesOneFileThroughDotDot: two branches write one file,
// one named "sub/../x" where sub is a link to a directory elsewhere, the
// other by the path the kernel resolves that to. The check compares the
// directories as the kernel resolves them; it once cleaned ".." lexically
// before following the link, accepted the job, and the second rename
// replaced the first branch's output: 300000 bytes lost with exit 0.
func TestExecFanOutTwoBranchesOneFileThroughDotDot(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(other, "deep"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(other, "deep"), filepath.Join(dir, "sub")); err != nil {
		t.Fatal(err)
	}
	in, _ := randomFile(t, dir, "in.bin", 300000, 2)
	job := writeFile(t, dir, "job.toml", fmt.Sprintf(`
[input]
path = %q

[[stage]]
name = "src"
command = ["cat"]

[[stage]]
name = "a"
command = ["cat"]
output = "sub/../x"

[[stage]]
name = "b"
from = "src"
command = ["head", "-c", "1000"]
allow_partial_read = true
output = %q
`, in, filepath.Join(other, "x")))
	res := runPipespool(t, runOpts{}, "exec", job)
	if res.Code == 2 && strings.Contains(string(res.Stderr), "writes the same file") {
		return
	}
	fi, err := os.Stat(filepath.Join(other, "x"))
	t.Fatalf("two branches writing %s were accepted: exit %d, the file holds %v bytes (%v); branch a's 300000 bytes are lost\n%s",
		filepath.Join(other, "x"), res.Code, sizeOf(fi), err, res.Stderr)
}

// TestExecFanOutTwoWritersOneFileThroughWriteTo: the files the built-ins
// keep beside the outputs (sha256's write_to) take part in the check that
// no two writers share a file, against each other and against every
// output, in a tree and in a line. They once did not: two branches'
// sha256 with one write_to lost a digest, a write_to equal to another
// branch's output (or, in a line, to [output]) replaced that output with
// a digest, exit 0.
func TestExecFanOutTwoWritersOneFileThroughWriteTo(t *testing.T) {
	for _, tc := range []struct{ name, stages string }{
		{"two write_to", `
[[stage]]
name = "a"
builtin = "sha256"
output = "none"
[stage.with]
write_to = "d"
[[stage]]
name = "b"
from = "src"
builtin = "zstd-compress"
[[stage]]
name = "b2"
builtin = "sha256"
output = "none"
[stage.with]
write_to = "d"
`},
		{"write_to is another branch's output", `
[[stage]]
name = "a"
builtin = "sha256"
output = "none"
[stage.with]
write_to = "d"
[[stage]]
name = "b"
from = "src"
command = ["cat"]
output = "d"
`},
		{"write_to is a line's output", `
[[stage]]
name = "a"
builtin = "sha256"
output = "d"
[stage.with]
write_to = "d"
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			randomFile(t, dir, "in.bin", 100000, 3)
			job := writeFile(t, dir, "job.toml", `
[input]
path = "in.bin"
[[stage]]
name = "src"
command = ["cat"]
`+tc.stages)
			res := runPipespool(t, runOpts{}, "exec", job)
			if res.Code == 2 && strings.Contains(string(res.Stderr), "job.toml:") && strings.Contains(string(res.Stderr), "writes the same file as") {
				if _, err := os.Stat(filepath.Join(dir, "d")); err == nil {
					t.Errorf("d was written by a refused job")
				}
				return
			}
			got, _ := os.ReadFile(filepath.Join(dir, "d"))
			t.Fatalf("two branches writing d accepted: exit %d, d holds %d bytes (%.20q...): the other's bytes are lost\n%s", res.Code, len(got), got, res.Stderr)
		})
	}
}

// TestExecFanOutStdoutIsAnotherBranchsFile: pipespool's stdout is redirected to
// the file another branch writes (pipespool exec job > a.out). The run
// compares stdout's file (device and inode) with the outputs and refuses
// the job. It once knew stdout only as "fd 1": branch a renamed its output
// over a.out, and branch b's bytes, written to stdout, went to the inode
// that rename unlinked: exit 0, a.out held branch a's stream only.
func TestExecFanOutStdoutIsAnotherBranchsFile(t *testing.T) {
	dir := t.TempDir()
	randomFile(t, dir, "in.bin", 100000, 4)
	job := writeFile(t, dir, "job.toml", `
[input]
path = "in.bin"
[[stage]]
name = "src"
command = ["cat"]
[[stage]]
name = "a"
command = ["cat"]
output = "a.out"
[[stage]]
name = "b"
from = "src"
command = ["cat"]
`)
	out, err := os.Create(filepath.Join(dir, "a.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	res := runPipespool(t, runOpts{Stdout: out}, "exec", job)
	if res.Code == 2 && strings.Contains(string(res.Stderr), "stage[2].output: stage \"a\" writes the same file as") {
		if fi, err := os.Stat(filepath.Join(dir, "a.out")); err != nil || fi.Size() != 0 {
			t.Errorf("a refused job changed a.out: %v, %d bytes", err, sizeOf(fi))
		}
		return
	}
	if res.Code == 0 {
		fi, _ := os.Stat(filepath.Join(dir, "a.out"))
		t.Fatalf("exit 0 with stdout and branch a both writing a.out (it holds %d bytes: one branch's 100000 are lost)\n%s", sizeOf(fi), res.Stderr)
	}
}

func sizeOf(fi os.FileInfo) int64 {
	if fi == nil {
		return -1
	}
	return fi.Size()
}

// TestExecOutputIsStdinsFile: the run reads its stdin (input "-"), a
// regular file, and its output names that file: the job is refused before
// anything runs, and the file is left as it was.
func TestExecOutputIsStdinsFile(t *testing.T) {
	dir := t.TempDir()
	_, sum := randomFile(t, dir, "data", 100000, 5)
	job := writeFile(t, dir, "job.toml", `
[[stage]]
name = "a"
command = ["cat"]
output = "data"
`)
	in, err := os.Open(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	res := runPipespool(t, runOpts{Stdin: in}, "exec", job)
	if res.Code != 2 || !strings.Contains(string(res.Stderr), "pipespool's stdin") {
		t.Fatalf("exit %d, want 2 naming stdin\n%s", res.Code, res.Stderr)
	}
	if fileSHA256(t, filepath.Join(dir, "data")) != sum {
		t.Fatal("the input file was replaced")
	}
}

// TestExecFanOutOptionalBranchWrittenInPlaceIsRefused: an optional branch
// whose output is written in place (stdout, a FIFO, given by the job file
// or by -o) cannot be discarded if it fails: its bytes are read as they
// are written. Such a job is refused (exit 2, naming the key) before any
// stage starts. It once ran: the branch failed half way, the run exited 0
// and said its output "was discarded" while the reader of stdout had a
// cut stream.
func TestExecFanOutOptionalBranchWrittenInPlaceIsRefused(t *testing.T) {
	dir := t.TempDir()
	in, _ := randomFile(t, dir, "in.bin", 5<<20, 1)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	job := func(output string) string {
		return writeFile(t, dir, "job.toml", fmt.Sprintf(`
[input]
path = %q

[[stage]]
name = "src"
command = ["cat"]

[[stage]]
name = "a"
command = ["cat"]
output = "a.out"

[[stage]]
name = "b"
from = "src"
command = ["sh", "-c", "head -c 100000; exit 1"]
%s
optional = true
`, in, output))
	}
	for _, tc := range []struct{ name, output, flag, want string }{
		{"stdout", `output = "-"`, "", `job.toml:18: stage[3].output: branch "b" is optional, but its output "-" is stdout`},
		{"fifo", `output = "fifo"`, "", `job.toml:18: stage[3].output: branch "b" is optional, but its output "fifo" is a FIFO`},
		{"default [output]", "", "", `job.toml: output.path: branch "b" is optional, but its output "-" is stdout`},
		{"-o fifo", "", fifo, `-o ` + fifo + `: branch "b" is optional, but its output "` + fifo + `" is a FIFO`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"exec", job(tc.output)}
			if tc.flag != "" {
				args = []string{"exec", "-o", tc.flag, args[1]}
			}
			res := runPipespool(t, runOpts{Timeout: 20 * time.Second}, args...)
			if res.Code != 2 || !strings.Contains(string(res.Stderr), tc.want) || len(res.Stdout) != 0 {
				t.Fatalf("exit %d, %d bytes on stdout, want 2 and %q\n%s", res.Code, len(res.Stdout), tc.want, res.Stderr)
			}
			if _, err := os.Stat(filepath.Join(dir, "a.out")); err == nil {
				t.Fatal("a.out written by a refused job")
			}
		})
	}
	// none, a regular file: fine, and the failed branch's output is
	// discarded.
	res := runPipespool(t, runOpts{}, "exec", job(`output = "b.out"`))
	if res.Code != 0 || !strings.Contains(string(res.Stderr), `optional branch \"b\" failed`) {
		t.Fatalf("exit %d\n%s", res.Code, res.Stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "b.out")); err == nil {
		t.Fatal("the failed optional branch's b.out was committed")
	}
}

// TestExecFanOutEverySignalLeavesNothing: SIGINT, SIGHUP and SIGTERM to
// pipespool in the middle of a tree whose branches are of every kind (a
// stage that ignores SIGTERM and leaves a child of its own running, a
// buffered branch, an optional branch): every process is gone, no output
// and no temporary file is left, the exit status is the signal's, and the
// message and the report do not blame a branch for a signal sent to
// pipespool (they once named whichever branch saw it first, here often
// the optional one).
func TestExecFanOutEverySignalLeavesNothing(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGHUP, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			marker := fmt.Sprintf("review-signal-%d-%d", os.Getpid(), sig)
			job := writeFile(t, dir, "job.toml", fmt.Sprintf(`
[input]
path = "none"
[[stage]]
name = "ticker"
shell = "while :; do head -c 4096 /dev/zero; sleep 0.02; done # %[1]s"
[[stage]]
name = "a"
shell = "trap '' TERM; sleep 1000 & cat # %[1]s"
output = "a.out"
[[stage]]
name = "b"
from = "ticker"
shell = "cat # %[1]s"
buffer = "8MiB"
output = "b.out"
[[stage]]
name = "c"
from = "ticker"
shell = "cat # %[1]s"
optional = true
output = "c.out"
`, marker))
			rdir := t.TempDir()
			sr := startPipespool(t, nil, "", marker, 3, filepath.Join(dir, ".c.out.pipespool-*.tmp"), "exec", job, "--report", filepath.Join(rdir, "rep.json"))
			sr.cmd.Process.Signal(sig)
			if code := sr.wait(t); code != 128+int(sig) {
				t.Fatalf("exit %d, want %d\n%s", code, 128+int(sig), sr.stderr)
			}
			assertNoProcesses(t, marker)
			assertOnlyFiles(t, dir, "job.toml")
			if first, _, _ := strings.Cut(sr.stderr.String(), "\n"); strings.Contains(first, "branch ") {
				t.Errorf("a signal to pipespool is blamed on a branch: %s", first)
			}
			var rep fanOutReport
			data, err := os.ReadFile(filepath.Join(rdir, "rep.json"))
			if err != nil || json.Unmarshal(data, &rep) != nil {
				t.Fatalf("report: %v\n%s", err, data)
			}
			if rep.Result != "interrupted" || rep.RootBranch != "" || rep.RootCause != "" || rep.Message != "interrupted by "+map[syscall.Signal]string{syscall.SIGINT: "SIGINT", syscall.SIGHUP: "SIGHUP", syscall.SIGTERM: "SIGTERM"}[sig] {
				t.Errorf("report: result %q, root_branch %q, root_cause %q, message %q: a signal to pipespool is the run's", rep.Result, rep.RootBranch, rep.RootCause, rep.Message)
			}
		})
	}
}

// TestExecFanOutFailedRunSaysWhatWasWrittenInPlace: in a run that failed,
// a regular file output is discarded, but the branch writing stdout has
// had its bytes read as they went: its report status is "written", not
// "discarded".
func TestExecFanOutFailedRunSaysWhatWasWrittenInPlace(t *testing.T) {
	dir := t.TempDir()
	randomFile(t, dir, "in.bin", 200000, 6)
	job := writeFile(t, dir, "job.toml", `
[input]
path = "in.bin"
[[stage]]
name = "src"
command = ["cat"]
[[stage]]
name = "a"
shell = "head -c 1000; exit 1"
output = "a.out"
[[stage]]
name = "b"
from = "src"
command = ["cat"]
`)
	rep := filepath.Join(dir, "rep.json")
	res := runPipespool(t, runOpts{}, "exec", job, "--report", rep)
	if res.Code != 1 {
		t.Fatalf("exit %d, want 1\n%s", res.Code, res.Stderr)
	}
	status := map[string]string{}
	for _, o := range readFanOutReport(t, rep).Outputs {
		status[o.Path] = o.Status
	}
	if want := map[string]string{filepath.Join(dir, "a.out"): "discarded", "-": "written"}; !reflect.DeepEqual(status, want) {
		t.Fatalf("outputs %v, want %v\n%s", status, want, res.Stderr)
	}
}

// TestFanOutStopAndPartialReads: a stage whose input pipespool ended
// first (a fan-out stopped with the run, or when its trunk's last stage
// fails) counts as unread only what it left in its pipe.
//
// The regression (the torture's TORTURE_SEED=20261205 run 2718): a
// branch's last stage fails while the branch's first stage still has input
// to come, which the fan-out cannot give it yet (another branch holds it
// up). 120000 bytes fit in b's pipe (64 KiB) and the fan-out's source pipe,
// so the producer ends; reader's pipe holds 64 KiB, the rest waits in the
// source for b, which reads nothing for 4 s. "fails" exits 3 at once; the
// run is stopped 2 s later (an own failure waits that long for the stages
// before it), while reader sleeps. reader and mid ignore SIGTERM, as a
// stage busy in a syscall may act on it after the end of file: reader
// exits 0 at the fan-out's end of file, mid (still running) reads its
// output. reader read everything it was given: "fails" is the root cause.
//
// The other sides: a branch stage that stopped reading on its own, leaving
// bytes in its pipe, is still the root cause when the fan-out is stopped
// only later (its check waited out a leftover's grace period meanwhile);
// the trunk's last stage failing stops the fan-out at once, while the
// branches' lines still run: a branch stage that read everything it was
// given is not blamed for the rest.
func TestFanOutStopAndPartialReads(t *testing.T) {
	for _, tc := range []struct{ name, job, root string }{
		{"a branch stage sees the stop's end of file", `pipe_size = "64KiB"
[input]
path = "none"
[[stage]]
name = "producer"
shell = "head -c 120000 /dev/zero"
[[stage]]
name = "reader"
shell = "trap '' TERM; sleep 3; cat"
[[stage]]
name = "mid"
shell = "trap '' TERM; cat >/dev/null; sleep 1"
[[stage]]
name = "fails"
shell = "exit 3"
output = "out/a"
[[stage]]
name = "b"
from = "producer"
shell = "sleep 4; exec cat"
output = "out/b"
`, "fails"},
		{"a genuine partial read stays the root cause", `pipe_size = "64KiB"
[input]
path = "none"
[[stage]]
name = "producer"
shell = "head -c 300000 /dev/zero"
[[stage]]
name = "cut"
from = "producer"
shell = "(trap '' TERM; exec sleep 7) </dev/null >/dev/null 2>&1 & sleep 1; exec head -c 100000"
[[stage]]
name = "decoder"
shell = "cat >/dev/null; exit 3"
output = "out/a"
[[stage]]
name = "slow"
from = "producer"
shell = "sleep 10; exec cat"
output = "out/b"
`, "cut"},
		{"the trunk's failure stops the fan-out", `pipe_size = "64KiB"
[input]
path = "none"
[[stage]]
name = "src"
shell = "sleep 10"
[[stage]]
name = "fails"
shell = "head -c 100000 /dev/zero; sleep 0.3; exit 3"
[[stage]]
name = "c"
from = "fails"
shell = "sleep 2; exec cat"
output = "out/c"
[[stage]]
name = "d"
from = "fails"
shell = "sleep 10; exec cat"
output = "out/d"
`, "fails"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			out := filepath.Join(dir, "out")
			if err := os.Mkdir(out, 0o755); err != nil {
				t.Fatal(err)
			}
			job := writeFile(t, dir, "job.toml", tc.job)
			res := runPipespool(t, runOpts{}, "exec", job, "--report", filepath.Join(dir, "rep.json"))
			rep := readFanOutReport(t, filepath.Join(dir, "rep.json"))
			if res.Code != 1 || rep.RootCause != tc.root {
				t.Fatalf("exit %d, root cause %q, want 1 and %s\n%s", res.Code, rep.RootCause, tc.root, res.Stderr)
			}
			assertOnlyFiles(t, out)
		})
	}
}

// TestExecFanOutBranchFailureBeforeTheRunsOwnStop: a branch that failed on
// its own waits (up to 2 s) for its trunk to be judged before it stops the
// run; a timeout, a signal to pipespool or another branch's stall that
// comes during that wait came after the failure: the branch stays the
// root cause (exit 1), as when it stopped the run at once.
func TestExecFanOutBranchFailureBeforeTheRunsOwnStop(t *testing.T) {
	for _, tc := range []struct {
		name, head, producer, a, a2, b string
		signal                         bool
	}{
		{name: "SIGTERM to pipespool", producer: "sleep 30", a: "exit 3", b: `command = ["cat"]`, signal: true},
		// The stage after a's, which pipespool then stops with SIGTERM,
		// did not die of the signal pipespool got.
		{name: "SIGTERM to pipespool, a stage after the failed one", producer: "sleep 30", a: "exit 3",
			a2: "cat >/dev/null; sleep 30", b: `command = ["cat"]`, signal: true},
		{name: "timeout", head: `timeout = "1s"`, producer: "sleep 30", a: "exit 3", b: `command = ["cat"]`},
		{name: "another branch's stall", producer: "cat /dev/zero", a: "head -c 1000 >/dev/null; exit 3",
			b: "command = [\"sleep\", \"60\"]\nstall_timeout = \"1s\"\non_stall = \"kill\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			a := fmt.Sprintf("shell = %q\noutput = \"none\"", tc.a)
			if tc.a2 != "" {
				a = fmt.Sprintf("shell = %q\n[[stage]]\nname = \"a2\"\nshell = %q\noutput = \"none\"", tc.a, tc.a2)
			}
			job := writeFile(t, dir, "job.toml", producerAB(tc.head, tc.producer, a, "output = \"none\"\n"+tc.b))
			var onStart func(int)
			if tc.signal {
				onStart = func(pid int) {
					// a fails at once and then waits up to 2 s for its
					// trunk: the signal comes in that wait, past the
					// 250 ms in which a failure may be the signal's.
					time.Sleep(1200 * time.Millisecond)
					syscall.Kill(pid, syscall.SIGTERM)
				}
			}
			res := runPipespoolWith(t, runOpts{}, onStart, "exec", job, "--report", filepath.Join(dir, "rep.json"))
			if res.Code != 1 || !strings.Contains(string(res.Stderr), `failed: branch "a": stage "a" failed: exit 3`) {
				t.Fatalf("exit %d, want 1 naming branch a\n%s", res.Code, res.Stderr)
			}
			if rep := readFanOutReport(t, filepath.Join(dir, "rep.json")); rep.RootCause != "a" || rep.RootBranch != "a" {
				t.Fatalf("root cause %q in branch %q, want a in a", rep.RootCause, rep.RootBranch)
			}
		})
	}
}

// twoBranches is a job whose producer sleeps, read by branch a (cat) and
// by branch b, whose first stage's keys (after name and from) are rest.
func twoBranches(rest string) string {
	return producerAB("", "sleep 30", "command = [\"cat\"]\noutput = \"none\"", rest)
}

// producerAB is a job whose stage producer (a shell line) is read by branch
// a (the producer's line) and branch b: head goes before [input], a and b
// are the keys of each branch's first stage after its name (and from), and
// may go on with more stages.
func producerAB(head, producer, a, b string) string {
	return fmt.Sprintf("%s\n[input]\npath = \"none\"\n[[stage]]\nname = \"producer\"\nshell = %q\n[[stage]]\nname = \"a\"\n%s\n[[stage]]\nname = \"b\"\nfrom = \"producer\"\n%s\n", head, producer, a, b)
}

// TestExecFanOutRunsOwnStopStaysItsOwn: a failure that waits for its
// trunk's judgement and cannot fail the run (a fan-out whose readers all
// went, an optional branch), or a stage that died of the signal that
// interrupted pipespool (systemd signals a service's every process at
// once), does not take the place of the timeout or the signal (found by
// review: a fan-out gone was reported as the run's failure, naming a
// branch that had succeeded; an optional branch's exit 3 as the run's).
func TestExecFanOutRunsOwnStopStaysItsOwn(t *testing.T) {
	optional := func(name string) string {
		return fmt.Sprintf("[[stage]]\nname = %q\nfrom = \"producer\"\nshell = \"exit 3\"\noptional = true\noutput = \"none\"\n", name)
	}
	for _, tc := range []struct {
		name, job string
		signal    func(pid int)
		code      int
		msg       string
	}{
		{name: "the fan-out's readers all went, then a signal",
			job: `[input]
path = "none"
[[stage]]
name = "producer"
shell = "head -c 1000 /dev/zero; sleep 0.3; head -c 100000 /dev/zero; sleep 30"
[[stage]]
name = "a"
shell = "head -c 10 >/dev/null"
allow_partial_read = true
output = "none"
[[stage]]
name = "b"
from = "producer"
shell = "head -c 10 >/dev/null"
allow_partial_read = true
output = "none"
`,
			signal: func(pid int) { time.Sleep(time.Second); syscall.Kill(pid, syscall.SIGTERM) },
			code:   143, msg: `job "job" interrupted: interrupted by SIGTERM`},
		{name: "optional branches failed, then the timeout",
			job: "timeout = \"1s\"\n[input]\npath = \"none\"\n[[stage]]\nname = \"producer\"\nshell = \"sleep 30\"\n[[stage]]\nname = \"b\"\ncommand = [\"cat\"]\noutput = \"none\"\n" +
				optional("o1") + optional("o2") + optional("o3") + optional("o4"),
			code: 1, msg: `timed out after 1s`},
		{name: "SIGTERM to every process at once",
			job:    twoBranches("command = [\"cat\"]\noutput = \"none\"\n"),
			signal: signalEveryProcess(syscall.SIGTERM, false, 3), code: 143, msg: `job "job" interrupted: interrupted by SIGTERM`},
		// The branch's failure waited for the stage before it in its own
		// branch, not for its trunk: as in a line, the timeout or the
		// signal that stopped that stage decides.
		{name: "a branch's failure waits in its branch, then the timeout",
			job:  "timeout = \"1s\"\n" + twoBranches("command = [\"cat\"]\n[[stage]]\nname = \"y\"\nshell = \"exit 3\"\noutput = \"none\"\n"),
			code: 1, msg: `timed out after 1s`},
		{name: "a branch's failure waits in its branch, then SIGTERM to every process",
			job:    twoBranches("command = [\"cat\"]\n[[stage]]\nname = \"y\"\nshell = \"exit 3\"\noutput = \"none\"\n"),
			signal: signalEveryProcess(syscall.SIGTERM, false, 3), code: 143, msg: `job "job" interrupted: interrupted by SIGTERM`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			job := writeFile(t, dir, "job.toml", tc.job)
			res := runPipespoolWith(t, runOpts{}, tc.signal, "exec", job)
			if res.Code != tc.code || !strings.Contains(string(res.Stderr), tc.msg) || strings.Contains(string(res.Stderr), "failed: branch") {
				t.Fatalf("exit %d, want %d saying %q\n%s", res.Code, tc.code, tc.msg, res.Stderr)
			}
		})
	}
}

// TestExecFanOutProducerInLargeWrites: a producer that writes in large
// blocking write(2)s (dd bs=32M) into the fan-out, with small pipes and
// branches that read at different paces: each write wakes the fan-out only
// when it found the pipe empty or once it is done, and a fan-out that
// waited on the strength of a source it had seen dry, while the writer had
// refilled it behind it, hung the run about 1 time in 2.
func TestExecFanOutProducerInLargeWrites(t *testing.T) {
	dir := t.TempDir()
	job := writeFile(t, dir, "big-writes.toml", `
pipe_size = "64KiB"
[input]
path = "none"
[[stage]]
name = "dd"
command = ["dd", "if=/dev/zero", "bs=32M", "count=4", "status=none"]
[[stage]]
name = "a"
command = ["dd", "bs=24k", "status=none"]
output = "none"
[[stage]]
name = "b"
from = "dd"
command = ["cat"]
output = "none"
`)
	for range 6 {
		res := runPipespool(t, runOpts{Timeout: 30 * time.Second}, "exec", job)
		if res.Code != 0 {
			t.Fatalf("exit %d: %s", res.Code, res.Stderr)
		}
	}
}
