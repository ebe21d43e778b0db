package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// gpgQueue is a queue whose job files are fspl packets encrypted with gpg
// to the test recipient key, as an fspl user makes them
// (`fspl prepare | gpg --encrypt | fspl queue-write`).
type gpgQueue struct {
	dir     string // the test's directory; the queue is dir/q
	keys    string // testdata/keys, absolute
	decoder string // the shell decoder fspl users give: gpg -d with the passphrase
	config  string // a job file with only [decoder.openpgp], for -d openpgp
	encode  string // the shell pipeline that made the job files from packets
	specs   []packetSpec
}

// newGPGHome makes a temporary GNUPGHOME holding the recipient's secret
// key, sets it for the test (fspl, pipespool and their decoders all see
// it), and stops its gpg-agent at the end.
func newGPGHome(t *testing.T) (keys string) {
	t.Helper()
	needTool(t, "gpg", "apt-get install -y gnupg")
	keys, err := filepath.Abs("../testdata/keys")
	if err != nil {
		t.Fatal(err)
	}
	// A short path: gpg-agent's socket must fit in sun_path.
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GNUPGHOME", home)
	t.Cleanup(func() {
		run(t, "/", nil, nil, "gpgconf", "--kill", "all")
		os.RemoveAll(home)
	})
	must(t, "/", nil, nil, "gpg", "--batch", "-q", "--pinentry-mode", "loopback",
		"--passphrase-file", filepath.Join(keys, "recipient.pass"), "--import", filepath.Join(keys, "recipient.sec.asc"))
	return keys
}

// newGPGQueue prepares specs with fspl, passes each packet through
// encode (a shell pipeline reading the packet; "" for none) and gpg, and
// writes them to dir/q with fspl queue-write.
func newGPGQueue(t *testing.T, specs []packetSpec, encode string) *gpgQueue {
	t.Helper()
	fspl := needFspl(t)
	g := &gpgQueue{dir: t.TempDir(), keys: newGPGHome(t)}
	g.decoder = fmt.Sprintf("gpg -q --batch --pinentry-mode loopback --passphrase-file %s -d", filepath.Join(g.keys, "recipient.pass"))
	g.config = writeFile(t, g.dir, "keys.toml", fmt.Sprintf("[decoder.openpgp]\nsecret_key = %q\npassphrase_file = %q\n",
		filepath.Join(g.keys, "recipient.sec.asc"), filepath.Join(g.keys, "recipient.pass")))
	enc := fmt.Sprintf("gpg -q --batch --trust-model always --encrypt --recipient-file %s", filepath.Join(g.keys, "recipient.pub.asc"))
	if encode != "" {
		enc = encode + " | " + enc
	}
	g.encode, g.specs = enc, specs
	packets := prepare(t, fspl, g.dir, specs)
	for i, p := range packets {
		packets[i] = []byte(must(t, g.dir, p, nil, "sh", "-c", enc))
	}
	writeQueue(t, fspl, g.dir, packets)
	return g
}

// copyQueue copies dir/q to dir/name/q and returns dir/name.
func (g *gpgQueue) copyQueue(t *testing.T, name string) string {
	t.Helper()
	d := filepath.Join(g.dir, name)
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	copyDir(t, filepath.Join(g.dir, "q"), filepath.Join(d, "q"))
	return d
}

// compareProcess runs `fspl queue-process -q q fsplArgs... dumpCommand` and,
// for each psArgs, `pipespool queue-process -q q psArgs... dumpCommand` on
// copies of the queue, and compares what the jobs saw (environment, order,
// payload), the exit status, nextseq and the jobs left. It is processBoth
// with a different decoder on each side; fspl runs once, as its gpg
// decoder costs a key unlock (~0.3 s) per job file and per scan.
func (g *gpgQueue) compareProcess(t *testing.T, name string, fsplArgs []string, psArgs ...[]string) {
	t.Helper()
	fd := g.copyQueue(t, name+"-fspl")
	// The queues must look alike to the jobs: same relative path "q".
	rf := run(t, fd, nil, nil, needFspl(t), append(append([]string{"queue-process", "-q", "q"}, fsplArgs...), dumpCommand...)...)
	for i, args := range psArgs {
		g.compareOne(t, fmt.Sprintf("%s (pipespool %s)", name, strings.Join(args, " ")), fd, rf,
			g.copyQueue(t, fmt.Sprintf("%s-pipespool-%d", name, i)), args)
	}
}

