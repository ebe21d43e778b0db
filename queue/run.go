package queue

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/pipespool/pipespool/fsutil"
	"github.com/pipespool/pipespool/proc"
)

// runOpened runs job, whose packet op is open, and closes op. jobErr is
// the job's own failure (command failed, Fail packet, too large to be
// given to a command); err is anything that must stop processing without
// committing the job (I/O error, interruption).
func (q *Queue) runOpened(ctx context.Context, job Job, op *OpenedPacket, opts ProcessOptions) (jobErr, err error) {
	defer op.Close()
	h := op.Header
	q.Logger.Debug("running job", "seq", h.Seq, "file", job.Name, "type", h.Type.String())
	p := &packet{h: h, env: jobEnvFixed(h, q, job.Name), payload: op.Payload, stream: op.stream, scope: op.procs.scope}
	return runPacket(ctx, q.Logger, p, opts, func() (*os.File, error) {
		// A fixed name in a directory others may write: whatever is
		// there, a planted link above all, is unlinked, never written
		// through.
		return fsutil.CreateReplacing(filepath.Join(q.JobsDir(), job.Name+".out"), os.O_WRONLY, 0o644)
	})
}

// packet is a packet about to be run: its header (Params and Env not
// decoded yet), the FSPL_* variables other than its params and env, and
// its payload with the decoder stream that produces it (nil: none).
type packet struct {
	h       *Header
	env     []string
	payload *os.File
	stream  *Stream
	scope   *proc.Scope // where the runner starts the job's processes (Run.Scope)
}

// decoderOf gives run the decoder's verdict as PayloadDone (nil stream: no
// decoder) and returns what to call once the run is over: it returns the
// decoder's failure, unless the runner already asked for it through
// PayloadDone and failed the job (pipeline mode's check before the output
// is committed), which then holds it already.
//
// What is wanted of the decoder depends on the command, as for the stages
// of a pipeline: when it failed, the rest of the payload is read and
// discarded (Stream.Wait) so that every decoder step finishes its check and
// one that made bad data is named; when it succeeded, the steps that are
// done give their verdict (a modified message read to its end fails) and
// those still running are stopped (Stream.Stop): nobody wants the rest.
// When ctx is done, the decoder is stopped and says nothing.
func decoderOf(ctx context.Context, run *Run, stream *Stream) (left func(jobErr error) error) {
	if stream == nil {
		return func(error) error { return nil }
	}
	var asked atomic.Bool
	run.PayloadDone = func() error {
		asked.Store(true)
		return stream.Stop()
	}
	return func(jobErr error) error {
		switch {
		case ctx.Err() != nil:
			stream.Stop()
			return nil
		case asked.Load() && jobErr != nil:
			stream.Stop()
			return nil
		case jobErr != nil:
			return stream.Wait()
		}
		return stream.Stop()
	}
}

// withDecoderFailure combines a job's failure with its decoder's. A decoder
// that failed on its own (a step that got EPIPE or SIGPIPE because the
// command stopped reading has not: see Stream.Wait) gave the command bad or
// short data, which is most often why the command failed too (zstd on a
// modified OpenPGP message finds its checksum wrong before the decoder,
// which checks the message's integrity at its end, says so): the decoder's
// failure is named first, the command's after it. Both stay in the chain
// for errors.Is and errors.As.
func withDecoderFailure(jobErr, derr error) error {
	switch {
	case derr == nil:
		return jobErr
	case jobErr == nil:
		return derr
	}
	return fmt.Errorf("%w (then the command failed: %w)", derr, jobErr)
}

// runPacket runs p with opts, shared by queue-process and stdin-process.
// openOutput opens the SaveBoth file.
func runPacket(ctx context.Context, log *slog.Logger, p *packet, opts ProcessOptions, openOutput func() (*os.File, error)) (jobErr, err error) {
	run := &Run{Header: p.h, Payload: p.payload, Scope: p.scope}
	decoderLeft := decoderOf(ctx, run, p.stream)
	jobErr, err = runDecoded(ctx, log, run, p, opts, openOutput)
	if derr := decoderLeft(jobErr); err == nil {
		jobErr = withDecoderFailure(jobErr, derr)
	}
	return jobErr, err
}

func runDecoded(ctx context.Context, log *slog.Logger, run *Run, p *packet, opts ProcessOptions, openOutput func() (*os.File, error)) (jobErr, err error) {
	h := p.h
	switch h.Type {
	case CmdNOP:
		return nil, nil
	case CmdFail:
		return errFailPacket, nil
	}
	// What the params and environment cost is known before they are
	// allocated: a header the command could not be given is refused
	// before anything of it is built, and before anything runs.
	var argv []string
	if ar, ok := opts.Runner.(interface{ BaseArgv() []string }); ok {
		argv = ar.BaseArgv()
	}
	if err := checkExecSpace(h.Size, argv, p.env, opts.AllowJobParams); err != nil {
		return err, nil
	}
	if err := h.Decode(); err != nil {
		return nil, err
	}
	run.Env = appendPacketEnv(p.env, h)
	if opts.AllowJobParams {
		for _, p := range h.Params {
			run.Params = append(run.Params, string(p))
		}
	} else if len(h.Params) > 0 {
		log.Warn("parameters given in job ignored because --allow-job-params not given", "seq", h.Seq)
	}
	if opts.IgnorePayload {
		devnull, err := fsutil.Open(os.DevNull, os.O_RDONLY, 0)
		if err != nil {
			return nil, err
		}
		defer devnull.Close()
		run.Payload = devnull
	}
	if opts.OutputTo == SaveBoth && openOutput != nil {
		out, err := openOutput()
		if err != nil {
			return nil, fmt.Errorf("--output-to SaveBoth: %w", err)
		}
		run.Output = out
		defer func() {
			if cerr := out.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("--output-to SaveBoth: close %s: %w", out.Name(), cerr)
			}
		}()
	}
	jobErr = opts.Runner.RunJob(ctx, run)
	if ctx.Err() != nil {
		// Interrupted: the job did not finish, so it must not be committed.
		return nil, fmt.Errorf("job %d interrupted: %w", h.Seq, context.Cause(ctx))
	}
	return jobErr, nil
}
