package main

import (
	"github.com/spf13/cobra"

	"github.com/pipespool/pipespool/queue"
)

// NewCmdGenUUID prints a random UUID, as fspl gen-uuid.
func NewCmdGenUUID(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "gen-uuid",
		Short:   "Display a UUID to stdout",
		Long:    "Print a random (version 4) UUID, as fspl gen-uuid does.",
		Example: "  pipespool gen-uuid",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return writeOut(g, "%s\n", queue.NewUUID())
		},
	}
}

// NewCmdGenFilename prints a fresh job file name, as fspl gen-filename.
func NewCmdGenFilename(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "gen-filename",
		Short: "Display a fspl-*.fspl filename to stdout",
		Long: `Print a fresh job file name, fspl-<uuid>.fspl, for transports that drop
packets straight into a queue's jobs/ directory (write under another name,
then rename to this one).`,
		Example: `  f=$(pipespool gen-filename); cp packet /q/jobs/.tmp && mv /q/jobs/.tmp /q/jobs/$f`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return writeOut(g, "%s\n", queue.NewJobFilename())
		},
	}
}
