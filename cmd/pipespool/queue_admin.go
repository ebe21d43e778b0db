package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/pipespool/pipespool/filter"
	"github.com/pipespool/pipespool/pipeline"
	"github.com/pipespool/pipespool/queue"
)

// queueDirOptions is the -q DIR every queue-* command takes.
type queueDirOptions struct {
	g        *globalOptions
	QueueDir string
	Decoders []string
	// DecoderConfig is --decoder-config: the job file whose
	// [decoder.openpgp] table keys -d openpgp.
	DecoderConfig string
	Job           string // -j ID
	AppendOnly    bool   // queue-init --append-only

	// Dir is the queue directory (-q DIR, or the first argument) and
	// Args the arguments after it, once the command line is parsed.
	Dir  string
	Args []string
}

func (o *queueDirOptions) bindDir(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&o.QueueDir, "queuedir", "q", "", "the queue directory (or give it as the first argument)")
}

func (o *queueDirOptions) bindDecoder(cmd *cobra.Command) {
	cmd.Flags().StringArrayVarP(&o.Decoders, "decoder", "d", nil,
		`decode job files with this shell command ($SHELL -c), or the built-in "zstd" or "openpgp"; repeat to chain`)
	cmd.Flags().StringVar(&o.DecoderConfig, "decoder-config", "",
		"job file whose [decoder.openpgp] table holds the key of -d openpgp (default: --job, else DIR/pipespool.toml)")
}

// decoder builds the -d chain, and makes pipespool the subreaper of the
// processes it and the jobs start. The key of -d openpgp comes from the
// [decoder.openpgp] table of --decoder-config, else of jobFile (the
// pipeline of queue-process/stdin-process), else of dir/pipespool.toml.
func (o *queueDirOptions) decoder(dir, jobFile string) (*queue.Decoder, error) {
	d, err := queue.ParseDecoders(o.Decoders, func() (queue.OpenPGP, error) {
		return o.openpgpDecoder(dir, jobFile)
	})
	if err != nil {
		var je *pipeline.JobError
		var ue *usageError
		if errors.As(err, &je) || errors.As(err, &ue) {
			return nil, err
		}
		return nil, &usageError{err}
	}
	d.Stderr, d.Logger = o.g.streams.ErrOut, o.g.Logger()
	// What a shell step leaves running outside its group is found and
	// stopped only by a subreaper.
	becomeSubreaper(o.g)
	return d, nil
}

