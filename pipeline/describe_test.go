package pipeline

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestDescribeEscapesWhatTheJobFileSays: an argument, a path or a name
// holding an escape sequence or a newline is printed escaped, on its line:
// checking a job file cannot retitle the terminal or forge a line.
func TestDescribeEscapesWhatTheJobFileSays(t *testing.T) {
	dir := t.TempDir()
	job, err := Parse(filepath.Join(dir, "job.toml"), []byte(`
may_outlive = ["agent\u001b]0;owned\u0007"]
[output]
path = "out\nforged: line"
[[stage]]
command = ["echo", "a\u001b[2Jb", "c\nd"]
`))
	if err != nil {
		t.Fatal(err)
	}
	desc, err := Describe(job, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(desc, "\x1b\x07") {
		t.Errorf("control characters reach the output:\n%q", desc)
	}
	for _, l := range strings.Split(strings.TrimSuffix(desc, "\n"), "\n") {
		if strings.HasPrefix(l, "forged") || strings.HasPrefix(l, "d'") {
			t.Errorf("a value of the job file made a line of its own: %q", l)
		}
	}
	for _, want := range []string{`a\x1b[2Jb`, `c\x0ad`, `out\x0aforged: line`, `agent\x1b]0;owned\x07`} {
		if !strings.Contains(desc, want) {
			t.Errorf("missing %q in:\n%s", want, desc)
		}
	}
}
