package pipeline

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/pipespool/pipespool/fsutil"
)

// source is the pipeline's input.
type source struct {
	desc string   // for the report: the path, "-" for stdin
	file *os.File // nil never
	own  bool     // we opened it and close it
	// regular: a regular file, handed to the first stage directly; start
	// is its offset then (a packet payload starts after its header).
	regular bool
	start   int64
}

func openSource(path string, override *os.File, stdin *os.File) (*source, error) {
	if override != nil {
		return classifySource("payload", override, false)
	}
	if path == "-" {
		return classifySource("-", stdin, false)
	}
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, &InputError{Path: path, Err: fmt.Errorf("cannot open input: %w", unwrapPath(err))}
	}
	return classifySource(path, f, true)
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
	s := &source{desc: desc, file: f, own: own, regular: st.Mode().IsRegular()}
	if s.regular {
		if s.start, err = f.Seek(0, 1); err != nil {
			s.start = 0
		}
	} else if own {
		// A FIFO or device we opened ourselves: its open file description
		// is ours, so the pump may make it non-blocking.
		unix.SetNonblock(rawFD(f), true)
	}
	return s, nil
}

func (s *source) close() {
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
	// direct: a file (or /dev/null, a device) the last stage writes itself.
	direct bool
}

// openSink opens the output. A regular file (or a path that does not exist)
// is written under a temporary name in the same directory and renamed on
// success; an existing non-regular path is written in place; "-" (and
// /dev/stdout) is pipespool's stdout; "none" discards. Links are followed
// and shared directories guarded as fsutil.ResolveForWrite says.
func openSink(path string, mode os.FileMode, modeSet bool, stdout *os.File) (*sink, error) {
	switch path {
	case "-":
		st, err := stdout.Stat()
		regular := err == nil && st.Mode().IsRegular()
		return &sink{desc: "-", file: stdout, direct: regular}, nil
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
		s, err := openSink("-", mode, modeSet, stdout)
		if s != nil {
			s.desc = path
		}
		return s, err
	}
	if t.Special() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return nil, &InputError{Path: path, Err: fmt.Errorf("cannot open output: %w", unwrapPath(err))}
		}
		return &sink{desc: path, file: f, own: true, direct: true}, nil
	}
	a, err := fsutil.CreateAtomic(t, fsutil.AtomicOptions{Perm: 0o666, Mode: mode, ModeSet: modeSet})
	if err != nil {
		return nil, &InputError{Path: path, Err: fmt.Errorf("cannot create output file in %s: %w", filepath.Dir(t.Path), unwrapPath(err))}
	}
	return &sink{desc: path, atomic: a, file: a.File(), own: true, direct: true}, nil
}

// commit makes an atomic output final (fsync, rename, fsync of the
// directory) or closes another output it opened. On error nothing appears
// under the final name.
func (s *sink) commit() error {
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

// discard drops an atomic output's temporary file, or closes another
// output it opened.
func (s *sink) discard() {
	if s.atomic != nil {
		s.atomic.Discard()
	} else if s.own {
		s.file.Close()
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
