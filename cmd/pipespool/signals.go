package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/pipespool/pipespool/proc"
)

// signalContext returns a context cancelled, with a *proc.InterruptedError
// (dated when the signal came) as its cause, at the first of
// proc.StopSignals: the processes are stopped (SIGTERM to each group,
// SIGKILL after the grace period), a temporary output is removed, and the
// exit status is 128 + the signal. A signal pipespool was started ignoring
// stays ignored: nohup's SIGHUP, and the SIGINT and SIGQUIT that a shell
// ignores for a command it runs in the background. SIGQUIT writes
// the stacks of every goroutine to errOut first when GOTRACEBACK is set
// (someone debugging a hang asked for them), as Go's own SIGQUIT would,
// but the processes are still stopped. A second signal is left to the
// work, which is already stopping everything. stop releases the signals.
func signalContext(errOut io.Writer) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	var watch []os.Signal
	for _, s := range proc.StopSignals {
		if !signal.Ignored(s) {
			watch = append(watch, s)
		}
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, watch...)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			at := time.Now()
			sig := s.(syscall.Signal)
			if sig == syscall.SIGQUIT && os.Getenv("GOTRACEBACK") != "" {
				dumpGoroutines(errOut)
			}
			cancel(&proc.InterruptedError{Signal: sig, At: at})
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(nil)
	}
}

var pipeOnce sync.Once

// survivePipeErrors makes a write to a pipe whose reader went away fail
// with EPIPE instead of killing pipespool with SIGPIPE, for the rest of the
// process; the commands that run pipelines (exec, queue-process,
// stdin-process) call it. Go kills a program that writes to a broken
// stdout or stderr unless it asks for SIGPIPE; such a command must not die
// half-way because its log's reader went away (`2>&1 | head`, a logger
// that died): its stages would be killed with it (their parent-death
// signal), its temporary output left behind, its report and metrics never
// written. The run goes on, its messages are lost, and its exit status and
// report say how it ended. SIGPIPE is caught, not ignored: an ignored
// signal would stay ignored in the stages, which need it (a producer whose
// consumer went dies of SIGPIPE). The listing commands keep the usual
// death, as `ls | head` does.
func survivePipeErrors() {
	pipeOnce.Do(func() {
		signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	})
}

// dumpGoroutines writes every goroutine's stack to w.
func dumpGoroutines(w io.Writer) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			fmt.Fprintf(w, "SIGQUIT: goroutine stacks (GOTRACEBACK is set)\n%s\n", buf[:n])
			return
		}
		buf = make([]byte, 2*len(buf))
	}
}
