package queue

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pipespool/pipespool/fsutil"
)

// writeTempDurably writes n as a seqfile's content to tmp and fsyncs it.
func writeTempDurably(tmp string, n uint64) error {
	// A fixed name (fspl's): whatever is there, a planted link included,
	// is unlinked and the file created afresh, never written through.
	f, err := fsutil.CreateReplacing(tmp, os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write([]byte(strconv.FormatUint(n, 10) + "\n"))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	return nil
}

// NewUUID returns a random (version 4) UUID in its canonical lower-case
// form, as fspl gen-uuid prints it.
func NewUUID() string {
	var b [16]byte
	if _, err := io.ReadFull(rand.Reader, b[:]); err != nil {
		// crypto/rand does not fail on Linux >= 3.17 (getrandom).
		panic("queue: crypto/rand: " + err.Error())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hex = "0123456789abcdef"
	var s strings.Builder
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			s.WriteByte('-')
		}
		s.WriteByte(hex[c>>4])
		s.WriteByte(hex[c&0xf])
	}
	return s.String()
}

// NewJobFilename returns a fresh fspl-<uuid>.fspl name.
func NewJobFilename() string { return "fspl-" + NewUUID() + ".fspl" }

// IsJobFilename reports whether name is a job in a jobs/ directory:
// fspl-*.fspl.
func IsJobFilename(name string) bool {
	return len(name) >= len("fspl-.fspl") && strings.HasPrefix(name, "fspl-") && strings.HasSuffix(name, ".fspl")
}

// parseSeq parses a seqfile's content: a decimal number and a newline.
func parseSeq(path string, b []byte) (uint64, error) {
	s := strings.TrimSpace(string(b))
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: not a sequence number: %q", path, s)
	}
	return n, nil
}

// LockHeldError is a lock that another process (pipespool or fspl) holds:
// exit 75.
type LockHeldError = fsutil.LockHeldError

// Lock is a held flock(2) on a lock file; Release releases it.
type Lock = fsutil.Lock

// AcquireLock takes the lock on path at once, creating the file when
// create is set. A lock held elsewhere is a *LockHeldError.
func AcquireLock(path string, create bool) (*Lock, error) {
	return acquireLockWait(context.Background(), path, create, 0)
}

// acquireLockWait is AcquireLock that waits up to wait for a lock another
// process holds; ctx cancels the wait.
func acquireLockWait(ctx context.Context, path string, create bool, wait time.Duration) (*Lock, error) {
	return fsutil.Acquire(ctx, path, fsutil.LockOptions{Create: create, Wait: wait,
		Holder: "pipespool or fspl is using this queue or seqfile"})
}
