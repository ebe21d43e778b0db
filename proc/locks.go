package proc

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// LockHolder returns the process that holds a lock on the file at path, as
// /proc/locks names it: the pid of the process that took the lock (which
// may have passed the descriptor on to a child, as flock(1) does), and its
// command name when it is still running. ok is false when no holder is
// listed or /proc/locks cannot be read: the answer is a hint for a message,
// never a decision.
func LockHolder(path string) (pid int, comm string, ok bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, "", false
	}
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0, "", false
	}
	pid, ok = parseLocks(b, fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino))
	if !ok {
		return 0, "", false
	}
	var r Reader
	if s, live := r.Stat(pid); live {
		comm = s.Comm
	}
	return pid, comm, true
}

// parseLocks finds the holder of the lock on the file whose
// "MAJOR:MINOR:INODE" is id in the text of /proc/locks: lines such as
//
//	1: FLOCK  ADVISORY  WRITE 1234 00:2d:5678 0 EOF
//	1: -> FLOCK  ADVISORY  WRITE 1240 00:2d:5678 0 EOF
//
// where "->" marks a process waiting for the lock, not holding it.
func parseLocks(b []byte, id string) (int, bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) < 6 || string(f[1]) == "->" {
			continue
		}
		if string(f[5]) != id {
			continue
		}
		if pid, err := strconv.Atoi(string(f[4])); err == nil && pid > 0 {
			return pid, true
		}
	}
	return 0, false
}
