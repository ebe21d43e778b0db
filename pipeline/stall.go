package pipeline

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pipespool/pipespool/proc"
	"github.com/pipespool/pipespool/pump"
	"github.com/pipespool/pipespool/stage"
	"github.com/pipespool/pipespool/units"
)

// nudgeStopWait bounds how long a nudge waits for the stage's processes to
// be stopped before it continues them. SIGCONT discards a SIGSTOP that is
// still pending, and a thread that has not yet acted on the SIGSTOP would
// then go back to sleep without the EINTR the nudge is for; a process in
// uninterruptible sleep (state D) may never stop, so the wait is bounded.
const nudgeStopWait = time.Second

// nudgeStopPoll is how often a nudge samples /proc while it waits for the
// processes to stop: the wait is a few milliseconds in practice.
const nudgeStopPoll = 2 * time.Millisecond

// stalled handles stage i, which has made no progress for idle (at least
// its stall_timeout) and waits for no neighbour: the head of a jam.
func (m *monitorState) stalled(i int, now time.Time, idle time.Duration) {
	r := m.r
	w := &m.w[i]
	spec := &r.job.Stages[i]
	name := r.stages[i].Name()
	if w.episode {
		// Already declared. A nudge that was not followed by progress
		// within another stall_timeout: the stage stalled again.
		if spec.OnStall == OnStallNudge && !w.nudgedAt.IsZero() && now.Sub(w.nudgedAt) >= spec.StallTimeout {
			diag := m.diagnose(i, idle)
			m.record(i, diag, false)
			r.log.Warn(diag, "stage", name)
			m.kill(i, fmt.Sprintf("stage %q stalled: no progress for %s, and none after a nudge (stall_timeout %s, on_stall = nudge)",
				name, seconds(idle), spec.StallTimeout))
		}
		return
	}
	w.episode = true
	diag := m.diagnose(i, idle)
	m.record(i, diag, false)
	r.log.Warn(diag, "stage", name, "on_stall", spec.OnStall)
	switch spec.OnStall {
	case OnStallKill:
		m.kill(i, fmt.Sprintf("stage %q stalled: no progress for %s (stall_timeout %s, on_stall = kill)",
			name, seconds(idle), spec.StallTimeout))
	case OnStallNudge:
		r.mu.Lock()
		nudged := r.outcomes[i].nudges > 0
		r.mu.Unlock()
		if nudged {
			m.kill(i, fmt.Sprintf("stage %q stalled again after a nudge: no progress for %s (stall_timeout %s, on_stall = nudge)",
				name, seconds(idle), spec.StallTimeout))
			return
		}
		m.nudge(i, now)
	}
}

// record adds a stall diagnosis to stage i's outcome, and a nudge when
// nudged is set.
func (m *monitorState) record(i int, diag string, nudged bool) {
	r := m.r
	r.mu.Lock()
	defer r.mu.Unlock()
	o := r.outcomes[i]
	if diag != "" {
		o.stalls++
		o.diagnoses = append(o.diagnoses, diag)
	}
	if nudged {
		o.nudges++
	}
}

// moved is called when stage i made progress: it ends a stall episode and
// notes a recovery.
func (m *monitorState) moved(i int) {
	r := m.r
	w := &m.w[i]
	w.idleLog = false
	if !w.episode {
		return
	}
	w.episode = false
	if r.isFailed() {
		// The run is being torn down: stages move because they are
		// being stopped, which is no recovery.
		return
	}
	name := r.stages[i].Name()
	if !w.nudgedAt.IsZero() {
		w.nudgedAt = time.Time{}
		r.mu.Lock()
		o := r.outcomes[i]
		if !strings.Contains(o.note, "recovered after nudge") {
			o.note = strings.TrimPrefix(o.note+"; recovered after nudge", "; ")
		}
		r.mu.Unlock()
		r.log.Warn(fmt.Sprintf("stage %q recovered after nudge", name), "stage", name)
		return
	}
	r.log.Info(fmt.Sprintf("stage %q is moving again", name), "stage", name)
}

