package proc

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The tests run as a subreaper, as pipespool does: every child of the test
// binary is started through a Scope (os/exec children would have their
// status taken by the reaper). A few tests run the test binary itself as a
// helper process (helperEnv names what it does) to have a pipespool-like
// process to kill.
const helperEnv = "PROC_TEST_HELPER"

func TestMain(m *testing.M) {
	if err := BecomeSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if h := os.Getenv(helperEnv); h != "" {
		os.Exit(helper(h))
	}
	os.Exit(m.Run())
}

// helper is the body of a helper process. It prints the pids it wants the
// test to watch, one a line, then "ready", and waits to be killed.
func helper(what string) int {
	s := NewScope(nil)
	switch what {
	case "fork-then-lose-thread":
		// The goroutine that asks for the fork locks its thread and
		// returns, which makes the runtime end that thread: a child
		// forked on it would get its parent-death signal now.
		var g *Group
		var err error
		done := make(chan struct{})
		go func() {
			defer close(done)
			runtime.LockOSThread()
			g, err = s.Start(Spec{Path: "/bin/sleep", Argv: []string{"sleep", "300"}})
		}()
		<-done
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		// Let the runtime end more threads: every goroutine that locks
		// its thread and returns takes its thread with it.
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread()
				time.Sleep(time.Millisecond)
			}()
		}
		wg.Wait()
		fmt.Println(g.Pid())
	case "pipeline":
		// cat reads a pipe it also holds the write end of (as its
		// stdout), which never ends: /dev/null would end it at once, and
		// the test would see it gone before the helper was killed.
		r, w, err := os.Pipe()
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		for _, script := range []string{"sleep 301", "trap '' TERM; sleep 302", "cat"} {
			spec := Spec{Path: "/bin/sh", Argv: []string{"sh", "-c", script}}
			if script == "cat" {
				spec.Stdin, spec.Stdout = r, w
			}
			g, err := s.Start(spec)
			if err != nil {
				fmt.Println("error", err)
				return 1
			}
			fmt.Println(g.Pid())
		}
	case "clone-parent":
		// A sleep cloned as a sibling of the helper (CLONE_PARENT): its
		// parent is the helper's parent, the test process.
		pid, err := syscall.ForkExec("/bin/sleep", []string{"sleep", "306"}, &syscall.ProcAttr{
			Files: []uintptr{0, 1, 2}, Sys: &syscall.SysProcAttr{Cloneflags: unix.CLONE_PARENT}})
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		fmt.Println(pid)
	default:
		fmt.Println("unknown helper", what)
		return 1
	}
	fmt.Println("ready")
	select {}
}

// startHelper starts the test binary as a helper in scope s and returns its
// group and the pids it printed.
func startHelper(t *testing.T, s *Scope, what string) (*Group, []int) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	g, err := s.Start(Spec{Path: exe, Argv: []string{exe, "-test.run=^$"},
		Env: append(os.Environ(), helperEnv+"="+what), Stdout: w, Stderr: os.Stderr})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "ready" {
			return g, pids
		}
		pid, err := strconv.Atoi(line)
		if err != nil {
			t.Fatalf("helper: %s", line)
		}
		pids = append(pids, pid)
	}
	t.Fatalf("helper ended without saying ready")
	return nil, nil
}

// alive reports whether pid is a live process (not a zombie).
func alive(pid int) bool {
	var r Reader
	st, ok := r.Stat(pid)
	return ok && st.Live()
}

