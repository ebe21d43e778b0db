package poller

import (
	"errors"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// noEvent is how long a test waits to show that nothing is reported. An
// absence cannot be observed any other way; the bound only has to be long
// enough for an event that is already pending (epoll reports those at once).
const noEvent = 50

// pipe returns a close-on-exec pipe whose ends are closed when the test ends.
func pipe(t *testing.T) (r, w int) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeIfOpen(p[0]); closeIfOpen(p[1]) })
	return p[0], p[1]
}

// closeIfOpen closes fd unless it is -1, the mark of an end a test closed
// itself (closing that number again could close an fd reused since).
func closeIfOpen(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

func newPoller(t *testing.T) *Poller {
	t.Helper()
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// closePoller closes p and fails the test if it reports an fd left
// registered.
func closePoller(t *testing.T, p *Poller) {
	t.Helper()
	if err := p.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// waitOne waits up to timeoutMs and returns the single event reported, or
// a zero event and false.
func waitOne(t *testing.T, p *Poller, timeoutMs int) (unix.EpollEvent, bool) {
	t.Helper()
	var evs [4]unix.EpollEvent
	n, woken, err := p.Wait(evs[:], timeoutMs)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if woken {
		t.Fatalf("Wait reported a wake-up nobody asked for")
	}
	if n > 1 {
		t.Fatalf("Wait reported %d events, want at most 1: %v", n, evs[:n])
	}
	return evs[0], n == 1
}

func TestPollerReportsLevelTriggeredReadiness(t *testing.T) {
	tests := []struct {
		name string
		// setup makes a pipe end ready before Wait is called and returns
		// it; it closes what it closes itself and leaves the rest to the
		// test's cleanup.
		setup  func(t *testing.T) int
		events uint32
		want   uint32 // bits that must be set
	}{
		{
			name:   "data written before Wait",
			setup:  func(t *testing.T) int { r, w := pipe(t); mustWrite(t, w, []byte("x")); return r },
			events: In,
			want:   In,
		},
		{
			name:   "writer closed before Wait gives Hup",
			setup:  func(t *testing.T) int { r, w := pipeOneEnd(t, 1); _ = w; return r },
			events: In,
			want:   Hup,
		},
		{
			name:   "empty pipe is writable",
			setup:  func(t *testing.T) int { _, w := pipe(t); return w },
			events: Out,
			want:   Out,
		},
		{
			name:   "reader closed before Wait gives Err",
			setup:  func(t *testing.T) int { r, w := pipeOneEnd(t, 0); _ = r; return w },
			events: Out,
			want:   Err,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPoller(t)
			defer closePoller(t, p)
			fd := tt.setup(t)
			if err := p.Add(fd, tt.events); err != nil {
				t.Fatal(err)
			}
			defer p.Remove(fd)
			// Level-triggered: the same readiness is reported by every
			// Wait until it is consumed, not only on the transition, and
			// also when it arrived before the fd was added.
			for i := range 3 {
				ev, ok := waitOne(t, p, 5000)
				if !ok {
					t.Fatalf("Wait %d: no event, want %#x", i, tt.want)
				}
				if int(ev.Fd) != fd || ev.Events&tt.want != tt.want {
					t.Fatalf("Wait %d: event fd %d bits %#x, want fd %d bits %#x", i, ev.Fd, ev.Events, fd, tt.want)
				}
			}
		})
	}
}

// pipeOneEnd returns a pipe with end closed (0: read end, 1: write end) and
// the other end closed when the test ends; the closed end is -1.
func pipeOneEnd(t *testing.T, closed int) (r, w int) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	unix.Close(p[closed])
	p[closed] = -1
	t.Cleanup(func() { closeIfOpen(p[1-closed]) })
	return p[0], p[1]
}

func mustWrite(t *testing.T, fd int, b []byte) {
	t.Helper()
	if n, err := unix.Write(fd, b); err != nil || n != len(b) {
		t.Fatalf("write: %d, %v", n, err)
	}
}

func TestPollerReadinessStopsWhenConsumed(t *testing.T) {
	r, w := pipe(t)
	p := newPoller(t)
	defer closePoller(t, p)
	if err := p.Add(r, In); err != nil {
		t.Fatal(err)
	}
	defer p.Remove(r)
	mustWrite(t, w, []byte("abc"))
	if _, ok := waitOne(t, p, 5000); !ok {
		t.Fatal("no event for queued data")
	}
	var b [8]byte
	if n, err := unix.Read(r, b[:]); n != 3 || err != nil {
		t.Fatalf("read: %d, %v", n, err)
	}
	if ev, ok := waitOne(t, p, noEvent); ok {
		t.Fatalf("event %#x on a drained pipe", ev.Events)
	}
}

func TestPollerOneShotDisarms(t *testing.T) {
	tests := []struct {
		name string
		// after runs once the one event was reported: something that
		// would make an armed fd report again.
		after func(t *testing.T, r, w *int)
	}{
		{"data still queued", func(t *testing.T, r, w *int) {}},
		{"more data written", func(t *testing.T, r, w *int) { mustWrite(t, *w, []byte("more")) }},
		{"writer hangs up", func(t *testing.T, r, w *int) { unix.Close(*w); *w = -1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p2 [2]int
			if err := unix.Pipe2(p2[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
				t.Fatal(err)
			}
			r, w := p2[0], p2[1]
			defer func() { closeIfOpen(r); closeIfOpen(w) }()
			p := newPoller(t)
			defer closePoller(t, p)
			mustWrite(t, w, []byte("x"))
			if err := p.Add(r, In|OneShot); err != nil {
				t.Fatal(err)
			}
			defer p.Remove(r)
			if _, ok := waitOne(t, p, 5000); !ok {
				t.Fatal("no first event")
			}
			tt.after(t, &r, &w)
			if ev, ok := waitOne(t, p, noEvent); ok {
				t.Fatalf("disarmed fd reported %#x", ev.Events)
			}
			// Modify re-arms: the readiness that is there is reported once.
			if err := p.Modify(r, In|OneShot); err != nil {
				t.Fatal(err)
			}
			if _, ok := waitOne(t, p, 5000); !ok {
				t.Fatal("re-armed fd reported nothing")
			}
			if ev, ok := waitOne(t, p, noEvent); ok {
				t.Fatalf("fd reported %#x again after one shot", ev.Events)
			}
		})
	}
}

func TestPollerRemoveStopsEvents(t *testing.T) {
	r, w := pipe(t)
	p := newPoller(t)
	defer closePoller(t, p)
	mustWrite(t, w, []byte("x"))
	if err := p.Add(r, In); err != nil {
		t.Fatal(err)
	}
	if !p.Registered(r) {
		t.Fatal("Registered false after Add")
	}
	if err := p.Remove(r); err != nil {
		t.Fatal(err)
	}
	if p.Registered(r) {
		t.Fatal("Registered true after Remove")
	}
	if ev, ok := waitOne(t, p, noEvent); ok {
		t.Fatalf("removed fd reported %#x", ev.Events)
	}
	if err := p.Remove(r); err == nil {
		t.Fatal("second Remove succeeded")
	}
}

func TestPollerWaitTimesOut(t *testing.T) {
	r, _ := pipe(t)
	p := newPoller(t)
	defer closePoller(t, p)
	if err := p.Add(r, In); err != nil {
		t.Fatal(err)
	}
	defer p.Remove(r)
	start := time.Now()
	if _, ok := waitOne(t, p, 20); ok {
		t.Fatal("event on an idle pipe")
	}
	if d := time.Since(start); d < 15*time.Millisecond {
		t.Fatalf("Wait(20ms) returned after %v", d)
	}
}

// waitResult is what a Wait in another goroutine returned.
type waitResult struct {
	n     int
	woken bool
	err   error
}

func TestPollerWakeInterruptsBlockedWait(t *testing.T) {
	tests := []struct {
		name       string
		wakeBefore bool // Wake before Wait starts: the wake-up must not be lost
		wakes      int
	}{
		{"wake while blocked", false, 1},
		{"wake before wait", true, 1},
		{"many wakes coalesce", true, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := pipe(t)
			p := newPoller(t)
			defer closePoller(t, p)
			if err := p.Add(r, In); err != nil {
				t.Fatal(err)
			}
			defer p.Remove(r)
			wake := func() {
				for range tt.wakes {
					if err := p.Wake(); err != nil {
						t.Error(err)
					}
				}
			}
			if tt.wakeBefore {
				wake()
			}
			tid := make(chan int, 1)
			done := make(chan waitResult, 1)
			go func() {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				tid <- unix.Gettid()
				var evs [2]unix.EpollEvent
				n, woken, err := p.Wait(evs[:], -1)
				done <- waitResult{n, woken, err}
			}()
			if !tt.wakeBefore {
				waitInEpoll(t, <-tid)
				wake()
			}
			res := waitFor(t, done, 5*time.Second, "Wait after Wake")
			if res.err != nil || !res.woken || res.n != 0 {
				t.Fatalf("Wait = %d, %v, %v; want 0, true, nil", res.n, res.woken, res.err)
			}
			// The wake-up was consumed: the next Wait blocks again.
			var evs [2]unix.EpollEvent
			if n, woken, err := p.Wait(evs[:], noEvent); n != 0 || woken || err != nil {
				t.Fatalf("second Wait = %d, %v, %v; want 0, false, nil", n, woken, err)
			}
		})
	}
}

// waitInEpoll waits until thread tid of this process is blocked in
// epoll_wait (or epoll_pwait), as /proc/self/task/TID/syscall shows.
func waitInEpoll(t *testing.T, tid int) {
	t.Helper()
	path := filepath.Join("/proc/self/task", itoa(tid), "syscall")
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(b))
		if len(f) > 0 && (f[0] == itoa(unix.SYS_EPOLL_WAIT) || f[0] == itoa(unix.SYS_EPOLL_PWAIT)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("thread %d not in epoll_wait after 5s: %s\n%s", tid, b, goroutines())
		}
		runtime.Gosched()
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func goroutines() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// waitFor receives from ch or fails the test with a goroutine dump.
func waitFor[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("%s: nothing after %v\n%s", what, d, goroutines())
		panic("unreachable")
	}
}

