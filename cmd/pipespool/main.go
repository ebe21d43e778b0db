// Command pipespool runs streaming pipelines of processes and keeps an
// fspl-compatible job queue. See README.md and docs/.
package main

import (
	"os"

	"golang.org/x/sys/unix"
)

func main() {
	// Descriptors inherited beyond 0, 1, 2 (a shell's 3>file, a
	// supervisor's socket) must not leak into stages: mark them
	// close-on-exec. FD_CLOEXEC belongs to this process's fd table, not to
	// the shared open file, so nobody else is affected.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		markInheritedCloexec()
	}
	streams := SystemStreams()
	code := Main(os.Args[1:], streams)
	streams.flush()
	os.Exit(code)
}

// markInheritedCloexec is the fallback for kernels without close_range.
func markInheritedCloexec() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		var fd int
		for _, c := range e.Name() {
			fd = fd*10 + int(c-'0')
		}
		if fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
}
