package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/pipespool/pipespool/queue"
)

// prepareOptions are the options of prepare, prepare-nop and prepare-fail.
type prepareOptions struct {
	g       *globalOptions
	SeqFile string
	Input   string // "" no payload, "-" stdin
	Params  []string
	Type    queue.CmdType
}

// NewCmdPrepare writes a command packet to stdout, as fspl prepare; runF
// does the work (nil: runPrepare), as for prepare-nop and prepare-fail.
func NewCmdPrepare(g *globalOptions, runF func(*prepareOptions) error) *cobra.Command {
	opts := &prepareOptions{g: g, Type: queue.CmdCommand}
	if runF == nil {
		runF = runPrepare
	}
	cmd := &cobra.Command{
		Use:   "prepare -s SEQFILE [-i INPUT] [-- PARAMS...]",
		Short: "Prepare a command for transmission, writing to stdout",
		Long: `Write a packet to stdout: a header with the next sequence number from
SEQFILE (which is then incremented), the creation time, PARAMS and every
FSPL_SET_* variable of the environment, followed by the payload read from
INPUT. The packet is byte-compatible with fspl 1.2.

With -i FILE the payload is copied by the kernel (copy_file_range, splice
or sendfile) where stdout allows it.`,
		Example: `  tar c /etc | pipespool prepare -s ~/.seq -i - | ssh host pipespool queue-write -q /q
  FSPL_SET_DATASET=tank/home pipespool prepare -s ~/.seq -i backup.zst -- incremental`,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Params = args
			return runF(opts)
		},
	}
	cmd.Flags().StringVarP(&opts.SeqFile, "seqfile", "s", "", `the sequence state file; "-" for none (seq 1)`)
	cmd.Flags().StringVarP(&opts.Input, "input", "i", "", `payload file, "-" for stdin; none when not given`)
	_ = cmd.MarkFlagRequired("seqfile")
	return cmd
}

// NewCmdPrepareNOP writes a NOP packet, as fspl prepare-nop.
func NewCmdPrepareNOP(g *globalOptions, runF func(*prepareOptions) error) *cobra.Command {
	return newCmdPrepareBare(g, runF, queue.CmdNOP, "prepare-nop", "Prepare a NOP packet for transmission, writing to stdout",
		"A NOP packet runs nothing and always succeeds: use it to fill a gap in the sequence.")
}

// NewCmdPrepareFail writes a Fail packet, as fspl prepare-fail.
func NewCmdPrepareFail(g *globalOptions, runF func(*prepareOptions) error) *cobra.Command {
	return newCmdPrepareBare(g, runF, queue.CmdFail, "prepare-fail", "Prepare a fail packet for transmission, writing to stdout",
		"A Fail packet runs nothing and always fails: use it to test --on-error handling.")
}

func newCmdPrepareBare(g *globalOptions, runF func(*prepareOptions) error, t queue.CmdType, name, short, long string) *cobra.Command {
	opts := &prepareOptions{g: g, Type: t}
	if runF == nil {
		runF = runPrepare
	}
	cmd := &cobra.Command{
		Use:     name + " -s SEQFILE",
		Short:   short,
		Long:    long,
		Example: "  pipespool " + name + " -s ~/.seq | pipespool queue-write -q /q",
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, args []string) error { return runF(opts) },
	}
	cmd.Flags().StringVarP(&opts.SeqFile, "seqfile", "s", "", `the sequence state file; "-" for none (seq 1)`)
	_ = cmd.MarkFlagRequired("seqfile")
	return cmd
}

func runPrepare(opts *prepareOptions) error {
	var in *os.File
	switch opts.Input {
	case "":
	case "-":
		in = opts.g.streams.In
	default:
		f, err := os.OpenFile(opts.Input, os.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return &usageError{fmt.Errorf("prepare: input: %w", err)}
		}
		defer f.Close()
		in = f
	}
	h := &queue.Header{Type: opts.Type}
	now := time.Now()
	h.CTimeSecs, h.CTimeNanos = uint64(now.Unix()), uint64(now.Nanosecond())
	if opts.Type == queue.CmdCommand {
		for _, p := range opts.Params {
			h.Params = append(h.Params, []byte(p))
		}
		for _, kv := range os.Environ() {
			name, val, ok := strings.Cut(kv, "=")
			if rest, isSet := strings.CutPrefix(name, "FSPL_SET_"); ok && isSet {
				h.Env = append(h.Env, queue.EnvVar{Name: []byte(rest), Value: []byte(val)})
			}
		}
	}
	return queue.UseNext(opts.SeqFile, func(seq uint64) error {
		h.Seq = seq
		out := opts.g.streams.Out
		if _, err := out.Write(queue.Encode(h)); err != nil {
			return fmt.Errorf("prepare: write packet: %w", err)
		}
		if in != nil {
			if _, err := queue.CopyFile(out, in); err != nil {
				return fmt.Errorf("prepare: copy payload: %w", err)
			}
		}
		return nil
	})
}

// seqOptions are the options of prepare-get-next and prepare-set-next.
type seqOptions struct {
	g       *globalOptions
	SeqFile string
	ID      uint64 // prepare-set-next's ID
}

// NewCmdPrepareGetNext prints the seqfile's next number; runF does the
// work (nil: runPrepareGetNext).
func NewCmdPrepareGetNext(g *globalOptions, runF func(*seqOptions) error) *cobra.Command {
	opts := &seqOptions{g: g}
	if runF == nil {
		runF = runPrepareGetNext
	}
	cmd := &cobra.Command{
		Use:     "prepare-get-next -s SEQFILE",
		Short:   "Get the next sequence number for prepare",
		Long:    "Print the sequence number the next prepare will use (creating SEQFILE with 1 if missing, as fspl does).",
		Example: "  pipespool prepare-get-next -s ~/.seq",
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, args []string) error { return runF(opts) },
	}
	cmd.Flags().StringVarP(&opts.SeqFile, "seqfile", "s", "", `the sequence state file; "-" for none`)
	_ = cmd.MarkFlagRequired("seqfile")
	return cmd
}

// NewCmdPrepareSetNext sets the seqfile's next number; runF does the work
// (nil: runPrepareSetNext).
func NewCmdPrepareSetNext(g *globalOptions, runF func(*seqOptions) error) *cobra.Command {
	opts := &seqOptions{g: g}
	if runF == nil {
		runF = runPrepareSetNext
	}
	cmd := &cobra.Command{
		Use:     "prepare-set-next -s SEQFILE ID",
		Short:   "Set the next sequence number for prepare",
		Long:    "Make the next prepare use sequence number ID.",
		Example: "  pipespool prepare-set-next -s ~/.seq 100",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := parseID(args[0])
			if err != nil {
				return err
			}
			opts.ID = n
			return runF(opts)
		},
	}
	cmd.Flags().StringVarP(&opts.SeqFile, "seqfile", "s", "", `the sequence state file; "-" for none`)
	_ = cmd.MarkFlagRequired("seqfile")
	return cmd
}

func runPrepareGetNext(o *seqOptions) error {
	n, err := queue.PeekNext(o.SeqFile)
	if err != nil {
		return err
	}
	return writeOut(o.g, "%d\n", n)
}

func runPrepareSetNext(o *seqOptions) error { return queue.SetNext(o.SeqFile, o.ID) }

// parseID parses a job ID / sequence number argument.
func parseID(s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, usageErrorf("%q is not a sequence number (a non-negative integer)", s)
	}
	return n, nil
}
