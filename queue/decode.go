package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/klauspost/compress/zstd"

	"github.com/pipespool/pipespool/filter"
)

// DecodeStep is one decoder: a shell command (run as $SHELL -c, like fspl)
// or a built-in filter.
type DecodeStep struct {
	Shell   string        // shell command, when Builtin is ""
	Builtin string        // name of the built-in ("zstd")
	filter  filter.Filter // the built-in's filter
	// verifies: the step fails a message not signed by the key it
	// requires, which it can tell only at the message's end.
	verifies bool
}

// OpenPGP is the filter of the built-in "openpgp" decoder and its policy.
type OpenPGP struct {
	Filter filter.Filter
	// RequireSigned: Filter fails, at the end of a message, unless a
	// required key signed it (require_signed_by). Then nothing of a
	// packet is used before the whole of it has been verified (Verify).
	RequireSigned bool
}

// Decoder turns a stored job file into a packet: the steps run in order,
// the first reading the job file from its start. An empty Decoder means the
// job files are packets as they are.
type Decoder struct {
	Steps []DecodeStep
	// Shell runs shell steps; fspl uses $SHELL, and so does ParseDecoders
	// (/bin/sh when $SHELL is unset).
	Shell string
	// Stderr receives the shell steps' stderr (os.Stderr when nil).
	Stderr io.Writer
}

// ParseDecoders builds a Decoder from -d values, in order. "zstd" is the
// built-in zstd decompressor, "openpgp" the built-in OpenPGP decrypter
// whose filter (with its key and policy) openpgp returns, called once and
// only when "openpgp" is among specs; anything else is a shell command.
func ParseDecoders(specs []string, openpgp func() (OpenPGP, error)) (*Decoder, error) {
	d := &Decoder{Shell: os.Getenv("SHELL")}
	if d.Shell == "" {
		d.Shell = "/bin/sh"
	}
	for _, s := range specs {
		switch s {
		case "":
			return nil, errors.New("-d: empty decoder")
		case "zstd":
			d.Steps = append(d.Steps, DecodeStep{Builtin: s, filter: zstdFilter()})
		case "openpgp":
			if openpgp == nil {
				return nil, errors.New("-d openpgp: no decryption key: put a [decoder.openpgp] table in the job file")
			}
			o, err := openpgp()
			if err != nil {
				return nil, err
			}
			d.Steps = append(d.Steps, DecodeStep{Builtin: s, filter: o.Filter, verifies: o.RequireSigned})
			openpgp = func() (OpenPGP, error) { return o, nil }
		default:
			d.Steps = append(d.Steps, DecodeStep{Shell: s})
		}
	}
	return d, nil
}

// zstdFilter is the zstd-decompress built-in when the filter package has it,
// else klauspost's decoder directly.
func zstdFilter() filter.Filter {
	if f, ok := filter.Lookup("zstd-decompress"); ok {
		if filt, err := f(map[string]any{}, "."); err == nil {
			return filt
		}
	}
	return filter.Func(func(ctx context.Context, r io.Reader, w io.Writer) error {
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return err
		}
		defer zr.Close()
		_, err = io.Copy(w, zr)
		return err
	})
}

// Empty reports whether d decodes nothing (nil or no steps).
func (d *Decoder) Empty() bool { return d == nil || len(d.Steps) == 0 }

// String describes the decoder for logs.
func (d *Decoder) String() string {
	if d.Empty() {
		return "none"
	}
	var parts []string
	for _, s := range d.Steps {
		if s.Builtin != "" {
			parts = append(parts, "builtin:"+s.Builtin)
		} else {
			parts = append(parts, s.Shell)
		}
	}
	return strings.Join(parts, " | ")
}

// Stream is a running decoder. Out is the decoded packet; the Stream owns it.
//
// A step checks what it decodes (an OpenPGP integrity check, a signature, a
// checksum) at the end of its input. When its reader failed, it is given
// the chance to finish that check: Wait reads what is left of Out to its
// end, and a built-in step that failed on its own reads what is left of its
// input, before the verdicts are taken. Then the step that made bad data is
// named, the same for a shell decoder (gpg -d, which fails on a broken
// pipe) as for a built-in, and first, before any step after it. When its
// reader succeeded without reading everything, nobody wants the rest: Stop
// stops the steps still running, whose broken pipe or SIGKILL is then no
// failure, and keeps the verdicts of those already done.
type Stream struct {
	Out *os.File

	procs   []*exec.Cmd
	procAt  []int       // the step of each of procs
	owned   []*os.File  // closed once every step is done: a spool the first step reads
	stopped atomic.Bool // Stop killed the shell steps and cancelled the built-ins: not their failure
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex // guards errs
	errs    []error    // by step
	once    sync.Once
	err     error
}

