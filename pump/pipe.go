package pump

import (
	"fmt"
	"os"

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

// NewPipe creates a pipe and asks for size bytes of buffer (best effort:
// F_SETPIPE_SZ fails above /proc/sys/fs/pipe-max-size for unprivileged users
// and the pipe keeps its default size). It returns the size obtained.
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
		if n, err := unix.FcntlInt(uintptr(p.W), unix.F_SETPIPE_SZ, size); err == nil {
			got = n
		}
	}
	return p, got, nil
}

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
