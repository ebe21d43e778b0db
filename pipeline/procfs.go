package pipeline

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// procBufSize bounds one read of a /proc file: /proc/PID/stat and
// /proc/PID/io are a few hundred bytes; a children list of a stage's
// process tree stays far below this too.
const procBufSize = 4096

// maxGroupProcs bounds how many processes of one stage's group a sample
// visits besides the leader: a stage that forks more (a make -j) is still
// seen moving through the first maxGroupProcs of them.
const maxGroupProcs = 64

// procReader reads small /proc files into one reused buffer. Not safe for
// concurrent use: the monitor goroutine owns it.
type procReader struct {
	buf [procBufSize]byte
}

// read returns the content of /proc/PID/name (valid until the next call),
// or nil when it cannot be read (process gone, no permission).
func (pr *procReader) read(pid int, name string) []byte {
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	n := 0
	for n < len(pr.buf) {
		m, err := unix.Read(fd, pr.buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil
		}
		if m == 0 {
			break
		}
		n += m
	}
	return pr.buf[:n]
}

// procSample is what the monitor reads of one stage's processes per tick.
type procSample struct {
	alive bool
	cpu   uint64 // utime+stime (+cutime+cstime of the leader), clock ticks
	io    uint64 // rchar+wchar+read_bytes+write_bytes, where readable
}

// sampleGroup adds up CPU time and I/O counters of a stage's leader and the
// other members of its process group found by the last scanGroups. The
// leader's cutime and cstime count the children it already reaped, so a
// shell running short commands moves even between two scans.
func (pr *procReader) sampleGroup(leader int, members []int) procSample {
	var s procSample
	st, ok := parseStat(pr.read(leader, "stat"))
	if !ok {
		return s
	}
	// A zombie leader is over: whatever its group does now is cleanup.
	s.alive = st.state != 'Z' && st.state != 'X'
	s.cpu = st.utime + st.stime + st.cutime + st.cstime
	s.io = parseIO(pr.read(leader, "io"))
	for _, p := range members {
		if st, ok := parseStat(pr.read(p, "stat")); ok && st.pgrp == leader {
			s.cpu += st.utime + st.stime
			s.io += parseIO(pr.read(p, "io"))
		}
	}
	return s
}

// scanGroups lists, for each process group id in want, the live processes
// of that group other than its leader, by reading every /proc/PID/stat.
// It is the costly part of sampling (one read per process on the machine),
// so the monitor calls it at a slow cadence and before it declares a
// stall; /proc/PID/task/TID/children would be cheaper but needs
// CONFIG_PROC_CHILDREN, which not every kernel has.
func (pr *procReader) scanGroups(want map[int][]int) {
	for k := range want {
		want[k] = want[k][:0]
	}
	d, err := os.Open("/proc")
	if err != nil {
		return
	}
	defer d.Close()
	for {
		names, err := d.Readdirnames(256)
		for _, name := range names {
			if name[0] < '1' || name[0] > '9' {
				continue
			}
			pid, err := strconv.Atoi(name)
			if err != nil {
				continue
			}
			if _, leader := want[pid]; leader {
				continue
			}
			st, ok := parseStat(pr.read(pid, "stat"))
			if !ok || st.state == 'Z' || st.state == 'X' {
				continue
			}
			if m, ok := want[st.pgrp]; ok && len(m) < maxGroupProcs {
				want[st.pgrp] = append(m, pid)
			}
		}
		if err != nil {
			return
		}
	}
}

// nextField splits off the first space-separated field of b.
func nextField(b []byte) (field, rest []byte) {
	b = bytes.TrimLeft(b, " \n")
	i := bytes.IndexAny(b, " \n")
	if i < 0 {
		return b, nil
	}
	return b[:i], b[i:]
}

// statFields are the fields of /proc/PID/stat the monitor uses.
type statFields struct {
	state          byte
	pgrp           int
	utime, stime   uint64
	cutime, cstime uint64 // children already reaped
}

// parseStat parses /proc/PID/stat. The command name (field 2) is in
// parentheses and may itself contain spaces and parentheses: the fields
// after it start after the last ')'.
func parseStat(b []byte) (statFields, bool) {
	var st statFields
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return st, false
	}
	rest := b[i+2:]
	// Fields from 3 (state) on, numbered as in proc(5).
	for n := 3; n <= 17 && len(rest) > 0; n++ {
		var f []byte
		f, rest = nextField(rest)
		switch n {
		case 3:
			if len(f) > 0 {
				st.state = f[0]
			}
		case 5:
			st.pgrp, _ = strconv.Atoi(string(f))
		case 14:
			st.utime, _ = strconv.ParseUint(string(f), 10, 64)
		case 15:
			st.stime, _ = strconv.ParseUint(string(f), 10, 64)
		case 16:
			st.cutime, _ = strconv.ParseUint(string(f), 10, 64)
		case 17:
			st.cstime, _ = strconv.ParseUint(string(f), 10, 64)
			return st, st.state != 0
		}
	}
	return st, false
}

