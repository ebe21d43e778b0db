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
