package pipeline

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pipespool/pipespool/fsutil"
	"github.com/pipespool/pipespool/proc"
	"github.com/pipespool/pipespool/pump"
)

// source is the pipeline's input.
type source struct {
	desc string   // for the report: the path, "-" for stdin
	file *os.File // nil never
	own  bool     // we opened it and close it
	// direct: a regular file (or /dev/null for "none"), handed to the
	// first stage directly; start is its offset then (a packet payload
	// starts after its header).
	direct bool
	start  int64
	// pipe: the read end of a pipe a fan-out writes into (a branch of a
	// tree), handed to the pump of the first hop, which owns it from then;
	// or, when fed is set, to the first stage itself, whose input link is
	// then the fan-out's branch fed.
	pipe *ownedFD
	fed  *pump.TeeBranch
}

func openSource(o *opener, path string, override *os.File, stdin *os.File) (*source, error) {
	if override != nil {
		return classifySource("payload", override, false)
	}
	switch path {
	case "-":
		return classifySource("-", stdin, false)
	case "none":
		// A producer (tar c, zfs send) reads nothing: its stdin is
		// /dev/null, which gives end of file at once.
		f, err := fsutil.Open(os.DevNull, os.O_RDONLY, 0)
		if err != nil {
			return nil, &InputError{Path: os.DevNull, Err: err}
		}
		return &source{desc: "none", file: f, own: true, direct: true}, nil
	}
	f, err := o.openPath(path, false)
	if err != nil {
		return nil, inputError(path, "cannot open input", err)
	}
	return classifySource(path, f, true)
}

// inputError is err from opening path, as an *InputError (exit 2) unless
// the wait for a FIFO's peer ended the run (a timeout, a signal).
func inputError(path, what string, err error) error {
	var re *RunError
	var ie *proc.InterruptedError
	if errors.As(err, &re) || errors.As(err, &ie) {
		return err
	}
	return &InputError{Path: path, Err: fmt.Errorf("%s: %w", what, unwrapPath(err))}
}

func classifySource(desc string, f *os.File, own bool) (*source, error) {
	st, err := f.Stat()
	if err != nil {
		if own {
			f.Close()
		}
		return nil, &InputError{Path: desc, Err: err}
	}
	if st.IsDir() {
		if own {
			f.Close()
		}
		return nil, &InputError{Path: desc, Err: errors.New("is a directory, not an input file")}
	}
	s := &source{desc: desc, file: f, own: own, direct: st.Mode().IsRegular()}
	if s.direct {
		if s.start, err = f.Seek(0, 1); err != nil {
			s.start = 0
		}
	}
	return s, nil
}

func (s *source) close() {
	if s.pipe != nil {
		s.pipe.Close()
	}
	if s.own {
		s.file.Close()
	}
}

// sink is the pipeline's output.
type sink struct {
	desc   string
	atomic *fsutil.AtomicFile // an atomic output's temporary file, or nil
	file   *os.File           // what the last stage or the output pump writes
	own    bool
	// direct: a regular file the last stage writes itself (its offset
	// counts the bytes); anything else goes through a pump, which counts
	// the bytes and sees a write fail itself.
	direct bool
	// pipe: the write end of the pipe a fan-out reads (a line of a tree
	// that forks), handed to the last stage as its stdout, with no hop
	// between them: the stage's (and its descendants') closing it is the
	// fan-out's end of file. fan is that fan-out, whose source is then the
	// line's output link.
	pipe *ownedFD
	fan  *pump.Tee
}

// name is how messages name the output.
func (s *sink) name() string {
	if s.desc == "-" {
		return "(stdout)"
	}
	return s.desc
}

// openSink opens the output. A regular file (or a path that does not exist)
// is written under a temporary name in the same directory and renamed on
// success; an existing non-regular path is written in place; "-" (and
// /dev/stdout) is pipespool's stdout; "none" discards. Links are followed
// and shared directories guarded as fsutil.ResolveForWrite says.
func openSink(o *opener, path string, mode os.FileMode, modeSet bool, stdout *os.File) (*sink, error) {
	switch path {
	case "-":
		return stdoutSink(stdout)
	case "none":
		f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			return nil, &InputError{Path: os.DevNull, Err: err}
		}
		return &sink{desc: "none", file: f, own: true, direct: true}, nil
	}
	t, err := fsutil.ResolveForWrite(path)
	if err != nil {
		return nil, &InputError{Path: path, Err: fmt.Errorf("cannot open output: %w", unwrapPath(err))}
	}
	if t.FD == 1 {
		s, err := openSink(o, "-", mode, modeSet, stdout)
		if s != nil {
			s.desc = path
		}
		return s, err
	}
	if t.Special() {
		f, err := o.openPath(path, true)
		if err != nil {
			return nil, inputError(path, "cannot open output", err)
		}
		return &sink{desc: path, file: f, own: true}, nil
	}
	a, err := fsutil.CreateAtomic(t, fsutil.AtomicOptions{Perm: 0o666, Mode: mode, ModeSet: modeSet})
	if err != nil {
		return nil, &InputError{Path: path, Err: fmt.Errorf("cannot create output file in %s: %w", filepath.Dir(t.Path), unwrapPath(err))}
	}
	return &sink{desc: path, atomic: a, file: a.File(), own: true, direct: true}, nil
}

