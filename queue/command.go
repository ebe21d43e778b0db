package queue

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"time"

	"github.com/pipespool/pipespool/proc"
)

// CommandRunner runs a job as a command, as fspl does: argv, then the
// packet params, with the FSPL_* environment added to pipespool's, the
// payload on stdin, in a process group of its own (see children.go).
type CommandRunner struct {
	Argv    []string
	Timeout time.Duration // 0: none; on expiry the group gets SIGKILL, as with fspl
	Stdout  *os.File      // PassBoth destinations
	Stderr  io.Writer
	// Grace is the time between SIGTERM and SIGKILL when pipespool is
	// interrupted, and for what the command left in its group once it
	// exited (0: DefaultGrace).
	Grace time.Duration
}

// BaseArgv is the command's argv before the packet's params: the space
// they take is checked with the packet's (see checkExecSpace).
func (c *CommandRunner) BaseArgv() []string { return c.Argv }

// RunJob implements Runner. The command runs in r.Scope (a scope of its
// own when nil, closed before RunJob returns). A timeout kills its group,
// and what left the group below it, with SIGKILL; an interruption (ctx
// done) stops them, SIGTERM then SIGKILL after the grace period. What is
// left in the group once the command has exited is stopped the same way
// before RunJob returns.
func (c *CommandRunner) RunJob(ctx context.Context, r *Run) error {
	if len(c.Argv) == 0 {
		return errNoCommand
	}
	argv := append(slices.Clone(c.Argv), r.Params...)
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	grace := c.Grace
	if grace <= 0 {
		grace = DefaultGrace
	}
	scope := r.Scope
	if scope == nil {
		scope = proc.NewScope(nil)
		defer closeScope(scope, grace, nil, "")
	}
	stdout, stderr := c.Stdout, c.Stderr
	if r.Output != nil {
		stdout, stderr = r.Output, r.Output
	}
	errSink, err := newStderrSink(stderr, argv[0])
	if err != nil {
		return err
	}
	g, err := scope.Start(proc.Spec{Path: path, Argv: argv, Env: proc.MergeEnv(os.Environ(), r.Env),
		Stdin: r.Payload, Stdout: stdout, Stderr: errSink.Child})
	errSink.Started()
	if err != nil {
		errSink.Finish()
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	var timeout <-chan time.Time
	if c.Timeout > 0 {
		t := time.NewTimer(c.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	timedOut := false
	for stop := ctx.Done(); ; {
		select {
		case <-g.Done():
		case <-timeout:
			timeout, timedOut = nil, true
			g.Kill()
			continue
		case <-stop:
			stop = nil
			g.Stop(grace)
			continue
		}
		break
	}
	st := endGroup(g, grace)
	errSink.Finish()
	if timedOut {
		return fmt.Errorf("%s: killed after the timeout of %s", argv[0], c.Timeout)
	}
	if err := statusErr(st); err != nil {
		return fmt.Errorf("%s: %w", argv[0], err)
	}
	return nil
}
