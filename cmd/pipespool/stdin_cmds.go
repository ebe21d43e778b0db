package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/pipespool/pipespool/queue"
)

// NewCmdStdinInfo prints the FSPL_* variables of the packet on stdin;
// runF does the work (nil: runStdinInfo).
func NewCmdStdinInfo(g *globalOptions, runF func(*queueDirOptions) error) *cobra.Command {
	opts := &queueDirOptions{g: g}
	if runF == nil {
		runF = runStdinInfo
	}
	cmd := &cobra.Command{
		Use:   "stdin-info",
		Short: "Get information about a packet piped to filespooler on stdin",
		Long: `Print the FSPL_* variables of the packet on stdin, one NAME=value per line.
A bad packet exits 2 with the reason.`,
		Example: "  pipespool stdin-info < fspl-1234.fspl\n  pipespool stdin-info -d openpgp --decoder-config keys.toml < fspl-1234.fspl.gpg",
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, args []string) error { return runF(opts) },
	}
	opts.bindDecoder(cmd)
	return cmd
}

func runStdinInfo(o *queueDirOptions) error {
	return o.decoding(func(ctx context.Context, dec *queue.Decoder) error {
		return queue.StdinInfo(ctx, o.g.streams.In, dec, o.g.streams.Out)
	})
}

// NewCmdStdinPayload writes the payload of the packet on stdin; runF does
// the work (nil: runStdinPayload).
func NewCmdStdinPayload(g *globalOptions, runF func(*queueDirOptions) error) *cobra.Command {
	opts := &queueDirOptions{g: g}
	if runF == nil {
		runF = runStdinPayload
	}
	cmd := &cobra.Command{
		Use:     "stdin-payload",
		Short:   "Dumps the payload from the packet on stdin to stdout",
		Long:    "Write the payload of the packet on stdin (decoded with -d) to stdout. A bad packet exits 2.",
		Example: "  pipespool stdin-payload < fspl-1234.fspl | tar t\n  pipespool stdin-payload -d zstd < fspl-1234.fspl.zst | tar t",
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, args []string) error { return runF(opts) },
	}
	opts.bindDecoder(cmd)
	return cmd
}

func runStdinPayload(o *queueDirOptions) error {
	return o.decoding(func(ctx context.Context, dec *queue.Decoder) error {
		return queue.CopyStdinPayload(ctx, o.g.streams.In, dec, o.g.streams.Out)
	})
}

// decoding runs f, for the packet on stdin, with the -d chain and the
// signal context.
func (o *queueDirOptions) decoding(f func(ctx context.Context, dec *queue.Decoder) error) error {
	dec, err := o.decoder("", "")
	if err != nil {
		return err
	}
	ctx, stop := signalContext(o.g.streams.ErrOut)
	defer stop()
	return f(ctx, dec)
}

// stdinProcessOptions are stdin-process's options.
type stdinProcessOptions struct {
	queueDirOptions // g and -d; no queue directory
	processFlags
	Command []string
}

// NewCmdStdinProcess runs the packet on stdin; runF does the work (nil:
// runStdinProcess).
func NewCmdStdinProcess(g *globalOptions, runF func(*stdinProcessOptions) error) *cobra.Command {
	opts := &stdinProcessOptions{queueDirOptions: queueDirOptions{g: g}}
	if runF == nil {
		runF = runStdinProcess
	}
	cmd := &cobra.Command{
		Use:   "stdin-process [options] COMMAND [-- PARAMS...]",
		Short: "Process a command from a job packet read from stdin",
		Long: `Run COMMAND (or, with --job, a pipeline) for the packet on stdin, with its
payload on stdin and its FSPL_* variables in the environment, as
queue-process does for a queued job. A bad packet exits 2, a failed job 1.`,
		Example: `  ssh sender 'pipespool prepare -s .seq -i dump' | pipespool stdin-process sh -- -c 'cat > dump'
  pipespool stdin-process --job restore.toml < fspl-1234.fspl`,
		RunE: func(cmd *cobra.Command, args []string) error {
			before, after := splitAtDash(cmd, args)
			cmdv, err := commandArgs(before, after)
			if err != nil {
				return err
			}
			opts.Command = cmdv
			return runF(opts)
		},
	}
	opts.processFlags.bind(cmd)
	opts.bindDecoder(cmd)
	return cmd
}

func runStdinProcess(opts *stdinProcessOptions) error {
	g := opts.g
	commandMode := opts.Command[0] != ""
	if commandMode && opts.JobFile != "" {
		return usageErrorf("stdin-process: both COMMAND %q and --job %s: give one", opts.Command[0], opts.JobFile)
	}
	dec, err := opts.decoder("", opts.JobFile)
	if err != nil {
		return err
	}
	runner, err := newRunner(g, commandMode, opts.Command, opts.JobFile, &opts.processFlags)
	if err != nil {
		return err
	}
	keep, err := opts.mayOutlive(runner)
	if err != nil {
		return err
	}
	dec.MayOutlive = keep
	survivePipeErrors()
	ctx, stop := signalContext(g.streams.ErrOut)
	defer stop()
	return queue.ProcessStdin(ctx, g.streams.In, g.Logger(), queue.ProcessOptions{
		Runner: runner, Decoder: dec, MayOutlive: keep, AllowJobParams: opts.AllowJobParams, IgnorePayload: opts.IgnorePayload})
}