// nudge stops and continues stage i's process group, which makes a process
// blocked in epoll_wait and a few other calls return EINTR, as attaching
// strace does: a program that lost a wake-up then looks at its fds again.
func (m *monitorState) nudge(i int, now time.Time) {
	r := m.r
	w := &m.w[i]
	st := r.stages[i]
	name := st.Name()
	w.nudgedAt = now
	if st.Kind() != stage.KindCommand {
		r.log.Warn(fmt.Sprintf("stage %q is a built-in and cannot be nudged; it is stopped if it stays stalled", name), "stage", name)
		return
	}
	if err := st.Signal(syscall.SIGSTOP); err != nil {
		r.log.Warn(fmt.Sprintf("stage %q: nudge: %v", name, err), "stage", name)
		return
	}
	m.waitStopped(st.Pid(), w.members)
	if err := st.Signal(syscall.SIGCONT); err != nil {
		r.log.Warn(fmt.Sprintf("stage %q: nudge: %v", name, err), "stage", name)
	}
	m.record(i, "", true)
	r.log.Warn(fmt.Sprintf("stage %q nudged (SIGSTOP, SIGCONT to its process group)", name), "stage", name, "pid", st.Pid())
	// Progress caused by the nudge must be seen as progress after it.
	w.lastMove = time.Now()
}

// waitStopped waits until the leader and the known members of a group are
// stopped (or gone), at most nudgeStopWait. It samples /proc: there is no
// event for "another process's threads have all stopped" that a parent
// could wait for without consuming the leader's wait status.
func (m *monitorState) waitStopped(leader int, members []int) {
	deadline := time.Now().Add(nudgeStopWait)
	t := time.NewTicker(nudgeStopPoll)
	defer t.Stop()
	for {
		all := true
		for _, p := range append([]int{leader}, members...) {
			if st, ok := m.pr.Stat(p); ok && st.Live() && !st.Stopped() {
				all = false
				break
			}
		}
		if all || time.Now().After(deadline) {
			return
		}
		<-t.C
	}
}

// kill fails the run with stage i as the root cause and stops it. decide
// stops every other stage but leaves the root cause alone (it is usually
// over already): a stalled stage is alive, so it is stopped here.
func (m *monitorState) kill(i int, msg string) {
	r := m.r
	w := &m.w[i]
	w.killed = true
	r.log.Error(msg, "stage", r.stages[i].Name())
	r.decide(i, ResultFailed, msg)
	r.stages[i].Stop(StallKillGrace)
}

// StallKillGrace is the time a stage killed for stalling (on_stall = "kill")
// has between SIGTERM and SIGKILL: longer than the
// default grace, since a stalled stage may need time to notice SIGTERM.
const StallKillGrace = 10 * time.Second

// idleEnds logs, once per idle spell, a stage that has waited
// stall_timeout for the pipeline's own input or output: the jam is outside
// pipespool, nothing to nudge or kill, but worth a line in the log.
func (m *monitorState) idleEnds(i int, idle time.Duration) {
	r := m.r
	w := &m.w[i]
	if w.idleLog || (w.waitingOn != "input" || i != 0) && (w.waitingOn != "output" || i != len(r.stages)-1) {
		return
	}
	w.idleLog = true
	what := "input " + r.src.desc + " has sent nothing"
	if w.waitingOn == "output" {
		what = "output " + r.dst.desc + " has taken nothing"
	}
	if r.tree != nil {
		// A fan-out at either end: the branch that holds it up.
		if jam := r.tree.jam(); jam != "" {
			what += ": " + jam
		}
	}
	r.log.Warn(fmt.Sprintf("stage %q: no progress for %s: the pipeline's %s", r.stages[i].Name(), seconds(idle), what),
		"stage", r.stages[i].Name())
}

