package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// runMain runs the command line args in-process with fake streams and
// returns the exit status and what went to stderr.
func runMain(t *testing.T, args ...string) (int, string) {
	t.Helper()
	streams, errOut := fakeStreams(t)
	code := Main(args, streams)
	return code, errOut.String()
}

// TestUsageErrorsExit2: whatever cobra refuses before a command runs is a
// usage error, exit 2, without matching its message text. A missing
// required flag exited 1.
func TestUsageErrorsExit2(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{"missing required flag", []string{"prepare"}, `required flag(s) "seqfile" not set`},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"unknown flag", []string{"exec", "--bogus", "x"}, "unknown flag: --bogus"},
		{"wrong argument count", []string{"exec"}, "expects 1 argument(s), got 0"},
		{"too many arguments", []string{"version", "extra"}, `unknown command "extra"`},
		{"bad flag value", []string{"exec", "--lock-wait", "soon", "x.toml"}, "invalid argument"},
		{"bad log level", []string{"--log-level", "loud", "version"}, "--log-level"},
		{"queue-process without a directory", []string{"queue-process"}, "no queue directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stderr := runMain(t, tc.args...)
			if code != 2 || !strings.Contains(stderr, tc.msg) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr, tc.msg)
			}
		})
	}
}

// TestRunErrorsKeepTheirCode: an error from a command's work keeps its own
// exit status (a job file error 2), or 1.
func TestRunErrorsKeepTheirCode(t *testing.T) {
	dir := t.TempDir()
	if code, stderr := runMain(t, "check", filepath.Join(dir, "missing.toml")); code != 2 || !strings.Contains(stderr, "cannot read job file") {
		t.Errorf("check of a missing file: exit %d, %q", code, stderr)
	}
	if code, _ := runMain(t, "version"); code != 0 {
		t.Errorf("version: exit %d", code)
	}
	if code, stderr := runMain(t, "queue-ls", "-q", filepath.Join(dir, "noqueue")); code != 1 || !strings.Contains(stderr, "no such file") {
		t.Errorf("queue-ls on a missing queue: exit %d, %q; want 1", code, stderr)
	}
}
