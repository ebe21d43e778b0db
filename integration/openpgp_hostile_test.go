package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pipespool/pipespool/filter/pgpcraft"
	"github.com/pipespool/pipespool/queue"
)

// Hostile OpenPGP messages, built from their packets: whatever they ask
// for, a run costs little memory and time, fails with the limit named,
// and leaves no output.

// argon2SKESK asks for Argon2 with passes and 2^exp KiB of memory.
func argon2SKESK(passes, exp byte) []byte { return pgpcraft.SKESK(pgpcraft.Argon2S2K(passes, 4, exp)) }

// iteratedSKESK asks for the largest iterated S2K (65011712 bytes).
func iteratedSKESK() []byte { return pgpcraft.SKESK(pgpcraft.IteratedS2K(255)) }

// measured is a run of the binary under GNU time.
type measured struct {
	code    int
	stderr  string
	rssKiB  int
	elapsed time.Duration
}

// runMeasured runs pipespool under /usr/bin/time -f %M: its peak RSS is
// its own (time is small), not the test process's, which Go's
// CLONE_VFORK start would add to a child's ru_maxrss.
func runMeasured(t *testing.T, dir string, args ...string) measured {
	t.Helper()
	needTool(t, "/usr/bin/time", "apt-get install -y time")
	rssFile := filepath.Join(t.TempDir(), "rss")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/bin/time", append([]string{"-f", "%M", "-o", rssFile, pipespoolBin}, args...)...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	m := measured{stderr: stderr.String(), elapsed: time.Since(start)}
	if ctx.Err() != nil {
		t.Fatalf("pipespool %s: still running after 3 minutes\n%s", strings.Join(args, " "), m.stderr)
	}
	if ee, ok := err.(*exec.ExitError); ok {
		m.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(rssFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(b)) // "Command exited with non-zero status 1" may come first
	if m.rssKiB, err = strconv.Atoi(lines[len(lines)-1]); err != nil {
		t.Fatalf("GNU time wrote %q", b)
	}
	return m
}

// hostileMessages are the messages of the hostile-input tests: what each
// must fail with.
func hostileMessages(t *testing.T, dir string) map[string]struct{ path, want string } {
	t.Helper()
	msgs := map[string]struct{ path, want string }{}
	add := func(name, want string, write func(w io.Writer)) {
		p := filepath.Join(dir, name+".gpg")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		write(f)
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		msgs[name] = struct{ path, want string }{p, want}
	}
	add("argon2-2GiB", "Argon2 with 2.0 GiB of memory, more than max_argon2_memory (64.0 MiB)", func(w io.Writer) {
		w.Write(argon2SKESK(1, 21))
		w.Write(pgpcraft.JunkSEIPD())
	})
	add("argon2-2TiB", "Argon2 with 2.0 TiB of memory", func(w io.Writer) {
		w.Write(argon2SKESK(1, 31))
		w.Write(pgpcraft.JunkSEIPD())
	})
	add("skesk-100000", "session-key packet 17 (SKESK) and 99983 more after it were not tried", func(w io.Writer) {
		w.Write(bytes.Repeat(iteratedSKESK(), 100000))
		w.Write(pgpcraft.JunkSEIPD())
	})
	add("armor-line-64MiB", "longer than 64 KiB, the limit of an armor line", func(w io.Writer) {
		io.WriteString(w, "-----BEGIN PGP MESSAGE-----\nComment: ")
		line := bytes.Repeat([]byte("A"), 1<<20)
		for range 64 {
			w.Write(line)
		}
		io.WriteString(w, "\n\nwy4ECQMI\n-----END PGP MESSAGE-----\n")
	})
	add("pkesk-50000", "and 49992 more", func(w io.Writer) {
		for i := range 50000 {
			w.Write(pgpcraft.PKESK(0x1000000 + uint64(i)))
		}
		w.Write(pgpcraft.JunkSEIPD())
	})
	return msgs
}

// TestOpenPGPHostileMessagesCostLittle: each hostile message fails the
// run (exit 1) naming the limit, with pipespool's peak RSS under 64 MiB, in
// bounded time, and no output file.
func TestOpenPGPHostileMessagesCostLittle(t *testing.T) {
	dir := t.TempDir()
	keys := builtinKeys(t, dir)
	job := writeFile(t, dir, "job.toml", fmt.Sprintf(`
[[stage]]
name = "decrypt"
builtin = "openpgp-decrypt"
[stage.with]
secret_key = %q
passphrase_file = %q
`, filepath.Join(keys, "plain.sec.asc"), filepath.Join(keys, "symmetric.pass")))
	for name, m := range hostileMessages(t, dir) {
		t.Run(name, func(t *testing.T) {
			outDir := t.TempDir()
			r := runMeasured(t, dir, "exec", job, "-i", m.path, "-o", filepath.Join(outDir, "out"))
			t.Logf("exit %d, peak RSS %d KiB, %v", r.code, r.rssKiB, r.elapsed.Round(time.Millisecond))
			if r.code != 1 || !strings.Contains(r.stderr, `stage "decrypt"`) || !strings.Contains(r.stderr, m.want) {
				t.Fatalf("exit %d, want 1 naming stage \"decrypt\" and %q:\n%.2000s", r.code, m.want, r.stderr)
			}
			if r.rssKiB > 64<<10 {
				t.Errorf("peak RSS %d KiB, over 64 MiB", r.rssKiB)
			}
			if len(r.stderr) > 16<<10 {
				t.Errorf("%d bytes of stderr", len(r.stderr))
			}
			if r.elapsed > time.Minute {
				t.Errorf("took %v", r.elapsed)
			}
			if entries, _ := os.ReadDir(outDir); len(entries) != 0 {
				t.Errorf("a failed run left %v", entries)
			}
		})
	}
}

// TestOpenPGPHostileJobFileCostsLittle: the same limits hold for -d
// openpgp: a hostile job file is skipped with a warning naming it and the
// limit, the command does not run on it, and memory stays bounded.
func TestOpenPGPHostileJobFileCostsLittle(t *testing.T) {
	dir := t.TempDir()
	keys := builtinKeys(t, dir)
	config := writeFile(t, dir, "keys.toml", fmt.Sprintf("[decoder.openpgp]\npassphrase_file = %q\n", filepath.Join(keys, "symmetric.pass")))
	msgs := hostileMessages(t, dir)
	for _, name := range []string{"argon2-2GiB", "armor-line-64MiB"} {
		t.Run(name, func(t *testing.T) {
			d := t.TempDir()
			must(t, d, nil, nil, pipespoolBin, "queue-init", "q")
			job := filepath.Join(d, "q/jobs", queue.NewJobFilename())
			copyFile(t, msgs[name].path, job)
			marker := filepath.Join(d, "ran")
			r := runMeasured(t, d, "queue-process", "q", "-d", "openpgp", "--decoder-config", config, "sh", "--", "-c", "touch "+marker)
			t.Logf("exit %d, peak RSS %d KiB, %v", r.code, r.rssKiB, r.elapsed.Round(time.Millisecond))
			if !strings.Contains(r.stderr, filepath.Base(job)) || !strings.Contains(r.stderr, msgs[name].want) {
				t.Fatalf("exit %d: stderr does not name the job file and %q:\n%.2000s", r.code, msgs[name].want, r.stderr)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Error("the command ran on a hostile job file")
			}
			if len(listJobs(t, filepath.Join(d, "q"))) != 1 {
				t.Error("the job file was lost")
			}
			if r.rssKiB > 64<<10 {
				t.Errorf("peak RSS %d KiB, over 64 MiB", r.rssKiB)
			}
		})
	}
}

// TestBuiltinDecrypterIsRootCauseOfModifiedMessage: a bit flipped in the
// middle of an OpenPGP message of a zstd stream makes zstd fail on the
// garbage before the decrypter reaches the MDC at the end; the decrypter,
// its consumer gone, reads on, finds the message modified, and is named
// the root cause, whether zstd is the built-in or `zstd -d`. An intact
// message whose content is not zstd names zstd. Run with -count=20: the
// order in which the stages end varies.
func TestBuiltinDecrypterIsRootCauseOfModifiedMessage(t *testing.T) {
	needTools(t, "gpg", "zstd")
	dir := t.TempDir()
	newGPGHome(t)
	keys := builtinKeys(t, dir)
	// Text compresses into zstd blocks whose corruption zstd notices at
	// once; 32 MiB of it is far more than the pipes between the stages
	// hold, so zstd fails while the decrypter is mid-message.
	var text bytes.Buffer
	for i := 0; text.Len() < 32<<20; i++ {
		fmt.Fprintf(&text, "%08d backup line for dataset tank/home/%d, block %x\n", i, i%97, i*7919)
	}
	in := filepath.Join(dir, "input")
	if err := os.WriteFile(in, text.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	shell(t, dir, fmt.Sprintf("zstd -q -c input | %s -z 0 --encrypt -r recipient@pipespool.invalid > good.gpg", gpgCmd))
	shell(t, dir, fmt.Sprintf("%s -z 0 --encrypt -r recipient@pipespool.invalid < input > notzstd.gpg", gpgCmd))
	msg, err := os.ReadFile(filepath.Join(dir, "good.gpg"))
	if err != nil {
		t.Fatal(err)
	}
	msg[len(msg)/3] ^= 0x08
	if err := os.WriteFile(filepath.Join(dir, "modified.gpg"), msg, 0o644); err != nil {
		t.Fatal(err)
	}
	decrypt := fmt.Sprintf("[[stage]]\nname = \"decrypt\"\nbuiltin = \"openpgp-decrypt\"\n[stage.with]\nsecret_key = %q\npassphrase_file = %q\n\n",
		filepath.Join(keys, "recipient.sec.asc"), filepath.Join(keys, "recipient.pass"))
	jobs := map[string]string{
		"built-in zstd": decrypt + "[[stage]]\nname = \"unzstd\"\nbuiltin = \"zstd-decompress\"\n",
		"zstd -d":       decrypt + "[[stage]]\nname = \"unzstd\"\ncommand = [\"zstd\", \"-d\", \"-q\"]\n",
	}
	for name, body := range jobs {
		job := writeFile(t, dir, strings.ReplaceAll(name, " ", "-")+".toml", body)
		for _, tc := range []struct{ input, root, want string }{
			{"modified.gpg", "decrypt", "integrity check failed"},
			{"notzstd.gpg", "unzstd", ""},
		} {
			outDir := t.TempDir()
			report := filepath.Join(outDir, "report.json")
			res := runPipespool(t, runOpts{}, "exec", job, "-i", filepath.Join(dir, tc.input), "-o", filepath.Join(outDir, "out"), "--report", report)
			var rep struct {
				RootCause string `json:"root_cause"`
				Message   string `json:"message"`
			}
			b, err := os.ReadFile(report)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &rep); err != nil {
				t.Fatal(err)
			}
			if res.Code != 1 || rep.RootCause != tc.root || !strings.Contains(rep.Message, tc.want) {
				t.Errorf("%s, %s: exit %d, root cause %q (%s), want %q (%s)\n%s", name, tc.input, res.Code, rep.RootCause, rep.Message, tc.root, tc.want, res.Stderr)
			}
		}
	}
}
