package integration

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// storm disturbs the processes of the torture runs while they run: it
// stops and continues them (SIGSTOP/SIGCONT, which makes epoll_wait, read
// and friends return EINTR or restart), attaches and detaches strace (the
// incidents' hangs vanished under strace: ptrace attach interrupts blocking
// syscalls the same way), and sends SIGCHLD noise to pipespool. Every
// stopped process is continued before the storm moves on, and at most one
// strace runs at a time.
type storm struct {
	rng     *rand.Rand
	prefix  string // the marker prefix of the runs' processes
	stop    chan struct{}
	done    chan struct{}
	stops   atomic.Int64
	straces atomic.Int64
	chlds   atomic.Int64
	// leftover counts strace processes still alive after Stop waited for
	// the storm: each was killed then, and the test fails on any.
	leftover int

	// A signal sent to a traced process is lost when strace detaches
	// while the process is in its signal-delivery stop: strace's detach
	// passes no signal on (measured: 34 of 200 SIGTERMs sent to a Go
	// program as strace got its SIGINT were never delivered). The test's
	// own signal to a pipespool must arrive, so the pipespool it is about
	// to signal is spared: no strace attaches to it from then on, and the
	// signal waits for the one tracing it to be gone (spare).
	mu      sync.Mutex
	changed *sync.Cond   // tracing or spared changed
	tracing int          // the pid strace is attached to, 0 for none
	spared  map[int]bool // pids no strace may attach to any more
}

// spare keeps strace off pid from now on, and returns once no strace of the
// storm traces it: a signal sent to pid after that is not lost. done
// forgets pid (a pid is reused).
func (s *storm) spare(pid int) (done func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.spared[pid] = true
	for s.tracing == pid {
		s.changed.Wait()
	}
	return func() {
		s.mu.Lock()
		delete(s.spared, pid)
		s.mu.Unlock()
	}
}

// startTracing claims the storm's one strace for pid, unless pid is spared
// or another strace runs; endTracing releases it.
func (s *storm) startTracing(pid int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tracing != 0 || s.spared[pid] {
		return false
	}
	s.tracing = pid
	return true
}

func (s *storm) endTracing() {
	s.mu.Lock()
	s.tracing = 0
	s.mu.Unlock()
	s.changed.Broadcast()
}

func startStorm(seed uint64, prefix string) *storm {
	s := &storm{rng: rand.New(rand.NewPCG(seed, 0x73746f726d)), prefix: prefix,
		stop: make(chan struct{}), done: make(chan struct{}), spared: map[int]bool{}}
	s.changed = sync.NewCond(&s.mu)
	go s.loop()
	return s
}

// Stop ends the storm and waits for it: nothing is left stopped or traced.
// An strace still alive after that (none should be: each was waited for)
// is killed and counted in leftover.
func (s *storm) Stop() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
		<-s.done
		for _, pid := range childrenNamed("strace") {
			syscall.Kill(pid, syscall.SIGKILL)
			s.leftover++
		}
	}
	<-s.done
}

// tracerOf returns the pid tracing pid (TracerPid in its status), 0 when
// none or when pid is gone.
func tracerOf(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("TracerPid:")); ok {
			n, _ := strconv.Atoi(string(bytes.TrimSpace(v)))
			return n
		}
	}
	return 0
}

// processExists reports whether pid is alive (a zombie counts as gone).
func processExists(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && len(b) > i+2 && b[i+2] != 'Z' && b[i+2] != 'X'
}

// childrenNamed lists the live child processes of the test binary whose
// command name is comm.
func childrenNamed(comm string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || end < open {
			continue
		}
		f := bytes.Fields(b[end+1:])
		if string(b[open+1:end]) == comm && len(f) > 1 && string(f[0]) != "Z" && string(f[1]) == strconv.Itoa(os.Getpid()) {
			pid, _ := strconv.Atoi(e.Name())
			pids = append(pids, pid)
		}
	}
	return pids
}

func (s *storm) pause(d time.Duration) bool {
	select {
	case <-s.stop:
		return false
	case <-time.After(d):
		return true
	}
}

