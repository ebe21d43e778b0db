package pipeline

import (
	"os"
	"time"

	"github.com/pipespool/pipespool/proc"
	"github.com/pipespool/pipespool/progress"
	"github.com/pipespool/pipespool/pump"
	"github.com/pipespool/pipespool/stage"
)

// Sampling cadence. The monitor wakes once per tick, reads a few counters
// and /proc files per stage, and goes back to sleep: with the default
// stall_timeout (5m) that is once a second, which costs well under a
// millisecond of CPU per tick for a handful of stages.
const (
	// maxTick is the slowest tick: it bounds how late a stall is noticed
	// (stall_timeout + about one tick).
	maxTick = time.Second
	// minTick is the fastest, used for short stall timeouts in tests.
	minTick = 100 * time.Millisecond
	// maxRescan is the longest interval between two scans of /proc for
	// the members of each stage's process group (see proc.GroupMembers).
	maxRescan = 30 * time.Second
)

// watch is what the monitor knows about one stage. The monitor goroutine
// owns it; what others read (stalls, nudges, diagnoses, note) is copied
// into the stage's outcome under running.mu.
type watch struct {
	// Last sampled values: any change is progress.
	in, out  int64
	cpu, io  uint64
	lastMove time.Time
	members  []int // other live processes of its group, from the last scan

	// Stall handling.
	episode  bool      // a stall was declared and nothing moved since
	nudgedAt time.Time // when a nudge was sent that has not been followed by progress
	killed   bool      // on_stall killed it: nothing more to do
	idleLog  bool      // "waiting on input/output" was logged for this idle spell
	witness  int       // our read handle on its stdin pipe, or -1 (see stdinQueued)

	// A stage whose main process has exited while its output link has
	// not ended: something it left behind holds its stdout.
	exited     bool
	exitStatus string      // how the main process ended, "exit 0"
	holders    []proc.Stat // who holds its stdout, from the last scan

	// The memory buffer on its input hop (pump.Buffer), from the last
	// sample: its size (0: none) and what it held. For the display.
	BufferSize, Buffered int64

	// Display.
	done      bool
	failed    bool
	waitingOn string // the neighbour it waits for, "" when none
}

// monitor watches the running stages until stop is closed: it samples the
// progress of every stage, detects and handles stalls, and draws the
// progress display.
func (r *running) monitor(stop <-chan struct{}) {
	m := newMonitor(r)
	tick := m.tickInterval()
	if tick == 0 {
		<-stop // no stall detection and no display: nothing to watch
		return
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-stop:
			// Every stage is over: a last sample records how the ones
			// that ended since the last tick ended (a nudged stage that
			// drained its input and exited has recovered).
			now := time.Now()
			for i := range m.w {
				m.sample(i, now)
			}
			m.closeProgress(now)
			for i := range m.w {
				m.closeWitness(i)
			}
			return
		case now := <-t.C:
			m.tick(now)
		}
	}
}

// monitorState is the monitor goroutine's own state.
type monitorState struct {
	r        *running
	w        []watch
	pr       proc.Reader
	groups   map[int][]int // leader pid -> other members, filled by proc.GroupMembers
	rescan   time.Duration // interval between two group scans
	lastScan time.Time
	board    *progress.Board // nil when there is no display
	// publish: a line of a tree whose run has a display: its samples go
	// to the tree's board (running.tree.progress).
	publish bool
}

func newMonitor(r *running) *monitorState {
	m := &monitorState{r: r, w: make([]watch, len(r.stages)), groups: map[int][]int{}}
	now := time.Now()
	for i := range m.w {
		m.w[i].lastMove = now
		m.w[i].witness = -1
	}
	if r.opts.Progress != nil {
		m.board = m.newBoard(now)
	}
	// A line of a tree hands its samples to the tree's one board.
	m.publish = r.tree != nil && r.tree.progress != nil
	m.rescan = maxRescan
	for i := range r.job.Stages {
		if t := r.job.Stages[i].StallTimeout; t > 0 {
			// Scan at least twice per timeout, so a process a stage
			// started since the last scan is seen before it could be
			// taken for a stall.
			m.rescan = min(m.rescan, max(t/2, time.Second))
		}
	}
	return m
}

// tickInterval returns the sampling interval, or 0 when nothing needs the
// monitor.
func (m *monitorState) tickInterval() time.Duration {
	var tick time.Duration
	for i := range m.r.job.Stages {
		t := m.r.job.Stages[i].StallTimeout
		if t <= 0 {
			continue
		}
		// A quarter of the timeout keeps detection within
		// stall_timeout + a quarter of it.
		d := min(max(t/4, minTick), maxTick)
		if tick == 0 || d < tick {
			tick = d
		}
	}
	if m.board != nil {
		if d := m.r.opts.Progress.Interval(); tick == 0 || d < tick {
			tick = d
		}
	}
	if m.publish {
		if d := m.r.tree.progressInterval; tick == 0 || d < tick {
			tick = d
		}
	}
	return tick
}

