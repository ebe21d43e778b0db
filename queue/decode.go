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
// whose filter (with its key) openpgp returns, called once and only when
// "openpgp" is among specs; anything else is a shell command.
func ParseDecoders(specs []string, openpgp func() (filter.Filter, error)) (*Decoder, error) {
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
			f, err := openpgp()
			if err != nil {
				return nil, err
			}
			d.Steps = append(d.Steps, DecodeStep{Builtin: s, filter: f})
			openpgp = func() (filter.Filter, error) { return f, nil }
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
type Stream struct {
	Out *os.File

	procs   []*exec.Cmd
	aborted bool // Abort killed the shell steps: SIGKILL is not their failure
	wg      sync.WaitGroup
	mu      sync.Mutex // guards errs
	errs    []error
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
	s := &Stream{}
	cur := in
	owned := false // whether cur is a pipe end this function created
	for i, step := range d.Steps {
		pr, pw, err := os.Pipe() // close-on-exec
		if err != nil {
			if owned {
				cur.Close()
			}
			s.Abort()
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
				s.Abort()
				return nil, fmt.Errorf("decoder %d (%s): %w", i+1, step.Shell, err)
			}
			s.procs = append(s.procs, cmd)
		} else {
			s.wg.Add(1)
			go func(r *os.File, closeR bool, w *os.File, name string, f filter.Filter) {
				defer s.wg.Done()
				err := f.Run(ctx, r, w)
				if cerr := w.Close(); err == nil {
					err = cerr
				}
				if closeR {
					r.Close()
				}
				if err != nil && !errors.Is(err, syscall.EPIPE) {
					s.addErr(fmt.Errorf("decoder %q: %w", name, err))
				}
			}(cur, owned, pw, step.Builtin, step.filter)
		}
		cur, owned = pr, true
	}
	s.Out = cur
	return s, nil
}

func (s *Stream) addErr(err error) {
	s.mu.Lock()
	s.errs = append(s.errs, err)
	s.mu.Unlock()
}

// Wait closes Out and waits for every step. A step that died of SIGPIPE or
// EPIPE (its reader stopped early) is not an error; any other failure is.
func (s *Stream) Wait() error {
	s.once.Do(func() {
		if s.Out != nil {
			s.Out.Close()
		}
		for _, p := range s.procs {
			err := p.Wait()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() &&
					(ws.Signal() == syscall.SIGPIPE || s.aborted && ws.Signal() == syscall.SIGKILL) {
					continue
				}
			}
			if err != nil {
				s.addErr(fmt.Errorf("decoder %q: %w", strings.Join(p.Args[2:], " "), err))
			}
		}
		s.wg.Wait()
		s.err = errors.Join(s.errs...)
	})
	return s.err
}

// Abort stops the decoder: closes Out, kills the shell steps' process
// groups, and waits for everything. It returns what Wait returns, less the
// SIGKILL it sent: a step's own failure (a wrong key, a broken message).
func (s *Stream) Abort() error {
	if s.Out != nil {
		s.Out.Close()
	}
	s.aborted = true
	for _, p := range s.procs {
		if p.Process != nil {
			syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
		}
	}
	return s.Wait()
}
