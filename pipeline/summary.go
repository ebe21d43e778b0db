package pipeline

import (
	"fmt"
	"strings"

	"github.com/pipespool/pipespool/units"
)

// Summary is the failure summary printed to stderr (and mailed by cron):
// the reason, then one line per stage with its status and bytes, then the
// last lines of the root cause's stderr.
func Summary(rep *Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "job %q %s: %s\n", rep.Job, rep.Result, rep.Message)
	width := 5
	for _, s := range rep.Stages {
		width = max(width, len(s.Name))
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
		fmt.Fprintf(&b, "%s %d %-*s  %-26s in %-10s out %-10s", mark, i+1, width, s.Name, status, units.FormatSize(s.BytesIn), units.FormatSize(s.BytesOut))
		if s.Note != "" {
			b.WriteString(" " + s.Note)
		}
		b.WriteByte('\n')
		for _, d := range s.Diagnoses {
			fmt.Fprintf(&b, "    stall: %s\n", d)
		}
	}
	if rep.RootCause == OutputRootCause {
		fmt.Fprintf(&b, "* %d %-*s  %s\n", len(rep.Stages)+1, width, OutputRootCause, "failed: "+rep.Output)
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
			fmt.Fprintf(&b, "  | %s\n", l)
		}
	}
	return b.String()
}