// tick samples every stage, then handles stalls and redraws the display.
func (m *monitorState) tick(now time.Time) {
	r := m.r
	if now.Sub(m.lastScan) >= m.rescan {
		m.scan(now)
	}
	for i := range m.w {
		m.sample(i, now)
	}
	for i := range m.w {
		w := &m.w[i]
		if w.done {
			continue
		}
		w.waitingOn = m.waitingOn(i)
		timeout := r.job.Stages[i].StallTimeout
		// Asked for each stage: a stall handled earlier in this loop
		// may have failed the run.
		if r.isFailed() || timeout <= 0 || w.killed {
			// Once the run has failed every stage is being stopped:
			// what looks like a stall is the teardown.
			continue
		}
		idle := now.Sub(w.lastMove)
		if idle < timeout {
			continue
		}
		if w.waitingOn != "" {
			// Back-pressure or starvation: the stage at the head of
			// the jam is the one to blame, unless the jam ends outside
			// the pipeline.
			m.idleEnds(i, idle)
			continue
		}
		if !w.episode && r.stages[i].Kind() == stage.KindCommand && now.Sub(m.lastScan) >= minTick {
			// Before declaring a stall, look for processes the stage
			// started since the last scan: they may be the ones working.
			m.scan(now)
			m.sample(i, now)
			if idle = now.Sub(w.lastMove); idle < timeout {
				continue
			}
		}
		if w.exited {
			m.stalledExited(i, now, idle)
			continue
		}
		m.stalled(i, now, idle)
	}
	if m.board != nil {
		m.drawProgress(now)
	}
	if m.publish {
		r.tree.progress(m.progressSamples(false))
	}
}

// scan refreshes the members of every running external stage's group.
func (m *monitorState) scan(now time.Time) {
	m.lastScan = now
	clear(m.groups)
	for i, st := range m.r.stages {
		if m.w[i].done || st.Kind() != stage.KindCommand {
			continue
		}
		if pid := st.Pid(); pid > 0 {
			m.groups[pid] = nil
		}
	}
	if len(m.groups) == 0 {
		return
	}
	proc.GroupMembers(m.groups)
	for i, st := range m.r.stages {
		if pid := st.Pid(); pid > 0 {
			if mem, ok := m.groups[pid]; ok {
				if len(mem) != len(m.w[i].members) {
					// A process came or went: that is activity.
					m.r.log.Debug("members changed", "stage", st.Name(), "members", mem)
					m.w[i].lastMove = now
				}
				m.w[i].members = mem
			}
		}
	}
	for i := range m.w {
		if m.w[i].exited && !m.w[i].done {
			m.findHolders(i)
		}
	}
}

// sample reads the counters of stage i and notes progress.
func (m *monitorState) sample(i int, now time.Time) {
	r := m.r
	w := &m.w[i]
	if w.done {
		return
	}
	st := r.stages[i]
	select {
	case <-st.Done():
		if m.outputOpen(i) {
			// Its main process exited, but its output goes on (or
			// hangs): watched as before, with whoever holds it.
			if !w.exited {
				w.exited = true
				w.exitStatus = st.Wait().Status()
				m.findHolders(i)
			}
			break
		}
		w.done = true
		w.failed = st.Wait().Failed()
		m.closeWitness(i)
		if !w.failed && w.episode {
			// Finishing is progress: a nudged stage that drained its
			// input and exited has recovered.
			m.moved(i)
		}
		return
	default:
	}
	if p := r.links[i].pump; p != nil && p.BufferSize() > 0 {
		w.BufferSize, w.Buffered = p.BufferSize(), p.Buffered()
	}
	pid := st.Pid()
	in, out := m.linkBytes(i)
	var ps proc.Sample
	if st.Kind() == stage.KindBuiltin {
		in, out = st.Counters()
	} else if pid > 0 {
		ps = m.pr.SampleGroup(pid, w.members)
		for _, h := range w.holders {
			// A holder outside the group: its work is the stage's.
			if h.Pgrp != pid {
				if hs, ok := m.pr.Stat(h.Pid); ok && hs.StartTime == h.StartTime {
					ps.CPU += hs.UTime + hs.STime
					ps.IO += proc.ParseIO(m.pr.Read(h.Pid, "io"))
				}
			}
		}
	}
	if in != w.in || out != w.out || ps.CPU != w.cpu || ps.IO != w.io {
		w.in, w.out, w.cpu, w.io = in, out, ps.CPU, ps.IO
		w.lastMove = now
		m.moved(i)
	}
}

