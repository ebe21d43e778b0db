package queue

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/pipespool/pipespool/fsutil"
)

// runOpened runs job, whose packet op is open, and closes op. jobErr is
// the job's own failure (command failed, Fail packet, too large to be
// given to a command); err is anything that must stop processing without
// committing the job (I/O error, interruption).
func (q *Queue) runOpened(ctx context.Context, job Job, op *OpenedPacket, opts ProcessOptions) (jobErr, err error) {
	defer op.Close()
	h := op.Header
	q.Logger.Debug("running job", "seq", h.Seq, "file", job.Name, "type", h.Type.String())
	p := &packet{h: h, env: jobEnvFixed(h, q, job.Name), payload: op.Payload, stream: op.stream}
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
	run := &Run{Header: p.h, Payload: p.payload}
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

// ProcessStdin runs the packet read from in (stdin-process). A bad packet is
// a *PacketError (exit 2); a failed job a *JobFailedError (exit 1), and so
// is a packet the decoder did not verify (nothing of it is run).
func ProcessStdin(ctx context.Context, in *os.File, log *slog.Logger, opts ProcessOptions) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h, stream, err := StdinHeader(ctx, in, opts.Decoder)
	if err != nil {
		return err
	}
	payload := in
	if stream != nil {
		defer stream.Stop()
		payload = stream.Out
	}
	opts.OutputTo = PassBoth
	jobErr, err := runPacket(ctx, log, &packet{h: h, env: jobEnvFixed(h, nil, ""), payload: payload, stream: stream}, opts, nil)
	if err != nil {
		return err
	}
	if jobErr != nil {
		return &stdinJobError{JobFailedError{Seq: h.Seq, Err: jobErr}}
	}
	return nil
}

// StdinHeader reads the header of the packet on in (stdin-*), through dec
// when it is not empty: then the payload is to be read from the returned
// Stream's Out, which the caller must Wait for (or Stop). Params and Env
// are not decoded yet (Header.Decode, Header.Each). A bad packet, or a
// decoder that fails before the header (a wrong key), is exit 2.
//
// When dec verifies, the packet is first copied whole to a private file in
// $TMPDIR (stdin can be read once, and it is read twice: to verify, then to
// use), which is gone when the stream is done; a packet that is not
// verified is an *UnverifiedError, and nothing of it is returned.
func StdinHeader(ctx context.Context, in *os.File, dec *Decoder) (*Header, *Stream, error) {
	if dec.Empty() {
		h, err := ReadHeaderLazy(in)
		if err != nil {
			return nil, nil, fmt.Errorf("stdin: %w", err)
		}
		return h, nil, nil
	}
	var stream *Stream
	if dec.Verifies() {
		spool, err := privateCopy(os.TempDir(), in)
		if err != nil {
			return nil, nil, fmt.Errorf("stdin: copy the packet to verify it: %w", err)
		}
		if err := dec.Verify(ctx, spool); err != nil {
			spool.Close()
			return nil, nil, fmt.Errorf("stdin: %w", err)
		}
		if stream, err = dec.Start(ctx, spool); err != nil {
			spool.Close()
			return nil, nil, &PacketError{Reason: "stdin: cannot start the decoder", Err: err}
		}
		stream.owned = append(stream.owned, spool)
	} else {
		var err error
		if stream, err = dec.StartStream(ctx, in); err != nil {
			return nil, nil, &PacketError{Reason: "stdin: cannot start the decoder", Err: err}
		}
	}
	h, err := ReadHeaderLazy(stream.Out)
	if err != nil {
		if derr := stream.Stop(); derr != nil {
			return nil, nil, &PacketError{Reason: "stdin: the decoder failed", Err: derr}
		}
		return nil, nil, fmt.Errorf("stdin (decoded with %s): %w", dec, err)
	}
	return h, stream, nil
}

type stdinJobError struct{ JobFailedError }

func (e *stdinJobError) Error() string {
	return fmt.Sprintf("job %d (stdin) failed: %v", e.Seq, e.Err)
}
