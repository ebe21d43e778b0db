package pipeline

import (
	"strings"
	"testing"
)

func TestPrintable(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text, été", "plain text, été"},
		{"tab\tkept", "tab\tkept"},
		{"\x1b[2J\x1b]0;pwned\x07", `\x1b[2J\x1b]0;pwned\x07`},
		{"back\bspace\r", `back\x08space\x0d`},
		{"del\x7f c1\u009b8m", `del\x7f c1\u009b8m`},
		{"bad \xff utf-8", `bad \xff utf-8`},
		{"bidi \u202egnp.exe", `bidi \u202egnp.exe`},
		{"two\nlines", `two\x0alines`},
	} {
		if got := Printable(tc.in); got != tc.want {
			t.Errorf("Printable(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestSummaryEscapesControlCharacters: a stage's stderr, the message, a
// note and a diagnosis reach the terminal with their escape sequences
// written out, line by line. They were printed raw.
func TestSummaryEscapesControlCharacters(t *testing.T) {
	code := 3
	rep := &Report{Job: "j", Result: ResultFailed, Message: "stage \"x\" failed: open /tmp/\x1b[31mred: no such file",
		RootCause: "x", Stages: []StageReport{{Name: "x", Status: "failed", ExitCode: &code,
			Note: "note \x1b[1m", Diagnoses: []string{"stage \"x\" stalled; PID 1 (\x1b]0;t\x07) holds it"},
			StderrTail: "first\tline\r\n\x1b[2Jcleared\n\x9b31mC1\n"}}}
	s := Summary(rep)
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\n' && c != '\t' || c == 0x7f {
			t.Fatalf("summary holds control byte %#x at %d:\n%q", c, i, s)
		}
	}
	for _, want := range []string{`/tmp/\x1b[31mred`, `note \x1b[1m`, `(\x1b]0;t\x07)`, "  | first\tline\n", `  | \x1b[2Jcleared`, `  | \x9b31mC1`} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
}