func (o *queueDirOptions) openpgpDecoder(dir, jobFile string) (queue.OpenPGP, error) {
	path := o.DecoderConfig
	if path == "" {
		path = jobFile
	}
	if path == "" && dir != "" {
		if p := filepath.Join(dir, "pipespool.toml"); fileExists(p) {
			path = p
		}
	}
	if path == "" {
		return queue.OpenPGP{}, usageErrorf("-d openpgp needs the decryption key: put a [decoder.openpgp] table " +
			"(secret_key and passphrase_file, or passphrase_file alone) in the job file given by --job, " +
			"in DIR/pipespool.toml, or in a file given by --decoder-config (see docs/queue.md)")
	}
	job, err := pipeline.LoadDecoderConfig(path)
	if err != nil {
		return queue.OpenPGP{}, err
	}
	if job.OpenPGPDecoder == nil {
		return queue.OpenPGP{}, usageErrorf("-d openpgp: %s has no [decoder.openpgp] table: add one with secret_key "+
			"and passphrase_file (or passphrase_file alone for a passphrase-encrypted queue); see docs/queue.md", path)
	}
	if cw, ok := job.OpenPGPDecoder.(filter.ConfigWarner); ok {
		for _, w := range cw.Warnings() {
			o.g.Logger().Warn(w, "file", path, "table", "decoder.openpgp")
		}
	}
	return queue.OpenPGP{Filter: job.OpenPGPDecoder, RequireSigned: job.OpenPGPRequireSigned}, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// NewCmdQueueInit creates a queue directory; runF does the work (nil:
// runQueueInit), as for every queue-* command below with its own runX.
func NewCmdQueueInit(g *globalOptions, runF func(*queueDirOptions) error) *cobra.Command {
	opts := &queueDirOptions{g: g}
	cmd := &cobra.Command{
		Use:   "queue-init -q DIR [--append-only]",
		Short: "Initialize a queue",
		Long: `Create the queue directory DIR with jobs/, nextseq (1) and nextseq.lock.
With --append-only only jobs/ is made: the queue can be written and listed
but not processed. An existing nextseq is kept.`,
		Example: "  pipespool queue-init -q /var/spool/backups",
		RunE:    opts.runE(0, runF, runQueueInit),
	}
	opts.bindDir(cmd)
	cmd.Flags().BoolVar(&opts.AppendOnly, "append-only", false, "create the queue in write-only mode (no nextseq)")
	return cmd
}

func runQueueInit(o *queueDirOptions) error { return queue.Init(o.Dir, o.AppendOnly) }

// NewCmdQueueWrite stores the packet on stdin as a job.
func NewCmdQueueWrite(g *globalOptions, runF func(*queueDirOptions) error) *cobra.Command {
	opts := &queueDirOptions{g: g}
	cmd := &cobra.Command{
		Use:   "queue-write -q DIR",
		Short: "Save a packet from stdin to a queue",
		Long: `Read a packet from stdin and store it in DIR/jobs: written to
tmp-fspl-<uuid>.fspl.tmp, fsynced, renamed to fspl-<uuid>.fspl, and the
directory fsynced. A crash never leaves a partial file under a job name.`,
		Example: "  ssh sender pipespool prepare -s .seq -i backup | pipespool queue-write -q /q",
		RunE:    opts.runE(0, runF, runQueueWrite),
	}
	opts.bindDir(cmd)
	return cmd
}

func runQueueWrite(o *queueDirOptions) error {
	name, err := queue.Open(o.Dir, o.g.Logger()).Write(o.g.streams.In)
	if err != nil {
		return err
	}
	o.g.Logger().Debug("packet written", "file", name)
	return nil
}

// NewCmdQueueLs lists the jobs of a queue, in fspl's format.
func NewCmdQueueLs(g *globalOptions, runF func(*queueDirOptions) error) *cobra.Command {
	opts := &queueDirOptions{g: g}
	cmd := &cobra.Command{
		Use:   "queue-ls -q DIR [-d DECODECMD]",
		Short: "Gets information about the jobs in a queue",
		Long: `List the jobs of the queue, in sequence order, in fspl's columns: ID,
creation timestamp (local time) and file name. Files that do not parse, and
anything not a regular file, are skipped with a warning. A name that is not
printable text is shown quoted, with Go's escapes ("fspl-\x1b.fspl").

When the decoder requires a signature (-d openpgp with require_signed_by),
every job is decrypted in full to verify it, and a row whose packet is not
verified ends in [unverified] (the reason is in the warning).`,
		Example: "  pipespool queue-ls -q /q\n  pipespool queue-ls /q -d zstd",
		RunE:    opts.runE(0, runF, runQueueLs),
	}
	opts.bindDir(cmd)
	opts.bindDecoder(cmd)
	return cmd
}

func runQueueLs(o *queueDirOptions) error {
	dec, err := o.decoder(o.Dir, "")
	if err != nil {
		return err
	}
	ctx, stop := signalContext(o.g.streams.ErrOut)
	defer stop()
	return listQueue(ctx, o.g, queue.Open(o.Dir, o.g.Logger()), dec)
}

// listQueue prints the rows of queue-ls.
func listQueue(ctx context.Context, g *globalOptions, q *queue.Queue, dec *queue.Decoder) error {
	jobs, err := q.Scan(ctx, dec)
	if err != nil {
		return err
	}
	if err := writeOut(g, "%-20s %-27s %s\n", "ID", "creation timestamp", "filename"); err != nil {
		return err
	}
	for _, j := range jobs {
		mark := ""
		if err := q.VerifyJob(ctx, dec, j); err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			g.Logger().Warn("job not verified", "seq", j.Seq, "file", q.JobPath(j.Name), "reason", err.Error())
			mark = " [unverified]"
		}
		if err := writeOut(g, "%-20d %-27s %s%s\n", j.Seq, queue.FormatLocalTime(j.CTime()), queue.QuoteName(j.Name), mark); err != nil {
			return err
		}
	}
	return nil
}

func (o *queueDirOptions) bindJob(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&o.Job, "job", "j", "", "the ID (sequence number) of the job")
	_ = cmd.MarkFlagRequired("job")
}

// NewCmdQueueInfo prints a job's FSPL_* variables.
func NewCmdQueueInfo(g *globalOptions, runF func(*queueDirOptions) error) *cobra.Command {
	opts := &queueDirOptions{g: g}
	cmd := &cobra.Command{
		Use:   "queue-info -q DIR -j ID [-d DECODECMD]",
		Short: "Show information about a specific job ID in a queue",
		Long: `Print the environment queue-process would give job ID's command, one
NAME=value per line (values are raw bytes and may contain newlines). When
the decoder requires a signature, the packet is verified in full first, and
nothing of a packet that is not verified is printed (exit 1).`,
		Example: "  pipespool queue-info -q /q -j 42",
		RunE:    opts.runE(0, runF, runQueueInfo),
	}
	opts.bindDir(cmd)
	opts.bindDecoder(cmd)
	opts.bindJob(cmd)
	return cmd
}