// waitGoneFor polls /proc until none of pids is alive, or fails after d.
func waitGoneFor(t *testing.T, pids []int, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); ; {
		var left []int
		for _, p := range pids {
			if alive(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(end) {
			for _, p := range left {
				unix.Kill(p, syscall.SIGKILL)
			}
			t.Fatalf("processes %v still alive %s later", left, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startWithSetsidChild starts a shell that starts cmd in a session of its
// own, and returns once cmd has left the shell's group; the shell exits
// when release is called.
func startWithSetsidChild(t *testing.T, s *Scope, cmd string) (g *Group, pid int, release func()) {
	t.Helper()
	r, w, _ := os.Pipe()
	defer r.Close()
	in, hold, _ := os.Pipe()
	defer in.Close()
	g, err := s.Start(Spec{Path: "/bin/sh", Argv: []string{"sh", "-c", "setsid " + cmd + " </dev/null & echo $!; read x"}, Stdin: in, Stdout: w})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	pid, _ = strconv.Atoi(strings.TrimSpace(line))
	// The setsid and the exec happen in the child after the shell
	// printed its pid.
	prog, _, _ := strings.Cut(cmd, " ")
	var rd Reader
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if st, _ := rd.Stat(pid); st.Sid == pid && st.Comm == prog {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the child never left the group")
		}
	}
	return g, pid, func() { hold.Close() }
}

func TestGroupExitStatus(t *testing.T) {
	s := NewScope(nil)
	defer s.Close(time.Second)
	for _, tc := range []struct {
		script string
		code   int
		sig    syscall.Signal
	}{
		{"exit 0", 0, 0},
		{"exit 3", 3, 0},
		{"kill -PIPE $$", -1, syscall.SIGPIPE},
	} {
		g, err := s.Start(Spec{Path: "/bin/sh", Argv: []string{"sh", "-c", tc.script}})
		if err != nil {
			t.Fatal(err)
		}
		st := g.Wait()
		if st.Code != tc.code || st.Signal != tc.sig || st.Err != nil {
			t.Errorf("%s: %+v", tc.script, st)
		}
		if n := g.Cleanup(time.Second); n != 0 {
			t.Errorf("%s: %d leftovers", tc.script, n)
		}
	}
}

func TestStartMissingProgram(t *testing.T) {
	s := NewScope(nil)
	defer s.Close(time.Second)
	_, err := s.Start(Spec{Path: "/nonexistent/prog", Argv: []string{"prog"}})
	if err != syscall.ENOENT {
		t.Fatalf("err %v, want ENOENT", err)
	}
}

// TestReaperLeavesLeadersAlone: with the reaper busy reaping orphans (each
// group leaves one behind, which exits at once), every leader's exit
// status still reaches its Group, and every orphan is reaped.
func TestReaperLeavesLeadersAlone(t *testing.T) {
	s := NewScope(nil)
	defer s.Close(time.Second)
	var wg sync.WaitGroup
	errs := make(chan string, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g, err := s.Start(Spec{Path: "/bin/sh", Argv: []string{"sh", "-c", "(true &); exit " + strconv.Itoa(i%200)}})
			if err != nil {
				errs <- err.Error()
				return
			}
			if st := g.Wait(); st.Code != i%200 {
				errs <- fmt.Sprintf("group %d: %+v", i, st)
			}
			g.Cleanup(time.Second)
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	// And the orphans were reaped as they exited: no zombie is left once
	// the leaders are gone.
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var zombies []int
		for pid, st := range Snapshot() {
			if st.PPid == os.Getpid() && st.State == 'Z' {
				zombies = append(zombies, pid)
			}
		}
		if len(zombies) == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("zombie children left: %v", zombies)
		}
	}
}

// TestGroupStopReachesProcessesThatLeftTheGroup: a process below the leader
// that started its own session still gets the stage's SIGTERM.
func TestGroupStopReachesProcessesThatLeftTheGroup(t *testing.T) {
	s := NewScope(nil)
	defer s.Close(time.Second)
	g, pid, release := startWithSetsidChild(t, s, "sleep 303")
	defer release()
	g.Stop(5 * time.Second)
	waitGoneFor(t, []int{pid}, 2*time.Second)
	g.Wait()
	g.Cleanup(time.Second)
}

// TestCleanupStopsWhatIsLeftInTheGroup: the leader exits, a member that
// ignores SIGTERM is killed after grace.
func TestCleanupStopsWhatIsLeftInTheGroup(t *testing.T) {
	s := NewScope(nil)
	defer s.Close(time.Second)
	r, w, _ := os.Pipe()
	defer r.Close()
	g, err := s.Start(Spec{Path: "/bin/sh", Argv: []string{"sh", "-c", "sh -c 'trap \"\" TERM; echo $$; exec sleep 304' & read x <&-; exit 0"}, Stdout: w})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(r).ReadString('\n')
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	g.Wait()
	start := time.Now()
	if n := g.Cleanup(300 * time.Millisecond); n != 1 {
		t.Errorf("Cleanup found %d leftovers, want 1", n)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("Cleanup took %s: the member ignoring SIGTERM was not given its grace", took)
	}
	waitGoneFor(t, []int{pid}, time.Second)
}

// TestScopeCloseStopsAdoptedOrphans: a process that left the group and whose
// parent exited is adopted by the subreaper and stopped when the scope
// closes, unless the keep list names it; nothing is left a zombie.
func TestScopeCloseStopsAdoptedOrphans(t *testing.T) {
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep=%v", keep), func(t *testing.T) {
			var names []string
			if keep {
				names = []string{"sleep"}
			}
			s := NewScope(names)
			g, pid, release := startWithSetsidChild(t, s, "sleep 305")
			release()
			g.Wait()
			g.Cleanup(time.Second)
			var rd Reader
			if st, _ := rd.Stat(pid); st.PPid != os.Getpid() {
				t.Fatalf("the orphan's parent is %d, want pipespool (%d): not adopted", st.PPid, os.Getpid())
			}
			stopped, kept := s.Close(time.Second)
			if keep {
				if len(stopped) != 0 || len(kept) != 1 || kept[0].Pid != pid || !alive(pid) {
					t.Fatalf("stopped %v kept %v, want %d kept alive", stopped, kept, pid)
				}
				unix.Kill(pid, syscall.SIGKILL)
				waitGoneFor(t, []int{pid}, time.Second)
				children() // reap it
				return
			}
			if len(stopped) != 1 || stopped[0].Pid != pid || stopped[0].Comm != "sleep" {
				t.Fatalf("stopped %v, want sleep %d", stopped, pid)
			}
			waitGoneFor(t, []int{pid}, time.Second)
			if st, ok := rd.Stat(pid); ok {
				t.Errorf("pid %d left as %c", pid, st.State)
			}
		})
	}
}

