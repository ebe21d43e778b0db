package proc

import (
	"errors"
	"io/fs"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// reg is what the forker, the groups, the scopes and the reaper share.
var reg = struct {
	mu sync.Mutex // guards the fields below
	// leaders are the groups started and not yet reaped, by pid: their
	// exit status belongs to their Group, never to the reaper.
	leaders map[int]*Group
	// scopes are the open scopes.
	scopes map[*Scope]bool
	// keep is the union of the keep lists of the scopes open since the
	// processes no scope can claim were last swept (see Scope.Close).
	keep map[string]bool
}{leaders: map[int]*Group{}, scopes: map[*Scope]bool{}, keep: map[string]bool{}}

var subreaper struct {
	once sync.Once
	on   atomic.Bool
	err  error
	wake chan struct{} // a leader was reaped: look again behind it
}

// BecomeSubreaper makes pipespool a child subreaper (PR_SET_CHILD_SUBREAPER):
// a process whose parent exits while it runs (the `sleep 300 &` of a shell
// stage, a daemon's double fork) is re-parented to pipespool instead of
// init, so that every descendant of a stage stays pipespool's to find and
// stop. Those orphans are reaped when they exit, by a goroutine woken by
// SIGCHLD.
//
// Once it is on, every child process of pipespool must be started by a
// Scope: the reaper takes the exit status of any child that is not a
// group's leader, and os/exec would then find its child gone.
func BecomeSubreaper() error {
	subreaper.once.Do(func() {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			subreaper.err = os.NewSyscallError("prctl(PR_SET_CHILD_SUBREAPER)", err)
			return
		}
		subreaper.on.Store(true)
		subreaper.wake = make(chan struct{}, 1)
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGCHLD)
		go reapLoop(ch, subreaper.wake)
	})
	return subreaper.err
}

// IsSubreaper reports whether BecomeSubreaper succeeded.
func IsSubreaper() bool { return subreaper.on.Load() }

func reapLoop(sigchld <-chan os.Signal, wake <-chan struct{}) {
	for {
		select {
		case <-sigchld:
		case <-wake:
		}
		reapOrphans()
	}
}

// reapOrphans reaps exited children that are not a group's leader. It asks
// the kernel for any exited child without reaping it (WNOWAIT) and reaps it
// only when it is no leader; a leader waiting for its Cleanup hides the
// children behind it, and its reaping wakes the reaper again. Scanning
// /proc instead would cost a read per process on the machine at every
// SIGCHLD; the orphans left waiting meanwhile are zombies, which cost a
// pid each, and Scope.Close reaps every one of them at the end of a run.
func reapOrphans() {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return // ECHILD: no child at all
		}
		pid := int((*sigchldInfo)(unsafe.Pointer(&info)).Pid)
		if pid == 0 || reg.leaders[pid] != nil {
			return
		}
		reapPid(pid)
	}
}

// reapPid reaps pid, an exited child that is no leader. reg.mu is held.
// An orphan of one of the open scopes' groups leaves its exit status to
// the group (see Group.LeftFailures): it is a process the group's leader
// left running, whose failure nobody else sees.
func reapPid(pid int) {
	var r Reader
	st, known := r.Stat(pid) // a zombie's stat still names its group
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err == nil && got == pid && known {
			for sc := range reg.scopes {
				if g := sc.groupOf(st.Pgrp); g != nil && g.pid != pid {
					g.noteLeft(st, ws)
					break
				}
			}
		}
		return
	}
}

// forget removes a reaped leader from the registry and wakes the reaper,
// which may have stopped in front of it.
func forget(g *Group) {
	reg.mu.Lock()
	if reg.leaders[g.pid] == g {
		delete(reg.leaders, g.pid)
	}
	reg.mu.Unlock()
	if subreaper.on.Load() {
		select {
		case subreaper.wake <- struct{}{}:
		default:
		}
	}
}

// children lists pipespool's children that are no group's leader (which
// are orphans it adopted as a subreaper), reaping those that have exited.
// The candidates are the children lists of pipespool's threads where the
// kernel has them (CONFIG_PROC_CHILDREN), else every process on the
// machine; each is tried with one waitid(P_PID, WNOHANG|WNOWAIT), which
// says ECHILD for all but pipespool's children and reads no file.
func children() []int {
	kids, _ := listChildren()
	return kids
}

// listChildren is children, and reports whether a child that is no leader
// was listed and found exited (reaped here or by the reaper), or may have
// been: it may have left children of its own, adopted too late to be on
// the list.
func listChildren() (kids []int, gone bool) {
	if !subreaper.on.Load() {
		return nil, false
	}
	var cands []int
	exact := eachCandidateChild(func(pid int) { cands = append(cands, pid) })
	if testHookChildrenListed != nil {
		testHookChildrenListed()
	}
	gone = !exact
	for _, pid := range cands {
		reg.mu.Lock()
		if reg.leaders[pid] == nil {
			if live, _ := liveChild(pid); live {
				kids = append(kids, pid)
			} else {
				gone = true
			}
		}
		reg.mu.Unlock()
	}
	return kids, gone
}

// testHookChildrenListed, when set by a test, runs between children's
// listing of the candidates and its look at each: where a child's exit
// races with the listing.
var testHookChildrenListed func()