func (s *storm) loop() {
	defer close(s.done)
	var wg sync.WaitGroup
	defer wg.Wait()
	for s.pause(time.Duration(5+s.rng.IntN(40)) * time.Millisecond) {
		pipespools, stages := s.targets()
		all := append(append([]int(nil), pipespools...), stages...)
		if len(all) == 0 {
			continue
		}
		pid := all[s.rng.IntN(len(all))]
		switch x := s.rng.IntN(10); {
		case x < 5:
			syscall.Kill(pid, syscall.SIGSTOP)
			time.Sleep(time.Duration(s.rng.IntN(20000)) * time.Microsecond)
			syscall.Kill(pid, syscall.SIGCONT)
			s.stops.Add(1)
		case x < 7:
			if !s.startTracing(pid) {
				continue
			}
			d := time.Duration(10+s.rng.IntN(200)) * time.Millisecond
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer s.endTracing()
				st := exec.Command("strace", "-f", "-qq", "-p", strconv.Itoa(pid), "-o", "/dev/null")
				// Dies with the test: an strace left behind keeps its
				// tracees in ptrace stops (seen after test binaries were
				// killed). In a group of its own: at start-up strace forks
				// children of its own to probe ptrace (they pause), and an
				// strace interrupted then leaves them behind, orphaned;
				// the group is killed once strace is over.
				st.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
				if st.Start() != nil {
					return
				}
				s.straces.Add(1)
				// Interrupt it only once it has attached (or its tracee is
				// gone): past its start-up probes.
				attached := time.Now().Add(5 * time.Second)
				for tracerOf(pid) != st.Process.Pid && processExists(pid) && time.Now().Before(attached) {
					time.Sleep(2 * time.Millisecond)
				}
				select {
				case <-time.After(d):
				case <-s.stop:
				}
				// SIGINT makes strace detach cleanly (SIGKILL could leave a
				// tracee in a ptrace stop).
				// It has been seen to hang in wait4 when its tracee exited
				// meanwhile: SIGKILL it after a while.
				st.Process.Signal(syscall.SIGINT)
				waited := make(chan struct{})
				go func() { st.Wait(); close(waited) }()
				select {
				case <-waited:
				case <-time.After(5 * time.Second):
					st.Process.Kill()
					<-waited
				}
				syscall.Kill(-st.Process.Pid, syscall.SIGKILL)
			}()
		default:
			if len(pipespools) > 0 {
				syscall.Kill(pipespools[s.rng.IntN(len(pipespools))], syscall.SIGCHLD)
				s.chlds.Add(1)
			}
		}
	}
}

// isGroupLeader reports whether a process leads its process group: a
// stage's main process. Only those are stopped. A process a stage left
// behind, stopped at the instant its stage's main process exits, gets
// SIGHUP from the kernel (its group has just become orphaned with a stopped
// member, POSIX job control) and dies without a trace: that is the storm
// killing it, not pipespool losing it (TORTURE_SEED=20261123 runs 3034 and
// 5142, docs/internals/reliability.md).
func isGroupLeader(pid string) bool {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return false
	}
	f := bytes.Fields(b[i+1:])
	return len(f) > 2 && string(f[2]) == pid
}

// targets lists the live pipespool processes started by this test binary
// and the processes of the torture runs (their argv holds the prefix).
func (s *storm) targets() (pipespools, stages []int) {
	ents, _ := os.ReadDir("/proc")
	self := []byte(pipespoolBin)
	prefix := []byte(s.prefix)
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		pid, _ := strconv.Atoi(e.Name())
		argv0, _, _ := bytes.Cut(cmdline, []byte{0})
		switch {
		case bytes.Equal(argv0, self):
			pipespools = append(pipespools, pid)
		case bytes.Contains(cmdline, prefix) && !bytes.HasPrefix(argv0, []byte("strace")) && isGroupLeader(e.Name()):
			stages = append(stages, pid)
		}
	}
	return pipespools, stages
}
