package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// addQueueCommands adds the fspl-compatible queue commands (queue_*.go,
// prepare*.go, stdin_*.go, gen_*.go).
func addQueueCommands(root *cobra.Command, g *globalOptions) {
	root.AddCommand(
		NewCmdPrepare(g), NewCmdPrepareNOP(g), NewCmdPrepareFail(g),
		NewCmdPrepareGetNext(g), NewCmdPrepareSetNext(g),
		NewCmdQueueInit(g), NewCmdQueueWrite(g), NewCmdQueueLs(g), NewCmdQueueInfo(g),
		NewCmdQueuePayload(g), NewCmdQueueProcess(g), NewCmdQueueGetNext(g), NewCmdQueueSetNext(g),
		NewCmdStdinInfo(g), NewCmdStdinPayload(g), NewCmdStdinProcess(g),
		NewCmdGenFilename(g), NewCmdGenUUID(g),
	)
}

// queueDirArg resolves the queue directory of a queue-* command: -q DIR, or
// else the first positional argument. It returns the remaining arguments.
func queueDirArg(flagDir string, args []string) (string, []string, error) {
	if flagDir != "" {
		return flagDir, args, nil
	}
	if len(args) == 0 {
		return "", nil, usageErrorf("no queue directory: give -q DIR or DIR as the first argument")
	}
	return args[0], args[1:], nil
}

// interruptedError is a command stopped by SIGINT or SIGTERM.
type interruptedError struct{ sig syscall.Signal }

func (e *interruptedError) Error() string { return "interrupted by " + e.sig.String() }

// ExitCode is 128 + the signal: 130 for SIGINT, 143 for SIGTERM.
func (e *interruptedError) ExitCode() int { return 128 + int(e.sig) }

// signalContext returns a context cancelled, with an *interruptedError as
// its cause, on SIGINT or SIGTERM. stop releases the signal handler.
func signalContext() (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			cancel(&interruptedError{sig: s.(syscall.Signal)})
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(nil)
	}
}

// writeOut writes s to stdout, for listings.
func writeOut(g *globalOptions, format string, args ...any) error {
	_, err := fmt.Fprintf(g.streams.Out, format, args...)
	return err
}
