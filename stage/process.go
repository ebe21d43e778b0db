package stage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
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
}

// Process is an external stage: a child process in its own process group.
type Process struct {
	spec ProcessSpec

	mu      sync.Mutex // guards proc, reaped, stopped
	proc    *os.Process
	reaped  bool // the leader was reaped: its pid (and pgid) may be reused
	stopped bool

	done    chan struct{} // closed when the leader has exited (not yet reaped)
	gone    chan struct{} // closed by Cleanup once the group is gone and the leader reaped
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
	return &Process{spec: spec, done: make(chan struct{}), gone: make(chan struct{}), errDone: make(chan struct{})}
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
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return 0
	}
	return p.proc.Pid
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

	attr := &os.ProcAttr{
		Dir:   p.spec.Dir,
		Env:   p.spec.Env,
		Files: []*os.File{stdin, stdout, childErr},
		// A process group of its own: stopping the stage signals everything
		// it started, and a terminal's SIGINT reaches only pipespool, which
		// then stops the stages in order.
		Sys: &syscall.SysProcAttr{Setpgid: true},
	}
	proc, err := os.StartProcess(p.spec.Path, p.spec.Argv, attr)
	if err != nil {
		return fmt.Errorf("start %s: %w", p.spec.Path, startErrCause(err))
	}
	p.mu.Lock()
	p.proc = proc
	p.mu.Unlock()
	p.result.Started = started
	if p.errFile != nil {
		go p.readStderr()
	} else {
		close(p.errDone)
	}
	go p.waitLeader()
	return nil
}

func startErrCause(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// sigchldInfo is the SIGCHLD layout of siginfo_t on Linux (x/sys/unix's
// Siginfo leaves the union opaque).
type sigchldInfo struct {
	Signo, Errno, Code int32
	_                  int32
	Pid                int32
	UID                uint32
	Status             int32
	_                  [100]byte
}

// waitLeader waits for the leader to exit without reaping it: a zombie
// leader keeps its pid, and so the process group id, from being reused
// while pipespool may still signal the group.
func (p *Process) waitLeader() {
	var info unix.Siginfo
	var err error
	for {
		err = unix.Waitid(unix.P_PID, p.proc.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			break
		}
	}
	res := Result{Started: p.result.Started, Ended: time.Now()}
	if err != nil {
		res.ExitCode, res.Err = -1, fmt.Errorf("waitid: %w", err)
	} else {
		ci := (*sigchldInfo)(unsafe.Pointer(&info))
		switch ci.Code {
		case 1: // CLD_EXITED
			res.ExitCode = int(ci.Status)
		default: // CLD_KILLED, CLD_DUMPED
			res.ExitCode = -1
			res.Signal = syscall.Signal(ci.Status)
			res.BrokenPipe = res.Signal == syscall.SIGPIPE
		}
	}
	p.mu.Lock()
	res.Stopped = p.stopped
	p.mu.Unlock()
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

// Signal implements Stage: sig goes to the whole process group, unless the
// leader was already reaped.
func (p *Process) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil || p.reaped {
		return nil
	}
	err := unix.Kill(-p.proc.Pid, sig)
	if err == unix.ESRCH {
		return nil
	}
	return err
}

// Stop implements Stage: SIGTERM to the group now, SIGKILL after grace if
// the leader or anything else in the group is still alive.
func (p *Process) Stop(grace time.Duration) {
	p.mu.Lock()
	if p.proc == nil || p.reaped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	p.mu.Unlock()
	p.Signal(syscall.SIGTERM)
	// SIGCONT too: a stopped group (SIGSTOP from a nudge or a user) would
	// not act on SIGTERM until continued.
	p.Signal(syscall.SIGCONT)
	// The escalation ends at SIGKILL, or as soon as Cleanup has reaped the
	// stage (Cleanup escalates on its own for what is left of the group).
	go func() {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-t.C:
			p.Signal(syscall.SIGKILL)
		case <-p.gone:
		}
	}()
}

// Cleanup ends what is left of the stage once its leader has exited:
// processes still in its group get SIGTERM, then SIGKILL after grace; then
// the leader is reaped and the stderr reader finished. It must be called
// once for every started stage before pipespool exits. It returns the
// number of leftover processes it had to signal.
func (p *Process) Cleanup(grace time.Duration) int {
	<-p.done
	p.mu.Lock()
	if p.proc == nil || p.reaped {
		p.mu.Unlock()
		return 0
	}
	pgid := p.proc.Pid
	p.mu.Unlock()
	left := groupMembers(pgid)
	if len(left) > 0 {
		p.Signal(syscall.SIGTERM)
		p.Signal(syscall.SIGCONT)
		deadline := time.Now().Add(grace)
		for groupAlive(pgid) && time.Now().Before(deadline) {
			// Processes outside our children cannot be waited for; poll
			// /proc at a coarse interval, only on this rare path.
			time.Sleep(20 * time.Millisecond)
		}
		if groupAlive(pgid) {
			p.Signal(syscall.SIGKILL)
		}
	}
	p.mu.Lock()
	p.reaped = true
	proc := p.proc
	p.mu.Unlock()
	proc.Wait() // reap the leader; its status is already known
	close(p.gone)
	select {
	case <-p.errDone:
	case <-time.After(time.Second):
		// A process that left the group (setsid) still holds stderr: stop
		// reading; Close makes the reader's pending Read return.
		p.errFile.Close()
		<-p.errDone
	}
	return len(left)
}

// groupMembers lists live processes (not zombies) of process group pgid
// other than its leader.
func groupMembers(pgid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == pgid {
			continue
		}
		// One getpgid(2) rules out all but the group's members; only they
		// have their stat read (for the state). Reading every process's
		// stat made this scan most of the CPU time of a short run.
		if g, err := unix.Getpgid(pid); err != nil || g != pgid {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces and parens.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

func groupAlive(pgid int) bool {
	if pgid <= 0 {
		return false
	}
	if len(groupMembers(pgid)) > 0 {
		return true
	}
	// The leader itself, unless it is a zombie.
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pgid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && len(b) > i+2 && b[i+2] != 'Z' && b[i+2] != 'X'
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
