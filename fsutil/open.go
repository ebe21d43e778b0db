package fsutil

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Open is os.OpenFile for files that are read or written with plain
// blocking calls: close-on-exec, EINTR retried, and not offered to Go's
// netpoller (os.OpenFile tries every file there, which costs a regular file
// or a directory three more syscalls). Errors are *os.PathError.
func Open(path string, flag int, perm os.FileMode) (*os.File, error) {
	fd, err := openFD(path, flag, uint32(perm.Perm()))
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

func openFD(path string, flag int, perm uint32) (int, error) {
	for {
		fd, err := unix.Open(path, flag|unix.O_CLOEXEC, perm)
		if err == nil {
			return fd, nil
		}
		if err != unix.EINTR {
			return -1, &os.PathError{Op: "open", Path: path, Err: err}
		}
	}
}

// SyncDir makes the entries of dir (renames, unlinks, creations) durable.
func SyncDir(dir string) error {
	d, err := Open(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("open directory %s to fsync it: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// CreateExclusive creates path, which must not exist, not even as a
// dangling link: O_CREAT|O_EXCL|O_NOFOLLOW. perm is what open(2) takes
// (the umask applies).
func CreateExclusive(path string, flag int, perm os.FileMode) (*os.File, error) {
	return Open(path, flag|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, perm)
}

// CreateReplacing creates a fresh file at path, a fixed name: whatever is
// there (a stale file, or a link planted to make pipespool overwrite its
// target) is unlinked first, then path is created with CreateExclusive. Use
// it for files whose readers find them by name and whose content is wholly
// rewritten (a queue's nextseq.temp, a job's .out file).
func CreateReplacing(path string, flag int, perm os.FileMode) (*os.File, error) {
	for range 3 {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		f, err := CreateExclusive(path, flag, perm)
		if !errors.Is(err, os.ErrExist) {
			return f, err
		}
		// Somebody created it between the unlink and the open: again.
	}
	return nil, &os.PathError{Op: "create", Path: path, Err: errors.New("recreated by another process at every attempt")}
}

// ErrNotRegular is the cause of OpenRegular's error for a path that is not
// a regular file.
var ErrNotRegular = errors.New("not a regular file")

// OpenRegular opens a file that must be a regular file, read-only, so that
// no open can block or touch a device: the path is first opened with
// O_PATH (which opens nothing: a FIFO does not wait for a writer, a tape
// does not rewind), checked with fstat, and only a regular file is then
// opened for reading through that very inode (/proc/self/fd), so it cannot
// be swapped for something else in between. Links are followed unless
// noFollow is set. The error for anything else wraps ErrNotRegular and
// names the file's type.
func OpenRegular(path string, noFollow bool) (*os.File, error) {
	flag := unix.O_PATH
	if noFollow {
		flag |= unix.O_NOFOLLOW
	}
	pfd, err := openFD(path, flag, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return nil, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, &os.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w (%s)", ErrNotRegular, typeName(st.Mode))}
	}
	fd, err := openFD("/proc/self/fd/"+strconv.Itoa(pfd), unix.O_RDONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: errors.Unwrap(err)}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// typeName names a file type for errors.
func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFLNK:
		return "symbolic link"
	}
	return "file of unknown type"
}

// TypeName names the type of a file: "regular file", "FIFO",
// "character device", ...
func TypeName(m os.FileMode) string {
	switch {
	case m.IsRegular():
		return "regular file"
	case m.IsDir():
		return "directory"
	case m&os.ModeNamedPipe != 0:
		return "FIFO"
	case m&os.ModeCharDevice != 0:
		return "character device"
	case m&os.ModeDevice != 0:
		return "block device"
	case m&os.ModeSocket != 0:
		return "socket"
	case m&os.ModeSymlink != 0:
		return "symbolic link"
	}
	return "file of unknown type"
}
