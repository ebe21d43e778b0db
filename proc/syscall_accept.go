//go:build linux && !386 && !s390x

package proc

import "golang.org/x/sys/unix"

// accept(2) is a call of its own except where sockets go through
// socketcall (386) or where only accept4 exists (s390x).
func init() {
	addSyscalls(map[int]SyscallInfo{unix.SYS_ACCEPT: {"accept", true, ClassOther}})
}
