package main

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// IOStreams are the standard files of a command, injected so that tests can
// run commands with their own.
type IOStreams struct {
	In     *os.File
	Out    *os.File
	ErrOut io.Writer
	// ErrIsTerminal reports whether ErrOut is a terminal (progress, colours).
	ErrIsTerminal bool
	// ErrWidth returns the width of the terminal ErrOut is, in columns
	// (0: unknown); nil when ErrOut is no terminal.
	ErrWidth func() int
}

// errWidth is ErrWidth(), 0 without one.
func (s *IOStreams) errWidth() int {
	if s.ErrWidth == nil {
		return 0
	}
	return s.ErrWidth()
}

// SystemStreams returns the process's own stdin, stdout and stderr, its
// stderr behind a writer that never holds pipespool (see diagWriter).
func SystemStreams() *IOStreams {
	s := &IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: newDiagWriter(os.Stderr),
		ErrIsTerminal: isTerminal(int(os.Stderr.Fd()))}
	if s.ErrIsTerminal {
		s.ErrWidth = func() int { return termWidth(int(os.Stderr.Fd())) }
	}
	return s
}

// termWidth is the width in columns of the terminal fd is (TIOCGWINSZ), 0
// when unknown.
func termWidth(fd int) int {
	ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	return int(ws.Col)
}

func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// flush waits for what the command wrote to stderr, as long as stderr
// takes it (see diagWriter.flush).
func (s *IOStreams) flush() {
	if d, ok := s.ErrOut.(*diagWriter); ok {
		d.flush(diagFlushIdle)
	}
}
