//go:build linux && !arm64 && !loong64 && !riscv64

package proc

import "golang.org/x/sys/unix"

// The older architectures keep the calls that arm64, loong64 and riscv64
// only have as p-variants.
func init() {
	addSyscalls(map[int]SyscallInfo{
		unix.SYS_POLL:       {"poll", false, ClassReady},
		unix.SYS_EPOLL_WAIT: {"epoll_wait", true, ClassReady},
		unix.SYS_PAUSE:      {"pause", false, ClassWait},
	})
}
