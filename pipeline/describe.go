package pipeline

import (
	"cmp"
	"fmt"
	"strings"

	"github.com/pipespool/pipespool/stage"
	"github.com/pipespool/pipespool/units"
)

// Describe is the resolved stage graph printed by check and --dry-run. It
// validates the stages as Run does (validateStages: programs, dirs) and
// reports the first error as a *JobError. What comes from the job file
// (arguments, paths, names) is made Printable: a job file cannot drive the
// terminal of whoever checks it.
func Describe(job *Job, opts Options) (string, error) {
	var b strings.Builder
	in, out := job.Input, job.Output
	if opts.InputPath != "" {
		in = opts.InputPath
	}
	if opts.OutputPath != "" {
		out = opts.OutputPath
	}
	resolved, err := validateStages(job)
	if err != nil {
		return "", err
	}
	if err := checkHops(job, opts); err != nil {
		return "", err
	}
	fmt.Fprintf(&b, "job %s (%s)\n", Printable(job.Name), Printable(job.File))
	fmt.Fprintf(&b, "input:  %s", Printable(describePath(in, "stdin", "none (the first stage reads nothing)")))
	if size := cmp.Or(opts.ExpectedSize, job.ExpectedSize); size > 0 {
		fmt.Fprintf(&b, ", expected size %s", units.FormatSize(size))
	}
	b.WriteByte('\n')
	if job.FansOut() {
		describeTree(&b, job, resolved, opts, out)
	} else {
		for i := range job.Stages {
			fmt.Fprintf(&b, "  %s\n", describeStage(job, resolved, opts, i))
		}
		fmt.Fprintf(&b, "output: %s\n", Printable(describePath(out, "stdout", "none (discarded)")))
	}
	timeout := "none"
	if job.Timeout > 0 {
		timeout = job.Timeout.String()
	}
	fmt.Fprintf(&b, "timeout: %s; pipe size: %s\n", timeout, units.FormatSize(int64(job.PipeSize)))
	if len(job.MayOutlive) > 0 {
		fmt.Fprintf(&b, "may outlive the run: %s\n", Printable(strings.Join(job.MayOutlive, ", ")))
	}
	return b.String(), nil
}

func describePath(p, dash, none string) string {
	switch p {
	case "-":
		return dash
	case "none":
		return none
	}
	return p
}

func quoteArgv(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`*?[]{}()<>|&;#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// describeStage is stage i's line in the graph: its number, name, what it
// runs, and its stall and hop settings.
func describeStage(job *Job, resolved []resolvedStage, opts Options, i int) string {
	s := &job.Stages[i]
	var what string
	switch {
	case s.Builtin != "":
		what = "builtin " + s.Builtin
	default:
		what = "command " + resolved[i].path + " " + quoteArgv(resolved[i].argv[1:])
		if s.Dir != "" {
			what += " (in " + s.Dir + ")"
		}
		if s.Stderr != stage.StderrCapture {
			what += ", stderr " + string(s.Stderr)
		}
	}
	stall := "stall detection off"
	if s.StallTimeout > 0 {
		stall = fmt.Sprintf("stall after %s: %s", s.StallTimeout, s.OnStall)
	}
	partial := ""
	if s.AllowPartialRead {
		partial = ", may stop reading early"
	}
	if lim := HopRateLimit(job, opts, i); lim > 0 {
		partial += ", input limited to " + units.FormatRate(lim)
	}
	if buf := HopBuffer(job, opts, i); buf.Size > 0 {
		partial += ", input buffered in " + units.FormatSize(buf.Size)
		if s.BufferStartAt > 0 {
			partial += fmt.Sprintf(", delivered from %g%% full", s.BufferStartAt)
		}
		if s.BufferResumeAt < 100 {
			partial += fmt.Sprintf(", read again below %g%%", s.BufferResumeAt)
		}
	}
	return fmt.Sprintf("%d. %-16s %s  [%s%s]", i+1, s.Name, Printable(strings.TrimSpace(what)), stall, partial)
}

// describeTree draws a job that fans out: each line's stages, then its
// fan-out's branches below it, indented, each with its output; out is
// the output of the branch that writes [output].
func describeTree(b *strings.Builder, job *Job, resolved []resolvedStage, opts Options, out string) {
	ls := job.lines()
	var draw func(l int, indent string)
	draw = func(l int, indent string) {
		ln := &ls[l]
		for _, i := range ln.Stages {
			fmt.Fprintf(b, "%s%s\n", indent, describeStage(job, resolved, opts, i))
		}
		last := &job.Stages[ln.Stages[len(ln.Stages)-1]]
		if len(ln.Children) == 0 {
			path := out
			if last.Output != "" {
				path = last.Output
			}
			fmt.Fprintf(b, "%soutput: %s\n", indent, Printable(describePath(path, "stdout", "none (discarded)")))
			return
		}
		fmt.Fprintf(b, "%sfans out to %d branches:\n", indent, len(ln.Children))
		for k, c := range ln.Children {
			head, more := "├─ ", "│  "
			if k == len(ln.Children)-1 {
				head, more = "└─ ", "   "
			}
			what := "branch " + ls[c].Name
			if ls[c].Optional {
				what += " (optional: the run may succeed without it)"
			}
			fmt.Fprintf(b, "%s%s%s\n", indent, head, Printable(what))
			draw(c, indent+more)
		}
	}
	draw(0, "  ")
}
