package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pipespool/pipespool/pipeline"
)

// checkOptions are the options of check.
type checkOptions struct {
	g       *globalOptions
	JobFile string
}

// NewCmdCheck builds the check command; runF does the work (nil:
// runCheck).
func NewCmdCheck(g *globalOptions, runF func(*checkOptions) error) *cobra.Command {
	opts := &checkOptions{g: g}
	if runF == nil {
		runF = runCheck
	}
	return &cobra.Command{
		Use:   "check JOB.toml",
		Short: "Validate a job file and print its resolved stage graph",
		Long: `Validate a job file as exec would (unknown keys, wrong types, missing
programs, key files of built-ins) and print the resolved stage graph.
Exit status: 0 valid, 2 invalid (the error names the file, line and key).`,
		Example: `  pipespool check restore.toml`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.JobFile = args[0]
			return runF(opts)
		},
	}
}

func runCheck(opts *checkOptions) error {
	job, err := pipeline.Load(opts.JobFile)
	if err != nil {
		return err
	}
	desc, err := pipeline.Describe(job, pipeline.Options{})
	if err != nil {
		return err
	}
	_, err = fmt.Fprint(opts.g.streams.Out, desc)
	return err
}
