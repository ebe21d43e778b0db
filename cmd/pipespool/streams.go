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
}

// SystemStreams returns the process's own stdin, stdout and stderr.
func SystemStreams() *IOStreams {
	return &IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr,
		ErrIsTerminal: isTerminal(int(os.Stderr.Fd()))}
}

func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}
