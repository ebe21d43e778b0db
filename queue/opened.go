package queue

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/pipespool/pipespool/proc"
)

// OpenedPacket is a job's packet ready to be used: its header read (Params
// and Env not decoded yet: Header.Decode, Header.Each), its payload
// positioned at the first byte.
type OpenedPacket struct {
	Header *Header
	// Payload is the job file itself without a decoder, else the
	// decoder's output.
	Payload *os.File
	stream  *Stream
	files   []*os.File
	// procs holds the processes of the job: its decoder's shell steps
	// and what its runner starts (Run.Scope). Close ends it.
	procs jobProcs
}

// jobProcs is the scope of a job's processes and what to say about what
// they leave running.
type jobProcs struct {
	scope *proc.Scope // nil: the job runs no process of the queue's
	log   *slog.Logger
	who   string // "job 42"
}

// newJobProcs opens the scope of a job's processes when it will run some:
// a runner's (need) or a shell decoder step's. Otherwise none is opened:
// an open scope keeps a pipeline run meanwhile (pipeline mode) from
// stopping, before it commits its output, the processes it left running
// that no scope's group can claim (see proc.Scope).
func newJobProcs(need bool, dec *Decoder, keep []string, log *slog.Logger, who string) jobProcs {
	if !need && !dec.runsShell() {
		return jobProcs{}
	}
	return jobProcs{scope: proc.NewScope(keep), log: log, who: who}
}

// close stops what the job's processes left running (but what may
// outlive it) and says so.
func (j *jobProcs) close() {
	if j.scope != nil {
		closeScope(j.scope, DefaultGrace, j.log, j.who)
		j.scope = nil
	}
}

// Stream is the decoder producing Payload, or nil.
func (p *OpenedPacket) Stream() *Stream { return p.stream }

// Close stops the decoder, closes the files and stops what the job's
// processes left running. It is idempotent.
func (p *OpenedPacket) Close() {
	if p.stream != nil {
		p.stream.Stop()
	}
	for _, f := range p.files {
		f.Close()
	}
	p.files = nil
	p.procs.close()
}

// OpenPacket opens job (found by a scan) and reads its header, through dec.
// When dec verifies, the whole packet is verified first (see Verify): a
// packet that is not is an *UnverifiedError, and nothing of it is read. A
// file that changed since the scan (another seq) is an error. What the
// decoder's shell steps leave running is stopped by Close, but what
// dec.MayOutlive names.
func (q *Queue) OpenPacket(ctx context.Context, dec *Decoder, job Job) (*OpenedPacket, error) {
	var keep []string
	if dec != nil {
		keep = dec.MayOutlive
	}
	return q.openPacket(ctx, dec, job, newJobProcs(false, dec, keep, q.Logger, fmt.Sprintf("the decoder of job %d", job.Seq)))
}

// openPacket is OpenPacket, the decoder started in procs (which the
// packet then owns).
func (q *Queue) openPacket(ctx context.Context, dec *Decoder, job Job, procs jobProcs) (*OpenedPacket, error) {
	path := QuoteName(q.JobPath(job.Name))
	f, err := q.openJob(job.Name)
	if err != nil {
		procs.close()
		return nil, fmt.Errorf("job %d (%s): %w", job.Seq, path, err)
	}
	p := &OpenedPacket{files: []*os.File{f}, procs: procs}
	src, err := verifiedJob(ctx, dec, q.Dir, f)
	if err != nil {
		p.Close()
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, fmt.Errorf("job %d (%s): %w", job.Seq, path, err)
	}
	if src != f {
		p.files = append(p.files, src)
	}
	p.Payload = src
	var h *Header
	if dec.Empty() {
		h, err = ReadHeaderLazy(src)
	} else {
		if p.stream, err = dec.startIn(ctx, src, true, p.procs.scope); err != nil {
			p.Close()
			return nil, fmt.Errorf("job %d (%s): start decoder: %w", job.Seq, path, err)
		}
		p.Payload = p.stream.Out
		h, err = ReadHeaderLazy(p.stream.Out)
		if err != nil {
			if derr := p.stream.Stop(); derr != nil {
				err = derr
			}
		}
	}
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("job %s: header no longer readable: %w", path, err)
	}
	if h.Seq != job.Seq {
		p.Close()
		return nil, fmt.Errorf("job %s changed while the queue was processed (seq %d, was %d)", path, h.Seq, job.Seq)
	}
	p.Header = h
	return p, nil
}

// CopyPayload writes the payload of job (decoded with dec) to w; when dec
// verifies, only once the whole packet is verified.
func (q *Queue) CopyPayload(ctx context.Context, dec *Decoder, job Job, w io.Writer) error {
	p, err := q.OpenPacket(ctx, dec, job)
	if err != nil {
		return err
	}
	defer p.Close()
	return copyDecoded(w, p.Payload, p.stream, QuoteName(q.JobPath(job.Name)))
}

// copyDecoded copies a packet's payload to w: payload itself, or when
// stream is not nil its Out, whose verdict (an integrity check, a
// signature) is then waited for; what names the packet in that error.
func copyDecoded(w io.Writer, payload *os.File, stream *Stream, what string) error {
	if stream != nil {
		defer stream.Stop()
		payload = stream.Out
	}
	if _, err := Copy(w, payload); err != nil {
		return err
	}
	if stream != nil {
		if err := stream.Wait(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	return nil
}

// VerifyJob verifies the packet of job when dec verifies (see Verify), and
// returns why it is not verified (an *UnverifiedError), or nil. Nothing of
// the packet is used, so the job file is verified where it is.
func (q *Queue) VerifyJob(ctx context.Context, dec *Decoder, job Job) error {
	if !dec.Verifies() {
		return nil
	}
	f, err := q.openJob(job.Name)
	if err != nil {
		return &UnverifiedError{Err: err}
	}
	defer f.Close()
	return dec.Verify(ctx, f)
}
