package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/pipespool/pipespool/proc"
)

// signalContext returns a context cancelled, with a *proc.InterruptedError
// as its cause, at the first of proc.StopSignals: the processes are
// stopped (SIGTERM to each group, SIGKILL after the grace period), a
// temporary output is removed, and the exit status is 128 + the signal. A
// signal pipespool was started ignoring stays ignored: nohup's SIGHUP, and the SIGINT and SIGQUIT that a
// shell ignores for a command it runs in the background. SIGQUIT writes
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
			sig := s.(syscall.Signal)
			if sig == syscall.SIGQUIT && os.Getenv("GOTRACEBACK") != "" {
				dumpGoroutines(errOut)
			}
			cancel(&proc.InterruptedError{Signal: sig})
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(nil)
	}
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
