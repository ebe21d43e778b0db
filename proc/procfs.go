package proc

import (
	"bytes"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// bufSize bounds one read of a /proc file: stat, io, syscall, fdinfo and
// wchan are a few hundred bytes.
const bufSize = 4096

// Reader reads small /proc files into one reused buffer, so that sampling a
// stage every second allocates nothing. Not safe for concurrent use: each
// goroutine that samples has its own.
type Reader struct {
	buf [bufSize]byte
}

// Read returns the content of /proc/PID/name (valid until the next call),
// or nil when it cannot be read (process gone, no permission).
func (r *Reader) Read(pid int, name string) []byte {
	return r.readPath("/proc/" + strconv.Itoa(pid) + "/" + name)
}

func (r *Reader) readPath(path string) []byte {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	n := 0
	for n < len(r.buf) {
		m, err := unix.Read(fd, r.buf[n:])
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
	return r.buf[:n]
}

// Stat reads /proc/PID/stat.
func (r *Reader) Stat(pid int) (Stat, bool) {
	return ParseStat(r.Read(pid, "stat"))
}

// Stat holds the fields of /proc/PID/stat that pipespool uses.
type Stat struct {
	Pid            int
	Comm           string // the command name, at most 15 bytes
	State          byte   // R, S, D, T, t, Z, X, I
	PPid           int
	Pgrp           int
	Sid            int
	UTime, STime   uint64 // clock ticks
	CUTime, CSTime uint64 // of the children it already reaped
	// StartTime is when the process started, in clock ticks after boot:
	// with Pid it names one process, even after its pid is reused.
	StartTime uint64
}

// Live reports whether the process is running or sleeping: not a zombie
// and not being torn down.
func (s Stat) Live() bool { return s.State != 'Z' && s.State != 'X' && s.State != 0 }

// Stopped reports whether the process is stopped by a signal (SIGSTOP,
// SIGTSTP) or by a tracer.
func (s Stat) Stopped() bool { return s.State == 'T' || s.State == 't' }

// ParseStat parses /proc/PID/stat. The command name (field 2) is in
// parentheses and may itself contain spaces and parentheses: the fields
// after it start after the last ')'.
func ParseStat(b []byte) (Stat, bool) {
	var st Stat
	open := bytes.IndexByte(b, '(')
	i := bytes.LastIndexByte(b, ')')
	if open < 1 || i < open || i+2 >= len(b) {
		return st, false
	}
	st.Pid, _ = strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	st.Comm = string(b[open+1 : i])
	rest := b[i+2:]
	// Fields from 3 (state) on, numbered as in proc(5).
	for n := 3; n <= 22 && len(rest) > 0; n++ {
		var f []byte
		f, rest = nextField(rest)
		switch n {
		case 3:
			if len(f) > 0 {
				st.State = f[0]
			}
		case 4:
			st.PPid, _ = strconv.Atoi(string(f))
		case 5:
			st.Pgrp, _ = strconv.Atoi(string(f))
		case 6:
			st.Sid, _ = strconv.Atoi(string(f))
		case 14:
			st.UTime, _ = strconv.ParseUint(string(f), 10, 64)
		case 15:
			st.STime, _ = strconv.ParseUint(string(f), 10, 64)
		case 16:
			st.CUTime, _ = strconv.ParseUint(string(f), 10, 64)
		case 17:
			st.CSTime, _ = strconv.ParseUint(string(f), 10, 64)
		case 22:
			st.StartTime, _ = strconv.ParseUint(string(f), 10, 64)
			return st, st.State != 0
		}
	}
	return st, false
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

// ParseIO adds up the counters of /proc/PID/io that move when a process
// reads or writes anything: rchar, wchar, read_bytes, write_bytes. The
// file is unreadable without ptrace access or on kernels without task I/O
// accounting: then it counts 0.
func ParseIO(b []byte) uint64 {
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

// FDPos returns the file offset of fd of process pid from
// /proc/PID/fdinfo/FD, or -1. Reading fdinfo is how pipespool follows a
// file handed directly to a stage: Seek on its own copy shares the offset
// but is not safe while the stage uses it.
func (r *Reader) FDPos(pid, fd int) int64 {
	b := r.Read(pid, "fdinfo/"+strconv.Itoa(fd))
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

// Sample is what a sample of one process group reads.
type Sample struct {
	// Alive reports that the leader is neither a zombie nor gone.
	Alive bool
	// CPU is utime+stime of the leader and the members, plus the cutime
	// and cstime of the leader (the children it already reaped), in
	// clock ticks.
	CPU uint64
	// IO is the sum of the I/O counters of the leader and the members.
	IO uint64
}

// SampleGroup adds up CPU time and I/O counters of a group's leader and of
// members (other processes of its group, from GroupMembers). The leader's
// cutime and cstime count the children it already reaped, so a shell
// running short commands moves even between two scans.
func (r *Reader) SampleGroup(leader int, members []int) Sample {
	var s Sample
	st, ok := r.Stat(leader)
	if !ok {
		return s
	}
	s.Alive = st.Live()
	s.CPU = st.UTime + st.STime + st.CUTime + st.CSTime
	s.IO = ParseIO(r.Read(leader, "io"))
	for _, p := range members {
		if st, ok := r.Stat(p); ok && st.Pgrp == leader {
			s.CPU += st.UTime + st.STime
			s.IO += ParseIO(r.Read(p, "io"))
		}
	}
	return s
}

// maxGroupProcs bounds how many members of one group GroupMembers lists
// besides the leader: a stage that forks more (a make -j) is still seen
// moving through the first maxGroupProcs of them.
const maxGroupProcs = 64

// GroupMembers fills want, keyed by process group id, with the live
// processes of each group other than its leader (at most maxGroupProcs a
// group). One getpgid(2) per process on the machine rules out all but the
// members, and only they have their stat read: reading every process's
// stat would make this most of the CPU time of a short run.
func GroupMembers(want map[int][]int) {
	for k := range want {
		want[k] = want[k][:0]
	}
	if len(want) == 0 {
		return
	}
	var r Reader
	eachPid(func(pid int) {
		if _, leader := want[pid]; leader {
			return
		}
		g, err := unix.Getpgid(pid)
		if err != nil {
			return
		}
		m, ok := want[g]
		if !ok || len(m) >= maxGroupProcs {
			return
		}
		if st, ok := r.Stat(pid); ok && st.Live() && st.Pgrp == g {
			want[g] = append(m, pid)
		}
	})
}

// eachPid calls f for every process in /proc.
func eachPid(f func(pid int)) {
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
			if pid, err := strconv.Atoi(name); err == nil {
				f(pid)
			}
		}
		if err != nil {
			return
		}
	}
}

// Snapshot reads the stat of every process on the machine. It costs one
// read per process: it is for the rare paths (a stage being stopped, a
// stall being diagnosed, the end of a run), not for every sample.
func Snapshot() map[int]Stat {
	var r Reader
	all := map[int]Stat{}
	eachPid(func(pid int) {
		if st, ok := r.Stat(pid); ok {
			all[pid] = st
		}
	})
	return all
}

// Below returns the live processes below the roots, by parent links, in no
// particular order: their children, their children's children, and so on.
// The roots themselves are not in it.
func Below(all map[int]Stat, roots ...int) []Stat {
	children := map[int][]int{}
	for pid, st := range all {
		children[st.PPid] = append(children[st.PPid], pid)
	}
	seen := map[int]bool{}
	for _, r := range roots {
		seen[r] = true
	}
	var out []Stat
	var queue []int
	for _, r := range roots {
		queue = append(queue, children[r]...)
	}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if seen[pid] {
			continue
		}
		seen[pid] = true
		if st := all[pid]; st.Live() {
			out = append(out, st)
		}
		queue = append(queue, children[pid]...)
	}
	return out
}

// Cmdline returns the command line of pid with its arguments separated by
// spaces, or its command name when the command line is empty (a kernel
// thread, a zombie), or "".
func Cmdline(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err == nil && len(b) > 0 {
		return strings.TrimSpace(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
	}
	var r Reader
	if st, ok := r.Stat(pid); ok {
		return st.Comm
	}
	return ""
}

// HoldersOf returns the processes among pids that have an fd open on the
// pipe or file with inode ino (the "pipe:[INO]" of /proc/PID/fd links),
// with the fd numbers they hold it on.
func HoldersOf(pids []int, link string) map[int][]int {
	out := map[int][]int{}
	for _, pid := range pids {
		dir := "/proc/" + strconv.Itoa(pid) + "/fd"
		d, err := os.Open(dir)
		if err != nil {
			continue
		}
		names, _ := d.Readdirnames(-1)
		d.Close()
		for _, n := range names {
			if l, err := os.Readlink(dir + "/" + n); err == nil && l == link {
				fd, _ := strconv.Atoi(n)
				out[pid] = append(out[pid], fd)
			}
		}
	}
	return out
}

// PipeLink returns what /proc/PID/fd shows for an fd open on the same pipe
// as fd ("pipe:[12345]"), or "" when fd is not a pipe.
func PipeLink(fd int) string {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return ""
	}
	return "pipe:[" + strconv.FormatUint(st.Ino, 10) + "]"
}

// FileLink returns what /proc/PID/fd shows for an fd open on the same
// regular file as fd (its path), or "" when fd is not a regular file. A
// path is a fair identity only for a file nobody else opens: a
// pipespool temporary output, or a file the user redirected into.
func FileLink(fd int) string {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return ""
	}
	l, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return ""
	}
	return l
}

// FileLinkOf is FileLink for an *os.File, without changing its blocking
// mode.
func FileLinkOf(f *os.File) string {
	sc, err := f.SyscallConn()
	if err != nil {
		return ""
	}
	var link string
	sc.Control(func(fd uintptr) { link = FileLink(int(fd)) })
	return link
}

// PipeLinkOf is PipeLink for an *os.File, without changing its blocking
// mode (Fd would).
func PipeLinkOf(f *os.File) string {
	sc, err := f.SyscallConn()
	if err != nil {
		return ""
	}
	var link string
	sc.Control(func(fd uintptr) { link = PipeLink(int(fd)) })
	return link
}
