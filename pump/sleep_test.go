package pump

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSleepEndsUnderASignalStorm: the batching sleep must end however often
// its thread is signalled. The Go runtime signals a thread (SIGURG) to
// preempt it whenever a garbage collection or a stop of the world needs
// its processor, again and again until it yields, and a thread in a raw
// system call cannot yield. A nanosleep restarted with the time the kernel
// says is left never ends under such a storm: that time includes the
// timer's slack (50 us by default), so a restart interrupted sooner than
// that asks for more than the one before. The whole process then waits
// for the pump's thread: seen as a relay frozen for minutes under load,
// every goroutine runnable and none running, until the signals happened
// to come slower.
func TestSleepEndsUnderASignalStorm(t *testing.T) {
	tid := make(chan int)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid <- unix.Gettid()
		for range 20 {
			sleep(maxBatchDelay)
		}
		close(done)
	}()
	target := <-tid
	var stop atomic.Bool
	stormDone := make(chan struct{})
	go func() {
		defer close(stormDone)
		pid := unix.Getpid()
		for !stop.Load() {
			// SIGURG is the runtime's own preemption signal: harmless to
			// a Go thread, and exactly what a stop of the world sends.
			if err := unix.Tgkill(pid, target, unix.SIGURG); err != nil {
				return
			}
			spinFor(10 * time.Microsecond)
		}
	}()
	defer func() { stop.Store(true); <-stormDone }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("20 sleeps of 100 us did not end in 30 s while the thread was signalled every 10 us")
	}
}

// spinFor busy-waits for d: a timer would add its own slack to a period
// this short.
func spinFor(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
	}
}
