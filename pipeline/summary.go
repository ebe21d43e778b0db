package pipeline

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/pipespool/pipespool/units"
)

// Summary is the failure summary printed to stderr (and mailed by cron):
// the reason, then one line per stage with its status and bytes, then the
// last lines of the root cause's stderr.
func Summary(rep *Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "job %q %s: %s\n", rep.Job, rep.Result, Printable(rep.Message))
	width, bwidth := 5, 0
	for _, s := range rep.Stages {
		width = max(width, len(s.Name))
		if len(rep.Branches) > 0 {
			// A job that fans out: a column names each stage's branch.
			bwidth = max(bwidth, len(branchColumn(s.Branch)))
		}
	}
	for i, s := range rep.Stages {
		status := s.Status
		switch {
		case s.Signal != "":
			status += " (" + s.Signal + ")"
		case s.ExitCode != nil && *s.ExitCode != 0:
			status += fmt.Sprintf(" (exit %d)", *s.ExitCode)
		}
		mark := " "
		if s.Name == rep.RootCause {
			mark = "*"
		}
		fmt.Fprintf(&b, "%s %d %-*s  ", mark, i+1, width, s.Name)
		if bwidth > 0 {
			fmt.Fprintf(&b, "%-*s  ", bwidth, Printable(branchColumn(s.Branch)))
		}
		fmt.Fprintf(&b, "%-26s in %-10s out %-10s", status, units.FormatSize(s.BytesIn), units.FormatSize(s.BytesOut))
		if s.Note != "" {
			b.WriteString(" " + Printable(s.Note))
		}
		b.WriteByte('\n')
		for _, d := range s.Diagnoses {
			fmt.Fprintf(&b, "    stall: %s\n", Printable(d))
		}
	}
	if rep.RootCause == OutputRootCause {
		out := rep.Output
		for _, o := range rep.Outputs {
			if o.Branch == rep.RootBranch {
				out = o.Path
			}
		}
		fmt.Fprintf(&b, "* %d %-*s  %s\n", len(rep.Stages)+1, width, OutputRootCause, "failed: "+Printable(out))
	}
	for _, o := range rep.Outputs {
		fmt.Fprintf(&b, "  output %s: %s\n", Printable(o.Path), o.Status)
	}
	for _, s := range rep.Stages {
		if s.Name != rep.RootCause || strings.TrimSpace(s.StderrTail) == "" {
			continue
		}
		fmt.Fprintf(&b, "last stderr of %s:\n", s.Name)
		lines := strings.Split(strings.TrimRight(s.StderrTail, "\n"), "\n")
		if len(lines) > 10 {
			lines = lines[len(lines)-10:]
		}
		for _, l := range lines {
			fmt.Fprintf(&b, "  | %s\n", Printable(strings.TrimSuffix(l, "\r")))
		}
	}
	return b.String()
}

// Printable makes text safe to print on a terminal: a stage's stderr, a
// file name, a process name may hold escape sequences that would move the
// cursor, retitle the window or hide the text after them. Control
// characters (but tab), DEL, the C1 controls, Unicode's bidirectional
// overrides and bytes that are not UTF-8 are written as \xNN or \uNNNN;
// everything else, including non-ASCII letters, is kept. Newlines are
// escaped too: a caller that keeps lines splits them first.
func Printable(s string) string {
	clean := true
	for _, r := range s {
		if needsEscape(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case r < 0x80 && needsEscape(r):
			fmt.Fprintf(&b, "\\x%02x", r)
		case needsEscape(r):
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func needsEscape(r rune) bool {
	switch {
	case r == '\t':
		return false
	case r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0, r == utf8.RuneError:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true // bidirectional embeddings, overrides and isolates
	}
	return false
}

// branchColumn is how the summary names a stage's branch.
func branchColumn(branch string) string {
	if branch == "" {
		return "(trunk)"
	}
	return "[" + branch + "]"
}
