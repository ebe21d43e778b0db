package queue

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"
)

// NextSeq returns the queue's nextseq (queue-get-next), read under the
// queue's lock: a *LockHeldError while the queue is processed.
func (q *Queue) NextSeq() (uint64, error) {
	var n uint64
	err := q.withNextSeq(func(sf SeqFile) (err error) {
		n, err = sf.Read()
		return err
	})
	return n, err
}

// SetNextSeq makes n the queue's nextseq, durably (queue-set-next), under
// the queue's lock: a *LockHeldError while the queue is processed.
func (q *Queue) SetNextSeq(n uint64) error {
	return q.withNextSeq(func(sf SeqFile) error { return sf.Write(n) })
}

// withNextSeq runs f with the queue's nextseq locked.
func (q *Queue) withNextSeq(f func(SeqFile) error) error {
	lock, err := q.lockNextSeq()
	if err != nil {
		return err
	}
	defer lock.Release()
	return f(q.NextSeqFile())
}

// lockNextSeq takes the queue's lock, without waiting (a *LockHeldError
// while another process holds it). The lock file is never created: a
// directory without it is not a queue that runs jobs.
func (q *Queue) lockNextSeq() (*Lock, error) {
	return q.lockNextSeqWait(context.Background(), 0)
}

// lockNextSeqWait is lockNextSeq that waits up to wait while another
// process holds the lock (queue-process --queue-lock-wait).
func (q *Queue) lockNextSeqWait(ctx context.Context, wait time.Duration) (*Lock, error) {
	lock, err := acquireLockWait(ctx, q.NextSeqFile().LockPath(), false, wait)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: not a processable queue (missing nextseq.lock: run queue-init without --append-only): %w", q.Dir, err)
	}
	return lock, err
}
