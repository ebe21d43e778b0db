package proc

import (
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestNoteLeftKeepsDeathsPipespoolDidNotCause: an orphan of a group that
// was killed by a signal pipespool sent the group is not a failure of its
// own; killed by any other signal, or exiting non-zero, it is, even when
// it is reaped after pipespool signalled the group (the end-of-run
// cleanup sends SIGTERM and SIGKILL to what is left): a shell stage's
// background job that killed itself with SIGUSR1 while the run was
// ending was taken for one the cleanup had killed, and the run succeeded.
func TestNoteLeftKeepsDeathsPipespoolDidNotCause(t *testing.T) {
	signaled := func(sig syscall.Signal) unix.WaitStatus { return unix.WaitStatus(sig) }
	exited := func(code int) unix.WaitStatus { return unix.WaitStatus(code << 8) }
	for _, tc := range []struct {
		name   string
		sent   []syscall.Signal
		ws     unix.WaitStatus
		failed bool
	}{
		{"own SIGUSR1, nothing sent", nil, signaled(syscall.SIGUSR1), true},
		{"own SIGUSR1 after the cleanup's TERM and KILL", []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL}, signaled(syscall.SIGUSR1), true},
		{"own SIGSEGV after a stop", []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL}, signaled(syscall.SIGSEGV), true},
		{"SIGKILL pipespool sent", []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL}, signaled(syscall.SIGKILL), false},
		{"SIGTERM pipespool sent", []syscall.Signal{syscall.SIGTERM}, signaled(syscall.SIGTERM), false},
		{"SIGKILL nobody here sent", nil, signaled(syscall.SIGKILL), true},
		{"SIGINT forwarded", []syscall.Signal{syscall.SIGINT}, signaled(syscall.SIGINT), false},
		{"SIGPIPE: a consequence", nil, signaled(syscall.SIGPIPE), false},
		{"exit 3", []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL}, exited(3), true},
		{"exit 0", nil, exited(0), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var g Group
			g.markSent(tc.sent...)
			g.noteLeft(Stat{Pid: 42, Comm: "sh"}, tc.ws)
			if got := len(g.LeftFailures()) > 0; got != tc.failed {
				t.Errorf("recorded as a failure: %v, want %v (%v)", got, tc.failed, g.LeftFailures())
			}
		})
	}
}
