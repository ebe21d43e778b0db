package stage

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pipespool/pipespool/proc"
)

// StderrMode is what happens to an external stage's stderr.
type StderrMode string

// The stderr modes of the job file.
const (
	StderrCapture StderrMode = "capture" // kept (tail) and streamed to the log
	StderrInherit StderrMode = "inherit" // pipespool's own stderr
	StderrDiscard StderrMode = "discard" // /dev/null
)

// ProcessSpec describes an external stage.
type ProcessSpec struct {
	Name string
	// Path is the program to run (resolved: absolute, or relative to Dir
	// only if it contains a slash) and Argv its arguments, Argv[0] included.
	Path string
	Argv []string
	Env  []string // the whole environment
	Dir  string   // working directory, "" for pipespool's
	// Stderr says where stderr goes; StderrTo, when set, overrides it with
	// a file that receives the stage's stderr directly.
	Stderr   StderrMode
	StderrTo *os.File
	Logger   *slog.Logger // for captured stderr lines; nil discards
	// Scope is the run the process belongs to (what it leaves behind is
	// stopped when the scope closes); nil gives it a scope of its own.
	Scope *proc.Scope
}

// Process is an external stage: a child process in its own process group
// (a proc.Group).
type Process struct {
	spec ProcessSpec

	mu      sync.Mutex // guards group
	group   *proc.Group
	started time.Time

	done    chan struct{} // closed when the leader has exited (not yet reaped)
	result  Result
	tail    tailBuffer
	errDone chan struct{} // closed when the stderr reader has finished
	errFile *os.File      // parent's end of the stderr pipe (capture)
}

// NewProcess returns an external stage, not yet started.
func NewProcess(spec ProcessSpec) *Process {
	if spec.Stderr == "" {
		spec.Stderr = StderrCapture
	}
	if spec.Scope == nil {
		spec.Scope = proc.NewScope(nil)
	}
	return &Process{spec: spec, done: make(chan struct{}), errDone: make(chan struct{})}
}

// Name implements Stage.
func (p *Process) Name() string { return p.spec.Name }

// Kind implements Stage.
func (p *Process) Kind() Kind { return KindCommand }

// Argv implements Stage.
func (p *Process) Argv() []string { return p.spec.Argv }

// Counters implements Stage: the pumps count for processes.
func (p *Process) Counters() (in, out int64) { return -1, -1 }

// Done implements Stage.
func (p *Process) Done() <-chan struct{} { return p.done }

// Pid implements Stage.
func (p *Process) Pid() int {
	if g := p.getGroup(); g != nil {
		return g.Pid()
	}
	return 0
}

func (p *Process) getGroup() *proc.Group {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.group
}

// Start implements Stage. The child gets stdin, stdout and its stderr as fds
// 0, 1, 2 and nothing else (every other fd of pipespool is close-on-exec);
// the parent's copies of stdin, stdout and the stderr pipe's write end are
// closed before Start returns, on every path.
func (p *Process) Start(stdin, stdout *os.File) (err error) {
	started := time.Now()
	var childErr *os.File
	defer func() {
		// The child has its own copies now (or never will): ours must go,
		// or the neighbours would never see EOF or EPIPE.
		stdin.Close()
		stdout.Close()
		if childErr != nil && childErr != p.spec.StderrTo && childErr != os.Stderr {
			childErr.Close()
		}
		if err != nil {
			p.result = Result{ExitCode: -1, Err: err, Started: started, Ended: time.Now(),
				StderrTail: []byte(err.Error())}
			if p.errFile != nil {
				p.errFile.Close()
			}
			// No stderr reader was started: Wait must not wait for one.
			close(p.errDone)
			close(p.done)
		}
	}()

	switch {
	case p.spec.StderrTo != nil:
		childErr = p.spec.StderrTo
	case p.spec.Stderr == StderrInherit:
		childErr = os.Stderr
	case p.spec.Stderr == StderrDiscard:
		if childErr, err = os.OpenFile(os.DevNull, os.O_WRONLY, 0); err != nil {
			return fmt.Errorf("open %s for stderr: %w", os.DevNull, err)
		}
	default:
		var fds [2]int
		if err = unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
			return fmt.Errorf("pipe for stderr: %w", err)
		}
		// Our end is non-blocking so that Go's poller parks the reader
		// goroutine and a Close can interrupt it.
		unix.SetNonblock(fds[0], true)
		p.errFile = os.NewFile(uintptr(fds[0]), p.spec.Name+" stderr")
		childErr = os.NewFile(uintptr(fds[1]), p.spec.Name+" stderr (child)")
	}

	g, err := p.spec.Scope.Start(proc.Spec{Path: p.spec.Path, Argv: p.spec.Argv, Env: p.spec.Env, Dir: p.spec.Dir,
		Stdin: stdin, Stdout: stdout, Stderr: childErr})
	if err != nil {
		return fmt.Errorf("start %s: %w", p.spec.Path, err)
	}
	p.mu.Lock()
	p.group = g
	p.mu.Unlock()
	p.started = started
	if p.errFile != nil {
		go p.readStderr()
	} else {
		close(p.errDone)
	}
	go p.waitLeader(g)
	return nil
}