// TestParentDeathTakesTheChildren: pipespool killed with SIGKILL takes its
// stages with it (their parent-death signal), even though the goroutine
// that asked for the fork locked its thread and returned, which ends that
// thread (a child forked on it would have been killed then, long before).
func TestParentDeathTakesTheChildren(t *testing.T) {
	for _, what := range []string{"fork-then-lose-thread", "pipeline"} {
		t.Run(what, func(t *testing.T) {
			s := NewScope(nil)
			defer s.Close(time.Second)
			h, pids := startHelper(t, s, what)
			for _, p := range pids {
				if !alive(p) {
					t.Fatalf("child %d died while its parent lives", p)
				}
			}
			h.Signal(syscall.SIGKILL) // the helper's group: only the helper
			h.Wait()
			waitGoneFor(t, pids, time.Second)
		})
	}
}

func TestParseStatWithOddCommand(t *testing.T) {
	line := []byte("4242 (a) b (c)) S 1 4242 4241 0 -1 4194304 100 0 0 0 17 5 3 2 20 0 1 0 100 1000 10")
	st, ok := ParseStat(line)
	if !ok || st.Pid != 4242 || st.Comm != "a) b (c)" || st.State != 'S' || st.PPid != 1 || st.Pgrp != 4242 ||
		st.Sid != 4241 || st.UTime != 17 || st.STime != 5 || st.CUTime != 3 || st.CSTime != 2 || st.StartTime != 100 {
		t.Errorf("ParseStat = %+v, %v", st, ok)
	}
}