// linkBytes returns what stage i has consumed from its input link and
// produced into its output link so far, as far as pipespool can see. A
// file handed over directly is followed through the stage's fdinfo, as
// pv -d does; once the process is gone (exited, or a zombie: its fds are
// closed) that reads nothing, and the last value stands until the stage's
// outcome has the exact one (the file's final offset).
func (m *monitorState) linkBytes(i int) (in, out int64) {
	r := m.r
	in, out = m.w[i].in, m.w[i].out
	switch l := r.links[i]; {
	case l.pump != nil:
		// Delivered into its pipe, less what is still queued there:
		// what the stage itself read.
		in = l.pump.Bytes()
		if q := l.pump.DstQueued(); q > 0 {
			in -= int64(q)
		}
	case l.direct != nil:
		in = m.directBytes(l, in)
	}
	switch l := r.links[i+1]; {
	case l.pump != nil:
		// Read by the pump (delivered, or held in its buffer), plus
		// what is still queued in the stage's pipe.
		out = l.pump.Bytes() + l.pump.Buffered()
		if q := l.pump.SrcQueued(); q > 0 {
			out += int64(q)
		}
	case l.direct != nil:
		out = m.directBytes(l, out)
	}
	return in, out
}

// directBytes is how far a stage has read or written a file handed to it
// directly (see sharedOffset); last stands if it cannot be read. Unlike
// the stage's own fdinfo, ours still answers once the stage has exited: a
// stage that read its whole file at once and went shows all of it.
func (m *monitorState) directBytes(l link, last int64) int64 {
	if pos := sharedOffset(&m.pr, l.direct); pos >= 0 {
		return pos - l.start
	}
	return last
}

// sharedOffset is the offset of f, our copy of a file handed to a stage
// (a duplicate of the stage's fd: the same open file, one offset), read
// from our own /proc/self/fdinfo as `pv -d` reads a process's; -1 if it
// cannot be read. Not lseek: on an open file shared by two processes,
// lseek waits for the file's position lock, which a read or write holds
// for as long as it lasts, and a stage or something it left behind may be
// stuck in one for ever (a hung NFS read, a process in D state that no
// signal ends); neither the monitor nor the end of a run may wait on that.
func sharedOffset(pr *proc.Reader, f *os.File) int64 {
	fd := -1
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(u uintptr) { fd = int(u) })
	}
	if fd < 0 {
		return -1
	}
	return pr.FDPos(os.Getpid(), fd)
}

// waitingOn returns the name of the neighbour stage i is waiting for ("input"
// or "output" at the ends), or "" when it is not held up by a neighbour:
// its output link cannot deliver (the consumer is not reading), or its
// input link has nothing and the stage has read all it was given.
//
// A full buffer (pump.Buffer) is back-pressure like a full pipe: its pump
// waits for room (WaitingDst) and stops reading, so the stage writing into
// it waits on the stage it feeds. The stage reading from a buffer that
// holds bytes has them queued in its pipe: it waits on nobody, and if it
// reads nothing for stall_timeout it is the stage that stalled, however
// much the buffer holds. Below its start level (buffer_start_at) a buffer
// delivers nothing and waits for its source (WaitingSrc), so that stage
// waits on its producer.
//
// A rate limit holds a stage up as a neighbour does (RateLimitWait): the
// limited pump of its output waits for tokens with bytes of the stage's
// queued, or that of its input waits with everything it delivered read.
// It moves as fast as allowed, which may be slower than stall_timeout
// between two transfers; the stage is not stalled.
func (m *monitorState) waitingOn(i int) string {
	r := m.r
	if p := r.links[i+1].pump; p != nil {
		switch p.State() {
		case pump.WaitingDst:
			if i+1 < len(r.stages) {
				return r.stages[i+1].Name()
			}
			return "output"
		case pump.Limited:
			if p.SrcQueued() > 0 {
				return RateLimitWait
			}
		}
	}
	if p := r.links[i].pump; p != nil && p.DstQueued() == 0 {
		switch p.State() {
		case pump.WaitingSrc, pump.WaitingBranch:
			// WaitingBranch: a fan-out's branch with everything its
			// source holds, waiting for a slower branch.
			if i > 0 {
				return r.stages[i-1].Name()
			}
			return "input"
		case pump.Limited:
			return RateLimitWait
		}
	}
	return ""
}

// RateLimitWait is what a stage held up by a rate limit waits on, as the
// progress display shows it ("waiting on the rate limit"). No stage can
// have this name.
const RateLimitWait = "the rate limit"