// diagnose builds the diagnosis line of a stall of stage i: who, for how
// long, where it is blocked, what is queued around it, and whether that
// looks like a missed wake-up.
func (m *monitorState) diagnose(i int, idle time.Duration) string {
	r := m.r
	st := r.stages[i]
	var b strings.Builder
	pid := st.Pid()
	if st.Kind() == stage.KindBuiltin {
		fmt.Fprintf(&b, "stage %q (built-in %s) stalled: no progress for %s", st.Name(), strings.Join(st.Argv(), " "), seconds(idle))
	} else {
		fmt.Fprintf(&b, "stage %q (pid %d) stalled: no progress for %s", st.Name(), pid, seconds(idle))
	}
	var at point
	if pid > 0 {
		at = m.blockedPoint(pid, m.w[i].members)
		b.WriteString("; ")
		b.WriteString(at.describe(pid))
	}
	inQ, outQ := -1, -1
	if p := r.links[i].pump; p != nil {
		if inQ = p.DstQueued(); inQ < 0 && pid > 0 {
			inQ = m.stdinQueued(i, pid)
		}
	}
	if p := r.links[i+1].pump; p != nil {
		outQ = p.SrcQueued()
	}
	fmt.Fprintf(&b, "; input %s, output %s", queuedText(inQ, r.links[i]), queuedText(outQ, r.links[i+1]))
	if p := r.links[i].pump; p != nil && p.BufferSize() > 0 {
		// Bytes waiting for it beyond its pipe: it is the one not reading.
		fmt.Fprintf(&b, "; its input buffer holds %s of %s", units.FormatSize(p.Buffered()), units.FormatSize(p.BufferSize()))
	}
	b.WriteString(stallVerdict(at, inQ, outQ))
	if waiting := m.waitingFor(i); len(waiting) > 0 {
		fmt.Fprintf(&b, "; waiting on it: %s", strings.Join(waiting, ", "))
	}
	return b.String()
}

// waitingFor lists the stages held up by stage i: upstream stages blocked
// writing towards it, downstream stages starved of its output.
func (m *monitorState) waitingFor(i int) []string {
	var out []string
	for j := i - 1; j >= 0 && !m.w[j].done && m.w[j].waitingOn == m.r.stages[j+1].Name(); j-- {
		out = append(out, strconv.Quote(m.r.stages[j].Name()))
	}
	for j := i + 1; j < len(m.w) && !m.w[j].done && m.w[j].waitingOn == m.r.stages[j-1].Name(); j++ {
		out = append(out, strconv.Quote(m.r.stages[j].Name()))
	}
	return out
}

// stdinQueued returns the bytes queued in the stdin pipe of stage i
// (process pid) once its input pump has finished and closed its end, or
// -1. It opens the pipe through /proc for reading and keeps that handle
// until the stage is over (closeWitness): opening adds a second reader,
// which wakes nobody; but closing it while the stage still reads and no
// writer is left would wake the pipe's readers, an epoll edge that could
// rescue the very stage being diagnosed. The only writer, the pump, is
// gone, so the extra reader changes nobody's EOF or EPIPE.
func (m *monitorState) stdinQueued(i, pid int) int {
	w := &m.w[i]
	if w.witness < 0 {
		fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/fd/0", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
			unix.Close(fd)
			return -1
		}
		w.witness = fd
	}
	return pump.Queued(w.witness)
}

// closeWitness closes the handle stdinQueued kept on stage i's input.
func (m *monitorState) closeWitness(i int) {
	if w := &m.w[i]; w.witness >= 0 {
		unix.Close(w.witness)
		w.witness = -1
	}
}

// queuedText says what is queued in a stage's input or output pipe
// (FIONREAD on the end pipespool holds).
func queuedText(q int, l link) string {
	switch {
	case q >= 0:
		return fmt.Sprintf("pipe %d bytes queued", q)
	case l.direct != nil:
		return "not a pipe (file handed over directly)"
	case l.pump != nil:
		return "pipe closed by pipespool"
	}
	return "none"
}

// point is where one thread or child of a stalled stage is.
type point struct {
	proc.Blocked
	child bool // Tid is a child process of the stage, not a thread
}

