package proc

import (
	"errors"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A process pipespool did not fork (a stage's grandchild) can exit and be
// reaped between the moment /proc showed it and the moment it is
// signalled, and its pid can then be given to an unrelated process. So a
// process is signalled through a pidfd, opened first and then checked to
// still be the process the snapshot saw (same start time): a pidfd always
// names the process it was opened for.

// samePid opens a pidfd for st's process, or returns -1 when that process
// is gone. ok is false when the kernel has no pidfd_open (before 5.3).
func samePid(st Stat) (fd int, ok bool) {
	fd, err := unix.PidfdOpen(st.Pid, 0)
	if errors.Is(err, unix.ENOSYS) {
		return -1, false
	}
	if err != nil {
		return -1, true
	}
	var r Reader
	if now, live := r.Stat(st.Pid); !live || now.StartTime != st.StartTime {
		unix.Close(fd)
		return -1, true
	}
	return fd, true
}

// signalProcess sends sig to the process st describes, if it still lives.
func signalProcess(st Stat, sig syscall.Signal) {
	fd, ok := samePid(st)
	if !ok {
		// No pidfds: the start time narrows the window to the time
		// between this read and the kill.
		var r Reader
		if now, live := r.Stat(st.Pid); live && now.StartTime == st.StartTime {
			unix.Kill(st.Pid, sig)
		}
		return
	}
	if fd < 0 {
		return
	}
	unix.PidfdSendSignal(fd, sig, nil, 0)
	unix.Close(fd)
}

// fallbackPoll is how often waitExit looks at /proc on a kernel without
// pidfds.
const fallbackPoll = 20 * time.Millisecond

// waitExit waits until every process of procs has exited (or become a
// zombie), at most until deadline, and returns those still alive.
func waitExit(procs []Stat, deadline time.Time) []Stat {
	type watched struct {
		fd int
		st Stat
	}
	var ws []watched
	var unwatched []Stat // no pidfds on this kernel
	for _, st := range procs {
		fd, ok := samePid(st)
		switch {
		case !ok:
			unwatched = append(unwatched, st)
		case fd >= 0:
			ws = append(ws, watched{fd, st})
		}
	}
	defer func() {
		for _, w := range ws {
			unix.Close(w.fd)
		}
	}()
	for len(ws) > 0 {
		ms := time.Until(deadline).Milliseconds()
		if ms <= 0 {
			break
		}
		pfds := make([]unix.PollFd, len(ws))
		for i, w := range ws {
			pfds[i] = unix.PollFd{Fd: int32(w.fd), Events: unix.POLLIN}
		}
		if _, err := unix.Poll(pfds, int(min(ms, 1<<30))); err != nil && err != unix.EINTR {
			break
		}
		keep := ws[:0]
		for i, w := range ws {
			if pfds[i].Revents != 0 {
				unix.Close(w.fd)
				continue
			}
			keep = append(keep, w)
		}
		ws = keep
	}
	var r Reader
	for len(unwatched) > 0 && time.Now().Before(deadline) {
		keep := unwatched[:0]
		for _, st := range unwatched {
			if now, ok := r.Stat(st.Pid); ok && now.Live() && now.StartTime == st.StartTime {
				keep = append(keep, st)
			}
		}
		if unwatched = keep; len(unwatched) > 0 {
			time.Sleep(fallbackPoll)
		}
	}
	left := unwatched
	for _, w := range ws {
		left = append(left, w.st)
	}
	return left
}

// Terminate sends SIGTERM and SIGCONT to each of procs that still lives,
// then SIGKILL after grace to those still alive. It returns at once.
func Terminate(procs []Stat, grace time.Duration) {
	if len(procs) == 0 {
		return
	}
	for _, st := range procs {
		signalProcess(st, syscall.SIGTERM)
		signalProcess(st, syscall.SIGCONT)
	}
	go func() {
		for _, st := range waitExit(procs, time.Now().Add(grace)) {
			signalProcess(st, syscall.SIGKILL)
		}
	}()
}
