package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipespool/pipespool/queue"
)

// fakeStreams returns streams for a command run in-process: stdin
// /dev/null, stdout a file in a temp dir, stderr a buffer.
func fakeStreams(t *testing.T) (*IOStreams, *bytes.Buffer) {
	t.Helper()
	in, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	out, err := os.Create(filepath.Join(t.TempDir(), "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	var errOut bytes.Buffer
	return &IOStreams{In: in, Out: out, ErrOut: &errOut}, &errOut
}

// runCmd runs args on a root that holds only the command build makes (with
// the runF the test gives it), as Main would: the exit status and stderr.
func runCmd(t *testing.T, build func(g *globalOptions) *cobra.Command, args ...string) (int, string) {
	t.Helper()
	streams, errOut := fakeStreams(t)
	g := &globalOptions{streams: streams}
	code := execute(g, newRootCmd(g, build(g)), args)
	return code, errOut.String()
}

// captured runs args and returns the options runF was given, failing the
// test unless the command ran and exited 0.
func captured[O any](t *testing.T, newCmd func(*globalOptions, func(*O) error) *cobra.Command, args ...string) *O {
	t.Helper()
	var got *O
	code, stderr := runCmd(t, func(g *globalOptions) *cobra.Command {
		return newCmd(g, func(o *O) error { got = o; return nil })
	}, args...)
	if code != 0 || got == nil {
		t.Fatalf("%v: exit %d, ran %v, stderr %q", args, code, got != nil, stderr)
	}
	return got
}

// refused runs args and checks that they are a usage error (exit 2, msg
// in stderr) and that runF was never called.
func refused[O any](t *testing.T, newCmd func(*globalOptions, func(*O) error) *cobra.Command, msg string, args ...string) {
	t.Helper()
	ran := false
	code, stderr := runCmd(t, func(g *globalOptions) *cobra.Command {
		return newCmd(g, func(*O) error { ran = true; return nil })
	}, args...)
	if code != 2 || ran || !strings.Contains(stderr, msg) {
		t.Errorf("%v: exit %d, ran %v, stderr %q; want exit 2, not run, %q", args, code, ran, stderr, msg)
	}
}

func TestExecOptions(t *testing.T) {
	o := captured(t, NewCmdExec, "exec", "job.toml")
	if o.JobFile != "job.toml" || o.Progress != "auto" || o.Input != "" || o.Output != "" || o.LockWait != 0 || o.DryRun ||
		o.Size != "" || o.ProgressInterval != 30*time.Second {
		t.Errorf("defaults: %+v", *o)
	}
	o = captured(t, NewCmdExec, "exec", "-i", "in", "-o", "-", "--progress", "log", "--report", "r.json",
		"--metrics-file", "m.prom", "--lock", "l", "--lock-wait", "3s", "--dry-run", "--size", "4GiB",
		"--progress-interval", "1m", "job.toml")
	want := execOptions{g: o.g, JobFile: "job.toml", Input: "in", Output: "-", Progress: "log", Report: "r.json",
		MetricsFile: "m.prom", Lock: "l", LockWait: 3 * time.Second, DryRun: true, Size: "4GiB", ProgressInterval: time.Minute}
	if *o != want {
		t.Errorf("got %+v\nwant %+v", *o, want)
	}
	refused(t, NewCmdExec, "expects 1 argument(s), got 0", "exec")
	refused(t, NewCmdExec, "expects 1 argument(s), got 2", "exec", "a.toml", "b.toml")
	refused(t, NewCmdExec, "unknown flag: --bogus", "exec", "--bogus", "a.toml")
	refused(t, NewCmdExec, "invalid argument", "exec", "--lock-wait", "soon", "a.toml")
}

// TestExecBadProgressIsUsage: runExec refuses a --progress value before it
// loads the job file.
func TestExecBadProgressIsUsage(t *testing.T) {
	code, stderr := runCmd(t, func(g *globalOptions) *cobra.Command { return NewCmdExec(g, nil) },
		"exec", "--progress", "sometimes", filepath.Join(t.TempDir(), "missing.toml"))
	if code != 2 || !strings.Contains(stderr, `--progress "sometimes"`) {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	for _, tc := range []struct{ flag, value, msg string }{
		{"--size", "lots", "--size: "},
		{"--progress-interval", "100ms", "--progress-interval 100ms: use at least 1s"},
	} {
		code, stderr := runCmd(t, func(g *globalOptions) *cobra.Command { return NewCmdExec(g, nil) },
			"exec", tc.flag, tc.value, filepath.Join(t.TempDir(), "missing.toml"))
		if code != 2 || !strings.Contains(stderr, tc.msg) {
			t.Errorf("%s %s: exit %d, stderr %q", tc.flag, tc.value, code, stderr)
		}
	}
}

// TestProgressMode: what --progress shows where; always into a
// non-terminal is log (no cursor movements piling up in a file).
func TestProgressMode(t *testing.T) {
	for _, tc := range []struct {
		flag string
		tty  bool
		want string
	}{
		{"auto", true, "term"}, {"auto", false, ""},
		{"always", true, "term"}, {"always", false, "log"},
		{"log", true, "log"}, {"log", false, "log"},
		{"never", true, ""}, {"never", false, ""},
	} {
		if got := progressMode(tc.flag, tc.tty); got != tc.want {
			t.Errorf("--progress %s, terminal %v: %q, want %q", tc.flag, tc.tty, got, tc.want)
		}
	}
}

func TestCheckOptions(t *testing.T) {
	if o := captured(t, NewCmdCheck, "check", "job.toml"); o.JobFile != "job.toml" {
		t.Errorf("JobFile %q", o.JobFile)
	}
	refused(t, NewCmdCheck, "expects 1 argument(s), got 0", "check")
}

func TestPrepareOptions(t *testing.T) {
	o := captured(t, NewCmdPrepare, "prepare", "-s", "seq", "-i", "-", "--", "a", "-b")
	if o.SeqFile != "seq" || o.Input != "-" || !slices.Equal(o.Params, []string{"a", "-b"}) || o.Type != queue.CmdCommand {
		t.Errorf("got %+v", *o)
	}
	if o := captured(t, NewCmdPrepare, "prepare", "--seqfile", "-"); o.Input != "" || len(o.Params) != 0 {
		t.Errorf("defaults: %+v", *o)
	}
	if o := captured(t, NewCmdPrepareNOP, "prepare-nop", "-s", "seq"); o.Type != queue.CmdNOP {
		t.Errorf("prepare-nop type %v", o.Type)
	}
	if o := captured(t, NewCmdPrepareFail, "prepare-fail", "-s", "seq"); o.Type != queue.CmdFail {
		t.Errorf("prepare-fail type %v", o.Type)
	}
	// A missing required flag is a usage error (it exited 1 when the
	// exit code was read from cobra's message).
	refused(t, NewCmdPrepare, `required flag(s) "seqfile" not set`, "prepare")
	refused(t, NewCmdPrepareNOP, `required flag(s) "seqfile" not set`, "prepare-nop")
	refused(t, NewCmdPrepareFail, "unknown command", "prepare-fail", "-s", "seq", "extra")
}

func TestQueueProcessOptions(t *testing.T) {
	o := captured(t, NewCmdQueueProcess, "queue-process", "/q", "cat")
	if o.Dir != "/q" || !slices.Equal(o.Command, []string{"cat"}) || o.OrderBy != "Sequence" || o.OnError != "Retry" ||
		o.OutputTo != "PassBoth" || o.MaxJobs != 0 || o.Timeout != 0 || o.JobFile != "" || o.NeverDelete {
		t.Errorf("defaults: %+v", *o)
	}
	o = captured(t, NewCmdQueueProcess, "queue-process", "-q", "/q", "-n", "3", "--order-by", "Timestamp",
		"--on-error", "Leave", "--output-to", "SaveBoth", "--timeout", "7", "--never-delete", "--allow-job-params",
		"--ignore-payload", "-d", "zstd", "-d", "gpg -d", "sh", "--", "-c", "cat >x")
	if o.Dir != "/q" || !slices.Equal(o.Command, []string{"sh", "-c", "cat >x"}) || o.MaxJobs != 3 ||
		o.OrderBy != "Timestamp" || o.OnError != "Leave" || o.OutputTo != "SaveBoth" || o.Timeout != 7 ||
		!o.NeverDelete || !o.AllowJobParams || !o.IgnorePayload || !slices.Equal(o.Decoders, []string{"zstd", "gpg -d"}) {
		t.Errorf("got %+v", *o)
	}
	// Pipeline mode: no COMMAND, PARAMS for the last stage.
	o = captured(t, NewCmdQueueProcess, "queue-process", "/q", "--job", "r.toml", "--", "x")
	if o.JobFile != "r.toml" || !slices.Equal(o.Command, []string{"", "x"}) {
		t.Errorf("pipeline mode: %+v", *o)
	}
	refused(t, NewCmdQueueProcess, "no queue directory", "queue-process")
	refused(t, NewCmdQueueProcess, `unexpected argument "x" after COMMAND "sh"`, "queue-process", "/q", "sh", "x")
	refused(t, NewCmdQueueProcess, "unknown shorthand flag", "queue-process", "/q", "sh", "-v")
	refused(t, NewCmdQueueProcess, "invalid argument", "queue-process", "/q", "-n", "many", "cat")
}

// TestQueueProcessUsage: what runQueueProcess refuses before it opens
// anything is a usage error.
func TestQueueProcessUsage(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "noqueue")
	for _, tc := range []struct {
		msg  string
		args []string
	}{
		{"Bogus", []string{"--order-by", "Bogus", "cat"}},
		{"Never", []string{"--on-error", "Never", "cat"}},
		{"Files", []string{"--output-to", "Files", "cat"}},
		{"--maxjobs -1", []string{"-n", "-1", "cat"}},
		{"both COMMAND", []string{"--job", "r.toml", "cat"}},
		{"no COMMAND, no --job", nil},
	} {
		code, stderr := runCmd(t, func(g *globalOptions) *cobra.Command { return NewCmdQueueProcess(g, nil) },
			append([]string{"queue-process", dir}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.msg) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.msg)
		}
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Errorf("a refused command line touched %s: %v", dir, err)
	}
}

func TestStdinProcessOptions(t *testing.T) {
	o := captured(t, NewCmdStdinProcess, "stdin-process", "--timeout", "2", "sh", "--", "-c", "cat")
	if !slices.Equal(o.Command, []string{"sh", "-c", "cat"}) || o.Timeout != 2 || o.JobFile != "" {
		t.Errorf("got %+v", *o)
	}
	o = captured(t, NewCmdStdinProcess, "stdin-process", "--job", "r.toml")
	if o.JobFile != "r.toml" || !slices.Equal(o.Command, []string{""}) {
		t.Errorf("pipeline mode: %+v", *o)
	}
	refused(t, NewCmdStdinProcess, `unexpected argument "b"`, "stdin-process", "a", "b")
	code, stderr := runCmd(t, func(g *globalOptions) *cobra.Command { return NewCmdStdinProcess(g, nil) },
		"stdin-process", "--job", "r.toml", "cat")
	if code != 2 || !strings.Contains(stderr, "both COMMAND") {
		t.Errorf("COMMAND and --job: exit %d, stderr %q", code, stderr)
	}
}

// TestQueueDirOptions: every queue-* command takes DIR as -q DIR or as its
// first argument, and refuses arguments it does not take (exit 2).
func TestQueueDirOptions(t *testing.T) {
	for _, tc := range []struct {
		name   string
		newCmd func(*globalOptions, func(*queueDirOptions) error) *cobra.Command
		extra  []string // flags the command needs besides DIR
	}{
		{"queue-init", NewCmdQueueInit, nil},
		{"queue-write", NewCmdQueueWrite, nil},
		{"queue-ls", NewCmdQueueLs, nil},
		{"queue-info", NewCmdQueueInfo, []string{"-j", "4"}},
		{"queue-payload", NewCmdQueuePayload, []string{"-j", "4"}},
		{"queue-get-next", NewCmdQueueGetNext, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, args := range [][]string{{"-q", "/q"}, {"/q"}} {
				o := captured(t, tc.newCmd, append(append([]string{tc.name}, args...), tc.extra...)...)
				if o.Dir != "/q" || len(o.Args) != 0 {
					t.Errorf("%v: Dir %q Args %q", args, o.Dir, o.Args)
				}
			}
			refused(t, tc.newCmd, "no queue directory", append([]string{tc.name}, tc.extra...)...)
			refused(t, tc.newCmd, tc.name+`: unexpected argument "extra"`, append([]string{tc.name, "/q", "extra"}, tc.extra...)...)
		})
	}
	if o := captured(t, NewCmdQueueInit, "queue-init", "/q", "--append-only"); !o.AppendOnly {
		t.Error("--append-only not set")
	}
	o := captured(t, NewCmdQueueInfo, "queue-info", "/q", "-j", "4", "-d", "zstd", "--decoder-config", "k.toml")
	if o.Job != "4" || !slices.Equal(o.Decoders, []string{"zstd"}) || o.DecoderConfig != "k.toml" {
		t.Errorf("queue-info: %+v", *o)
	}
	refused(t, NewCmdQueueInfo, `required flag(s) "job" not set`, "queue-info", "/q")
	if o := captured(t, NewCmdQueueSetNext, "queue-set-next", "-q", "/q", "43"); o.Dir != "/q" || !slices.Equal(o.Args, []string{"43"}) {
		t.Errorf("queue-set-next: %+v", *o)
	}
	refused(t, NewCmdQueueSetNext, "expected 1 argument(s) after the queue directory, got 0", "queue-set-next", "/q")
	// A bad ID is refused before the queue is opened.
	code, stderr := runCmd(t, func(g *globalOptions) *cobra.Command { return NewCmdQueueSetNext(g, nil) },
		"queue-set-next", filepath.Join(t.TempDir(), "noqueue"), "x3")
	if code != 2 || !strings.Contains(stderr, `"x3" is not a sequence number`) {
		t.Errorf("queue-set-next x3: exit %d, stderr %q", code, stderr)
	}
}

