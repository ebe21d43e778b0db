package proc

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// SyscallClass groups the system calls a stall diagnosis reasons about.
type SyscallClass int

// The classes of system call.
const (
	ClassOther SyscallClass = iota
	ClassRead               // reads an fd: read, readv, splice from it
	ClassWrite              // writes an fd
	ClassReady              // waits for readiness: epoll, poll, select
	ClassWait               // waits for a child, a lock or time
)

// IO reports whether the class moves bytes or waits for an fd to be ready.
func (c SyscallClass) IO() bool { return c == ClassRead || c == ClassWrite || c == ClassReady }

// SyscallInfo names a system call and says whether its first argument is
// an fd.
type SyscallInfo struct {
	Name  string
	FDArg bool
	Class SyscallClass
}

// LookupSyscall returns what pipespool knows of system call nr on this
// architecture.
func LookupSyscall(nr int) (SyscallInfo, bool) {
	info, ok := syscalls[nr]
	return info, ok
}

// syscalls is keyed by x/sys/unix's numbers for the architecture pipespool
// was built for, so a diagnosis decodes /proc/PID/syscall on arm64 as on
// amd64. The calls are those a stuck stream program sits in; the ones an
// architecture lacks (arm64 has no poll, select or epoll_wait, only their
// p-variants) are added by the files built for the others.
var syscalls = map[int]SyscallInfo{
	unix.SYS_READ:            {"read", true, ClassRead},
	unix.SYS_WRITE:           {"write", true, ClassWrite},
	unix.SYS_PREAD64:         {"pread64", true, ClassRead},
	unix.SYS_PWRITE64:        {"pwrite64", true, ClassWrite},
	unix.SYS_READV:           {"readv", true, ClassRead},
	unix.SYS_WRITEV:          {"writev", true, ClassWrite},
	unix.SYS_PREADV:          {"preadv", true, ClassRead},
	unix.SYS_PWRITEV:         {"pwritev", true, ClassWrite},
	unix.SYS_SENDFILE:        {"sendfile", true, ClassWrite},
	unix.SYS_SPLICE:          {"splice", true, ClassRead},
	unix.SYS_TEE:             {"tee", true, ClassRead},
	unix.SYS_CONNECT:         {"connect", true, ClassOther},
	unix.SYS_ACCEPT4:         {"accept4", true, ClassOther},
	unix.SYS_SENDTO:          {"sendto", true, ClassWrite},
	unix.SYS_RECVFROM:        {"recvfrom", true, ClassRead},
	unix.SYS_SENDMSG:         {"sendmsg", true, ClassWrite},
	unix.SYS_RECVMSG:         {"recvmsg", true, ClassRead},
	unix.SYS_PPOLL:           {"ppoll", false, ClassReady},
	unix.SYS_PSELECT6:        {"pselect6", false, ClassReady},
	unix.SYS_EPOLL_PWAIT:     {"epoll_pwait", true, ClassReady},
	unix.SYS_EPOLL_PWAIT2:    {"epoll_pwait2", true, ClassReady},
	unix.SYS_NANOSLEEP:       {"nanosleep", false, ClassWait},
	unix.SYS_CLOCK_NANOSLEEP: {"clock_nanosleep", false, ClassWait},
	unix.SYS_WAIT4:           {"wait4", false, ClassWait},
	unix.SYS_WAITID:          {"waitid", false, ClassWait},
	unix.SYS_FLOCK:           {"flock", true, ClassWait},
	unix.SYS_FSYNC:           {"fsync", true, ClassOther},
	unix.SYS_FDATASYNC:       {"fdatasync", true, ClassOther},
	unix.SYS_RT_SIGTIMEDWAIT: {"rt_sigtimedwait", false, ClassWait},
	unix.SYS_RT_SIGSUSPEND:   {"rt_sigsuspend", false, ClassWait},
	unix.SYS_FUTEX:           {"futex", false, ClassWait},
	unix.SYS_IO_GETEVENTS:    {"io_getevents", false, ClassWait},
	unix.SYS_IO_URING_ENTER:  {"io_uring_enter", true, ClassWait},
}

// addSyscalls adds the calls of one architecture family to the table.
func addSyscalls(m map[int]SyscallInfo) {
	for nr, info := range m {
		syscalls[nr] = info
	}
}

// Blocked describes where one thread of a process is: its state, wchan and
// the system call it is in.
type Blocked struct {
	Tid   int
	Comm  string
	State byte
	WChan string
	// Nr is the system call number, -1 when not in a system call, -2 when
	// unknown (the file is unreadable).
	Nr      int
	Args    [6]uint64
	Syscall string // decoded: "write(1, ...)", "running", "" when unknown
}

// Info returns what is known of the system call the thread is in.
func (b Blocked) Info() SyscallInfo { return syscalls[b.Nr] }

// ReadBlocked reads the state, wchan and system call of thread tid of pid.
func (r *Reader) ReadBlocked(pid, tid int) Blocked {
	b := Blocked{Tid: tid, Nr: -2}
	base := "task/" + strconv.Itoa(tid) + "/"
	if st, ok := ParseStat(r.Read(pid, base+"stat")); ok {
		b.State, b.Comm = st.State, st.Comm
	}
	if w := r.Read(pid, base+"wchan"); len(w) > 0 && string(w) != "0" {
		b.WChan = string(w)
	}
	b.Nr, b.Args, b.Syscall = DecodeSyscallLine(r.Read(pid, base+"syscall"))
	return b
}

// DecodeSyscallLine decodes /proc/PID/syscall: "NR ARG1 ... ARG6 SP PC"
// while blocked in a system call, "-1 SP PC" while blocked outside one,
// "running" while on a CPU.
func DecodeSyscallLine(b []byte) (nr int, args [6]uint64, text string) {
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

// formatSyscall renders a blocked system call the way strace starts it: the
// name, and the fd when the first argument is one ("write(1, ...)").
func formatSyscall(nr int, args [6]uint64) string {
	info, ok := syscalls[nr]
	if !ok {
		return fmt.Sprintf("syscall_%d(...)", nr)
	}
	if info.FDArg {
		return fmt.Sprintf("%s(%d, ...)", info.Name, int32(args[0]))
	}
	return info.Name + "(...)"
}