// liveChild reports whether pid is a child of pipespool that has not
// exited, and reaps it if it has (live false, ours true). reg.mu is held.
func liveChild(pid int) (live, ours bool) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, false // not our child
		}
		break
	}
	if (*sigchldInfo)(unsafe.Pointer(&info)).Pid != 0 {
		reapPid(pid)
		return false, true
	}
	return true, true
}

// eachCandidateChild calls f for every child of pipespool, and maybe for
// other processes: exact reports that it called f for children only (it
// read the children lists), not for every process on the machine.
//
// A child is on the children list of the thread that is its parent, and
// only two threads of pipespool are ever one:
//   - the forker thread (see forkExec) for every process pipespool starts,
//     since no other thread forks, and for what one of them clones as a
//     sibling of itself (CLONE_PARENT: the clone's parent is the cloner's
//     parent thread);
//   - the thread-group leader for every orphan adopted as a subreaper: the
//     kernel gives an orphan to the first live thread of the subreaper,
//     which is the leader, since the Go runtime never ends the main
//     thread (kernels before 3.19 gave it to the thread its parent's
//     chain of parents went through, the forker).
//
// So their two lists are read, whatever the number of threads the runtime
// runs: reading every thread's list cost a file a thread (a dozen with four
// jobs at once) at every listing.
func eachCandidateChild(f func(pid int)) (exact bool) {
	var r Reader // raw reads: three system calls a file, not os.ReadFile's seven
	tids := []int{os.Getpid()}
	if t := int(forker.tid.Load()); t != 0 && t != tids[0] {
		tids = append(tids, t) // 0: the forker has not run yet
	}
	var pids []int
	for _, tid := range tids {
		path := "/proc/self/task/" + strconv.Itoa(tid) + "/children"
		b := r.readPath(path)
		if len(b) == len(r.buf) { // perhaps cut short: read it whole
			b, _ = os.ReadFile(path)
		}
		if b == nil {
			// No CONFIG_PROC_CHILDREN: look at every process.
			eachPid(f)
			return false
		}
		for _, field := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(field); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	for _, pid := range pids {
		f(pid)
	}
	return true
}

// adoptedMembers returns the live processes of process group pgid among
// pipespool's adopted children and everything below them, and whether it
// saw any adopted child at all. ok is false when it cannot tell (pipespool
// is no subreaper, or the kernel has no children lists): then every
// process on the machine must be looked at.
//
// It serves a group whose leader has exited: the leader's children were
// adopted by pipespool before its exit could be seen, so every process
// that descends from it lives below an adopted child. A process that
// joined the group from elsewhere (setpgid, from a process of the same
// session) and is not below an adopted child is below a stage still
// running, and is stopped with it, or by the sweep at the scope's end
// once adopted.
//
// A process that exits while the walk looks at it hands its children to
// pipespool after the walk read pipespool's list: the walk then reads that
// list again, and walks what is new in it.
func adoptedMembers(pgid int) (members []Stat, adopted, ok bool) {
	if !subreaper.on.Load() || !haveChildrenLists() {
		return nil, false, false
	}
	var r Reader
	seen := map[int]bool{}
	for round := 0; ; round++ {
		kids, changed := listChildren()
		adopted = adopted || changed || len(kids) > 0
		todo := slices.DeleteFunc(kids, func(pid int) bool { return seen[pid] })
		for len(todo) > 0 {
			pid := todo[len(todo)-1]
			todo = todo[:len(todo)-1]
			if seen[pid] {
				continue
			}
			seen[pid] = true
			below, listed := childrenOf(pid)
			if !listed {
				return nil, true, false
			}
			// After its children: one that exited before they were
			// read left them to pipespool.
			st, known := r.Stat(pid)
			if !known || !st.Live() {
				changed = true
				continue
			}
			if st.Pgrp == pgid {
				members = append(members, st)
			}
			todo = append(todo, below...)
		}
		if !changed {
			return members, adopted, true
		}
		if round == closeKillRounds {
			return nil, true, false // it does not settle: look at everything
		}
	}
}

// haveChildrenLists reports whether the kernel has children lists
// (CONFIG_PROC_CHILDREN).
var haveChildrenLists = sync.OnceValue(func() bool {
	_, err := os.Stat("/proc/self/task/" + strconv.Itoa(os.Getpid()) + "/children")
	return err == nil
})

// childrenOf returns the children of process pid, from the children lists
// of its threads. listed is false when the kernel has no children lists;
// a process gone has no children.
func childrenOf(pid int) (kids []int, listed bool) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH):
		return nil, true // gone
	case err != nil:
		// Not readable (another user's process, a hardened /proc): what
		// is below it cannot be seen here, so every process is looked at.
		return nil, false
	}
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/children")
		if err != nil {
			if _, serr := os.Stat(dir + "/" + t.Name()); serr == nil {
				return nil, false // the thread is there, its list is not readable
			}
			continue // the thread ended
		}
		for _, field := range strings.Fields(string(b)) {
			if kid, err := strconv.Atoi(field); err == nil {
				kids = append(kids, kid)
			}
		}
	}
	return kids, true
}
