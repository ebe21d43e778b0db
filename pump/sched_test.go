package pump

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// threadPolicies returns the scheduling policy of every thread of this
// process, by thread id, from field 41 of /proc/self/task/TID/stat.
func threadPolicies(t *testing.T) map[int]int {
	t.Helper()
	dirs, err := filepath.Glob("/proc/self/task/*")
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[int]int)
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "stat"))
		if err != nil {
			continue // the thread ended since the glob
		}
		// The command name, field 2, may hold spaces: count from its ')'.
		rest := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(rest) < 39 {
			t.Fatalf("%s/stat has %d fields after the name", d, len(rest))
		}
		pol, err := strconv.Atoi(rest[38]) // field 41 is the 39th after ')'
		if err != nil {
			t.Fatal(err)
		}
		tid, _ := strconv.Atoi(filepath.Base(d))
		out[tid] = pol
	}
	return out
}

func batchThreads(t *testing.T) int {
	n := 0
	for _, pol := range threadPolicies(t) {
		if pol == unix.SCHED_BATCH {
			n++
		}
	}
	return n
}

// The pump's thread runs as SCHED_BATCH while it copies, and no thread is
// left as SCHED_BATCH once it returns: the runtime reuses its threads for
// any goroutine, and a child forked from a batch thread would inherit it.
func TestPumpThreadIsBatchOnlyWhileRunning(t *testing.T) {
	checkFDs(t)
	if n := batchThreads(t); n != 0 {
		t.Fatalf("%d SCHED_BATCH threads before any pump ran", n)
	}
	p, _, _ := blockedPump(t, false, WaitingSrc)
	done := start(p)
	waitState(t, p, WaitingSrc)
	if n := batchThreads(t); n != 1 {
		t.Errorf("%d SCHED_BATCH threads while one pump waits, want 1 (policies %v)", n, threadPolicies(t))
	}
	p.Stop()
	waitFor(t, done, 2*time.Second, "pump after Stop")
	if n := batchThreads(t); n != 0 {
		t.Errorf("%d SCHED_BATCH threads after the pump returned, want 0", n)
	}
}

// A policy someone else set on the thread (here SCHED_IDLE, which needs no
// privilege) is neither changed nor "restored" to the default.
func TestBatchThreadLeavesAnotherPolicyAlone(t *testing.T) {
	got := make(chan [2]uint32, 1)
	go func() {
		// Stay locked to the end: the thread, switched to SCHED_IDLE here,
		// then ends with this goroutine instead of serving others.
		runtime.LockOSThread()
		idle := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_IDLE}
		if err := unix.SchedSetAttr(0, &idle, 0); err != nil {
			t.Errorf("set SCHED_IDLE: %v", err)
			got <- [2]uint32{}
			return
		}
		var pols [2]uint32
		restore := batchThread()
		if a, err := unix.SchedGetAttr(0, 0); err == nil {
			pols[0] = a.Policy
		}
		restore()
		if a, err := unix.SchedGetAttr(0, 0); err == nil {
			pols[1] = a.Policy
		}
		got <- pols
	}()
	pols := <-got
	if pols != [2]uint32{unix.SCHED_IDLE, unix.SCHED_IDLE} {
		t.Errorf("policy during and after batchThread = %v, want SCHED_IDLE (%d) both times", pols, unix.SCHED_IDLE)
	}
}

// batchThread keeps the nice value of the thread it switches.
func TestBatchThreadKeepsNice(t *testing.T) {
	got := make(chan [2]int32, 1)
	go func() {
		runtime.LockOSThread()
		tid := unix.Gettid()
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, 5); err != nil {
			t.Errorf("setpriority: %v", err)
			got <- [2]int32{}
			return
		}
		var nice [2]int32
		restore := batchThread()
		if a, err := unix.SchedGetAttr(0, 0); err == nil && a.Policy == unix.SCHED_BATCH {
			nice[0] = a.Nice
		}
		restore()
		if a, err := unix.SchedGetAttr(0, 0); err == nil && a.Policy == unix.SCHED_NORMAL {
			nice[1] = a.Nice
		}
		got <- nice
	}()
	if nice := <-got; nice != [2]int32{5, 5} {
		t.Errorf("nice as SCHED_BATCH and after restore = %v, want [5 5]", nice)
	}
}
