//go:build linux && (386 || amd64 || ppc64 || ppc64le || s390x)

package proc

import "golang.org/x/sys/unix"

func init() {
	addSyscalls(map[int]SyscallInfo{unix.SYS_SELECT: {"select", false, ClassReady}})
}
