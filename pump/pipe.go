package pump

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// DefaultPipeSize is the size requested for the pipes pipespool creates: the
// default pipe-max-size, and the size at which one splice can move a useful
// chunk without waking the other side too often.
const DefaultPipeSize = 1 << 20

// Pipe is a pipe whose two ends are close-on-exec. The end that pipespool
// keeps is made non-blocking; the end handed to a child stays blocking, as
// programs expect of their stdin and stdout.
type Pipe struct {
	R, W int
}

// NewPipe creates a pipe and asks for size bytes of buffer (best effort).
// It returns the size obtained. Above /proc/sys/fs/pipe-max-size, a
// process without CAP_SYS_RESOURCE in the initial user namespace (any
// process in a container, root included) gets EPERM: it is then given
// pipe-max-size, the most it may have, not the 64 KiB a pipe starts with.
// Past the user's pipe-user-pages limits the kernel refuses as well, and
// the pipe keeps its default size (see pipeline's pipeSizeFor, which keeps
// a run within them).
func NewPipe(size int) (Pipe, int, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return Pipe{}, 0, fmt.Errorf("pipe2: %w", err)
	}
	p := Pipe{R: fds[0], W: fds[1]}
	got, err := unix.FcntlInt(uintptr(p.W), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		got = 64 << 10
	}
	if size > 0 && size != got {
		n, err := unix.FcntlInt(uintptr(p.W), unix.F_SETPIPE_SZ, size)
		if err == unix.EPERM {
			if most := PipeMaxSize(); most > 0 && size > most && most != got {
				n, err = unix.FcntlInt(uintptr(p.W), unix.F_SETPIPE_SZ, most)
			}
		}
		if err == nil {
			got = n
		}
	}
	return p, got, nil
}

// PipeMaxSize is /proc/sys/fs/pipe-max-size: the largest pipe a process
// without CAP_SYS_RESOURCE may ask for (0 when it cannot be read).
func PipeMaxSize() int {
	b, err := os.ReadFile("/proc/sys/fs/pipe-max-size")
	if err != nil {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return 0
	}
	return n
}

// BeyondPipeMax reports whether this process may make pipes larger than
// pipe-max-size: whether it has CAP_SYS_RESOURCE in the initial user
// namespace, which also spares it the per-user pipe-user-pages limits. The
// capability sets of capget(2) cannot tell (root in a container has every
// capability of its own namespace, and none of these), so it asks the
// kernel once: one pipe resized to twice pipe-max-size.
func BeyondPipeMax() bool {
	beyondOnce.Do(func() {
		most := PipeMaxSize()
		if most <= 0 || 2*most > 1<<31 {
			// Asked for 2^32, a kernel takes it for 0 and says yes.
			return
		}
		var fds [2]int
		if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
			return
		}
		defer unix.Close(fds[0])
		defer unix.Close(fds[1])
		_, err := unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, 2*most)
		beyond = err == nil
	})
	return beyond
}

var (
	beyondOnce sync.Once
	beyond     bool
)

// SetNonblock sets O_NONBLOCK on fd. Only for fds pipespool created.
func SetNonblock(fd int) error {
	if err := unix.SetNonblock(fd, true); err != nil {
		return fmt.Errorf("set O_NONBLOCK on fd %d: %w", fd, err)
	}
	return nil
}

// File wraps fd in an *os.File named name, which then owns it.
func File(fd int, name string) *os.File { return os.NewFile(uintptr(fd), name) }

// Queued returns the bytes queued in the pipe that fd is an end of
// (FIONREAD works on both ends), or -1 when fd is not a pipe.
func Queued(fd int) int {
	n, err := unix.IoctlGetInt(fd, unix.TIOCINQ) // TIOCINQ is FIONREAD on Linux
	if err != nil {
		return -1
	}
	return n
}
