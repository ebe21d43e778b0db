package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/pipespool/pipespool/fsutil"
)

// Queue is a queue directory.
type Queue struct {
	Dir    string       // as given by the user: FSPL_JOB_QUEUEDIR and paths are built on it
	Logger *slog.Logger // nil discards
}

// Open returns the queue at dir without touching the disk.
func Open(dir string, logger *slog.Logger) *Queue {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Queue{Dir: dir, Logger: logger}
}

// JobsDir is DIR/jobs.
func (q *Queue) JobsDir() string { return filepath.Join(q.Dir, "jobs") }

// NextSeqFile is DIR/nextseq with its lock DIR/nextseq.lock.
func (q *Queue) NextSeqFile() SeqFile { return SeqFile{Path: filepath.Join(q.Dir, "nextseq")} }

// JobPath is the path of a job file, as FSPL_JOB_FULLPATH shows it.
func (q *Queue) JobPath(name string) string { return q.Dir + "/jobs/" + name }

// Init creates the queue directory: DIR, DIR/jobs, and unless appendOnly
// DIR/nextseq (= 1) and DIR/nextseq.lock. An existing nextseq is kept, so
// that running Init twice cannot rewind a queue.
func Init(dir string, appendOnly bool) error {
	if err := os.MkdirAll(filepath.Join(dir, "jobs"), 0o755); err != nil {
		return fmt.Errorf("queue-init: %w", err)
	}
	if err := fsutil.SyncDir(dir); err != nil {
		return err
	}
	if appendOnly {
		return nil
	}
	q := Open(dir, nil)
	sf := q.NextSeqFile()
	lock, err := sf.Lock(true)
	if err != nil {
		return fmt.Errorf("queue-init %s: %w", dir, err)
	}
	defer lock.Release()
	if _, err := os.Stat(sf.Path); errors.Is(err, fs.ErrNotExist) {
		return sf.Write(1)
	} else if err != nil {
		return fmt.Errorf("queue-init: %w", err)
	}
	return fsutil.SyncDir(dir)
}

// Write stores the packet read from r as a new job: it writes
// jobs/tmp-fspl-<uuid>.fspl.tmp, fsyncs it, renames it to
// jobs/fspl-<uuid>.fspl and fsyncs jobs/. On error nothing is left under a
// job name. It returns the job's file name. The packet is not validated, as
// with fspl: a broken one is skipped by the reader.
func (q *Queue) Write(r io.Reader) (string, error) {
	uuid := NewUUID()
	tmp := filepath.Join(q.JobsDir(), "tmp-fspl-"+uuid+".fspl.tmp")
	name := "fspl-" + uuid + ".fspl"
	f, err := fsutil.CreateExclusive(tmp, os.O_WRONLY, 0o644)
	if err != nil {
		return "", fmt.Errorf("queue-write: %w", err)
	}
	_, err = Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(q.JobsDir(), name))
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("queue-write to %s: %w", q.JobsDir(), err)
	}
	return name, fsutil.SyncDir(q.JobsDir())
}

// copyBufSize is the buffer for copies that the kernel cannot do by itself
// (copy_file_range, splice, sendfile): large, to amortize syscalls over
// multi-GiB payloads.
const copyBufSize = 1 << 20

// Copy copies r to w: in the kernel when both are files (see CopyFile),
// through a 1 MiB buffer otherwise.
func Copy(w io.Writer, r io.Reader) (int64, error) {
	if wf, ok := w.(*os.File); ok {
		if rf, ok := r.(*os.File); ok {
			return CopyFile(wf, rf)
		}
	}
	return io.CopyBuffer(w, r, make([]byte, copyBufSize))
}

// Job is a job file of a queue with its decoded header.
type Job struct {
	Name   string // file name in jobs/
	Header *Header
}

// Scan reads the header of every job file (fspl-*.fspl) in jobs/, through
// dec when it is not nil. A file whose header does not parse is skipped with
// a warning naming it and the reason (fspl skips them too). The result is
// sorted by sequence number, then name.
func (q *Queue) Scan(ctx context.Context, dec *Decoder) ([]Job, error) {
	ents, err := os.ReadDir(q.JobsDir())
	if err != nil {
		return nil, fmt.Errorf("scan queue: %w", err)
	}
	var jobs []Job
	for _, e := range ents {
		if !IsJobFilename(e.Name()) || e.IsDir() {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h, err := q.readJobHeader(ctx, e.Name(), dec)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // processed or removed meanwhile
			}
			q.Logger.Warn("skipping job file that does not parse", "file", q.JobPath(e.Name()), "reason", err.Error())
			continue
		}
		jobs = append(jobs, Job{Name: e.Name(), Header: h})
	}
	slices.SortFunc(jobs, func(a, b Job) int {
		return cmp.Or(cmp.Compare(a.Header.Seq, b.Header.Seq), cmp.Compare(a.Name, b.Name))
	})
	return jobs, nil
}

func (q *Queue) readJobHeader(ctx context.Context, name string, dec *Decoder) (*Header, error) {
	f, err := os.OpenFile(filepath.Join(q.JobsDir(), name), os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if dec.Empty() {
		return ReadHeader(f)
	}
	s, err := dec.Start(ctx, f)
	if err != nil {
		return nil, err
	}
	h, err := ReadHeader(s.Out)
	derr := s.Abort()
	if err != nil && derr != nil {
		// The decoder's own failure (a wrong key, not an OpenPGP
		// message) is the reason the header is missing.
		return nil, derr
	}
	return h, err
}

// FindJob returns the job with sequence number seq (through dec).
func (q *Queue) FindJob(ctx context.Context, dec *Decoder, seq uint64) (Job, error) {
	jobs, err := q.Scan(ctx, dec)
	if err != nil {
		return Job{}, err
	}
	var found []Job
	for _, j := range jobs {
		if j.Header.Seq == seq {
			found = append(found, j)
		}
	}
	switch len(found) {
	case 0:
		return Job{}, &JobNotFoundError{Seq: seq, Dir: q.Dir}
	case 1:
		return found[0], nil
	}
	return Job{}, &DuplicateSeqError{Seq: seq, First: q.JobPath(found[0].Name), Second: q.JobPath(found[1].Name)}
}

// JobNotFoundError is a job ID that is not in the queue.
type JobNotFoundError struct {
	Seq uint64
	Dir string
}

func (e *JobNotFoundError) Error() string {
	return fmt.Sprintf("job %d not found in queue %s (see queue-ls)", e.Seq, e.Dir)
}

// DuplicateSeqError is two job files with the same sequence number.
type DuplicateSeqError struct {
	Seq           uint64
	First, Second string
}

func (e *DuplicateSeqError) Error() string {
	return fmt.Sprintf("two jobs have sequence number %d: %s and %s; remove the one that should not run", e.Seq, e.First, e.Second)
}

// CopyPayload writes the payload of job (decoded with dec) to w.
func (q *Queue) CopyPayload(ctx context.Context, dec *Decoder, job Job, w io.Writer) error {
	path := filepath.Join(q.JobsDir(), job.Name)
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if dec.Empty() {
		if _, err := ReadHeader(f); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		_, err = Copy(w, f)
		return err
	}
	s, err := dec.Start(ctx, f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer s.Abort()
	if _, err := ReadHeader(s.Out); err != nil {
		if derr := s.Abort(); derr != nil {
			return fmt.Errorf("%s: %w", path, derr)
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	if _, err := Copy(w, s.Out); err != nil {
		return err
	}
	if err := s.Wait(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
