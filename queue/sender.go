package queue

import (
	"fmt"
	"math"
)

// The sender's seqfile (prepare, prepare-get-next, prepare-set-next): each
// operation takes the seqfile's lock for its whole length, as fspl does.
// The path "-" means no seqfile: every packet is number 1, and setting a
// number does nothing.

// NoSeqFile is the seqfile path that means none.
const NoSeqFile = "-"

// UseNext runs f with the next sequence number of the seqfile at path,
// under its lock, and advances the seqfile only when f succeeds, so that a
// failed write does not use up a number.
//
// The advanced number is staged (written and fsynced beside the seqfile)
// before f runs, and made current by one rename once f is done: a kill
// after f's packet is whole and before the rename leaves the old number,
// which the next prepare reuses (the queue then stops on two jobs with one
// number); staging ahead shrinks that window from two fsyncs to a rename.
func UseNext(path string, f func(seq uint64) error) error {
	if path == NoSeqFile {
		return f(1)
	}
	sf := SeqFile{Path: path}
	lock, err := sf.Lock(true)
	if err != nil {
		return fmt.Errorf("seqfile %s: %w", path, err)
	}
	defer lock.Release()
	seq, err := sf.ReadOrInit()
	if err != nil {
		return err
	}
	if seq == math.MaxUint64 {
		// The next number would wrap to 0 (fspl's does), and the
		// receiving queue would start over below every job it ran.
		return fmt.Errorf("seqfile %s: %d is the largest sequence number there is: no packet can follow it; "+
			"set a lower one with prepare-set-next, and the queue's to match with queue-set-next", path, seq)
	}
	if err := sf.Stage(seq + 1); err != nil {
		return fmt.Errorf("seqfile %s: %w", path, err)
	}
	if err := f(seq); err != nil {
		sf.Discard()
		return err
	}
	return sf.Commit()
}

// PeekNext returns the number the next UseNext of path will use, creating
// the seqfile with 1 when it is missing (as fspl does).
func PeekNext(path string) (uint64, error) {
	if path == NoSeqFile {
		return 1, nil
	}
	sf := SeqFile{Path: path}
	lock, err := sf.Lock(true)
	if err != nil {
		return 0, fmt.Errorf("seqfile %s: %w", path, err)
	}
	defer lock.Release()
	return sf.ReadOrInit()
}

// SetNext makes n the number the next UseNext of path will use.
func SetNext(path string, n uint64) error {
	if path == NoSeqFile {
		return nil
	}
	sf := SeqFile{Path: path}
	lock, err := sf.Lock(true)
	if err != nil {
		return fmt.Errorf("seqfile %s: %w", path, err)
	}
	defer lock.Release()
	return sf.Write(n)
}
