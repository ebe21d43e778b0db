package pump

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// schedFlagResetOnFork is SCHED_FLAG_RESET_ON_FORK, the one sched_attr flag
// that a policy change must carry over rather than drop.
const schedFlagResetOnFork = 0x1

// batchThread locks the calling goroutine to its thread and, when that
// thread runs the default policy (SCHED_OTHER), switches it to SCHED_BATCH.
// It returns the function that undoes both; call it on the same goroutine.
//
// SCHED_BATCH tells the scheduler that the thread's wake-ups should not
// preempt whatever runs on the CPU it wakes on. For a pump that is the
// point: every splice wakes a stage and every stage's read or write wakes
// the pump, so on a machine with fewer free CPUs than runnable tasks the
// default policy lets the pump's wake-up preempt the stage it was feeding,
// mid-copy, thousands of times a second. As SCHED_BATCH the pump waits for
// the stage's time slice instead; it still gets its fair share of CPU
// (batch threads keep their nice value and weight), only later.
//
// The policy is a property of the thread, so the goroutine stays locked to
// it while the pump runs and no other goroutine can inherit it. Go creates
// new threads from a locked thread through its template thread, and the
// stages are forked by other goroutines, so neither a new runtime thread
// nor a stage ever starts as SCHED_BATCH. A policy someone else chose
// (chrt, a systemd unit's CPUSchedulingPolicy) is left as it is. Any
// failure leaves the thread as it was: batching is an optimisation, never
// a reason to fail a copy.
func batchThread() (restore func()) {
	runtime.LockOSThread()
	old, err := unix.SchedGetAttr(0, 0)
	if err != nil || old.Policy != unix.SCHED_NORMAL {
		return runtime.UnlockOSThread
	}
	attr := *old
	attr.Size = unix.SizeofSchedAttr
	attr.Policy = unix.SCHED_BATCH
	attr.Flags = old.Flags & schedFlagResetOnFork
	attr.Priority = 0
	if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
		return runtime.UnlockOSThread
	}
	return func() {
		back := *old
		back.Size = unix.SizeofSchedAttr
		back.Flags = old.Flags & schedFlagResetOnFork
		if err := unix.SchedSetAttr(0, &back, 0); err != nil {
			// Still SCHED_BATCH: stay locked, so that the runtime ends
			// this thread with the goroutine instead of reusing it.
			return
		}
		runtime.UnlockOSThread()
	}
}