// parseStatComm returns the command name of /proc/PID/stat.
func parseStatComm(b []byte) string {
	i, j := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if i < 0 || j < i {
		return ""
	}
	return string(b[i+1 : j])
}

// parseIO adds up the counters of /proc/PID/io that move when a process
// reads or writes anything: rchar, wchar, read_bytes, write_bytes. The
// file is unreadable without ptrace access or on kernels without task I/O
// accounting: then it counts 0 and CPU time and the links still show
// progress.
func parseIO(b []byte) uint64 {
	var sum uint64
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		k := bytes.IndexByte(line, ':')
		if k < 0 {
			continue
		}
		switch string(line[:k]) {
		case "rchar", "wchar", "read_bytes", "write_bytes":
			v, _ := strconv.ParseUint(string(bytes.TrimSpace(line[k+1:])), 10, 64)
			sum += v
		}
	}
	return sum
}

// fdPos returns the file offset of fd of process pid from
// /proc/PID/fdinfo/FD, or -1. It is how the monitor follows a file handed
// directly to a stage: Seek on our own copy shares the offset but is not
// safe while the stage uses it, reading fdinfo is.
func (pr *procReader) fdPos(pid, fd int) int64 {
	b := pr.read(pid, "fdinfo/"+strconv.Itoa(fd))
	if !bytes.HasPrefix(b, []byte("pos:")) {
		return -1
	}
	line, _, _ := bytes.Cut(b[4:], []byte{'\n'})
	v, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 10, 64)
	if err != nil {
		return -1
	}
	return v
}

// blocked describes where one thread of a stalled stage is: its state,
// wchan and the decoded syscall. Read only when a stall is diagnosed.
type blocked struct {
	tid     int
	child   bool // tid is a child process of the stage, not a thread
	comm    string
	state   byte
	wchan   string
	nr      int // syscall number, -1 when not in a syscall, -2 when unknown
	args    [6]uint64
	syscall string // decoded: "write(1, ...)", "running", "" when unknown
}

// readBlocked reads the state, wchan and syscall of thread tid of pid.
func (pr *procReader) readBlocked(pid, tid int) blocked {
	b := blocked{tid: tid, nr: -2}
	base := "task/" + strconv.Itoa(tid) + "/"
	stat := pr.read(pid, base+"stat")
	if st, ok := parseStat(stat); ok {
		b.state = st.state
	}
	b.comm = parseStatComm(stat)
	if w := pr.read(pid, base+"wchan"); len(w) > 0 && string(w) != "0" {
		b.wchan = string(w)
	}
	b.nr, b.args, b.syscall = decodeSyscallLine(pr.read(pid, base+"syscall"))
	return b
}

// decodeSyscallLine decodes /proc/PID/syscall: "NR ARG1 ... ARG6 SP PC"
// while blocked in a syscall, "-1 SP PC" while blocked outside one,
// "running" while on a CPU.
func decodeSyscallLine(b []byte) (nr int, args [6]uint64, text string) {
	s := strings.TrimSpace(string(b))
	if s == "" {
		return -2, args, ""
	}
	if s == "running" {
		return -1, args, "running"
	}
	f := strings.Fields(s)
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return -2, args, ""
	}
	if n < 0 {
		return -1, args, "not in a syscall"
	}
	for i := 0; i < 6 && i+1 < len(f); i++ {
		args[i], _ = strconv.ParseUint(strings.TrimPrefix(f[i+1], "0x"), 16, 64)
	}
	return n, args, formatSyscall(n, args)
}

// formatSyscall renders a blocked syscall the way strace starts it: the
// name, and the fd when the first argument is one ("write(1, ...)").
func formatSyscall(nr int, args [6]uint64) string {
	info, ok := syscallTable[nr]
	if !ok {
		return fmt.Sprintf("syscall_%d(...)", nr)
	}
	if info.fdArg {
		return fmt.Sprintf("%s(%d, ...)", info.name, int32(args[0]))
	}
	return info.name + "(...)"
}

// syscallInfo names a syscall and says whether its first argument is an fd.
type syscallInfo struct {
	name  string
	fdArg bool
	class syscallClass
}

// syscallClass groups the syscalls a stall diagnosis reasons about.
type syscallClass int

const (
	classOther syscallClass = iota
	classRead               // reads an fd: read, readv, splice from it
	classWrite              // writes an fd
	classReady              // waits for readiness: epoll, poll, select
	classWait               // waits for a child, a lock or time
)

// syscallName returns the name of syscall nr, or "".
func syscallName(nr int) string { return syscallTable[nr].name }