func TestDecodeSyscallLine(t *testing.T) {
	line := func(nr int, args string) string { return strconv.Itoa(nr) + " " + args + " 0x7ffd 0x4011" }
	for _, tc := range []struct{ in, want string }{
		{line(unix.SYS_EPOLL_PWAIT, "0x5 0x7ffd 0x80 0xffffffff 0x0 0x0"), "epoll_pwait(5, ...)"},
		{line(unix.SYS_WRITE, "0x1 0xc000100000 0x10000 0x0 0x0 0x0"), "write(1, ...)"},
		{line(unix.SYS_CLOCK_NANOSLEEP, "0x0 0x0 0x7ffd 0x7ffd 0x0 0x0"), "clock_nanosleep(...)"},
		{line(unix.SYS_PPOLL, "0x7ffd 0x2 0x0 0x0 0x0 0x0"), "ppoll(...)"},
		{"running", "running"},
		{"-1 0x7ffd 0x4011", "not in a syscall"},
	} {
		if _, _, got := DecodeSyscallLine([]byte(tc.in + "\n")); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestSyscallTableOnThisArch reads where a real process is blocked: a cat
// reading an empty pipe is in read(0, ...) on every architecture.
func TestSyscallTableOnThisArch(t *testing.T) {
	s := NewScope(nil)
	defer s.Close(time.Second)
	r, w, _ := os.Pipe()
	defer w.Close()
	g, err := s.Start(Spec{Path: "/bin/cat", Argv: []string{"cat"}, Stdin: r})
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	var rd Reader
	var b Blocked
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if b = rd.ReadBlocked(g.Pid(), g.Pid()); b.Syscall == "read(0, ...)" {
			break
		}
	}
	if b.Syscall != "read(0, ...)" || b.Info().Class != ClassRead || b.State != 'S' {
		t.Errorf("blocked %+v, want S in read(0, ...)", b)
	}
	w.Close()
	g.Wait()
	g.Cleanup(time.Second)
}

func TestParseIO(t *testing.T) {
	b := []byte("rchar: 10\nwchar: 20\nsyscr: 3\nsyscw: 4\nread_bytes: 4096\nwrite_bytes: 0\ncancelled_write_bytes: 0\n")
	if got := ParseIO(b); got != 10+20+4096 {
		t.Errorf("ParseIO = %d", got)
	}
}

func TestSignalName(t *testing.T) {
	if n := SignalName(syscall.SIGPIPE); n != "SIGPIPE" {
		t.Errorf("SIGPIPE: %q", n)
	}
	if n := SignalName(syscall.Signal(77)); n != "signal 77" {
		t.Errorf("77: %q", n)
	}
}

// BenchmarkSampleGroup is the /proc part of one monitor tick for one
// external stage.
func BenchmarkSampleGroup(b *testing.B) {
	var r Reader
	pid := os.Getpid()
	for b.Loop() {
		if s := r.SampleGroup(pid, nil); !s.Alive {
			b.Fatal("not alive")
		}
		r.FDPos(pid, 0)
	}
}

// BenchmarkChildren is the cost of listing pipespool's children, once per
// run's end.
func BenchmarkChildren(b *testing.B) {
	for b.Loop() {
		children()
	}
}

// TestScopeCloseFindsWhatAnExitingOrphanLeaves: an adopted orphan that
// exits while Close lists pipespool's children is reaped there, and the
// child it leaves is adopted after the list was read; Close must look
// again rather than take the empty round for the end (the torture saw a
// setsid'd sleep outlive its run). The orphan's exit is placed in that
// window by the test hook; Close before the fix returned with the
// grandchild running.
func TestScopeCloseFindsWhatAnExitingOrphanLeaves(t *testing.T) {
	s := NewScope(nil)
	// The orphan: a shell out of the group (setsid) with a sleep of its
	// own, which it waits for.
	g, orphan, release := startWithSetsidChild(t, s, "sh -c 'sleep 307 & wait'")
	var rd Reader
	grandchild := 0
	for end := time.Now().Add(5 * time.Second); grandchild == 0; time.Sleep(5 * time.Millisecond) {
		for _, st := range Below(Snapshot(), orphan) {
			if st.Comm == "sleep" {
				grandchild = st.Pid
			}
		}
		if time.Now().After(end) {
			t.Fatal("the orphan's sleep never started")
		}
	}
	defer unix.Kill(grandchild, syscall.SIGKILL)
	release()
	g.Wait()
	g.Cleanup(time.Second)
	if st, _ := rd.Stat(orphan); st.PPid != os.Getpid() {
		t.Fatalf("the orphan's parent is %d, want pipespool (%d): not adopted", st.PPid, os.Getpid())
	}
	var once sync.Once
	testHookChildrenListed = func() {
		once.Do(func() {
			// The orphan dies after the list was read, and its
			// sleep is adopted.
			unix.Kill(orphan, syscall.SIGKILL)
			for end := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
				if st, _ := rd.Stat(grandchild); st.PPid == os.Getpid() {
					return
				}
				if time.Now().After(end) {
					t.Error("the sleep was never adopted")
					return
				}
			}
		})
	}
	defer func() { testHookChildrenListed = nil }()
	stopped, _ := s.Close(time.Second)
	waitGoneFor(t, []int{grandchild}, time.Second)
	found := false
	for _, st := range stopped {
		found = found || st.Pid == grandchild
	}
	if !found {
		t.Errorf("stopped %s, want the sleep (pid %d) among them", Describe(stopped), grandchild)
	}
}

func TestParseLocks(t *testing.T) {
	locks := []byte("1: POSIX  ADVISORY  WRITE 700 00:2d:5678 0 EOF\n" +
		"2: FLOCK  ADVISORY  WRITE 1234 08:01:99 0 EOF\n" +
		"2: -> FLOCK  ADVISORY  WRITE 1240 08:01:99 0 EOF\n" +
		"3: OFDLCK ADVISORY  READ  -1 00:05:12 0 EOF\n")
	for _, tc := range []struct {
		id   string
		pid  int
		find bool
	}{
		{"08:01:99", 1234, true},
		{"00:2d:5678", 700, true},
		{"00:05:12", 0, false}, // an OFD lock has no pid
		{"08:01:98", 0, false},
	} {
		pid, ok := parseLocks(locks, tc.id)
		if pid != tc.pid || ok != tc.find {
			t.Errorf("%s: got %d %v, want %d %v", tc.id, pid, ok, tc.pid, tc.find)
		}
	}
}