func runQueueInfo(o *queueDirOptions) error {
	return o.withJob(func(ctx context.Context, q *queue.Queue, job queue.Job, dec *queue.Decoder) error {
		p, err := q.OpenPacket(ctx, dec, job)
		if err != nil {
			return err
		}
		defer p.Close()
		return queue.WriteJobEnv(o.g.streams.Out, p.Header, q, job.Name)
	})
}

// withJob runs f with job -j of the queue, found through the -d chain,
// and the signal context.
func (o *queueDirOptions) withJob(f func(context.Context, *queue.Queue, queue.Job, *queue.Decoder) error) error {
	seq, err := parseID(o.Job)
	if err != nil {
		return err
	}
	dec, err := o.decoder(o.Dir, "")
	if err != nil {
		return err
	}
	q := queue.Open(o.Dir, o.g.Logger())
	ctx, stop := signalContext(o.g.streams.ErrOut)
	defer stop()
	job, err := q.FindJob(ctx, dec, seq)
	if err != nil {
		return err
	}
	return f(ctx, q, job, dec)
}

// NewCmdQueuePayload dumps a job's payload.
func NewCmdQueuePayload(g *globalOptions, runF func(*queueDirOptions) error) *cobra.Command {
	opts := &queueDirOptions{g: g}
	cmd := &cobra.Command{
		Use:     "queue-payload -q DIR -j ID [-d DECODECMD]",
		Short:   "Dump the payload of a job to stdout",
		Long:    "Write the payload of job ID (decoded with -d) to stdout.",
		Example: "  pipespool queue-payload -q /q -j 42 | tar t",
		RunE:    opts.runE(0, runF, runQueuePayload),
	}
	opts.bindDir(cmd)
	opts.bindDecoder(cmd)
	opts.bindJob(cmd)
	return cmd
}

func runQueuePayload(o *queueDirOptions) error {
	return o.withJob(func(ctx context.Context, q *queue.Queue, job queue.Job, dec *queue.Decoder) error {
		return q.CopyPayload(ctx, dec, job, o.g.streams.Out)
	})
}

// NewCmdQueueGetNext prints the queue's nextseq.
func NewCmdQueueGetNext(g *globalOptions, runF func(*queueDirOptions) error) *cobra.Command {
	opts := &queueDirOptions{g: g}
	cmd := &cobra.Command{
		Use:     "queue-get-next -q DIR",
		Short:   "Prints the next sequence number for the queue",
		Long:    "Print the sequence number queue-process will run next. Exits 75 if the queue is being processed.",
		Example: "  pipespool queue-get-next -q /q",
		RunE:    opts.runE(0, runF, runQueueGetNext),
	}
	opts.bindDir(cmd)
	return cmd
}

func runQueueGetNext(o *queueDirOptions) error {
	n, err := queue.Open(o.Dir, o.g.Logger()).NextSeq()
	if err != nil {
		return err
	}
	return writeOut(o.g, "%d\n", n)
}

// NewCmdQueueSetNext sets the queue's nextseq.
func NewCmdQueueSetNext(g *globalOptions, runF func(*queueDirOptions) error) *cobra.Command {
	opts := &queueDirOptions{g: g}
	cmd := &cobra.Command{
		Use:     "queue-set-next -q DIR ID",
		Short:   "Sets the next sequence number for the queue",
		Long:    "Make queue-process run job ID next (durably). Exits 75 if the queue is being processed.",
		Example: "  pipespool queue-set-next -q /q 43",
		RunE:    opts.runE(1, runF, runQueueSetNext),
	}
	opts.bindDir(cmd)
	return cmd
}

func runQueueSetNext(o *queueDirOptions) error {
	n, err := parseID(o.Args[0])
	if err != nil {
		return err
	}
	return queue.Open(o.Dir, o.g.Logger()).SetNextSeq(n)
}

// runE is the RunE of a queue-* command that takes DIR (-q DIR, or the
// first argument) and nargs arguments after it: it sets Dir and Args, then
// calls runF, or run when runF is nil.
func (o *queueDirOptions) runE(nargs int, runF, run func(*queueDirOptions) error) func(*cobra.Command, []string) error {
	if runF == nil {
		runF = run
	}
	return func(cmd *cobra.Command, args []string) error {
		dir, rest, err := queueDirArg(o.QueueDir, args)
		if err != nil {
			return err
		}
		switch {
		case len(rest) == nargs:
		case nargs == 0:
			return usageErrorf("%s: unexpected argument %q", cmd.Name(), rest[0])
		default:
			return usageErrorf("%s: expected %d argument(s) after the queue directory, got %d", cmd.Name(), nargs, len(rest))
		}
		o.Dir, o.Args = dir, rest
		return runF(o)
	}
}
