package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pipespool/pipespool/pipeline"
)

// NewCmdCheck builds the check command.
func NewCmdCheck(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "check JOB.toml",
		Short: "Validate a job file and print its resolved stage graph",
		Long: `Validate a job file as exec would (unknown keys, wrong types, missing
programs, key files of built-ins) and print the resolved stage graph.
Exit status: 0 valid, 2 invalid (the error names the file, line and key).`,
		Example: `  pipespool check restore.toml`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			job, err := pipeline.Load(args[0])
			if err != nil {
				return err
			}
			desc, err := pipeline.Describe(job, pipeline.Options{})
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(g.streams.Out, desc)
			return err
		},
	}
}
