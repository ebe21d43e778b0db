package queue

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// copyChunk is what one copy_file_range or splice call is asked to move: the
// default pipe-max-size, so that a splice into a pipe enlarged to it fills
// it in one call.
const copyChunk = 1 << 20

// CopyFile copies src to dst from their current offsets until src's end,
// in the kernel when it can: copy_file_range between two regular files
// (one copy, or none on a filesystem that shares extents), splice when
// either is a pipe (a page from the page cache is handed to the pipe, not
// copied), and read/write through a 1 MiB buffer otherwise. Each of these
// advances both offsets by what it moved, so a fall-back half-way (a
// filesystem that refuses copy_file_range, an fd that returns EAGAIN)
// continues where the last call stopped: nothing is copied twice or
// skipped.
//
// A broken pipe on dst is left to the plain write, so that stdout behaves
// as it does for every Go program (and for fspl): a reader that went away
// ends the writer with SIGPIPE.
func CopyFile(dst, src *os.File) (int64, error) {
	var total int64
	srcKind, dstKind := fileKind(src), fileKind(dst)
	if srcKind == unix.S_IFREG && dstKind == unix.S_IFREG {
		n, done, err := kernelCopy(dst, src, func(out, in int) (int, error) {
			return unix.CopyFileRange(in, nil, out, nil, copyChunk, 0)
		})
		total += n
		if done || err != nil {
			return total, err
		}
	}
	if srcKind == unix.S_IFIFO || dstKind == unix.S_IFIFO {
		if dstKind == unix.S_IFIFO {
			growPipe(dst)
		}
		n, done, err := kernelCopy(dst, src, func(out, in int) (int, error) {
			m, err := unix.Splice(in, nil, out, nil, copyChunk, unix.SPLICE_F_MOVE|unix.SPLICE_F_MORE)
			return int(m), err
		})
		total += n
		if done || err != nil {
			return total, err
		}
	}
	n, err := io.CopyBuffer(plainWriter{dst}, plainReader{src}, make([]byte, copyBufSize))
	return total + n, err
}

// kernelCopy calls move until src's end (done) or until move fails in a
// way that the next method can take over from (not done, nil error): the
// call is not supported for this pair, or a non-blocking fd is not ready.
func kernelCopy(dst, src *os.File, move func(out, in int) (int, error)) (total int64, done bool, err error) {
	in, out := rawFD(src), rawFD(dst)
	if in < 0 || out < 0 {
		return 0, false, nil
	}
	for {
		n, err := move(out, in)
		switch {
		case err == unix.EINTR:
			continue
		case err == nil && n == 0:
			return total, true, nil
		case err == nil:
			total += int64(n)
			continue
		case err == unix.EAGAIN || err == unix.EPIPE:
			return total, false, nil
		case total == 0 && (err == unix.EINVAL || err == unix.EXDEV || err == unix.ENOSYS ||
			err == unix.EOPNOTSUPP || err == unix.EBADF || err == unix.EPERM):
			return 0, false, nil // not for these two files; nothing moved yet
		default:
			return total, false, err
		}
	}
}

// growPipe asks for a 1 MiB pipe (the size pipespool gives its own pipes)
// when p is smaller, as a best effort: a consumer reading 64 KiB at a time
// from the kernel's default pipe wakes sixteen times as often, and pays for
// it in throughput. It never shrinks a pipe (that could fail, or drop data
// in flight) and ignores the limit of an unprivileged user.
func growPipe(p *os.File) {
	fd := rawFD(p)
	if size, err := unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0); err == nil && size < copyChunk {
		_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, copyChunk)
	}
}

// rawFD returns f's descriptor without os.File.Fd's side effect of making
// it blocking (a shared, inherited stdout must keep its flags), or -1.
func rawFD(f *os.File) int {
	fd := -1
	if rc, err := f.SyscallConn(); err == nil {
		_ = rc.Control(func(u uintptr) { fd = int(u) })
	}
	return fd
}

func fileKind(f *os.File) uint32 {
	var st unix.Stat_t
	if err := unix.Fstat(rawFD(f), &st); err != nil {
		return 0
	}
	return st.Mode & unix.S_IFMT
}

// plainReader and plainWriter hide os.File's ReaderFrom and WriterTo, so
// that io.CopyBuffer uses the buffer it is given (they would copy through a
// 32 KiB one of their own when they find no kernel method).
type plainReader struct{ f *os.File }

func (r plainReader) Read(p []byte) (int, error) { return r.f.Read(p) }

type plainWriter struct{ f *os.File }

func (w plainWriter) Write(p []byte) (int, error) { return w.f.Write(p) }