func TestPollerRetriesEINTR(t *testing.T) {
	// With a handler installed, SIGUSR1 interrupts epoll_wait with EINTR
	// instead of killing the process.
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	r, w := pipe(t)
	p := newPoller(t)
	defer closePoller(t, p)
	if err := p.Add(r, In); err != nil {
		t.Fatal(err)
	}
	defer p.Remove(r)

	tests := []struct {
		name  string
		end   func() // what ends the wait after the signals
		wantN int
		woken bool
	}{
		{"wake ends it", func() { p.Wake() }, 0, true},
		{"data ends it", func() { mustWrite(t, w, []byte("x")) }, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tid := make(chan int, 1)
			done := make(chan waitResult, 1)
			go func() {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				tid <- unix.Gettid()
				var evs [2]unix.EpollEvent
				n, woken, err := p.Wait(evs[:], -1)
				done <- waitResult{n, woken, err}
			}()
			id := <-tid
			const signals = 20
			for range signals {
				// Signal the waiting thread itself, so that it is the one
				// whose epoll_wait is interrupted, and only once it is
				// back in epoll_wait after the previous signal.
				waitInEpoll(t, id)
				if err := unix.Tgkill(unix.Getpid(), id, unix.SIGUSR1); err != nil {
					t.Fatal(err)
				}
				waitFor(t, sigs, 5*time.Second, "SIGUSR1 delivery")
			}
			select {
			case res := <-done:
				t.Fatalf("Wait returned on a signal: %d, %v, %v", res.n, res.woken, res.err)
			default:
			}
			waitInEpoll(t, id)
			tt.end()
			res := waitFor(t, done, 5*time.Second, "Wait")
			if res.err != nil || res.n != tt.wantN || res.woken != tt.woken {
				t.Fatalf("Wait = %d, %v, %v; want %d, %v, nil", res.n, res.woken, res.err, tt.wantN, tt.woken)
			}
		})
	}
}

func TestPollerAddRefusesRegularFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		flag int
	}{
		{"regular file", path, unix.O_RDONLY},
		{"directory", dir, unix.O_RDONLY | unix.O_DIRECTORY},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd, err := unix.Open(tt.path, tt.flag|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			p := newPoller(t)
			defer closePoller(t, p)
			if err := p.Add(fd, In); !errors.Is(err, ErrNotPollable) {
				t.Fatalf("Add = %v, want ErrNotPollable", err)
			}
			if p.Registered(fd) {
				t.Fatal("refused fd is registered")
			}
		})
	}
}

func TestPollerCloseReportsRegisteredFds(t *testing.T) {
	r, w := pipe(t)
	p := newPoller(t)
	if err := p.Add(r, In); err != nil {
		t.Fatal(err)
	}
	if err := p.Add(w, Out); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove(w); err != nil {
		t.Fatal(err)
	}
	err := p.Close()
	if err == nil || !strings.Contains(err.Error(), itoa(r)) || strings.Contains(err.Error(), " "+itoa(w)+"]") {
		t.Fatalf("Close = %v, want it to name fd %d (and only it)", err, r)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if err := p.Add(r, In); err == nil {
		t.Fatal("Add after Close succeeded")
	}
}

// Regression: Wake after Close wrote its 8-byte counter increment to the
// closed eventfd's number, which by then could be any fd the process had
// opened since (a pipe to a stage, a file being written). A pump's Stop
// may come after the pump finished, so this was reachable.
func TestPollerWakeAfterCloseDoesNotWriteToReusedFd(t *testing.T) {
	r, w := pipe(t)
	p := newPoller(t)
	old := p.wakefd
	closePoller(t, p)
	// Put the pipe's write end where the eventfd was, as the kernel would
	// when it hands out the lowest free number.
	if err := unix.Dup3(w, old, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(old)
	if err := p.Wake(); err != nil {
		t.Fatalf("Wake after Close = %v", err)
	}
	var b [16]byte
	if n, err := unix.Read(r, b[:]); err != unix.EAGAIN {
		t.Fatalf("Wake after Close wrote to fd %d, now a pipe: read %d bytes %x, %v", old, n, b[:max(n, 0)], err)
	}
}

// TestPollerEdgeEventsBeyondTheCallersSlice: with more edge-triggered fds
// ready than the caller's slice holds, every event is reported by some
// Wait. An edge event that epoll_wait returned and Wait dropped would never
// be reported again (its fd does not change state): Wait once asked epoll
// for up to 8 events whatever the slice, and dropped the excess.
func TestPollerEdgeEventsBeyondTheCallersSlice(t *testing.T) {
	p := newPoller(t)
	defer closePoller(t, p)
	want := map[int32]bool{}
	var rs []int
	for range 5 {
		r, w := pipe(t)
		if _, err := unix.Write(w, []byte("x")); err != nil {
			t.Fatal(err)
		}
		if err := p.Add(r, In|Edge); err != nil {
			t.Fatal(err)
		}
		want[int32(r)] = true
		rs = append(rs, r)
	}
	defer func() {
		for _, r := range rs {
			p.Remove(r)
		}
	}()
	p.Wake() // the wake-up takes a slot too, and is not an fd's event
	got := map[int32]bool{}
	for _, size := range []int{1, 2, 1, 3, 1, 1} {
		events := make([]unix.EpollEvent, size)
		n, _, err := p.Wait(events, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range events[:n] {
			if got[ev.Fd] {
				t.Errorf("fd %d reported twice", ev.Fd)
			}
			got[ev.Fd] = true
		}
	}
	for fd := range want {
		if !got[fd] {
			t.Errorf("fd %d's edge event was lost", fd)
		}
	}
	if _, _, err := p.Wait(nil, 0); err == nil {
		t.Error("Wait with no room for an event: no error")
	}
}

// Sleep is a timed pause that only Wake ends early: readiness of a
// registered fd does not, and a Wake made before it is not lost.
func TestPollerSleepEndsOnlyOnWakeOrTimeout(t *testing.T) {
	r, w := pipe(t)
	p := newPoller(t)
	defer closePoller(t, p)
	if err := p.Add(r, In); err != nil {
		t.Fatal(err)
	}
	defer p.Remove(r)
	mustWrite(t, w, []byte("x")) // r is ready: must not end the sleep

	start := time.Now()
	if woken, err := p.Sleep(30 * time.Millisecond); woken || err != nil {
		t.Fatalf("Sleep = %v, %v; want false, nil", woken, err)
	}
	if el := time.Since(start); el < 30*time.Millisecond {
		t.Fatalf("Sleep(30ms) returned after %s", el)
	}

	p.Wake()
	if woken, err := p.Sleep(time.Hour); !woken || err != nil {
		t.Fatalf("Sleep after Wake = %v, %v; want true, nil", woken, err)
	}

	done := make(chan bool, 1)
	go func() {
		woken, _ := p.Sleep(time.Hour)
		done <- woken
	}()
	p.Wake() // before or during the Sleep: either way it ends it
	select {
	case woken := <-done:
		if !woken {
			t.Fatal("Sleep ended without woken")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wake did not end Sleep")
	}
	// The wake-up was consumed by Sleep.
	var evs [2]unix.EpollEvent
	if n, woken, err := p.Wait(evs[:], noEvent); woken || err != nil || n != 1 {
		t.Fatalf("Wait after Sleep = %d, %v, %v; want the pipe's event alone", n, woken, err)
	}
}
