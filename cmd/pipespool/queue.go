package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// addQueueCommands adds the fspl-compatible queue commands (queue_*.go,
// prepare*.go, stdin_*.go, gen_*.go).
func addQueueCommands(root *cobra.Command, g *globalOptions) {
	root.AddCommand(
		NewCmdPrepare(g, nil), NewCmdPrepareNOP(g, nil), NewCmdPrepareFail(g, nil),
		NewCmdPrepareGetNext(g, nil), NewCmdPrepareSetNext(g, nil),
		NewCmdQueueInit(g, nil), NewCmdQueueWrite(g, nil), NewCmdQueueLs(g, nil), NewCmdQueueInfo(g, nil),
		NewCmdQueuePayload(g, nil), NewCmdQueueProcess(g, nil), NewCmdQueueGetNext(g, nil), NewCmdQueueSetNext(g, nil),
		NewCmdStdinInfo(g, nil), NewCmdStdinPayload(g, nil), NewCmdStdinProcess(g, nil),
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

// writeOut writes s to stdout, for listings.
func writeOut(g *globalOptions, format string, args ...any) error {
	_, err := fmt.Fprintf(g.streams.Out, format, args...)
	return err
}
