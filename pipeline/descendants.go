package pipeline

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pipespool/pipespool/proc"
)

// runProcs is what a run knows of its processes beyond the stages'
// leaders: the scope every stage is started in, and what each stage's
// stdout pipe is called in /proc, to find who holds it when a stage's main
// process has exited but its output has not ended.
type runProcs struct {
	scope *proc.Scope
	// stdout is what each stage's stdout is called in /proc: "pipe:[INO]"
	// for a pipe, the path of the run's output file handed to the last
	// stage directly, "" otherwise; set before the stage starts.
	stdout []string
	// fileHeld: the output file handed to the stage may still be held by
	// it or by something it left behind: set when it starts, cleared once
	// its end showed nothing holds it any more (see waitFileReleased).
	fileHeld []atomic.Bool
	ended    bool
}

// start prepares for job's stages, started in scope (nil: a new scope
// of the run's own).
func (p *runProcs) start(job *Job, scope *proc.Scope) {
	p.scope = scope
	if p.scope == nil {
		p.scope = proc.NewScope(job.MayOutlive)
	}
	p.stdout = make([]string, len(job.Stages))
	p.fileHeld = make([]atomic.Bool, len(job.Stages))
}

// noteStdout records what stage i's stdout is, before the stage starts
// (Start closes pipespool's copy). direct: f is the run's output file,
// handed over without a pump.
func (p *runProcs) noteStdout(i int, f *os.File, direct bool) {
	if f == nil {
		return
	}
	p.stdout[i] = proc.PipeLinkOf(f)
	if p.stdout[i] == "" && direct {
		p.stdout[i] = proc.FileLinkOf(f)
		// Held until the stage's end shows otherwise (waitFileReleased),
		// so that the monitor never takes it for over before that.
		p.fileHeld[i].Store(p.stdout[i] != "")
	}
}

// waitFileReleased waits, for a stage whose main process has exited, until
// nothing it left behind holds the output file it was handed directly: a
// background writer (`zfs send ... &` as a shell stage) may still be
// writing it, and committing it now would commit a cut stream. A regular
// file gives no end of file to wait for as a pipe does, so the holders are
// looked for, at growing intervals; meanwhile the monitor sees the stage as
// exited with its output held (a stall of its own after stall_timeout,
// acted on by on_stall). It returns at once when the run has failed: the
// output is then discarded.
func (r *running) waitFileReleased(i int) {
	if r.procs.stdout == nil || r.procs.stdout[i] == "" || strings.HasPrefix(r.procs.stdout[i], "pipe:") {
		return
	}
	delay := 5 * time.Millisecond
	for len(r.holders(i)) > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.failedC:
			t.Stop()
			return
		}
		delay = min(2*delay, 250*time.Millisecond)
	}
}

// stdoutOf returns stage i's stdout pipe link, or "".
func (r *running) stdoutOf(i int) string {
	if i < len(r.procs.stdout) {
		return r.procs.stdout[i]
	}
	return ""
}

// endProcesses stops what the stages left running outside their process
// groups (a setsid, a daemon), once every stage is over and before the
// output is committed: a process left behind could still write to it.
// Programs the job names in may_outlive are left running.
func (r *running) endProcesses() {
	if r.procs.scope == nil || r.procs.ended || r.scope != nil {
		// A line of a tree: the coordinator closes the shared scope
		// once every line is over.
		return
	}
	r.procs.ended = true
	endScope(r.procs.scope, r.grace, r.log)
}

// endScope closes scope, saying what it stopped.
func endScope(scope *proc.Scope, grace time.Duration, log *slog.Logger) {
	stopped, kept := scope.Close(grace)
	if len(stopped) > 0 {
		log.Warn(fmt.Sprintf("stopped %d process(es) the stages left running: %s; if one of them may outlive the run (a gpg-agent), name it in the job file: may_outlive = [%s]",
			len(stopped), proc.Describe(stopped), proc.QuotedNames(stopped)))
	}
	if len(kept) > 0 {
		log.Debug("left running, as may_outlive allows", "processes", proc.Describe(kept))
	}
}

// outputOpen reports whether stage i's output link is a pump that has not
// ended, or an output file something it left behind still holds: the stage
// is not over, even if its main process has exited.
func (m *monitorState) outputOpen(i int) bool {
	p := m.r.links[i+1].pump
	if p == nil {
		return m.r.procs.fileHeld != nil && m.r.procs.fileHeld[i].Load()
	}
	select {
	case <-p.Done():
		return false
	default:
		return true
	}
}

// findHolders looks for the processes that hold stage i's stdout open:
// among pipespool's descendants (every one of them, with the subreaper:
// what a stage left behind is adopted when its parent exits) and the
// stage's group, those with an fd on the stage's stdout pipe. It reads every process's stat and the
// fds of the descendants: it runs only for a stage whose main process has
// exited while its output has not ended.
func (m *monitorState) findHolders(i int) {
	m.w[i].holders = m.r.holders(i)
}