// stdoutSink is pipespool's stdout as the output. A stdout that was closed
// when pipespool started (the shell's `>&-`) is /dev/null opened
// read-write by the Go runtime, so that no file pipespool opens lands on fd
// 1 by accident: writing the stream there would lose it, so it is refused
// before anything runs. A regular file (`> file`) is handed to the last
// stage directly, like a shell redirection; anything else goes through a
// pump.
func stdoutSink(stdout *os.File) (*sink, error) {
	if filledByRuntime(stdout) {
		return nil, &InputError{Path: "-", Err: errors.New("stdout is closed (>&-): give the output with -o FILE, or -o none to discard it")}
	}
	st, err := stdout.Stat()
	regular := err == nil && st.Mode().IsRegular()
	// A regular stdout that is also stderr (`> log 2>&1`) has its offset
	// moved by pipespool's own log lines too: a pump counts the stage's
	// bytes instead.
	if regular && sameFile(st, os.Stderr) {
		regular = false
	}
	return &sink{desc: "-", file: stdout, direct: regular}, nil
}

// sameFile reports whether f is the file st describes.
func sameFile(st os.FileInfo, f *os.File) bool {
	fst, err := f.Stat()
	return err == nil && os.SameFile(st, fst)
}

// filledByRuntime reports whether f is /dev/null opened read-write: what
// the Go runtime (like daemon(3)) puts on a standard descriptor that was
// closed at start. A shell's `> /dev/null` opens it write-only.
func filledByRuntime(f *os.File) bool {
	fd := rawFD(f)
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_ACCMODE != unix.O_RDWR {
		return false
	}
	var st, null unix.Stat_t
	if unix.Fstat(fd, &st) != nil || unix.Stat(os.DevNull, &null) != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == null.Rdev
}

// discardable reports whether nothing of what was written reaches the
// output unless it is committed: an atomic output's temporary file, none,
// the null device.
func (s *sink) discardable() bool {
	if s.atomic != nil || s.desc == "none" {
		return true
	}
	var st, null unix.Stat_t
	return s.pipe == nil && unix.Fstat(rawFD(s.file), &st) == nil && unix.Stat(os.DevNull, &null) == nil &&
		st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == null.Rdev
}

// commit makes an atomic output final (fsync, rename, fsync of the
// directory) or closes another output it opened. On error nothing appears
// under the final name.
func (s *sink) commit() error {
	if s.pipe != nil {
		return s.pipe.Close()
	}
	if s.atomic != nil {
		if err := s.atomic.Commit(); err != nil {
			return fmt.Errorf("output %w", err)
		}
		return nil
	}
	if s.own {
		return s.file.Close()
	}
	return nil
}

// prepare makes an atomic output's data durable (fsync) before any output
// of the run is renamed into place: a full disk or an I/O error found now
// commits none of them.
func (s *sink) prepare() error {
	if s.atomic == nil {
		return nil
	}
	if err := s.atomic.File().Sync(); err != nil {
		return fmt.Errorf("output %s: fsync: %w", s.desc, err)
	}
	return nil
}

// discard drops an atomic output's temporary file, or closes another
// output it opened.
func (s *sink) discard() {
	if s.pipe != nil {
		s.pipe.Close()
	} else if s.atomic != nil {
		s.atomic.Discard()
	} else if s.own {
		s.file.Close()
	}
}

// sweepTemps removes, once the run's own output is committed or discarded,
// the temporary files an earlier run of the same output left that the
// start of this run found held: a killed run's child caught between fork
// and exec holds them for a moment, and the next run must not leave them
// for the one after. Those still held are logged with the processes that
// hold them (a process a killed run left running, still writing; a run
// writing the same output now) and left: the first run to find one free
// removes it.
func (s *sink) sweepTemps(log *slog.Logger) {
	if s.atomic == nil {
		return
	}
	_, held := fsutil.RemoveStaleTemps(s.atomic.Final())
	if len(held) == 0 {
		return
	}
	var pids []int
	for pid := range proc.Snapshot() {
		pids = append(pids, pid)
	}
	slices.Sort(pids)
	for _, path := range held {
		// As /proc shows it (links in the directory resolved).
		link := path
		if f, err := fsutil.Open(path, unix.O_PATH|unix.O_NOFOLLOW, 0); err == nil {
			if l := proc.FileLinkOf(f); l != "" {
				link = l
			}
			f.Close()
		}
		var who []string
		for pid := range proc.HoldersOf(pids, link) {
			if pid != os.Getpid() {
				who = append(who, fmt.Sprintf("%s (pid %d)", proc.Cmdline(pid), pid))
			}
		}
		slices.Sort(who)
		holders := "a process pipespool cannot see"
		if len(who) > 0 {
			holders = strings.Join(who, ", ")
		}
		log.Warn(fmt.Sprintf("output %s: the temporary file %s of an earlier run is still open in %s and was left; the first run that finds it free removes it (stop that process if it is left from a killed run)",
			s.desc, path, holders))
	}
}

// dupFile returns a new *os.File on a close-on-exec duplicate of f's fd: the
// same open file description (offset included), a separate fd to hand to a
// stage, which closes it.
func dupFile(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(uintptr(rawFD(f)), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, fmt.Errorf("dup %s: %w", f.Name(), err)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// rawFD returns f's descriptor without (*os.File).Fd's side effect of
// putting it into blocking mode: pipespool never changes the flags of an fd
// it inherited.
func rawFD(f *os.File) int {
	fd := -1
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(u uintptr) { fd = int(u) })
	}
	return fd
}

// fileSystemFull reports whether the file system f is on has no space left
// for pipespool's user (root may use the blocks reserved for it).
func fileSystemFull(f *os.File) bool {
	var st unix.Statfs_t
	if err := unix.Fstatfs(rawFD(f), &st); err != nil || st.Blocks == 0 {
		return false
	}
	if os.Geteuid() == 0 {
		return st.Bfree == 0
	}
	return st.Bavail == 0
}