func (g *gpgQueue) compareOne(t *testing.T, name, fd string, rf result, pd string, psArgs []string) {
	t.Helper()
	rp := run(t, pd, nil, nil, pipespoolBin, append(append([]string{"queue-process", "-q", "q"}, psArgs...), dumpCommand...)...)
	if rf.code != rp.code {
		t.Errorf("%s: exit status: fspl %d, pipespool %d\nfspl stderr: %s\npipespool stderr: %s", name, rf.code, rp.code, rf.err, rp.err)
	}
	if rf.out != rp.out {
		t.Errorf("%s: jobs saw different things:\n--- fspl\n%s\n--- pipespool\n%s\npipespool stderr: %s", name, rf.out, rp.out, rp.err)
	}
	if f, p := readFile(t, filepath.Join(fd, "q/nextseq")), readFile(t, filepath.Join(pd, "q/nextseq")); f != p {
		t.Errorf("%s: nextseq: fspl %q, pipespool %q", name, f, p)
	}
	if f, p := listJobs(t, filepath.Join(fd, "q")), listJobs(t, filepath.Join(pd, "q")); strings.Join(f, " ") != strings.Join(p, " ") {
		t.Errorf("%s: jobs left: fspl %v, pipespool %v", name, f, p)
	}
	if !strings.Contains(rp.out, "FSPL_SEQ=") {
		t.Errorf("%s: no job ran: %q\nstderr: %s", name, rp.out, rp.err)
	}
}

// gpgPackets are fewer than interopPackets (every gpg run costs a key
// unlock) but keep what matters: params with bytes >= 0x80, env with a
// newline, NOP, Fail, an empty and a 1 MiB payload.
func gpgPackets(t *testing.T) []packetSpec {
	all := interopPackets(t)
	return []packetSpec{all[0], all[2], all[3], all[4], all[5]}
}

