package pipeline

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pipespool/pipespool/filter"
	"github.com/pipespool/pipespool/pump"
	"github.com/pipespool/pipespool/units"
)

func TestLoadJobDefaultsAndOverrides(t *testing.T) {
	job, err := Parse("/etc/backup/restore-tank.toml", []byte(`
may_outlive = ["gpg-agent", "scdaemon"]
timeout = "12h"
stall_timeout = "10m"
on_stall = "nudge"
pipe_size = "256KiB"
[input]
path = "backup.bin"
[output]
path = "restored.bin"
mode = "0600"
[[stage]]
command = ["cat"]
[[stage]]
command = ["cat"]
stall_timeout = "0"
on_stall = "kill"
allow_partial_read = true
env = { TZ = "UTC" }
dir = "sub"
stderr = "discard"
[[stage]]
name = "last"
shell = "cat"
rate_limit = "50MiB/s"
`))
	if err != nil {
		t.Fatal(err)
	}
	if job.Name != "restore-tank" || job.Timeout != 12*time.Hour || job.PipeSize != 256<<10 ||
		strings.Join(job.MayOutlive, ",") != "gpg-agent,scdaemon" {
		t.Errorf("job: %+v", job)
	}
	if job.OutputMode != 0o600 || !job.OutputModeSet || job.Input != "backup.bin" {
		t.Errorf("files: %+v", job)
	}
	s := job.Stages
	if s[0].Name != "cat" || s[1].Name != "cat-2" || s[2].Name != "last" {
		t.Errorf("names: %q %q %q", s[0].Name, s[1].Name, s[2].Name)
	}
	if s[2].RateLimit != 50<<20 || s[0].RateLimit != 0 {
		t.Errorf("rate limits %d, %d; want 0, 50 MiB/s", s[0].RateLimit, s[2].RateLimit)
	}
	if s[0].StallTimeout != 10*time.Minute || s[0].OnStall != "nudge" {
		t.Errorf("stage 1 inherits the job's stall settings: %+v", s[0])
	}
	if s[1].StallTimeout != 0 || s[1].OnStall != "kill" || !s[1].AllowPartialRead || s[1].Env["TZ"] != "UTC" {
		t.Errorf("stage 2 overrides: %+v", s[1])
	}
	if s[1].Dir != "/etc/backup/sub" || s[1].Stderr != "discard" {
		t.Errorf("stage 2 dir %q stderr %q", s[1].Dir, s[1].Stderr)
	}
	if s[2].Shell != "cat" {
		t.Errorf("stage 3: %+v", s[2])
	}
}

