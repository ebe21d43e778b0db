package pipeline

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pipespool/pipespool/pump"
	"github.com/pipespool/pipespool/units"
)

// defaultPipeBytes is the size of a pipe nobody resized (16 pages): asking
// for less than this saves nothing worth a system call.
const defaultPipeBytes = 64 << 10

// pipeSizeFor returns the size to ask for each of the n pipes a run creates,
// and why, for the debug log.
//
// The kernel limits the pipe buffers of an unprivileged user (neither
// CAP_SYS_RESOURCE nor CAP_SYS_ADMIN) to /proc/sys/fs/pipe-user-pages-soft
// pages, all of the user's pipes together: past it, F_SETPIPE_SZ fails and
// every new pipe gets 2 pages (8 KiB), silently. 50 stages of 1 MiB pipes
// went past the default 16384 pages (64 MiB), and the pipes created last
// ran at 8 KiB, 8 times slower than bash. What the user's other processes
// hold cannot be read cheaply, so a run takes at most half of the limit
// for itself: each pipe gets the largest power of two that fits half the
// budget split across its n pipes, never below the 64 KiB a pipe has
// anyway, never above pipe_size.
//
// Above /proc/sys/fs/pipe-max-size the kernel refuses a process without
// CAP_SYS_RESOURCE (root without it too: a VM or a service that dropped
// it), and every pipe would keep its 64 KiB: such a pipe_size is lowered
// to pipe-max-size first (pump.BeyondPipeMax asks the kernel).
func pipeSizeFor(want, n int) (size int, why string) {
	if n == 0 || want <= defaultPipeBytes || pump.BeyondPipeMax() {
		return want, "pipe_size as asked"
	}
	lowered := ""
	if most := pump.PipeMaxSize(); most > 0 && want > most {
		lowered = fmt.Sprintf("pipe_size %s lowered to pipe-max-size %s (no CAP_SYS_RESOURCE); ",
			units.FormatSize(int64(want)), units.FormatSize(int64(most)))
		want = most
		if want <= defaultPipeBytes {
			return want, lowered + "no larger than a pipe's own"
		}
	}
	if exemptFromPipeUserPages() {
		return want, lowered + "no pipe-user-pages limit (CAP_SYS_ADMIN)"
	}
	pages := readLimit("/proc/sys/fs/pipe-user-pages-soft")
	if hard := readLimit("/proc/sys/fs/pipe-user-pages-hard"); hard > 0 && (pages == 0 || hard < pages) {
		pages = hard
	}
	size, why = pipeSizeWithin(want, n, pages, os.Getpagesize())
	return size, lowered + why
}

// exemptFromPipeUserPages reports whether the kernel's per-user pipe
// limits spare this process: CAP_SYS_RESOURCE or CAP_SYS_ADMIN, which the
// kernel looks for in the initial user namespace. capget(2) reports the
// process's own namespace's: in any other (a container), root has them
// all and is still limited, so they count only in the initial one.
func exemptFromPipeUserPages() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	has := func(c int) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	return (has(unix.CAP_SYS_RESOURCE) || has(unix.CAP_SYS_ADMIN)) && initialUserNamespace()
}

// initialUserNamespace reports whether this process runs in the initial
// user namespace, whose uid_map maps every id to itself.
func initialUserNamespace() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295"
}

// pipeSizeWithin is pipeSizeFor's rule for an unprivileged user limited to
// pages pages of pipe buffers (0: no limit).
func pipeSizeWithin(want, n int, pages int64, pageSize int) (size int, why string) {
	if pages <= 0 {
		return want, "pipe_size as asked: no pipe-user-pages limit"
	}
	budget := pages * int64(pageSize) / 2
	each := budget / int64(n)
	if each >= int64(want) {
		return want, fmt.Sprintf("pipe_size as asked: within half of pipe-user-pages %d", pages)
	}
	size = defaultPipeBytes
	for int64(size)*2 <= each && size*2 <= want {
		size *= 2
	}
	return size, fmt.Sprintf("pipe_size %s lowered: half of pipe-user-pages %d (%s) split across %d pipes; not privileged (CAP_SYS_RESOURCE)",
		units.FormatSize(int64(want)), pages, units.FormatSize(budget*2), n)
}

// readLimit reads a number from a /proc/sys file; 0 when unknown.
func readLimit(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0
	}
	return n
}