// TestQueueGpgEncoded: a gpg-encoded queue made by fspl, processed by
// pipespool with gpg as a shell decoder and with the built-in -d openpgp,
// each compared with fspl queue-process -d 'gpg ... -d'.
func TestQueueGpgEncoded(t *testing.T) {
	g := newGPGQueue(t, gpgPackets(t), "")
	gpgD := []string{"-d", g.decoder}
	builtin := []string{"-d", "openpgp", "--decoder-config", g.config}
	for _, tc := range []struct {
		name  string
		extra []string
		shell bool // also pipespool with the shell decoder
	}{
		{"delete", []string{"--on-error", "Delete", "--allow-job-params"}, true},
		{"retry", nil, false}, // stops at the Fail packet, exit 1
		{"leave-timestamp", []string{"--on-error", "Leave", "--order-by", "Timestamp"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			variants := [][]string{append(append([]string(nil), builtin...), tc.extra...)}
			if tc.shell {
				variants = append(variants, append(append([]string(nil), gpgD...), tc.extra...))
			}
			g.compareProcess(t, tc.name, append(append([]string(nil), gpgD...), tc.extra...), variants...)
		})
	}
	// The key from DIR/pipespool.toml (a key-only file is fine in command
	// mode), and queue-ls/queue-info/queue-payload with -d openpgp.
	d := g.copyQueue(t, "dirconfig")
	copyFile(t, g.config, filepath.Join(d, "q/pipespool.toml"))
	fspl := needFspl(t)
	if f, p := must(t, g.dir, nil, nil, fspl, "queue-ls", "-q", "q", "-d", g.decoder), must(t, d, nil, nil, pipespoolBin, "queue-ls", "q", "-d", "openpgp"); f != p {
		t.Errorf("queue-ls differs:\n--- fspl -d gpg\n%s--- pipespool -d openpgp\n%s", f, p)
	}
	if p := must(t, d, nil, nil, pipespoolBin, "queue-payload", "q", "-j", "3", "-d", "openpgp"); p != string(g.specs[2].payload) {
		t.Errorf("queue-payload -j 3 -d openpgp: %d bytes, not the payload of %d bytes", len(p), len(g.specs[2].payload))
	}
	for _, id := range []string{"1"} {
		f := strings.ReplaceAll(must(t, g.dir, nil, nil, fspl, "queue-info", "-q", "q", "-j", id, "-d", g.decoder), g.dir, "D")
		p := strings.ReplaceAll(must(t, d, nil, nil, pipespoolBin, "queue-info", "-q", "q", "-j", id, "-d", "openpgp"), d, "D")
		if f != p {
			t.Errorf("queue-info -j %s differs:\n--- fspl\n%s--- pipespool\n%s", id, f, p)
		}
	}
	// stdin-process decodes a single encrypted packet like gpg -d | fspl stdin-process.
	pkt := []byte(must(t, g.dir, prepare(t, fspl, g.dir, g.specs[:1])[0], nil, "sh", "-c", g.encode))
	want := must(t, g.dir, pkt, nil, "sh", "-c", g.decoder+" | "+fspl+" stdin-process sh -- -c 'env | grep ^FSPL_ | sort; sha256sum'")
	got := must(t, g.dir, pkt, nil, pipespoolBin, "stdin-process", "-d", "openpgp", "--decoder-config", g.config, "sh", "--", "-c", "env | grep ^FSPL_ | sort; sha256sum")
	if got != want {
		t.Errorf("stdin-process -d openpgp:\n--- gpg -d | fspl\n%s--- pipespool\n%s", want, got)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	must(t, "/", nil, nil, "cp", src, dst)
}

// TestQueueGpgZstdChained: packets compressed with zstd, then encrypted:
// -d openpgp -d zstd (both built-in) and -d openpgp -d 'zstd -d' (built-in
// then shell) against fspl with gpg and zstd in one shell decoder.
func TestQueueGpgZstdChained(t *testing.T) {
	needTool(t, "zstd", "apt-get install -y zstd")
	g := newGPGQueue(t, gpgPackets(t), "zstd -q -c")
	fsplD := []string{"-d", g.decoder + " | zstd -q -d", "--on-error", "Delete"}
	g.compareProcess(t, "chained", fsplD,
		[]string{"-d", "openpgp", "-d", "zstd", "--decoder-config", g.config, "--on-error", "Delete"},
		[]string{"-d", "openpgp", "-d", "zstd -q -d", "--decoder-config", g.config, "--on-error", "Delete"},
		[]string{"-d", g.decoder, "-d", "zstd", "--on-error", "Delete"})

	// Pipeline mode: the key in the --job file beside the stages.
	job := writeFile(t, g.dir, "restore.toml", readFile(t, g.config)+"\n[[stage]]\ncommand = [\"sha256sum\"]\n")
	fd, pd := g.copyQueue(t, "pipeline-fspl"), g.copyQueue(t, "pipeline-pipespool")
	want := must(t, fd, nil, nil, needFspl(t), "queue-process", "-q", "q", "--on-error", "Delete", "-d", g.decoder+" | zstd -q -d", "sha256sum")
	got := run(t, pd, nil, nil, pipespoolBin, "queue-process", "q", "--job", job, "--on-error", "Delete", "-d", "openpgp", "-d", "zstd")
	if got.out != want || got.code != 0 {
		t.Errorf("pipeline mode -d openpgp -d zstd: exit %d\n--- fspl\n%s--- pipespool\n%s\nstderr: %s", got.code, want, got.out, got.err)
	}
	if n := len(listJobs(t, filepath.Join(pd, "q"))); n != 0 {
		t.Errorf("pipeline mode: %d jobs left", n)
	}
}

// TestQueueGpgErrors: a wrong key, a file that is not an OpenPGP message
// and a failed integrity check name the packet file and lose no job.
func TestQueueGpgErrors(t *testing.T) {
	g := newGPGQueue(t, []packetSpec{{kind: "cmd", payload: randomBytes(t, 200000)}, {kind: "cmd", payload: []byte("two\n")}}, "")

	// No key anywhere: usage error saying where the key goes.
	d := g.copyQueue(t, "nokey")
	r := run(t, d, nil, nil, pipespoolBin, "queue-process", "q", "-d", "openpgp", "cat")
	if r.code != 2 || !strings.Contains(r.err, "[decoder.openpgp]") || !strings.Contains(r.err, "DIR/pipespool.toml") {
		t.Errorf("-d openpgp without a job file: exit %d, stderr %s", r.code, r.err)
	}
	// A job file without the table, and one with a misspelt key.
	bad := writeFile(t, g.dir, "bad.toml", "[decoder.openpgp]\nsecret_key = \"x.asc\"\nrequir_signed_by = \"y\"\n")
	r = run(t, d, nil, nil, pipespoolBin, "queue-process", "q", "-d", "openpgp", "--decoder-config", bad, "cat")
	if r.code != 2 || !strings.Contains(r.err, "bad.toml:3") || !strings.Contains(r.err, "requir_signed_by") {
		t.Errorf("misspelt key: exit %d, stderr %s", r.code, r.err)
	}
	empty := writeFile(t, g.dir, "empty.toml", "name = \"x\"\n")
	r = run(t, d, nil, nil, pipespoolBin, "queue-ls", "q", "-d", "openpgp", "--decoder-config", empty)
	if r.code != 2 || !strings.Contains(r.err, "empty.toml has no [decoder.openpgp]") {
		t.Errorf("no table: exit %d, stderr %s", r.code, r.err)
	}

	// The wrong key: every job is skipped with a warning naming it and
	// saying why; nothing runs, nothing moves.
	wrong := writeFile(t, g.dir, "wrong.toml", fmt.Sprintf("[decoder.openpgp]\nsecret_key = %q\n", filepath.Join(g.keys, "other.sec.asc")))
	r = run(t, d, nil, nil, pipespoolBin, "queue-process", "q", "-d", "openpgp", "--decoder-config", wrong, "cat")
	jobs := listJobs(t, filepath.Join(d, "q"))
	if r.out != "" || readFile(t, filepath.Join(d, "q/nextseq")) != "1\n" || len(jobs) != 2 {
		t.Errorf("wrong key: exit %d, stdout %q, nextseq %q, jobs %v", r.code, r.out, readFile(t, filepath.Join(d, "q/nextseq")), jobs)
	}
	for _, j := range jobs {
		if !strings.Contains(r.err, j) {
			t.Errorf("wrong key: stderr does not name %s:\n%s", j, r.err)
		}
	}
	if !strings.Contains(r.err, "no secret key for this message") {
		t.Errorf("wrong key: stderr does not say why:\n%s", r.err)
	}

	// Not an OpenPGP message: a plain packet among the encrypted ones is
	// skipped and named, the others run.
	fspl := needFspl(t)
	plain := prepare(t, fspl, g.dir, []packetSpec{{kind: "cmd", payload: []byte("plain")}})[0]
	d = g.copyQueue(t, "plain")
	must(t, d, plain, nil, fspl, "queue-write", "-q", "q")
	r = run(t, d, nil, nil, pipespoolBin, "queue-process", "q", "-d", "openpgp", "--decoder-config", g.config, "--order-by", "Timestamp", "sh", "--", "-c", "wc -c")
	if r.code != 0 || !strings.Contains(r.err, "not an OpenPGP message") || len(listJobs(t, filepath.Join(d, "q"))) != 1 {
		t.Errorf("plain packet: exit %d, jobs %v, stderr %s", r.code, listJobs(t, filepath.Join(d, "q")), r.err)
	}

	// A corrupt message: the header decrypts, the integrity check at the
	// end fails: under Retry the job stays, nextseq stays, exit 1 naming
	// the file.
	d = g.copyQueue(t, "corrupt")
	var big string
	for _, j := range listJobs(t, filepath.Join(d, "q")) {
		p := filepath.Join(d, "q/jobs", j)
		if st, _ := os.Stat(p); st.Size() > 100000 {
			big = p
		}
	}
	b := []byte(readFile(t, big))
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(big, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, dec := range [][]string{{"-d", "openpgp", "--decoder-config", g.config}, {"-d", g.decoder}} {
		r = run(t, d, nil, nil, pipespoolBin, append(append([]string{"queue-process", "q"}, dec...), "sh", "--", "-c", "cat >/dev/null")...)
		rel := "q/jobs/" + filepath.Base(big)
		if r.code != 1 || !strings.Contains(r.err, rel) || readFile(t, filepath.Join(d, "q/nextseq")) != "1\n" || len(listJobs(t, filepath.Join(d, "q"))) != 2 {
			t.Errorf("corrupt message with %s: exit %d, nextseq %q, jobs %v, stderr %s", dec[1], r.code,
				readFile(t, filepath.Join(d, "q/nextseq")), listJobs(t, filepath.Join(d, "q")), r.err)
		}
	}

	// A command that fails after the corrupt data: the decoder's failure
	// (the message was modified) is named first, the command's after it.
	for _, dec := range [][]string{{"-d", "openpgp", "--decoder-config", g.config}, {"-d", g.decoder}} {
		r = run(t, d, nil, nil, pipespoolBin, append(append([]string{"queue-process", "q"}, dec...), "sh", "--", "-c", "cat >/dev/null; exit 4")...)
		want := `failed: decoder "gpg`
		if dec[1] == "openpgp" {
			want = `failed: decoder "openpgp": openpgp: integrity check failed`
		}
		if r.code != 1 || !strings.Contains(r.err, want) || !strings.Contains(r.err, "(then the command failed: sh: exit status 4)") ||
			len(listJobs(t, filepath.Join(d, "q"))) != 2 {
			t.Errorf("corrupt message, failing command, %s: exit %d, jobs %v, want the decoder named first:\n%s", dec[1], r.code, listJobs(t, filepath.Join(d, "q")), r.err)
		}
	}

	// Pipeline mode: the pipeline's output file is never renamed into
	// place when the decoder's integrity check fails after the last byte.
	out := filepath.Join(d, "restored.bin")
	job := writeFile(t, d, "restore.toml", "[output]\npath = \""+out+"\"\n[[stage]]\ncommand = [\"cat\"]\n")
	r = run(t, d, nil, nil, pipespoolBin, "queue-process", "q", "--job", job, "-d", "openpgp", "--decoder-config", g.config)
	if strings.Count(r.err, "integrity check failed") != 1 {
		t.Errorf("pipeline mode, corrupt message: the decoder's failure is not named exactly once:\n%s", r.err)
	}
	if r.code != 1 || !strings.Contains(r.err, "q/jobs/"+filepath.Base(big)) {
		t.Errorf("pipeline mode, corrupt message: exit %d, stderr %s", r.code, r.err)
	}
	// The good job, if it came first, may have committed its own output;
	// the corrupt one's (over 100000 bytes) must never appear.
	if st, err := os.Stat(out); err == nil && st.Size() > 100000 {
		t.Errorf("pipeline mode committed the output of a message that failed its integrity check (%d bytes)", st.Size())
	}
}

// TestQueueDecoderVerdictOneRule: whether a job succeeds, and which step
// is named, must not depend on the decoder being gpg or the built-in.
// Before, gpg, which fails on a broken pipe, failed an intact job whose
// command read only part of it and named itself first when the command
// failed, while the built-in, for which a broken pipe is no failure, named
// only the command. One rule now, the pipeline's: when the command fails,
// every decoder finishes its check (the rest of the payload is read and
// discarded) and one that made bad data is named first; when it succeeds
// having read only part, the decoder is stopped (nobody wants the rest),
// and its broken pipe is no failure.
func TestQueueDecoderVerdictOneRule(t *testing.T) {
	needTool(t, "zstd", "apt-get install -y zstd")
	dir := t.TempDir()
	raw := randomBytes(t, 3<<20)
	zst := []byte(must(t, dir, raw, nil, "zstd", "-q", "-c"))
	g := newGPGQueue(t, []packetSpec{{kind: "cmd", payload: zst}}, "")
	decoders := map[string][]string{"openpgp": {"-d", "openpgp", "--decoder-config", g.config}, "gpg": {"-d", g.decoder}}
	for _, tc := range []struct {
		modified bool
		command  string
		code     int
		want     []string // in stderr, in this order
		not      string
	}{
		{true, "zstd -d >/dev/null", 1, []string{`failed: decoder "`, "(then the command failed: sh: exit status"}, ""},
		{true, "head -c 1000 >/dev/null; exit 4", 1, []string{`failed: decoder "`, "(then the command failed: sh: exit status 4)"}, ""},
		{true, "head -c 1000 >/dev/null", 0, nil, `decoder "`},
		{false, "zstd -d >/dev/null", 0, nil, `decoder "`},
		{false, "head -c 1000 >/dev/null; exit 4", 1, []string{"failed: sh: exit status 4"}, `decoder "`},
		{false, "head -c 1000 >/dev/null", 0, nil, `decoder "`},
	} {
		for name, dec := range decoders {
			t.Run(fmt.Sprintf("%s/modified=%v/%s", name, tc.modified, tc.command), func(t *testing.T) {
				d := g.copyQueue(t, fmt.Sprintf("%s-%v-%d", name, tc.modified, len(tc.command)+len(tc.want)))
				if tc.modified {
					jobs := listJobs(t, filepath.Join(d, "q"))
					p := filepath.Join(d, "q/jobs", jobs[0])
					b := []byte(readFile(t, p))
					b[len(b)/2] ^= 0x40
					if err := os.WriteFile(p, b, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				r := run(t, d, nil, nil, pipespoolBin, append(append([]string{"queue-process", "q"}, dec...), "sh", "--", "-c", tc.command)...)
				if r.code != tc.code {
					t.Errorf("exit %d, want %d\n%s", r.code, tc.code, r.err)
				}
				at := 0
				for _, w := range tc.want {
					i := strings.Index(r.err[at:], w)
					if i < 0 {
						t.Errorf("stderr lacks %q (after byte %d):\n%s", w, at, r.err)
						break
					}
					at += i + len(w)
				}
				if tc.not != "" && strings.Contains(r.err, tc.not) {
					t.Errorf("stderr names %q:\n%s", tc.not, r.err)
				}
				left := len(listJobs(t, filepath.Join(d, "q")))
				if (tc.code == 0) != (left == 0) {
					t.Errorf("%d jobs left after exit %d", left, r.code)
				}
			})
		}
	}
}
