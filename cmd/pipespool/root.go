package main

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// globalOptions are the flags every command accepts.
type globalOptions struct {
	LogLevel  string
	LogFormat string
	streams   *IOStreams
	logger    *slog.Logger // built from the flags in PersistentPreRunE
	// ran is set when a command's RunE begins: an error without an exit
	// code of its own returned before that is cobra refusing the command
	// line (unknown command or flag, missing required flag, wrong number
	// of arguments), a usage error.
	ran bool
}

// Logger returns the logger that the flags asked for.
func (g *globalOptions) Logger() *slog.Logger { return g.logger }

func (g *globalOptions) setupLogger() error {
	var level slog.Level
	switch strings.ToLower(g.LogLevel) {
	case "debug":
		level = slog.LevelDebug
	case "info", "":
		level = slog.LevelInfo
	case "warn", "warning":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		return usageErrorf("--log-level %q: use debug, info, warn or error", g.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(g.LogFormat) {
	case "text", "":
		g.logger = slog.New(newTextHandler(g.streams.ErrOut, opts))
	case "json":
		g.logger = slog.New(slog.NewJSONHandler(g.streams.ErrOut, opts))
	default:
		return usageErrorf("--log-format %q: use text or json", g.LogFormat)
	}
	return nil
}

// NewRootCmd builds the whole command tree around streams.
func NewRootCmd(streams *IOStreams) *cobra.Command {
	return newRootCmd(&globalOptions{streams: streams})
}

// newRootCmd builds the root command with every command below it, or
// with cmds alone when given (a test's command, built with its runF).
func newRootCmd(g *globalOptions, cmds ...*cobra.Command) *cobra.Command {
	root := &cobra.Command{
		Use:   "pipespool",
		Short: "Run streaming pipelines of processes, and an fspl-compatible job queue",
		Long: `pipespool runs pipelines such as "gpg -d | zstdcat | zfs receive" the way a
backup from cron needs them run: it spawns every stage, owns every pipe and
copies the bytes between stages itself, so it knows what moved where, notices
a stage that stopped, and says which stage failed and why.

It also keeps an ordered job queue that is byte-compatible with Filespooler
(fspl 1.2).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return g.setupLogger()
		},
	}
	root.PersistentFlags().StringVar(&g.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&g.LogFormat, "log-format", "text", "log format: text or json")
	root.SetOut(g.streams.Out)
	root.SetErr(g.streams.ErrOut)
	root.SetIn(g.streams.In)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })

	if len(cmds) > 0 {
		root.AddCommand(cmds...)
	} else {
		root.AddCommand(NewCmdExec(g, nil))
		root.AddCommand(NewCmdCheck(g, nil))
		root.AddCommand(NewCmdVersion(g))
		addQueueCommands(root, g)
	}
	noteRun(root, &g.ran)
	return root
}

// noteRun wraps the RunE of c and of every command below it so that it
// sets *ran first.
func noteRun(c *cobra.Command, ran *bool) {
	if run := c.RunE; run != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			*ran = true
			return run(cmd, args)
		}
	}
	for _, sub := range c.Commands() {
		noteRun(sub, ran)
	}
}

// NewCmdVersion prints the version.
func NewCmdVersion(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of pipespool",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := fmt.Fprintf(g.streams.Out, "pipespool %s\n", version)
			return err
		},
	}
}

// Main runs the command line args and returns the exit status. It is the
// one place where errors become exit codes and are printed.
func Main(args []string, streams *IOStreams) int {
	g := &globalOptions{streams: streams}
	return execute(g, newRootCmd(g), args)
}

// execute runs args on root, built around g, and returns the exit status.
func execute(g *globalOptions, root *cobra.Command, args []string) int {
	streams := g.streams
	root.SetArgs(args)
	_, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	if !g.ran {
		var coder interface{ ExitCode() int }
		if !errors.As(err, &coder) {
			err = &usageError{err}
		}
	}
	code := exitCodeOf(err)
	var quiet interface{ Reported() bool }
	if !(errors.As(err, &quiet) && quiet.Reported()) {
		fmt.Fprintf(streams.ErrOut, "pipespool: %v\n", err)
	}
	return code
}

// exitCodeOf maps an error to its documented exit status: an error that
// knows its code (ExitCode() int) keeps it, anything else is 1.
func exitCodeOf(err error) int {
	var coder interface{ ExitCode() int }
	if errors.As(err, &coder) {
		return coder.ExitCode()
	}
	return 1
}

// usageError is bad usage: exit 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// ExitCode implements the exit-code convention of Main.
func (e *usageError) ExitCode() int { return 2 }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}
