package proc

import (
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Spec describes a process to start.
type Spec struct {
	// Path is the program (absolute, or relative to Dir) and Argv its
	// arguments, Argv[0] included.
	Path string
	Argv []string
	// Env is the whole environment; nil means pipespool's own.
	Env []string
	Dir string // working directory, "" for pipespool's
	// Stdin, Stdout and Stderr become fds 0, 1 and 2 of the process; nil
	// means /dev/null. The process gets no other fd: pipespool opens every
	// fd close-on-exec. Start does not close them.
	Stdin, Stdout, Stderr *os.File
}

// Status is how the leader of a group ended.
type Status struct {
	// Code is the exit status, or -1 when a signal killed the process or
	// the wait failed.
	Code int
	// Signal is the signal that killed it, or 0.
	Signal syscall.Signal
	// Err is why the wait failed (never seen in practice).
	Err error
	// Stopped reports that Stop was called before the leader exited.
	Stopped bool
	// Ended is when the leader was seen to exit.
	Ended time.Time
}

// Group is a process started in a process group of its own, of which it is
// the leader, with everything it starts in that group.
//
// The leader is waited for without being reaped (waitid with WNOWAIT): a
// zombie leader keeps its pid, and so the process group id, from being
// given to another process for as long as pipespool may signal the group.
// Cleanup reaps it.
type Group struct {
	scope *Scope
	pid   int // set by the forker before anyone else sees the group

	done chan struct{} // closed when the leader has exited (not yet reaped)
	gone chan struct{} // closed by Cleanup once the leader is reaped

	status Status // valid once done is closed

	mu      sync.Mutex // guards reaped, stopped
	reaped  bool       // the leader was reaped: its pid (and pgid) may be reused
	stopped bool

	// sent: the signals pipespool sent the group (Signal, Stop, Kill,
	// Cleanup, and the end-of-run sweep after Cleanup), a bit each. A
	// member killed by one of them after it was sent is taken for killed
	// by pipespool; killed by any other (its own kill, a SIGUSR1, a
	// SIGSEGV) it failed on its own, whenever it was reaped.
	sent   atomic.Uint64
	leftMu sync.Mutex // guards left; never held with mu
	left   []Exit     // failures of members reaped as orphans, at most maxLeft
}

// Exit is how a process ended.
type Exit struct {
	Stat   Stat // as it was just before it was reaped
	Status Status
}

func (e Exit) String() string {
	how := fmt.Sprintf("exited %d", e.Status.Code)
	if e.Status.Signal != 0 {
		how = "was killed by " + SignalName(e.Status.Signal)
	}
	return fmt.Sprintf("PID %d (%s) %s", e.Stat.Pid, e.Stat.Comm, how)
}

// maxLeft bounds the failures a group keeps of what its leader left.
const maxLeft = 8

// noteLeft records the end of a member of the group that pipespool reaped
// as an orphan (its parent had exited before it), if it failed on its
// own: it exited non-zero, or a signal killed it that pipespool did not
// send and that is not SIGPIPE (its reader went: a consequence, judged
// from the stage's own status).
func (g *Group) noteLeft(st Stat, ws unix.WaitStatus) {
	e := Exit{Stat: st, Status: Status{Code: -1}}
	switch {
	case ws.Exited():
		if ws.ExitStatus() == 0 {
			return
		}
		e.Status.Code = ws.ExitStatus()
	case ws.Signaled():
		if ws.Signal() == syscall.SIGPIPE || g.wasSent(ws.Signal()) {
			return
		}
		e.Status.Signal = ws.Signal()
	default:
		return
	}
	g.leftMu.Lock()
	defer g.leftMu.Unlock()
	if len(g.left) < maxLeft {
		g.left = append(g.left, e)
	}
}

// LeftFailures returns the processes the group's leader left running in
// its group that failed on their own, as far as pipespool reaped them: a
// shell stage's `cmd &` that did the stage's work after the shell
// exited. Complete once Cleanup has returned.
func (g *Group) LeftFailures() []Exit {
	g.leftMu.Lock()
	defer g.leftMu.Unlock()
	return slices.Clone(g.left)
}

// Start starts spec's program in a new process group, as part of the
// scope. The process gets DeathSignal if pipespool dies first.
func (s *Scope) Start(spec Spec) (*Group, error) {
	files := [3]*os.File{spec.Stdin, spec.Stdout, spec.Stderr}
	var devnull *os.File
	for i, f := range files {
		if f != nil {
			continue
		}
		if devnull == nil {
			var err error
			if devnull, err = os.OpenFile(os.DevNull, os.O_RDWR, 0); err != nil {
				return nil, err
			}
			defer devnull.Close()
		}
		files[i] = devnull
	}
	env := spec.Env
	if env == nil {
		env = os.Environ()
	}
	attr := &syscall.ProcAttr{
		Dir:   spec.Dir,
		Env:   env,
		Files: []uintptr{files[0].Fd(), files[1].Fd(), files[2].Fd()},
		// A process group of its own: stopping the group signals
		// everything the process started, and a terminal's SIGINT
		// reaches only pipespool, which then stops the groups in order.
		Sys: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: DeathSignal},
	}
	g := &Group{scope: s, done: make(chan struct{}), gone: make(chan struct{})}
	if err := forkExec(spec.Path, spec.Argv, attr, g); err != nil {
		return nil, err
	}
	s.add(g)
	go g.waitLeader()
	return g, nil
}

