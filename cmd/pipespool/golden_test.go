package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/pipespool/pipespool/pipeline"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*.golden from what the tests produce")

// goldenDir holds the user-visible text the tests compare byte for byte;
// absolute, as the tests change their working directory.
var goldenDir, _ = filepath.Abs(filepath.Join("..", "..", "testdata", "golden"))

// golden compares got with testdata/golden/NAME.golden, byte for byte, or
// rewrites the file under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join(goldenDir, name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/pipespool -run %s -update to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from what the test produced (go test -update rewrites it; review the diff)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

// inDir writes the files into a temp dir and makes it the working
// directory, so that the paths the output shows are the same everywhere.
func inDir(t *testing.T, files map[string]string) {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
}

// runReal runs args with the real command newCmd builds and returns the
// exit status, stdout and stderr.
func runReal(t *testing.T, newCmd func(*globalOptions) *cobra.Command, args ...string) (int, string, string) {
	t.Helper()
	streams, errOut := fakeStreams(t)
	g := &globalOptions{streams: streams}
	code := execute(g, newRootCmd(g, newCmd(g)), args)
	out, err := os.ReadFile(streams.Out.Name())
	if err != nil {
		t.Fatal(err)
	}
	return code, string(out), errOut.String()
}

// TestCheckGolden: what check prints for a valid job file (stdout) and an
// invalid one (stderr). Commands are given by absolute path, so that the
// resolved graph is the same on every machine.
func TestCheckGolden(t *testing.T) {
	inDir(t, map[string]string{
		"restore.toml": `timeout = "1h"
pipe_size = "1MiB"
may_outlive = ["gpg-agent"]
[input]
path = "none"
[output]
path = "restored.tar"
[[stage]]
name = "produce"
command = ["/bin/sh", "-c", "printf 'hello world'"]
stall_timeout = "30s"
on_stall = "kill"
[[stage]]
name = "compress"
builtin = "zstd-compress"
[[stage]]
name = "decompress"
builtin = "zstd-decompress"
[[stage]]
name = "sink"
command = ["/bin/cat"]
dir = "/"
stderr = "inherit"
allow_partial_read = true
`,
		"typo.toml": `[[stage]]
name = "decrypt"
command = ["/bin/cat"]
requir_signed_by = "ABCD"
`,
	})
	newCheck := func(g *globalOptions) *cobra.Command { return NewCmdCheck(g, nil) }
	code, out, stderr := runReal(t, newCheck, "check", "restore.toml")
	if code != 0 || stderr != "" {
		t.Fatalf("check restore.toml: exit %d, stderr %q", code, stderr)
	}
	golden(t, "check", []byte(out))
	code, out, stderr = runReal(t, newCheck, "check", "typo.toml")
	if code != 2 || out != "" {
		t.Fatalf("check typo.toml: exit %d, stdout %q", code, out)
	}
	golden(t, "check_invalid", []byte(stderr))
}

// TestCheckTreeGolden: check draws a job that fans out as a tree: each
// branch below the stage whose output it reads, with its output, and the
// optional ones marked.
func TestCheckTreeGolden(t *testing.T) {
	inDir(t, map[string]string{"backup.toml": `[input]
path = "none"
[output]
path = "local.zst"
[[stage]]
name = "send"
command = ["/bin/cat"]
[[stage]]
name = "zstd"
builtin = "zstd-compress"
[[stage]]
name = "local"
command = ["/bin/cat"]
[[stage]]
name = "remote"
from = "zstd"
optional = true
command = ["/bin/cat"]
buffer = "64MiB"
[[stage]]
name = "copy-1"
command = ["/bin/cat"]
output = "remote-1.zst"
[[stage]]
name = "copy-2"
from = "remote"
command = ["/bin/cat"]
output = "remote-2.zst"
[[stage]]
name = "digest"
from = "send"
command = ["/bin/cat"]
output = "send.sha256"
`})
	newCheck := func(g *globalOptions) *cobra.Command { return NewCmdCheck(g, nil) }
	code, out, stderr := runReal(t, newCheck, "check", "backup.toml")
	if code != 0 || stderr != "" {
		t.Fatalf("check backup.toml: exit %d, stderr %q", code, stderr)
	}
	golden(t, "check_tree", []byte(out))
}

// TestFailureSummaryGolden: the summary exec prints when a run fails (the
// last stage, after reading everything, fails with a message on stderr),
// from a real run.
func TestFailureSummaryGolden(t *testing.T) {
	inDir(t, map[string]string{"restore.toml": `[input]
path = "none"
[output]
path = "none"
[[stage]]
name = "produce"
shell = "printf abc"
[[stage]]
name = "receive"
shell = "cat >/dev/null; echo 'cannot receive: destination tank/backup exists' >&2; exit 1"
`})
	code, out, stderr := runReal(t, func(g *globalOptions) *cobra.Command { return NewCmdExec(g, nil) },
		"exec", "--progress", "never", "restore.toml")
	if code != 1 || out != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	golden(t, "failure_summary", []byte(stderr))
}

// TestFailureSummaryCasesGolden: the summary of reports that a test run
// cannot produce on demand: a signal, stall diagnoses, the output as the
// root cause, a long stderr tail, bytes that are not printable.
func TestFailureSummaryCasesGolden(t *testing.T) {
	code := func(n int) *int { return &n }
	var tail strings.Builder
	for i := 1; i <= 14; i++ {
		tail.WriteString("line " + strings.Repeat("x", i) + "\n")
	}
	reps := []*pipeline.Report{
		{Job: "restore", Result: "failed", RootCause: "decrypt", Message: "stage \"decrypt\" failed: killed by SIGKILL",
			Stages: []pipeline.StageReport{
				{Name: "decrypt", Status: "failed", Signal: "SIGKILL", BytesIn: 1 << 20, BytesOut: 3 << 19, StderrTail: tail.String()},
				{Name: "unpack", Status: "consequence", ExitCode: code(2), BytesIn: 3 << 19, BytesOut: 0},
			}},
		{Job: "send", Result: "failed", RootCause: "net", Message: "stage \"net\" stalled",
			Stages: []pipeline.StageReport{
				{Name: "zfs-send", Status: "stopped", Signal: "SIGTERM", BytesOut: 5 << 30},
				{Name: "net", Status: "failed", Signal: "SIGKILL", BytesIn: 5 << 30, BytesOut: 4 << 30, Stalls: 1,
					Diagnoses: []string{"net (pid 42) blocked writing its stdout for 5m0s: the output is full"}},
			}},
		{Job: "full", Result: "failed", RootCause: pipeline.OutputRootCause, Output: "/backup/\x1b[2Jimg",
			Message: "output /backup/\x1b[2Jimg: write: no space left on device",
			Stages: []pipeline.StageReport{
				{Name: "cat", Status: "consequence", Signal: "SIGPIPE", BytesIn: 100, BytesOut: 100},
			}},
	}
	var b bytes.Buffer
	for _, rep := range reps {
		b.WriteString(pipeline.Summary(rep))
		b.WriteString("--\n")
	}
	golden(t, "failure_summary_cases", b.Bytes())
}
