package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/pipespool/pipespool/filter"
	"github.com/pipespool/pipespool/proc"
)

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

	d      *Decoder
	shells []shellStep
	// scope holds the shell steps' processes; ownScope: the stream made
	// it and closes it once every step is done, else it is the job's.
	scope    *proc.Scope
	ownScope bool
	owned    []*os.File  // closed once every step is done: a spool the first step reads
	stopped  atomic.Bool // Stop killed the shell steps and cancelled the built-ins: not their failure
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	mu       sync.Mutex // guards errs
	errs     []error    // by step
	once     sync.Once
	err      error
}

// shellStep is a running shell step: its process group and where its
// stderr goes.
type shellStep struct {
	at     int // the step's index
	cmd    string
	group  *proc.Group
	stderr *stderrSink
}

// Start runs the decoder on in (read from its start; Start does not close
// it).
func (d *Decoder) Start(ctx context.Context, in *os.File) (*Stream, error) {
	return d.startIn(ctx, in, true, nil)
}

// StartStream runs the decoder on in from its current offset, without
// seeking (stdin-*: a pipe, or a file the caller positioned).
func (d *Decoder) StartStream(ctx context.Context, in *os.File) (*Stream, error) {
	return d.startIn(ctx, in, false, nil)
}

// startIn runs the decoder on in, from its start when rewind is set. Its
// shell steps run in scope, or when nil in a scope of the stream's own,
// closed by Wait (what they left running is then stopped, but what
// d.MayOutlive names).
func (d *Decoder) startIn(ctx context.Context, in *os.File, rewind bool, scope *proc.Scope) (*Stream, error) {
	if rewind {
		if _, err := in.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &Stream{d: d, errs: make([]error, len(d.Steps)), cancel: cancel, scope: scope}
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
			err = s.startShell(i, step.Shell, cur, pw)
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
		} else {
			s.wg.Add(1)
			go s.runBuiltin(ctx, i, cur, owned, pw, step.Builtin, step.filter)
		}
		cur, owned = pr, true
	}
	s.Out = cur
	return s, nil
}

// startShell starts step i, the shell command cmd, reading in and writing
// out.
func (s *Stream) startShell(i int, cmd string, in, out *os.File) error {
	d := s.d
	path, err := exec.LookPath(d.Shell)
	if err != nil {
		return err
	}
	stderr := d.Stderr
	if stderr == nil {
		stderr = os.Stderr
	}
	sink, err := newStderrSink(stderr, "decoder "+cmd)
	if err != nil {
		return err
	}
	if s.scope == nil {
		s.scope, s.ownScope = proc.NewScope(d.MayOutlive), true
	}
	g, err := s.scope.Start(proc.Spec{Path: path, Argv: []string{d.Shell, "-c", cmd},
		Stdin: in, Stdout: out, Stderr: sink.Child})
	sink.Started()
	if err != nil {
		sink.Finish()
		return err
	}
	s.shells = append(s.shells, shellStep{at: i, cmd: cmd, group: g, stderr: sink})
	return nil
}

// runBuiltin runs built-in step i, the filter f named name, from r to w;
// closeR: r is a pipe end of the stream's, closed when the step is done.
func (s *Stream) runBuiltin(ctx context.Context, i int, r *os.File, closeR bool, w *os.File, name string, f filter.Filter) {
	defer s.wg.Done()
	err := f.Run(ctx, r, w)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil && closeR && !errors.Is(err, syscall.EPIPE) && !s.stopped.Load() && ctx.Err() == nil {
		// Failed on its own: the step before may not be done checking
		// what it sent (it made the bad data, maybe): let it finish.
		drain(r)
	}
	if closeR {
		r.Close()
	}
	if err != nil && !errors.Is(err, syscall.EPIPE) && !(s.stopped.Load() && errors.Is(err, context.Canceled)) {
		s.setErr(i, fmt.Errorf("decoder %q: %w", name, err))
	}
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
// given in the order of the steps, the first step first. What a shell step
// left in its process group is stopped, and with a scope of the stream's
// own what it left running anywhere.
func (s *Stream) Wait() error {
	s.once.Do(func() {
		if s.Out != nil {
			if !s.stopped.Load() {
				drain(s.Out)
			}
			s.Out.Close()
		}
		for _, sh := range s.shells {
			st := endGroup(sh.group, DefaultGrace)
			sh.stderr.Finish()
			if st.Signal == syscall.SIGPIPE || s.stopped.Load() && st.Signal == syscall.SIGKILL {
				continue
			}
			if err := statusErr(st); err != nil {
				s.setErr(sh.at, fmt.Errorf("decoder %q: %w", sh.cmd, err))
			}
		}
		s.wg.Wait()
		s.cancel()
		for _, f := range s.owned {
			f.Close()
		}
		if s.ownScope {
			closeScope(s.scope, DefaultGrace, s.d.Logger, "the decoder")
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
	for _, sh := range s.shells {
		sh.group.Signal(syscall.SIGKILL)
	}
	if s.Out != nil {
		s.Out.Close()
	}
	return s.Wait()
}