// Pid is the leader's process id, which is also the process group id.
func (g *Group) Pid() int { return g.pid }

// Done is closed when the leader has exited.
func (g *Group) Done() <-chan struct{} { return g.done }

// Wait waits for the leader to exit and returns how it ended. It does not
// reap it: Cleanup does.
func (g *Group) Wait() Status {
	<-g.done
	return g.status
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

// The si_code values of a SIGCHLD.
const (
	cldExited = 1 // CLD_EXITED; the others are CLD_KILLED and CLD_DUMPED
)

// waitLeader waits for the leader to exit, without reaping it.
func (g *Group) waitLeader() {
	var info unix.Siginfo
	var err error
	for {
		err = unix.Waitid(unix.P_PID, g.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			break
		}
	}
	st := Status{Ended: time.Now()}
	if err != nil {
		st.Code, st.Err = -1, fmt.Errorf("waitid: %w", err)
	} else {
		ci := (*sigchldInfo)(unsafe.Pointer(&info))
		if ci.Code == cldExited {
			st.Code = int(ci.Status)
		} else {
			st.Code, st.Signal = -1, syscall.Signal(ci.Status)
		}
	}
	g.mu.Lock()
	st.Stopped = g.stopped
	g.mu.Unlock()
	g.status = st
	close(g.done)
}

// leaderExited reports whether the leader has exited (a zombie waiting to
// be reaped), without reaping it.
func (g *Group) leaderExited() bool {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, g.pid, &info, unix.WEXITED|unix.WNOWAIT|unix.WNOHANG, nil)
	return err == nil && (*sigchldInfo)(unsafe.Pointer(&info)).Pid == int32(g.pid)
}

// Signal sends sig to the whole process group, unless the leader was
// already reaped (the group id may then belong to somebody else).
func (g *Group) Signal(sig syscall.Signal) error {
	g.markSent(sig)
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.signalLocked(sig)
}

func (g *Group) signalLocked(sig syscall.Signal) error {
	if g.reaped {
		return nil
	}
	if err := unix.Kill(-g.pid, sig); err != nil && err != unix.ESRCH {
		return err
	}
	return nil
}

// Stop ends the group: SIGTERM (and SIGCONT, so that a stopped process
// acts on it) to the group and to every process below it that left the
// group (setsid, a daemon), then SIGKILL to what is left of them after
// grace. It returns at once.
func (g *Group) Stop(grace time.Duration) {
	g.mu.Lock()
	if g.reaped {
		g.mu.Unlock()
		return
	}
	// Stopped says the leader ended because of this Stop: not when it
	// had exited already, before waitLeader saw it (it died of a signal
	// from somebody else, or exited on its own, a moment before).
	g.stopped = g.stopped || !g.leaderExited()
	g.mu.Unlock()
	g.markSent(syscall.SIGTERM, syscall.SIGKILL)
	g.signalAll(syscall.SIGTERM)
	go func() {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-t.C:
			g.signalAll(syscall.SIGKILL)
		case <-g.gone:
			// Cleanup escalates on its own for what is left.
		}
	}()
}

// Kill ends the group at once: SIGKILL to the group and to every process
// below it that left the group. It is what a timeout does, where the
// process had its time: fspl kills a job's command the same way.
func (g *Group) Kill() {
	g.markSent(syscall.SIGKILL)
	g.signalAll(syscall.SIGKILL)
}