// waitLeader turns the leader's exit into the stage's Result.
func (p *Process) waitLeader(g *proc.Group) {
	st := g.Wait()
	res := Result{Started: p.started, Ended: st.Ended, ExitCode: st.Code, Signal: st.Signal, Err: st.Err, Stopped: st.Stopped}
	res.BrokenPipe = res.Signal == syscall.SIGPIPE
	p.result = res
	close(p.done)
}

// Wait implements Stage: it returns when the leader has exited and the
// stderr reader has seen the end of its output (or a second has passed
// since, if a process outside the group keeps stderr open).
func (p *Process) Wait() Result {
	<-p.done
	select {
	case <-p.errDone:
	case <-time.After(time.Second):
	}
	r := p.result
	r.StderrTail = p.tail.Bytes()
	if r.Err != nil && len(r.StderrTail) == 0 {
		r.StderrTail = []byte(r.Err.Error())
	}
	return r
}

// LeftFailures returns the processes the stage's main process left running
// in its group that failed on their own (see proc.Group.LeftFailures).
func (p *Process) LeftFailures() []proc.Exit {
	if g := p.getGroup(); g != nil {
		return g.LeftFailures()
	}
	return nil
}

// Signal implements Stage: sig goes to the whole process group, unless the
// leader was already reaped.
func (p *Process) Signal(sig syscall.Signal) error {
	if g := p.getGroup(); g != nil {
		return g.Signal(sig)
	}
	return nil
}

// Stop implements Stage: SIGTERM to the group (and to what left it), then
// SIGKILL after grace to what is still alive.
func (p *Process) Stop(grace time.Duration) {
	if g := p.getGroup(); g != nil {
		g.Stop(grace)
	}
}

// Group returns the stage's process group once started, else nil.
func (p *Process) Group() *proc.Group { return p.getGroup() }

// Cleanup ends what is left of the stage once its leader has exited:
// processes still in its group get SIGTERM, then SIGKILL after grace; then
// the leader is reaped and the stderr reader finished. It must be called
// once for every started stage before pipespool exits. It returns the
// number of leftover processes it had to signal.
func (p *Process) Cleanup(grace time.Duration) int {
	<-p.done
	g := p.getGroup()
	if g == nil {
		return 0
	}
	n := g.Cleanup(grace)
	select {
	case <-p.errDone:
	case <-time.After(time.Second):
		// A process that left the group (setsid) still holds stderr: stop
		// reading; Close makes the reader's pending Read return.
		p.errFile.Close()
		<-p.errDone
	}
	return n
}

// readStderr streams captured stderr into the log, line by line, prefixed
// by the stage name, and keeps the tail for the report.
func (p *Process) readStderr() {
	defer close(p.errDone)
	defer p.errFile.Close()
	buf := make([]byte, 32<<10)
	var line []byte
	flush := func() {
		if len(line) > 0 && p.spec.Logger != nil {
			p.spec.Logger.Info(p.spec.Name+": "+strings.TrimRight(string(line), "\r"), "stage", p.spec.Name)
		}
		line = line[:0]
	}
	for {
		n, err := p.errFile.Read(buf)
		if n > 0 {
			p.tail.Write(buf[:n])
			for _, c := range buf[:n] {
				if c == '\n' {
					flush()
					continue
				}
				if len(line) < StderrTailSize {
					line = append(line, c)
				}
			}
		}
		if err != nil {
			flush()
			if err != io.EOF && !errors.Is(err, os.ErrClosed) {
				p.tail.Write([]byte("\n[pipespool: reading stderr: " + err.Error() + "]"))
			}
			return
		}
	}
}

// tailBuffer keeps the last StderrTailSize bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex // guards buf
	buf []byte
}

func (t *tailBuffer) Write(b []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - StderrTailSize; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
}

func (t *tailBuffer) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]byte(nil), t.buf...)
}
