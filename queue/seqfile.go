package queue

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/pipespool/pipespool/fsutil"
)

// SeqFile is a file holding one sequence number ("4\n"), with its lock file
// beside it (PATH.lock), as fspl keeps them: the sender's seqfile for
// prepare, the queue's nextseq.
type SeqFile struct {
	Path string
}

// LockPath is the file flocked while the seqfile is read and updated.
func (s SeqFile) LockPath() string { return s.Path + ".lock" }

// Lock takes the seqfile's lock (non-blocking), creating the lock file when
// create is set.
func (s SeqFile) Lock(create bool) (*Lock, error) { return AcquireLock(s.LockPath(), create) }

// Read returns the stored number. A missing file is an error wrapping
// fs.ErrNotExist.
//
// Only a regular file is read, never through a link and never a FIFO
// (which would block), and no more than a number's worth of it.
func (s SeqFile) Read() (uint64, error) {
	f, err := fsutil.OpenRegular(s.Path, true)
	if errors.Is(err, fsutil.ErrNotRegular) {
		return 0, fmt.Errorf("sequence file %s: %w: pipespool reads and replaces it only as a regular file of its own, "+
			"never through a link; remove it and set the number again (queue-set-next, prepare-set-next)", s.Path, err)
	}
	if err != nil {
		return 0, fmt.Errorf("read sequence file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSeqFileLen))
	if err != nil {
		return 0, fmt.Errorf("read sequence file: %w", err)
	}
	return parseSeq(s.Path, b)
}

// maxSeqFileLen bounds what is read of a seqfile: 20 digits, a newline,
// and room for whitespace; anything longer is not a sequence number.
const maxSeqFileLen = 64

// ReadOrInit returns the stored number, creating the file with 1 when it does
// not exist (as fspl's prepare does).
func (s SeqFile) ReadOrInit() (uint64, error) {
	n, err := s.Read()
	if errors.Is(err, fs.ErrNotExist) {
		return 1, s.Write(1)
	}
	return n, err
}

// Write replaces the stored number durably: PATH.temp is written, fsynced and
// renamed over PATH, then the directory is fsynced.
func (s SeqFile) Write(n uint64) error {
	if err := s.Stage(n); err != nil {
		return err
	}
	return s.Commit()
}

func (s SeqFile) tempPath() string { return s.Path + ".temp" }

// Stage is the first half of Write, done ahead of time: PATH.temp = n is
// written and fsynced, PATH is left alone. Commit then makes n current
// with one rename, so that what must happen between the work the number
// stands for and the number's advance is a rename, not two fsyncs.
func (s SeqFile) Stage(n uint64) error {
	if err := writeTempDurably(s.tempPath(), n); err != nil {
		os.Remove(s.tempPath())
		return err
	}
	return nil
}

// Commit renames the number staged by Stage over PATH and fsyncs the
// directory.
func (s SeqFile) Commit() error {
	if err := os.Rename(s.tempPath(), s.Path); err != nil {
		s.Discard()
		return fmt.Errorf("write %s: %w", s.Path, err)
	}
	return fsutil.SyncDir(filepath.Dir(s.Path))
}

// Discard removes a number staged and not committed.
func (s SeqFile) Discard() { os.Remove(s.tempPath()) }
