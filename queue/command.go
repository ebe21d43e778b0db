package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"
)

// CommandRunner runs a job as a command, as fspl does: argv, then the
// packet params, with the FSPL_* environment added to pipespool's, the
// payload on stdin, in a process group of its own.
type CommandRunner struct {
	Argv    []string
	Timeout time.Duration // 0: none; on expiry the group gets SIGKILL, as with fspl
	Stdout  *os.File      // PassBoth destinations
	Stderr  io.Writer
	// Grace is the time between SIGTERM and SIGKILL when pipespool is
	// interrupted (0: 5 s).
	Grace time.Duration
}

// BaseArgv is the command's argv before the packet's params: the space
// they take is checked with the packet's (see checkExecSpace).
func (c *CommandRunner) BaseArgv() []string { return c.Argv }

// RunJob implements Runner.
func (c *CommandRunner) RunJob(ctx context.Context, r *Run) error {
	argv := append(slices.Clone(c.Argv), r.Params...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), r.Env...)
	cmd.Stdin = r.Payload
	cmd.Stdout, cmd.Stderr = c.Stdout, c.Stderr
	if r.Output != nil {
		cmd.Stdout, cmd.Stderr = r.Output, r.Output
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	// The wait runs here, on this goroutine, with the timeout and an
	// interruption acting through callbacks: a goroutine for Wait and a
	// select cost each tiny job two more thread wake-ups.
	pgid := cmd.Process.Pid
	var (
		mu         sync.Mutex
		finished   bool   // Wait returned: signal nothing more, the group may be gone
		why        string // "timeout" or "interrupted", set when first signalled
		graceTimer *time.Timer
	)
	kill := func(reason string, sig syscall.Signal) {
		mu.Lock()
		defer mu.Unlock()
		if finished {
			return
		}
		if why == "" {
			why = reason
		}
		syscall.Kill(-pgid, sig)
	}
	if c.Timeout > 0 {
		t := time.AfterFunc(c.Timeout, func() { kill("timeout", syscall.SIGKILL) })
		defer t.Stop()
	}
	grace := c.Grace
	if grace <= 0 {
		grace = 5 * time.Second
	}
	stopCtx := context.AfterFunc(ctx, func() {
		kill("interrupted", syscall.SIGTERM)
		mu.Lock()
		defer mu.Unlock()
		if !finished {
			graceTimer = time.AfterFunc(grace, func() { kill("interrupted", syscall.SIGKILL) })
		}
	})
	err := cmd.Wait()
	stopCtx()
	mu.Lock()
	finished = true
	if graceTimer != nil {
		graceTimer.Stop()
	}
	reason := why
	mu.Unlock()
	if reason == "timeout" {
		return fmt.Errorf("%s: killed after the timeout of %s", argv[0], c.Timeout)
	}
	return commandErr(argv[0], err)
}

func commandErr(name string, err error) error {
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return fmt.Errorf("%s: killed by signal %s", name, ws.Signal())
		}
		return fmt.Errorf("%s: exit status %d", name, ee.ExitCode())
	}
	return fmt.Errorf("%s: %w", name, err)
}
