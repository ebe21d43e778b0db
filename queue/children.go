package queue

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pipespool/pipespool/proc"
)

// The processes the queue starts (a job's command, the shell steps of a
// decoder) are started by proc, as exec's stages are: each in a process
// group of its own, waited for without being reaped until its Cleanup (so
// that its group id is never reused while it may be signalled), stopped
// with what it started below it, and taken along if pipespool dies. What
// they leave running is stopped at the end of the job, as at the end of an
// exec run, unless the job file's may_outlive names it.

// DefaultGrace is the time between SIGTERM and SIGKILL when a job's
// processes are stopped (an interruption, what they left running).
const DefaultGrace = 5 * time.Second

// stderrWaitMax bounds how long the copy of a process's stderr is waited
// for once the process and its group are gone: a process that left the
// group may hold the pipe open until the end of the job.
const stderrWaitMax = time.Second

// stderrSink is what a child is given as its stderr for a writer: the
// writer itself when it is a file, or the file behind it (nil: /dev/null),
// else the write end of a pipe whose read end a goroutine copies into the
// writer.
type stderrSink struct {
	Child *os.File // fd 2 of the child
	pipe  *os.File // our read end, nil when Child is the writer itself
	done  chan struct{}
}

// newStderrSink returns the sink for w; name is the process, for errors.
func newStderrSink(w io.Writer, name string) (*stderrSink, error) {
	switch f := w.(type) {
	case nil:
		return &stderrSink{}, nil
	case *os.File:
		return &stderrSink{Child: f}, nil
	case interface{ File() *os.File }:
		// A writer in front of a file (pipespool's own stderr, which
		// never blocks pipespool): the child writes to the file itself.
		return &stderrSink{Child: f.File()}, nil
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("pipe for the stderr of %s: %w", name, err)
	}
	// Non-blocking, so that Go's poller parks the copy and a Close ends
	// its pending read.
	unix.SetNonblock(fds[0], true)
	s := &stderrSink{Child: os.NewFile(uintptr(fds[1]), name+" stderr (child)"),
		pipe: os.NewFile(uintptr(fds[0]), name+" stderr"), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		io.Copy(w, s.pipe)
	}()
	return s, nil
}

// Started closes our copy of the child's end, once the child has its own
// (or will never have it): the copy ends only when every holder closed it.
func (s *stderrSink) Started() {
	if s.pipe != nil {
		s.Child.Close()
	}
}

// Finish waits for the copy, once the process and its group are gone (at
// most stderrWaitMax: something that left the group may hold the pipe),
// and closes the read end.
func (s *stderrSink) Finish() {
	if s.pipe == nil {
		return
	}
	t := time.NewTimer(stderrWaitMax)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
	}
	s.pipe.Close()
	<-s.done
}

// statusErr describes how a process ended, nil for exit 0.
func statusErr(st proc.Status) error {
	switch {
	case st.Err != nil:
		return st.Err
	case st.Signal != 0:
		return fmt.Errorf("killed by signal %s", proc.SignalName(st.Signal))
	case st.Code != 0:
		return fmt.Errorf("exit status %d", st.Code)
	}
	return nil
}

// endGroup waits for g's leader, stops what is left in its group and reaps
// it: the leader's status, or, when the leader exited 0, the failure of a
// process it left running in its group (a `cmd &` that did its work).
func endGroup(g *proc.Group, grace time.Duration) proc.Status {
	st := g.Wait()
	g.Cleanup(grace)
	if st.Code == 0 && st.Signal == 0 && st.Err == nil {
		if left := g.LeftFailures(); len(left) > 0 {
			st.Err = fmt.Errorf("%v, left running by it (it exited 0)", left[0])
		}
	}
	return st
}

// closeScope closes scope, stopping what its processes left running (but
// what keep names), and logs what it stopped as left running by who.
func closeScope(scope *proc.Scope, grace time.Duration, log *slog.Logger, who string) {
	stopped, kept := scope.Close(grace)
	if log == nil {
		return
	}
	if len(stopped) > 0 {
		log.Warn(fmt.Sprintf("stopped %d process(es) %s left running: %s; if one of them may outlive the job (a gpg-agent), "+
			"name it in the job file (--job or --decoder-config): may_outlive = [%s]",
			len(stopped), who, proc.Describe(stopped), proc.QuotedNames(stopped)))
	}
	if len(kept) > 0 {
		log.Debug("left running, as may_outlive allows", "processes", proc.Describe(kept))
	}
}

// errNoCommand is an empty argv.
var errNoCommand = errors.New("no command to run")
