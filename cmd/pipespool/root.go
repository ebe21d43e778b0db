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
	g := &globalOptions{streams: streams}
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
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	root.SetIn(streams.In)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })

	root.AddCommand(NewCmdExec(g))
	root.AddCommand(NewCmdCheck(g))
	root.AddCommand(NewCmdVersion(g))
	addQueueCommands(root, g)
	return root
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
	root := NewRootCmd(streams)
	root.SetArgs(args)
	_, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	code := exitCodeOf(err)
	var quiet interface{ Reported() bool }
	if !(errors.As(err, &quiet) && quiet.Reported()) {
		fmt.Fprintf(streams.ErrOut, "pipespool: %v\n", err)
	}
	return code
}

// exitCodeOf maps an error to the exit status of the spec: an error that
// knows its code (ExitCode() int) keeps it, usage errors are 2, anything
// else is 1.
func exitCodeOf(err error) int {
	var coder interface{ ExitCode() int }
	if errors.As(err, &coder) {
		return coder.ExitCode()
	}
	// cobra reports unknown commands and bad argument counts as plain errors.
	msg := err.Error()
	if strings.HasPrefix(msg, "unknown command") || strings.HasPrefix(msg, "accepts ") ||
		strings.HasPrefix(msg, "requires ") || strings.Contains(msg, "arg(s)") {
		return 2
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
