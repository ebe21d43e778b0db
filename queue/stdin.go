package queue

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/pipespool/pipespool/proc"
)

// ProcessStdin runs the packet read from in (stdin-process). A bad packet is
// a *PacketError (exit 2); a failed job a *JobFailedError (exit 1), and so
// is a packet the decoder did not verify (nothing of it is run).
func ProcessStdin(ctx context.Context, in *os.File, log *slog.Logger, opts ProcessOptions) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	_, command := opts.Runner.(*CommandRunner)
	procs := newJobProcs(command, opts.Decoder, opts.MayOutlive, log, "the job on stdin")
	defer procs.close() // once the decoder is stopped
	h, stream, err := stdinHeader(ctx, in, opts.Decoder, procs.scope)
	if err != nil {
		return err
	}
	payload := in
	if stream != nil {
		defer stream.Stop()
		payload = stream.Out
	}
	opts.OutputTo = PassBoth
	jobErr, err := runPacket(ctx, log, &packet{h: h, env: jobEnvFixed(h, nil, ""), payload: payload, stream: stream, scope: procs.scope}, opts, nil)
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
	return stdinHeader(ctx, in, dec, nil)
}

// stdinHeader is StdinHeader, the decoder's shell steps started in scope
// (nil: a scope of the stream's own).
func stdinHeader(ctx context.Context, in *os.File, dec *Decoder, scope *proc.Scope) (*Header, *Stream, error) {
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
		if stream, err = dec.startIn(ctx, spool, true, scope); err != nil {
			spool.Close()
			return nil, nil, &PacketError{Reason: "stdin: cannot start the decoder", Err: err}
		}
		stream.owned = append(stream.owned, spool)
	} else {
		var err error
		if stream, err = dec.startIn(ctx, in, false, scope); err != nil {
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

// StdinInfo writes the FSPL_* variables of the packet on in, read through
// dec, to w (stdin-info).
func StdinInfo(ctx context.Context, in *os.File, dec *Decoder, w io.Writer) error {
	h, stream, err := StdinHeader(ctx, in, dec)
	if err != nil {
		return err
	}
	if stream != nil {
		stream.Stop()
	}
	return WriteJobEnv(w, h, nil, "")
}

// CopyStdinPayload writes the payload of the packet on in, decoded with
// dec, to w (stdin-payload); when dec verifies, only once the whole packet
// is verified.
func CopyStdinPayload(ctx context.Context, in *os.File, dec *Decoder, w io.Writer) error {
	_, stream, err := StdinHeader(ctx, in, dec)
	if err != nil {
		return err
	}
	return copyDecoded(w, in, stream, "stdin")
}

type stdinJobError struct{ JobFailedError }

func (e *stdinJobError) Error() string {
	return fmt.Sprintf("job %d (stdin) failed: %v", e.Seq, e.Err)
}