func TestStdinAndSeqOptions(t *testing.T) {
	for _, tc := range []struct {
		name   string
		newCmd func(*globalOptions, func(*queueDirOptions) error) *cobra.Command
	}{{"stdin-info", NewCmdStdinInfo}, {"stdin-payload", NewCmdStdinPayload}} {
		o := captured(t, tc.newCmd, tc.name, "-d", "openpgp", "-d", "zstd", "--decoder-config", "k.toml")
		if !slices.Equal(o.Decoders, []string{"openpgp", "zstd"}) || o.DecoderConfig != "k.toml" {
			t.Errorf("%s: %+v", tc.name, *o)
		}
		refused(t, tc.newCmd, "unknown command", tc.name, "extra")
	}
	if o := captured(t, NewCmdPrepareGetNext, "prepare-get-next", "-s", "seq"); o.SeqFile != "seq" {
		t.Errorf("prepare-get-next: %+v", *o)
	}
	refused(t, NewCmdPrepareGetNext, `required flag(s) "seqfile" not set`, "prepare-get-next")
	if o := captured(t, NewCmdPrepareSetNext, "prepare-set-next", "-s", "seq", "100"); o.SeqFile != "seq" || o.ID != 100 {
		t.Errorf("prepare-set-next: %+v", *o)
	}
	refused(t, NewCmdPrepareSetNext, `"x" is not a sequence number`, "prepare-set-next", "-s", "seq", "x")
	refused(t, NewCmdPrepareSetNext, "accepts 1 arg(s), received 0", "prepare-set-next", "-s", "seq")
}
