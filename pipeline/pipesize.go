package pipeline

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

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
func pipeSizeFor(want, n int) (size int, why string) {
	if n == 0 || want <= defaultPipeBytes || privilegedForPipes() {
		return want, "pipe_size as asked"
	}
	pages := readLimit("/proc/sys/fs/pipe-user-pages-soft")
	if hard := readLimit("/proc/sys/fs/pipe-user-pages-hard"); hard > 0 && (pages == 0 || hard < pages) {
		pages = hard
	}
	return pipeSizeWithin(want, n, pages, os.Getpagesize())
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

// privilegedForPipes reports whether the kernel's per-user pipe limits
// spare this process: CAP_SYS_RESOURCE or CAP_SYS_ADMIN in its effective
// set.
func privilegedForPipes() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	has := func(c int) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	return has(unix.CAP_SYS_RESOURCE) || has(unix.CAP_SYS_ADMIN)
}
