package proc

import (
	"bufio"
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

// TestChildrenListsEveryChild: children reads the children lists of two
// threads only (the leader and the forker), yet lists every child of
// pipespool that is no group's leader, whichever thread of pipespool the
// kernel made its parent: orphans of a double fork, of a setsid daemon,
// orphans adopted while their stage still runs, and a process a stage
// cloned as its own sibling (CLONE_PARENT), whose parent is the forker
// thread. The groups are started from goroutines that lock their thread
// and return, so that the runtime starts and ends threads meanwhile. The
// truth is every process /proc names pipespool as the parent of. Listing
// the leader's list alone misses the clone; the forker's alone, the
// orphans.
func TestChildrenListsEveryChild(t *testing.T) {
	s := NewScope(nil)
	defer s.Close(time.Second)
	scripts := []string{
		// Double fork: the sleep is adopted when its subshell exits.
		`(sleep 310 </dev/null >/dev/null 2>&1 & echo $!) ; echo ready; exit 0`,
		// A daemon in a session of its own, left behind.
		`setsid sleep 311 </dev/null >/dev/null 2>&1 & echo $!; echo ready; exit 0`,
		// Adopted while the stage still runs: the subshell exits, the
		// stage waits on its stdin.
		`(sleep 312 </dev/null >/dev/null 2>&1 & echo $!) ; echo ready; read x`,
		// Adopted past a living grandparent: the orphan goes to the
		// subreaper, not to the shell in between, which still waits.
		`sh -c 'sh -c "sleep 313 </dev/null >/dev/null 2>&1 & echo \$!" & wait; echo ready; read x' ; exit 0`,
	}
	in, hold, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	defer hold.Close()
	var (
		mu     sync.Mutex
		want   []int
		groups []*Group
		wg     sync.WaitGroup
	)
	start := func(spec Spec) {
		defer wg.Done()
		runtime.LockOSThread() // and return: the runtime ends the thread
		r, w, err := os.Pipe()
		if err != nil {
			t.Error(err)
			return
		}
		defer r.Close()
		spec.Stdin, spec.Stdout = in, w
		g, err := s.Start(spec)
		w.Close()
		if err != nil {
			t.Error(err)
			return
		}
		var pids []int
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if line := sc.Text(); line != "ready" {
				pid, err := strconv.Atoi(strings.TrimSpace(line))
				if err != nil {
					t.Errorf("%s printed %q", spec.Argv[len(spec.Argv)-1], line)
					return
				}
				pids = append(pids, pid)
			} else {
				break
			}
		}
		mu.Lock()
		defer mu.Unlock()
		want = append(want, pids...)
		groups = append(groups, g)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		for _, script := range scripts {
			wg.Add(1)
			go start(Spec{Path: "/bin/sh", Argv: []string{"sh", "-c", script}})
		}
		wg.Add(1)
		go start(Spec{Path: exe, Argv: []string{exe, "-test.run=^$"}, Env: append(os.Environ(), helperEnv+"=clone-parent")})
	}
	wg.Wait()
	defer func() {
		for _, pid := range want {
			unix.Kill(pid, syscall.SIGKILL)
		}
		hold.Close()
		for _, g := range groups {
			g.Signal(syscall.SIGKILL)
			g.Wait()
			g.Cleanup(time.Second)
		}
		waitGoneFor(t, want, 5*time.Second)
	}()
	if t.Failed() {
		return
	}
	if len(want) != 4*len(scripts)+4 {
		t.Fatalf("the stages printed %d pids, want %d", len(want), 4*len(scripts)+4)
	}
	// Every one of them is pipespool's child once the parents between
	// have exited.
	var rd Reader
	for _, pid := range want {
		for end := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if st, _ := rd.Stat(pid); st.PPid == os.Getpid() {
				break
			}
			if time.Now().After(end) {
				t.Fatalf("pid %d never became a child of the test process", pid)
			}
		}
	}
	listed := map[int]bool{}
	for _, pid := range children() {
		listed[pid] = true
	}
	for _, pid := range want {
		if !listed[pid] {
			t.Errorf("child %d (%s) not listed", pid, Cmdline(pid))
		}
	}
	reg.mu.Lock()
	leaders := map[int]bool{}
	for pid := range reg.leaders {
		leaders[pid] = true
	}
	reg.mu.Unlock()
	for pid, st := range Snapshot() {
		if st.PPid == os.Getpid() && st.Live() && !leaders[pid] && !listed[pid] {
			t.Errorf("child %d (%s) not listed", pid, st.Comm)
		}
	}
}

// startLeavingMembers starts a shell that starts script in the background,
// in its group, prints what script prints (pids, one a line) and exits;
// it returns once n pids were read and the shell has exited.
func startLeavingMembers(t *testing.T, s *Scope, script string, n int) (*Group, []int) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	g, err := s.Start(Spec{Path: "/bin/sh", Argv: []string{"sh", "-c", "sh -c '" + script + "' & exit 0"}, Stdout: w})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	br := bufio.NewReader(r)
	for len(pids) < n {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("read %v, then: %v", pids, err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(line))
		if err != nil {
			t.Fatalf("printed %q", line)
		}
		pids = append(pids, pid)
	}
	g.Wait()
	return g, pids
}

// TestCleanupFindsMembersBelowAMember: the leader exits and leaves a
// member that lives, with a member of its own below it: Cleanup finds
// both (the second below the first, not among pipespool's children), and
// both ignore SIGTERM, so both get SIGKILL after grace.
func TestCleanupFindsMembersBelowAMember(t *testing.T) {
	s := NewScope(nil)
	defer s.Close(time.Second)
	g, pids := startLeavingMembers(t, s, `trap "" TERM; echo $$; sleep 322 & echo $!; wait`, 2)
	defer func() {
		for _, pid := range pids {
			unix.Kill(pid, syscall.SIGKILL)
		}
	}()
	if n := g.Cleanup(200 * time.Millisecond); n != 2 {
		t.Errorf("Cleanup found %d leftovers, want 2 (the shell %d and its sleep %d)", n, pids[0], pids[1])
	}
	waitGoneFor(t, pids, time.Second)
}

// TestCleanupFindsMembersOfAMemberExitingWhileListed: a member that exits
// after pipespool's children were listed leaves its own child, a member
// too, to pipespool after the list was read; Cleanup looks again and stops
// it. The exit is put in that window by the test hook.
func TestCleanupFindsMembersOfAMemberExitingWhileListed(t *testing.T) {
	s := NewScope(nil)
	defer s.Close(time.Second)
	g, pids := startLeavingMembers(t, s, `echo $$; sleep 323 & echo $!; wait`, 2)
	member, sleep := pids[0], pids[1]
	defer unix.Kill(sleep, syscall.SIGKILL)
	var rd Reader
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if st, _ := rd.Stat(member); st.PPid == os.Getpid() {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the member was never adopted")
		}
	}
	var once sync.Once
	testHookChildrenListed = func() {
		once.Do(func() {
			unix.Kill(member, syscall.SIGKILL)
			for end := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
				if st, _ := rd.Stat(sleep); st.PPid == os.Getpid() {
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
	if n := g.Cleanup(time.Second); n != 1 {
		t.Errorf("Cleanup found %d leftovers, want 1 (the sleep %d)", n, sleep)
	}
	waitGoneFor(t, []int{sleep}, time.Second)
}