// Start runs the decoder on in (read from its start; Start does not close
// it).
func (d *Decoder) Start(ctx context.Context, in *os.File) (*Stream, error) {
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return d.StartStream(ctx, in)
}

// StartStream runs the decoder on in from its current offset, without
// seeking (stdin-*: a pipe, or a file the caller positioned).
func (d *Decoder) StartStream(ctx context.Context, in *os.File) (*Stream, error) {
	ctx, cancel := context.WithCancel(ctx)
	s := &Stream{errs: make([]error, len(d.Steps)), cancel: cancel}
	cur := in
	owned := false // whether cur is a pipe end this function created
	for i, step := range d.Steps {
		pr, pw, err := os.Pipe() // close-on-exec
		if err != nil {
			if owned {
				cur.Close()
			}
			s.Stop()
			return nil, err
		}
		if step.Builtin == "" {
			cmd := exec.Command(d.Shell, "-c", step.Shell)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = cur, pw, d.Stderr
			if d.Stderr == nil {
				cmd.Stderr = os.Stderr
			}
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			err = cmd.Start()
			// The child has its copies: ours must go now, or the next
			// reader never sees EOF.
			pw.Close()
			if owned {
				cur.Close()
			}
			if err != nil {
				pr.Close()
				s.Stop()
				return nil, fmt.Errorf("decoder %d (%s): %w", i+1, step.Shell, err)
			}
			s.procs = append(s.procs, cmd)
			s.procAt = append(s.procAt, i)
		} else {
			s.wg.Add(1)
			go func(i int, r *os.File, closeR bool, w *os.File, name string, f filter.Filter) {
				defer s.wg.Done()
				err := f.Run(ctx, r, w)
				if cerr := w.Close(); err == nil {
					err = cerr
				}
				if err != nil && closeR && !errors.Is(err, syscall.EPIPE) && !s.stopped.Load() && ctx.Err() == nil {
					// Failed on its own: the step before may
					// not be done checking what it sent (it
					// made the bad data, maybe): let it finish.
					drain(r)
				}
				if closeR {
					r.Close()
				}
				if err != nil && !errors.Is(err, syscall.EPIPE) && !(s.stopped.Load() && errors.Is(err, context.Canceled)) {
					s.setErr(i, fmt.Errorf("decoder %q: %w", name, err))
				}
			}(i, cur, owned, pw, step.Builtin, step.filter)
		}
		cur, owned = pr, true
	}
	s.Out = cur
	return s, nil
}

func (s *Stream) setErr(i int, err error) {
	s.mu.Lock()
	s.errs[i] = err
	s.mu.Unlock()
}

// drain reads r to its end, discarding what it reads.
func drain(r *os.File) {
	io.CopyBuffer(io.Discard, plainReader{r}, make([]byte, 64<<10))
}

// Wait reads what is left of Out to its end (discarding it), closes Out and
// waits for every step. A step that died of SIGPIPE or EPIPE (a step after
// it stopped early) is not an error; any other failure is. Failures are
// given in the order of the steps, the first step first.
func (s *Stream) Wait() error {
	s.once.Do(func() {
		if s.Out != nil {
			if !s.stopped.Load() {
				drain(s.Out)
			}
			s.Out.Close()
		}
		for k, p := range s.procs {
			err := p.Wait()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() &&
					(ws.Signal() == syscall.SIGPIPE || s.stopped.Load() && ws.Signal() == syscall.SIGKILL) {
					continue
				}
			}
			if err != nil {
				s.setErr(s.procAt[k], fmt.Errorf("decoder %q: %w", strings.Join(p.Args[2:], " "), err))
			}
		}
		s.wg.Wait()
		s.cancel()
		for _, f := range s.owned {
			f.Close()
		}
		s.err = errors.Join(s.errs...)
	})
	return s.err
}

// Stop stops the decoder: cancels the built-in steps, kills the shell
// steps' process groups, closes Out, and waits for everything. It returns
// what Wait returns, less what the stop caused (cancellation, SIGKILL, a
// broken pipe): the failure of a step that
// ended on its own (a wrong key, a broken message read to its end). The
// kill comes first, so that a shell step (gpg, which fails on EPIPE) dies
// of it rather than of the closed pipe.
func (s *Stream) Stop() error {
	s.stopped.Store(true)
	// A built-in whose output fails reads the rest of its input to check
	// it: cancelled, it ends at its next read instead.
	s.cancel()
	for _, p := range s.procs {
		if p.Process != nil {
			syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
		}
	}
	if s.Out != nil {
		s.Out.Close()
	}
	return s.Wait()
}