// signalAll sends sig, and SIGCONT after a SIGTERM, to the group and to the
// processes below it outside the group.
func (g *Group) signalAll(sig syscall.Signal) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.reaped {
		return
	}
	out := g.escaped(Snapshot())
	g.signalLocked(sig)
	for _, st := range out {
		signalProcess(st, sig)
	}
	if sig == syscall.SIGTERM {
		g.signalLocked(syscall.SIGCONT)
		for _, st := range out {
			signalProcess(st, syscall.SIGCONT)
		}
	}
}

// escaped returns the live processes below the group (below its leader or
// one of its members) that are not in it.
func (g *Group) escaped(all map[int]Stat) []Stat {
	roots := []int{g.pid}
	for pid, st := range all {
		if st.Pgrp == g.pid && pid != g.pid {
			roots = append(roots, pid)
		}
	}
	var out []Stat
	for _, st := range Below(all, roots...) {
		if st.Pgrp != g.pid {
			out = append(out, st)
		}
	}
	return out
}

// Members returns the live processes of the group other than its leader.
func (g *Group) Members() []int {
	want := map[int][]int{g.pid: nil}
	GroupMembers(want)
	return want[g.pid]
}

// cleanupKillWait bounds how long Cleanup waits for processes it sent
// SIGKILL: they die at once unless stuck in the kernel (state D, on a dead
// NFS server), and then waiting longer does not help.
const cleanupKillWait = time.Second

// Cleanup ends what is left of the group once its leader has exited: the
// processes still in the group get SIGTERM, then SIGKILL after grace; then
// the leader is reaped. It must be called once for every group before
// pipespool exits; later calls return 0. It returns the number of
// processes it found left in the group.
func (g *Group) Cleanup(grace time.Duration) int {
	<-g.done
	g.mu.Lock()
	if g.reaped {
		g.mu.Unlock()
		return 0
	}
	g.mu.Unlock()
	n := 0
	left, adopted := g.memberStats()
	if len(left) > 0 {
		n = len(left)
		g.markSent(syscall.SIGKILL) // SIGTERM: Signal marks it
		g.Signal(syscall.SIGTERM)
		g.Signal(syscall.SIGCONT)
		left = waitExit(left, time.Now().Add(grace))
		// A member may have started others meanwhile: they are in the
		// group too, and the group is signalled as a whole.
		more, _ := g.memberStats()
		if left = append(left, more...); len(left) > 0 {
			g.Signal(syscall.SIGKILL)
			waitExit(left, time.Now().Add(cleanupKillWait))
		}
	}
	g.reap()
	// What the leader left in the group and that has exited is a zombie
	// pipespool adopted: reap it now, so that LeftFailures is complete.
	// Without an adopted child when the members were looked for, there is
	// none: the leader's children were adopted before it exited.
	if adopted {
		children()
	}
	// The sweep of Scope.Close may end what is left of the group, with
	// these: a death by either from here on is pipespool's doing.
	g.markSent(syscall.SIGTERM, syscall.SIGKILL)
	return n
}

// markSent records that pipespool sends sigs to the group (see sent).
func (g *Group) markSent(sigs ...syscall.Signal) {
	for _, sig := range sigs {
		if sig > 0 && sig < 64 {
			g.sent.Or(1 << uint(sig))
		}
	}
}

// wasSent reports whether pipespool sent sig to the group.
func (g *Group) wasSent(sig syscall.Signal) bool {
	return sig > 0 && sig < 64 && g.sent.Load()&(1<<uint(sig)) != 0
}

// memberStats lists the live members of the group with their start times,
// once its leader has exited, and reports whether pipespool had adopted
// children (or may have: it could not tell) when it looked. As a subreaper
// it looks below its adopted children only (see adoptedMembers), a few
// reads where there are none; else at every process on the machine.
func (g *Group) memberStats() (members []Stat, adopted bool) {
	if members, adopted, ok := adoptedMembers(g.pid); ok {
		return members, adopted
	}
	var r Reader
	var out []Stat
	for _, pid := range g.Members() {
		if st, ok := r.Stat(pid); ok && st.Live() && st.Pgrp == g.pid {
			out = append(out, st)
		}
	}
	return out, true
}

// reap reaps the exited leader and forgets it.
func (g *Group) reap() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.reaped {
		return
	}
	for {
		var ws unix.WaitStatus
		if _, err := unix.Wait4(g.pid, &ws, 0, nil); err != unix.EINTR {
			break
		}
	}
	g.reaped = true
	close(g.gone)
	forget(g)
}