// blockedPoint finds where a stage's process tree is stuck. Usually that is
// the leader's main thread. A multi-threaded program parks its main thread
// in futex while a worker does the I/O, and a shell waits in wait4 for its
// children: then the thread or child that sits in an I/O or readiness call
// is the interesting one.
func (m *monitorState) blockedPoint(pid int, members []int) point {
	lead := point{Blocked: m.pr.ReadBlocked(pid, pid)}
	if lead.Info().Class.IO() || lead.Stopped() {
		return lead
	}
	// Other threads of the leader.
	if ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task"); err == nil {
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || tid == pid {
				continue
			}
			if t := m.pr.ReadBlocked(pid, tid); t.Info().Class.IO() {
				return point{Blocked: t}
			}
		}
	}
	// Children in its process group: one in I/O or stopped first, else,
	// when the leader only waits for its children (a shell), the first
	// child.
	var first point
	for k, c := range members {
		t := point{Blocked: m.pr.ReadBlocked(c, c), child: true}
		if t.Info().Class.IO() || t.Stopped() {
			return t
		}
		if k == 0 {
			first = t
		}
	}
	if name := lead.Info().Name; len(members) > 0 && (name == "wait4" || name == "waitid") {
		return first
	}
	return lead
}

// Stopped reports whether the thread is stopped by a signal or a tracer.
func (b point) Stopped() bool { return b.State == 'T' || b.State == 't' }

// stallVerdict is the end of a diagnosis: why the stage does not move, when
// that can be told from where it is and what is queued around it.
func stallVerdict(at point, inQ, outQ int) string {
	switch {
	case at.State == 'T':
		// Where a stopped process sits says nothing about a wake-up:
		// it would move the moment it is continued.
		return fmt.Sprintf("; stopped by a signal (SIGSTOP or SIGTSTP): continue it with kill -CONT %d", at.Tid)
	case at.State == 't':
		return "; stopped by a debugger or tracer (ptrace): detach it to let it go on"
	}
	info, ok := proc.LookupSyscall(at.Nr)
	switch {
	case !ok:
	case info.Class == proc.ClassReady && inQ > 0:
		return fmt.Sprintf("; probable missed wake-up: it waits for readiness in %s while its input has %d bytes queued", info.Name, inQ)
	case info.Class == proc.ClassWrite && int32(at.Args[0]) == 1 && outQ == 0:
		return fmt.Sprintf("; probable missed wake-up: it is blocked in %s on its output while that pipe is empty", info.Name)
	}
	return ""
}

// describe renders where a thread is: "state S (sleeping), wchan ep_poll,
// in epoll_wait(3, ...)", naming the thread or child when it is not the
// stage's main thread.
func (b point) describe(pid int) string {
	var s strings.Builder
	switch {
	case b.child:
		fmt.Fprintf(&s, "child pid %d (%s): ", b.Tid, b.Comm)
	case b.Tid != pid:
		fmt.Fprintf(&s, "thread %d (%s): ", b.Tid, b.Comm)
	}
	if b.State == 0 {
		s.WriteString("state unknown")
	} else {
		fmt.Fprintf(&s, "state %c (%s)", b.State, stateName(b.State))
	}
	if b.WChan != "" {
		fmt.Fprintf(&s, ", wchan %s", b.WChan)
	}
	switch {
	case b.Nr >= 0:
		fmt.Fprintf(&s, ", in %s", b.Syscall)
	case b.Syscall != "":
		fmt.Fprintf(&s, ", %s", b.Syscall)
	}
	return s.String()
}

// stateName spells out a /proc/PID/stat state letter.
func stateName(c byte) string {
	switch c {
	case 'R':
		return "running"
	case 'S':
		return "sleeping"
	case 'D':
		return "disk sleep"
	case 'T':
		return "stopped"
	case 't':
		return "tracing stop"
	case 'Z':
		return "zombie"
	case 'I':
		return "idle"
	}
	return "?"
}

// seconds formats a duration as whole seconds, or tenths below a minute:
// "2.0s", "95s".
func seconds(d time.Duration) string {
	if d < time.Minute {
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	}
	return strconv.FormatInt(int64(d.Round(time.Second)/time.Second), 10) + "s"
}
