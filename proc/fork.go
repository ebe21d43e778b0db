package proc

import (
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// DeathSignal is the parent-death signal of every process Start starts: if
// pipespool dies without stopping it (kill -9, a crash), the kernel sends
// it this. SIGKILL rather than SIGTERM: nobody is left to escalate, and a
// run pipespool no longer watches can only be lost (its output is a
// temporary file the next run removes), so nothing is gained by letting a
// stage that ignores SIGTERM go on.
const DeathSignal = syscall.SIGKILL

// forkReq asks the forker thread to start a process.
type forkReq struct {
	path  string
	argv  []string
	attr  *syscall.ProcAttr
	g     *Group // registered under reg.mu with the pid it gets
	reply chan error
}

var forker struct {
	once sync.Once
	reqs chan forkReq
	// tid is the forker thread's id, set before its first fork: the
	// parent thread of every process pipespool starts.
	tid atomic.Int32
}

// forkExec starts a process from the forker thread and registers g as its
// leader before any reaper can look at it.
//
// The kernel sends the parent-death signal when the thread that forked the
// child exits, not the process, and the Go runtime ends a thread when a
// goroutine locked to it returns. So every child is forked by one
// goroutine that locks its thread and never returns: the thread lives as
// long as pipespool. The runtime starts new threads from its template
// thread, not from a locked one, so the scheduling policy of a pump's
// thread never reaches this one, nor the children.
func forkExec(path string, argv []string, attr *syscall.ProcAttr, g *Group) error {
	forker.once.Do(func() {
		forker.reqs = make(chan forkReq)
		go forkLoop(forker.reqs)
	})
	r := forkReq{path: path, argv: argv, attr: attr, g: g, reply: make(chan error, 1)}
	forker.reqs <- r
	return <-r.reply
}

func forkLoop(reqs <-chan forkReq) {
	runtime.LockOSThread() // for good: see forkExec
	forker.tid.Store(int32(unix.Gettid()))
	for r := range reqs {
		r.reply <- forkOne(r)
	}
}

func forkOne(r forkReq) error {
	// Under reg.mu, so that the reaper cannot take a child that exits at
	// once for an orphan before it is registered.
	reg.mu.Lock()
	defer reg.mu.Unlock()
	pid, err := syscall.ForkExec(r.path, r.argv, r.attr)
	if err != nil {
		return err
	}
	r.g.pid = pid
	reg.leaders[pid] = r.g
	return nil
}
