package proc

import (
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SignalName returns "SIGPIPE" for syscall.SIGPIPE and so on, or
// "signal N" for a number the platform has no name for.
func SignalName(s syscall.Signal) string {
	if n := unix.SignalName(s); n != "" {
		return n
	}
	return "signal " + strconv.Itoa(int(s))
}

// StopSignals are the signals that interrupt pipespool's work the way
// SIGTERM does (see InterruptedError). SIGHUP is what a closing terminal or
// an ssh session that drops sends; SIGQUIT is what a terminal's Ctrl-\ and
// some supervisors send.
var StopSignals = []syscall.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM}

// InterruptedError is work stopped because pipespool received a signal
// (SIGHUP, SIGINT, SIGQUIT, SIGTERM): it is what a signal handler gives as
// the cause when it cancels a context, and what the work returns once
// every process it started is stopped. Its exit status is the shell's:
// 128 + the signal.
type InterruptedError struct {
	Signal syscall.Signal
	// At is when the handler got the signal (zero when unknown).
	At time.Time
}

func (e *InterruptedError) Error() string { return "interrupted by " + SignalName(e.Signal) }

// ExitCode is 128 + the signal: 129 for SIGHUP, 130 for SIGINT, 131 for
// SIGQUIT, 143 for SIGTERM.
func (e *InterruptedError) ExitCode() int { return 128 + int(e.Signal) }