// holders lists the processes that hold stage i's stdout open (see
// findHolders).
func (r *running) holders(i int) []proc.Stat {
	link := r.stdoutOf(i)
	if link == "" {
		return nil
	}
	all := proc.Snapshot()
	below := proc.Below(all, os.Getpid())
	// The members of its group too, which are below init rather than
	// pipespool when pipespool is no subreaper.
	if pgid := r.stages[i].Pid(); pgid > 0 {
		for pid, st := range all {
			if st.Pgrp == pgid && pid != pgid && st.Live() && !slices.ContainsFunc(below, func(b proc.Stat) bool { return b.Pid == pid }) {
				below = append(below, st)
			}
		}
	}
	pids := make([]int, len(below))
	for k, st := range below {
		pids[k] = st.Pid
	}
	held := proc.HoldersOf(pids, link)
	var out []proc.Stat
	for _, st := range below {
		if _, ok := held[st.Pid]; ok {
			out = append(out, st)
		}
	}
	return out
}

// maxHolderCmd bounds how much of a holder's command line a diagnosis
// shows.
const maxHolderCmd = 60

// describeHolders renders the holders of a stage's stdout for a diagnosis:
// `PID 4242 (sleep 300) still holds its stdout`.
func describeHolders(holders []proc.Stat) string {
	if len(holders) == 0 {
		return "its stdout is still open, but no process pipespool started holds it (it was passed to another process)"
	}
	parts := make([]string, len(holders))
	for k, h := range holders {
		cmd := proc.Cmdline(h.Pid)
		if cmd == "" {
			cmd = h.Comm
		}
		if len(cmd) > maxHolderCmd {
			cmd = cmd[:maxHolderCmd] + "..."
		}
		parts[k] = fmt.Sprintf("%d (%s)", h.Pid, cmd)
	}
	if len(holders) == 1 {
		return "PID " + parts[0] + " still holds its stdout"
	}
	return "PIDs " + strings.Join(parts, ", ") + " still hold its stdout"
}

// stalledExited handles stage i, whose main process has exited while
// something it left behind holds its stdout and nothing has moved for
// idle. That is a stall of its own: the run would wait forever for an
// end of file that only those holders can give. on_stall = kill stops
// them and fails the run; nudge does the same, since a SIGSTOP and
// SIGCONT cannot make a process close a pipe; warn says so and waits.
func (m *monitorState) stalledExited(i int, now time.Time, idle time.Duration) {
	r := m.r
	w := &m.w[i]
	if w.episode {
		return
	}
	w.episode = true
	spec := &r.job.Stages[i]
	name := r.stages[i].Name()
	m.findHolders(i)
	diag := m.diagnoseExited(i, idle)
	m.record(i, diag, false)
	r.log.Warn(diag, "stage", name, "on_stall", spec.OnStall)
	if spec.OnStall == OnStallWarn {
		return
	}
	why := ""
	if spec.OnStall == OnStallNudge {
		why = "; a nudge cannot make a process close a pipe, so on_stall = nudge stops it as kill does"
	}
	w.killed = true
	msg := fmt.Sprintf("stage %q stalled: it exited (%s), but %s: no progress for %s (stall_timeout %s, on_stall = %s)%s",
		name, w.exitStatus, describeHolders(w.holders), seconds(idle), spec.StallTimeout, spec.OnStall, why)
	r.log.Error(msg, "stage", name)
	r.decide(i, ResultFailed, msg)
	r.stages[i].Stop(StallKillGrace)
	proc.Terminate(w.holders, StallKillGrace)
}

// diagnoseExited is the diagnosis line of a stage that exited while its
// stdout is held: `stage "X" exited (exit 0); PID 4242 (sleep 300) still
// holds its stdout: no output for 5.0s; output pipe 0 bytes queued`.
func (m *monitorState) diagnoseExited(i int, idle time.Duration) string {
	r := m.r
	w := &m.w[i]
	var b strings.Builder
	fmt.Fprintf(&b, "stage %q (pid %d) exited (%s); %s: no progress for %s", r.stages[i].Name(), r.stages[i].Pid(), w.exitStatus,
		describeHolders(w.holders), seconds(idle))
	if len(w.holders) > 0 {
		at := point{Blocked: m.pr.ReadBlocked(w.holders[0].Pid, w.holders[0].Pid)}
		b.WriteString("; PID ")
		b.WriteString(strconv.Itoa(w.holders[0].Pid))
		b.WriteString(": ")
		b.WriteString(at.describe(w.holders[0].Pid))
	}
	outQ := -1
	if p := r.links[i+1].pump; p != nil {
		outQ = p.SrcQueued()
	}
	fmt.Fprintf(&b, "; output %s", queuedText(outQ, r.links[i+1]))
	if waiting := m.waitingFor(i); len(waiting) > 0 {
		fmt.Fprintf(&b, "; waiting on it: %s", strings.Join(waiting, ", "))
	}
	return b.String()
}