func TestLoadJobDefaults(t *testing.T) {
	job, err := Parse("j.toml", []byte("[[stage]]\ncommand = [\"/bin/cat\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if job.Name != "j" || job.Timeout != 0 || job.StallTimeout != DefaultStallTimeout || job.OnStall != "warn" {
		t.Errorf("defaults: %+v", job)
	}
	if job.Input != "-" || job.Output != "-" || job.PipeSize != 1<<20 || job.Stages[0].Stderr != "capture" {
		t.Errorf("defaults: %+v", job)
	}
}

func TestLoadJobErrorsNameLineAndKey(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		line       int
		key, msg   string
	}{
		{"unknown top key", "nme = \"x\"\n[[stage]]\ncommand=[\"cat\"]\n", 1, "nme", "unknown key"},
		{"unknown stage key", "[[stage]]\ncommand=[\"cat\"]\nrequire = 1\n", 3, "stage[1].require", "unknown key"},
		{"unknown key in stage 2", "[[stage]]\ncommand=[\"cat\"]\n[[stage]]\ncommand=[\"cat\"]\nrequire = 1\n", 5, "stage[2].require", "unknown key"},
		{"wrong type", "[[stage]]\ncommand = [\"cat\"]\nallow_partial_read = \"yes\"\n", 3, "", ""},
		{"command a string", "[[stage]]\ncommand = \"zstd -d\"\n", 2, "stage[1].command", `it must be an array: the program and its arguments, one string each, as in command = ["zstd", "-d"] (or write shell = "zstd -d"`},
		{"command with a number", "[[stage]]\ncommand = [\"head\", \"-c\", 100]\n", 2, "stage[1].command", `element 3 is 100, not a string`},
		{"may_outlive a string", "may_outlive = \"gpg-agent\"\n[[stage]]\ncommand=[\"cat\"]\n", 1, "may_outlive", `must be an array of program names, as in may_outlive = ["gpg-agent"]`},
		{"may_outlive a path", "may_outlive = [\"/usr/bin/gpg-agent\"]\n[[stage]]\ncommand=[\"cat\"]\n", 1, "may_outlive", "not a program name"},
		{"command a number", "[[stage]]\ncommand = 3\n", 2, "stage[1].command", "must be an array of strings"},
		{"bad on_stall", "on_stall = \"panic\"\n[[stage]]\ncommand=[\"cat\"]\n", 1, "on_stall", "warn, nudge or kill"},
		{"bad stage on_stall", "[[stage]]\ncommand=[\"cat\"]\n[[stage]]\ncommand=[\"cat\"]\non_stall = \"x\"\n", 5, "stage[2].on_stall", "warn, nudge or kill"},
		{"bad duration", "timeout = \"forever\"\n[[stage]]\ncommand=[\"cat\"]\n", 1, "timeout", "not a duration"},
		{"bad size", "pipe_size = \"lots\"\n[[stage]]\ncommand=[\"cat\"]\n", 1, "pipe_size", "not a size"},
		{"tiny size", "pipe_size = 10\n[[stage]]\ncommand=[\"cat\"]\n", 1, "pipe_size", "out of range"},
		{"bad rate", "[[stage]]\ncommand=[\"cat\"]\nrate_limit = \"fast\"\n", 3, "stage[1].rate_limit", `"fast" is not a rate: use e.g. "50MiB/s"`},
		{"rate per hour", "[[stage]]\ncommand=[\"cat\"]\nrate_limit = \"50MiB/h\"\n", 3, "stage[1].rate_limit", "is not a rate"},
		{"zero rate", "[[stage]]\ncommand=[\"cat\"]\nrate_limit = 0\n", 3, "stage[1].rate_limit", "remove the limit"},
		{"bad buffer", "[[stage]]\ncommand=[\"cat\"]\nbuffer = \"lots\"\n", 3, "stage[1].buffer", "not a size"},
		{"buffer below a pipe", "pipe_size = \"4MiB\"\n[[stage]]\ncommand=[\"cat\"]\nbuffer = \"2MiB\"\n", 4, "stage[1].buffer", "2.0 MiB is less than one pipe (4.0 MiB)"},
		{"tiny buffer", "[[stage]]\ncommand=[\"cat\"]\nbuffer = 4096\n", 3, "stage[1].buffer", "less than one pipe (1.0 MiB)"},
		{"huge buffer", "[[stage]]\ncommand=[\"cat\"]\nbuffer = \"256GiB\"\n", 3, "stage[1].buffer", "more than 64.0 GiB"},
		{"buffer and rate limit", "[[stage]]\ncommand=[\"cat\"]\nrate_limit = \"1MiB/s\"\nbuffer = \"8MiB\"\n", 4, "stage[1].buffer", "a buffer or a rate_limit, not both"},
		{"start level without buffer", "[[stage]]\ncommand=[\"cat\"]\nbuffer_start_at = \"80%\"\n", 3, "stage[1].buffer_start_at", "needs a buffer on the same stage"},
		{"resume level without buffer", "[[stage]]\ncommand=[\"cat\"]\n[[stage]]\ncommand=[\"cat\"]\nbuffer_resume_at = \"20%\"\n", 5, "stage[2].buffer_resume_at", "needs a buffer"},
		{"level not a percentage", "[[stage]]\ncommand=[\"cat\"]\nbuffer = \"8MiB\"\nbuffer_start_at = 80\n", 4, "stage[1].buffer_start_at", `a percentage of the buffer such as "80%", not 80`},
		{"level a size", "[[stage]]\ncommand=[\"cat\"]\nbuffer = \"8MiB\"\nbuffer_start_at = \"6MiB\"\n", 4, "stage[1].buffer_start_at", `not "6MiB"`},
		{"level above 100", "[[stage]]\ncommand=[\"cat\"]\nbuffer = \"8MiB\"\nbuffer_start_at = \"120%\"\n", 4, "stage[1].buffer_start_at", "not within 0% and 100%"},
		{"resume at 0", "[[stage]]\ncommand=[\"cat\"]\nbuffer = \"8MiB\"\nbuffer_resume_at = \"0%\"\n", 4, "stage[1].buffer_resume_at", "reading would never resume"},
		{"bad mode", "[output]\nmode = \"rw\"\n[[stage]]\ncommand=[\"cat\"]\n", 2, "output.mode", "octal"},
		{"empty command", "[[stage]]\ncommand = []\n", 2, "stage[1].command", "empty"},
		{"no kind", "[[stage]]\nname = \"x\"\n", 1, "stage[1]", "exactly one of"},
		{"unknown builtin", "[[stage]]\nbuiltin = \"rot13\"\n", 2, "stage[1].builtin", "unknown built-in"},
		{"with on command", "[[stage]]\ncommand=[\"cat\"]\n[stage.with]\nlevel = 3\n", 3, "stage[1].with", "only built-in"},
		{"bad stderr", "[[stage]]\ncommand=[\"cat\"]\nstderr = \"file\"\n", 3, "stage[1].stderr", "capture, inherit or discard"},
		{"bad name", "[[stage]]\nname = \"a b\"\ncommand=[\"cat\"]\n", 2, "stage[1].name", "not a valid stage name"},
		{"dup name", "[[stage]]\nname=\"x\"\ncommand=[\"cat\"]\n[[stage]]\nname=\"x\"\ncommand=[\"cat\"]\n", 5, "stage[2].name", "already used"},
		{"no stages", "name = \"x\"\n", 0, "stage", "no stages"},
		{"syntax", "[[stage]]\ncommand = [\"cat\"\n", 2, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("job.toml", []byte(tc.body))
			var je *JobError
			if !errors.As(err, &je) {
				t.Fatalf("error %v (%T), want *JobError", err, err)
			}
			if je.Line != tc.line || (tc.key != "" && je.Key != tc.key) || !strings.Contains(je.Msg, tc.msg) {
				t.Fatalf("got line %d key %q msg %q; want line %d key %q msg containing %q", je.Line, je.Key, je.Msg, tc.line, tc.key, tc.msg)
			}
			if !strings.HasPrefix(je.Error(), "job.toml") || je.ExitCode() != 2 {
				t.Fatalf("Error() = %q, ExitCode %d", je.Error(), je.ExitCode())
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	var je *JobError
	if !errors.As(err, &je) || !strings.Contains(err.Error(), "nope.toml: cannot read job file") {
		t.Fatalf("err = %v", err)
	}
}

// FuzzLoadJob: any input is a job or a *JobError, never a panic.
func FuzzLoadJob(f *testing.F) {
	seeds, _ := filepath.Glob("../testdata/jobs/*.toml")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("[[stage]]\ncommand = [\"cat\"]\n"))
	f.Add([]byte("name = \"x\"\ntimeout = \"1h\"\n[input]\npath = \"a\"\n[[stage]]\nbuiltin = \"sha256\"\n[stage.with]\nexpect = \"00\"\n"))
	f.Add([]byte("[[stage]]\nshell = \"x\"\nenv = { A = \"b\" }\n[[stage]]\ncommand = [\"a\", \"b\"]\n"))
	f.Add([]byte("[[stage]]\ncommand = [\"cat\"]\nrate_limit = \"1.5MiB/s\"\n[[stage]]\ncommand = [\"cat\"]\nrate_limit = 4096\n"))
	f.Add([]byte("[[stage]]\ncommand = [\"cat\"]\nbuffer = \"256MiB\"\nbuffer_start_at = \"80%\"\nbuffer_resume_at = \"20%\"\n"))
	f.Add([]byte("[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\n[[stage]]\ncommand = [\"cat\"]\noutput = \"x\"\n[[stage]]\nfrom = \"a\"\noptional = true\ncommand = [\"cat\"]\noutput_mode = \"0600\"\noutput = \"y\"\n"))
	// A line whose last stage names its output (that is its output), with
	// a branch, and a line made by from.
	f.Add([]byte("[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\n[[stage]]\nname = \"b\"\ncommand = [\"cat\"]\noutput = \"x\"\n"))
	f.Add([]byte("[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\n[[stage]]\nname = \"b\"\ncommand = [\"cat\"]\noutput = \"x\"\n[[stage]]\nname = \"c\"\nfrom = \"a\"\ncommand = [\"cat\"]\noutput = \"y\"\noptional = true\n"))
	f.Add([]byte("[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\n[[stage]]\nname = \"b\"\nfrom = \"a\"\ncommand = [\"cat\"]\noutput = \"x\"\noutput_mode = \"0600\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		job, err := Parse("fuzz.toml", data)
		if err != nil {
			var je *JobError
			if !errors.As(err, &je) {
				t.Fatalf("error is %T, not *JobError: %v", err, err)
			}
			return
		}
		if len(job.Stages) == 0 {
			t.Fatal("a job without stages was accepted")
		}
		// A tree: each stage reads one above it, at most one branch has
		// no output, and the lines cover every stage once.
		bare, covered := 0, map[int]bool{}
		cons := job.consumers()
		for i := range job.Stages {
			if p := job.producer(i); p >= i || p < -1 || i > 0 && p < 0 {
				t.Fatalf("stage %d reads from %d", i+1, p+1)
			}
			if job.Stages[i].Output == "" && len(cons[i]) == 0 {
				bare++
			}
		}
		for _, l := range job.lines() {
			for _, i := range l.Stages {
				if covered[i] {
					t.Fatalf("stage %d is in two lines", i+1)
				}
				covered[i] = true
			}
		}
		if bare > 1 || len(covered) != len(job.Stages) {
			t.Fatalf("%d branches without output, %d of %d stages in lines", bare, len(covered), len(job.Stages))
		}
		seen := map[string]bool{}
		for _, s := range job.Stages {
			if seen[s.Name] {
				t.Fatalf("duplicate stage name %q accepted", s.Name)
			}
			seen[s.Name] = true
			if s.RateLimit < 0 || s.RateLimit > units.MaxRate {
				t.Fatalf("stage %q: rate limit %d accepted", s.Name, s.RateLimit)
			}
			if s.Buffer != 0 {
				if err := HopBuffer(job, Options{}, s.Index-1).Check(); err != nil || s.RateLimit != 0 {
					t.Fatalf("stage %q: buffer %d (%g%%, %g%%) with rate limit %d accepted: %v", s.Name, s.Buffer, s.BufferStartAt, s.BufferResumeAt, s.RateLimit, err)
				}
			}
			// Run as written: a line writes [output], so a stage's own
			// output must be that.
			if !job.FansOut() && s.Output != "" && s.Output != job.Output {
				t.Fatalf("a line whose stage %q says output = %q is accepted, but the run writes [output] %q", s.Name, s.Output, job.Output)
			}
		}
		if a, b, ok := sameOutput(job.writtenFiles(""), job.Dir, nil); ok {
			t.Fatalf("two writers of one file accepted: %s (%q) and %s (%q)", a.What, a.Path, b.What, b.Path)
		}
	})
}

// decoderJob writes a job file beside the test keys (its relative key
// names resolve there) and loads it with load.
func decoderJob(t *testing.T, load func(string) (*Job, error), body string) (*Job, error) {
	t.Helper()
	keys, err := filepath.Abs("../testdata/keys")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, k := range []string{"recipient.sec.asc", "recipient.pass", "recipient.pub.asc", "symmetric.pass", "signer.pub.asc"} {
		if err := os.Symlink(filepath.Join(keys, k), filepath.Join(dir, k)); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(dir, "job.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return load(p)
}

func TestLoadJobDecoderOpenPGPDecrypts(t *testing.T) {
	job, err := decoderJob(t, Load, `
[decoder.openpgp]
secret_key = "recipient.sec.asc"
passphrase_file = "recipient.pass"
[[stage]]
command = ["cat"]
`)
	if err != nil {
		t.Fatal(err)
	}
	if job.OpenPGPDecoder == nil {
		t.Fatal("[decoder.openpgp] gave no filter")
	}
	// Round trip through the openpgp-encrypt built-in to the same key.
	enc, ok := filter.Lookup("openpgp-encrypt")
	if !ok {
		t.Fatal("no openpgp-encrypt built-in")
	}
	ef, err := enc(map[string]any{"recipients": []any{"recipient.pub.asc"}}, filepath.Dir(job.File))
	if err != nil {
		t.Fatal(err)
	}
	var cipher, plain bytes.Buffer
	if err := ef.Run(context.Background(), strings.NewReader("packet bytes"), &cipher); err != nil {
		t.Fatal(err)
	}
	if err := job.OpenPGPDecoder.Run(context.Background(), &cipher, &plain); err != nil {
		t.Fatal(err)
	}
	if plain.String() != "packet bytes" {
		t.Errorf("decrypted %q", plain.String())
	}

	job, err = decoderJob(t, Load, "[decoder.openpgp]\npassphrase_file = \"symmetric.pass\"\n[[stage]]\ncommand = [\"cat\"]\n")
	if err != nil || job.OpenPGPDecoder == nil {
		t.Fatalf("symmetric decoder: %v", err)
	}
	job, err = decoderJob(t, Load, "[[stage]]\ncommand = [\"cat\"]\n")
	if err != nil || job.OpenPGPDecoder != nil {
		t.Fatalf("no [decoder] table: decoder %v, err %v", job.OpenPGPDecoder, err)
	}
}

func TestLoadJobDecoderErrorsNameLineAndKey(t *testing.T) {
	const stages = "[[stage]]\ncommand = [\"cat\"]\n"
	for _, tc := range []struct {
		name, body string
		line       int
		key, msg   string
	}{
		{"unknown key", "[decoder.openpgp]\npassphrase_file = \"symmetric.pass\"\nrequir_signed_by = \"signer.pub.asc\"\n" + stages, 3, "decoder.openpgp.requir_signed_by", ""},
		{"unknown decoder", "[decoder.gzip]\nlevel = 1\n" + stages, 1, "decoder.gzip", "unknown key"},
		{"no key", "[decoder.openpgp]\n" + stages, 1, "decoder.openpgp", "secret_key"},
		{"protected key without passphrase", "[decoder.openpgp]\nsecret_key = \"recipient.sec.asc\"\n" + stages, 2, "decoder.openpgp.secret_key", "passphrase_file"},
		{"missing key file", "[decoder.openpgp]\nsecret_key = \"nope.asc\"\npassphrase_file = \"recipient.pass\"\n" + stages, 2, "decoder.openpgp.secret_key", "nope.asc"},
		{"wrong type", "[decoder]\nopenpgp = 3\n" + stages, 2, "", ""},
		{"decoder only is not a pipeline", "[decoder.openpgp]\npassphrase_file = \"symmetric.pass\"\n", 0, "stage", "no stages"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decoderJob(t, Load, tc.body)
			var je *JobError
			if !errors.As(err, &je) {
				t.Fatalf("error %v (%T), want *JobError", err, err)
			}
			if je.Line != tc.line || (tc.key != "" && je.Key != tc.key) || !strings.Contains(je.Msg, tc.msg) {
				t.Fatalf("got line %d key %q msg %q; want line %d key %q msg containing %q", je.Line, je.Key, je.Msg, tc.line, tc.key, tc.msg)
			}
			if !strings.Contains(je.Error(), "job.toml") {
				t.Errorf("Error() = %q does not name the file", je.Error())
			}
		})
	}
}

func TestLoadDecoderConfigNeedsNoStages(t *testing.T) {
	job, err := decoderJob(t, LoadDecoderConfig, "[decoder.openpgp]\nsecret_key = \"recipient.sec.asc\"\npassphrase_file = \"recipient.pass\"\n")
	if err != nil || job.OpenPGPDecoder == nil || len(job.Stages) != 0 {
		t.Fatalf("job %+v, err %v", job, err)
	}
	// Everything else is still validated.
	if _, err := decoderJob(t, LoadDecoderConfig, "[decoder.openpgp]\npassphrase_file = \"symmetric.pass\"\ntimeout = 3\n"); err == nil {
		t.Fatal("a bad key in [decoder.openpgp] was accepted")
	}
	if _, err := decoderJob(t, LoadDecoderConfig, "nme = 1\n"); err == nil {
		t.Fatal("an unknown top-level key was accepted")
	}
}

func catStages(n int) []byte {
	var b bytes.Buffer
	for range n {
		b.WriteString("[[stage]]\ncommand = [\"cat\"]\n")
	}
	return b.Bytes()
}

// TestDefaultNamesAreNumberedInLinearWork: 10 000 unnamed stages took 47 s
// to check, each repeat of a default name trying every number from 2. The
// work is measured in allocations (deterministic, unlike time): twice the
// stages must cost about twice as much, not four times.
func TestDefaultNamesAreNumberedInLinearWork(t *testing.T) {
	job, err := Parse("/j/x.toml", append([]byte("[[stage]]\nname = \"cat-3\"\ncommand = [\"cat\"]\n"), catStages(5)...))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range job.Stages {
		names = append(names, s.Name)
	}
	if got := strings.Join(names, " "); got != "cat-3 cat cat-2 cat-4 cat-5 cat-6" {
		t.Fatalf("names %q", got)
	}
	allocs := func(n int) float64 {
		data := catStages(n)
		return testing.AllocsPerRun(1, func() {
			if _, err := Parse("/j/x.toml", data); err != nil {
				t.Fatal(err)
			}
		})
	}
	a, b := allocs(2000), allocs(4000)
	if b > 2.5*a {
		t.Fatalf("parsing 2000 unnamed stages took %.0f allocations, 4000 took %.0f: not linear", a, b)
	}
}

func TestOutputIsNotAStageName(t *testing.T) {
	_, err := Parse("/j/x.toml", []byte("[[stage]]\nname = \"output\"\ncommand = [\"cat\"]\n"))
	if err == nil || !strings.Contains(err.Error(), `stage[1].name: stage name "output" is reserved`) {
		t.Fatalf("err = %v", err)
	}
	job, err := Parse("/j/x.toml", []byte("[[stage]]\ncommand = [\"/usr/local/bin/output\"]\n"))
	if err != nil || job.Stages[0].Name != "output-2" {
		t.Fatalf("default name of a program called output: %v %v", job, err)
	}
}

// TestLoadJobBuffer: buffer and its levels on a stage's input hop, as
// bytes for the pump; exec --buffer resizes the first stage's (its levels
// still apply), and a hop takes a buffer or a rate limit, not both.
func TestLoadJobBuffer(t *testing.T) {
	job, err := Parse("j.toml", []byte(`
[[stage]]
command = ["cat"]
buffer_start_at = "80%"
buffer_resume_at = "12.5%"
buffer = "256MiB"
[[stage]]
command = ["cat"]
buffer = 8388608
[[stage]]
command = ["cat"]
`))
	if err != nil {
		t.Fatal(err)
	}
	s := job.Stages
	if s[0].Buffer != 256<<20 || s[0].BufferStartAt != 80 || s[0].BufferResumeAt != 12.5 {
		t.Errorf("stage 1: buffer %d, levels %g%% %g%%", s[0].Buffer, s[0].BufferStartAt, s[0].BufferResumeAt)
	}
	if s[1].Buffer != 8<<20 || s[1].BufferStartAt != 0 || s[1].BufferResumeAt != 100 || s[2].Buffer != 0 {
		t.Errorf("stage 2: %+v; stage 3 buffer %d", s[1], s[2].Buffer)
	}
	for _, tc := range []struct {
		opts Options
		k    int
		want pump.BufferSpec
	}{
		{Options{}, 0, pump.BufferSpec{Size: 256 << 20, StartAt: 214748365, ResumeBelow: 32 << 20}}, // 80% rounded up
		{Options{}, 1, pump.BufferSpec{Size: 8 << 20, StartAt: 0, ResumeBelow: 8 << 20}},
		{Options{}, 2, pump.BufferSpec{}},
		{Options{}, 3, pump.BufferSpec{}}, // the output hop
		{Options{Buffer: 100 << 20}, 0, pump.BufferSpec{Size: 100 << 20, StartAt: 80 << 20, ResumeBelow: 12.5 / 100 * (100 << 20)}},
	} {
		if got := HopBuffer(job, tc.opts, tc.k); got != tc.want {
			t.Errorf("HopBuffer(%+v, %d) = %+v, want %+v", tc.opts, tc.k, got, tc.want)
		}
		if err := HopBuffer(job, tc.opts, tc.k).Check(); tc.want.Size > 0 && err != nil {
			t.Errorf("HopBuffer(%+v, %d): %v", tc.opts, tc.k, err)
		}
	}
	// A level is reached only with whole bytes: rounded up.
	odd := &Job{Stages: []StageSpec{{Buffer: 3 << 20, BufferStartAt: 100.0 / 3}}} // resume level unset: 100%
	if got := HopBuffer(odd, Options{}, 0); got.StartAt != 1<<20 || got.ResumeBelow != 3<<20 {
		t.Errorf("a third of 3 MiB: %+v", got)
	}

	plain, err := Parse("p.toml", []byte("[[stage]]\ncommand = [\"cat\"]\n[[stage]]\ncommand = [\"cat\"]\nrate_limit = \"1MiB/s\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	limited, err := Parse("l.toml", []byte("[[stage]]\ncommand = [\"cat\"]\nrate_limit = \"1MiB/s\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		job  *Job
		opts Options
		msg  string // "" for no error
	}{
		{plain, Options{Buffer: 64 << 20}, ""},
		{plain, Options{Buffer: 64 << 20, RateLimit: 1 << 20}, "--buffer and --rate-limit both apply to the run's input hop"},
		{limited, Options{Buffer: 64 << 20}, "--buffer and the first stage's rate_limit"},
		{job, Options{RateLimit: 1 << 20}, "--rate-limit and the first stage's buffer"},
		{plain, Options{Buffer: 4096}, "--buffer 4.0 KiB: use 1.0 MiB"},
		{plain, Options{Buffer: 1 << 40}, "to 64.0 GiB"},
	} {
		err := checkHops(tc.job, tc.opts)
		var he *HopFlagError
		switch {
		case tc.msg == "" && err != nil:
			t.Errorf("%s %+v: %v", tc.job.File, tc.opts, err)
		case tc.msg != "" && (!errors.As(err, &he) || !strings.Contains(err.Error(), tc.msg) || he.ExitCode() != 2):
			t.Errorf("%s %+v: error %v, want a usage error with %q", tc.job.File, tc.opts, err, tc.msg)
		}
	}
}
