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
	"strings"
	"time"

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
	fi, err := os.Lstat(sf.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return sf.Write(1)
	case err != nil:
		return fmt.Errorf("queue-init: %w", err)
	case !fi.Mode().IsRegular():
		// Kept, it would be read through; replaced, somebody's file
		// would be lost: neither, say so.
		return fmt.Errorf("queue-init: %s is a %s, not a regular file: remove it, then run queue-init again", sf.Path, fsutil.TypeName(fi.Mode()))
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

// Job is a job file of a queue, as a scan found it: what listing and
// ordering need, nothing of its params or environment (a header can hold
// megabytes of them, and a queue thousands of headers).
type Job struct {
	Name       string // file name in jobs/
	Seq        uint64
	CTimeSecs  uint64
	CTimeNanos uint64
	Type       CmdType
}

// CTime returns the creation time of the job's packet.
func (j Job) CTime() time.Time { return time.Unix(int64(j.CTimeSecs), int64(j.CTimeNanos)) }

func jobOf(name string, h *Header) Job {
	return Job{Name: name, Seq: h.Seq, CTimeSecs: h.CTimeSecs, CTimeNanos: h.CTimeNanos, Type: h.Type}
}

// Scan reads the header of every job file (fspl-*.fspl) in jobs/, through
// dec when it is not nil. A file whose header does not parse, or that is
// not a regular file (a FIFO, a device, a directory, a symbolic link: none
// is ever opened for reading), is skipped with a warning naming it and the
// reason (fspl skips unparseable files too). The result is sorted by
// sequence number, then name.
func (q *Queue) Scan(ctx context.Context, dec *Decoder) ([]Job, error) {
	return q.newScanner(dec).scan(ctx)
}

// scanner reads the job files of one run: each file once, however often
// the directory is listed again (queue-process lists it again when the next
// job is missing, for jobs that arrived meanwhile), so that a junk file
// costs one read and one warning per run. A listing costs no syscall per
// file beyond reading the directory, except for the files it has to read:
// the directory entry says what is not a regular file (d_type), and a
// name seen in the run before is not looked at again. Packets arrive under
// new names (queue-write, gen-filename); the one exception made is a file
// that did not parse and has changed since (lstat): it may have been
// still in the writing.
type scanner struct {
	q    *Queue
	dec  *Decoder
	hs   headerScanner
	seen map[string]scanned // by name, from the last listing
}

// scanned is what a file was found to be.
type scanned struct {
	job *Job // nil: skipped, with a warning
	// unparsed: a regular file whose header did not parse, then with
	// this ctime: read again when it changed since.
	unparsed bool
	ctime    unix.Timespec
}

func (q *Queue) newScanner(dec *Decoder) *scanner {
	return &scanner{q: q, dec: dec, seen: map[string]scanned{}}
}

func (s *scanner) scan(ctx context.Context) ([]Job, error) {
	q := s.q
	d, err := fsutil.Open(q.JobsDir(), os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("scan queue: %w", err)
	}
	ents, err := d.ReadDir(-1)
	d.Close()
	if err != nil {
		return nil, fmt.Errorf("scan queue: %w", err)
	}
	seen := make(map[string]scanned, len(s.seen))
	var jobs []Job
	for _, e := range ents {
		name := e.Name()
		if !IsJobFilename(name) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, context.Cause(ctx)
		}
		sc, ok := s.seen[name]
		if !ok || sc.unparsed && s.changed(name, sc.ctime) {
			sc = s.read(ctx, name, e.Type())
		}
		if err := ctx.Err(); err != nil {
			return nil, context.Cause(ctx)
		}
		seen[name] = sc
		if sc.job != nil {
			jobs = append(jobs, *sc.job)
		}
	}
	s.seen = seen
	slices.SortFunc(jobs, func(a, b Job) int {
		return cmp.Or(cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.Name, b.Name))
	})
	return jobs, nil
}

// changed reports whether job file name's ctime is no longer ctime (or it
// cannot be looked at).
func (s *scanner) changed(name string, ctime unix.Timespec) bool {
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(s.q.JobsDir(), name), &st); err != nil {
		return true
	}
	return st.Ctim != ctime
}

// read reads the header of job file name, whose type the directory entry
// gave (0 for a regular file, or unknown); the warning for a file skipped
// is given here.
func (s *scanner) read(ctx context.Context, name string, typ fs.FileMode) scanned {
	q := s.q
	if typ&fs.ModeType != 0 {
		q.Logger.Warn("skipping job file: not a regular file", "file", q.JobPath(name), "type", fsutil.TypeName(typ))
		return scanned{}
	}
	f, err := q.openJob(name)
	var st unix.Stat_t
	if err == nil {
		// Taken before the read: a write during or after it shows.
		unix.Fstat(rawFD(f), &st)
		var h *Header
		h, err = s.readHeader(ctx, f)
		f.Close()
		if err == nil {
			job := jobOf(name, h)
			return scanned{job: &job}
		}
	}
	switch {
	case errors.Is(err, fs.ErrNotExist) || ctx.Err() != nil:
		// Processed or removed meanwhile; or interrupted.
		return scanned{}
	case errors.Is(err, fsutil.ErrNotRegular):
		// The entry's type was not known, or it was replaced since.
		q.Logger.Warn("skipping job file: not a regular file", "file", q.JobPath(name), "type", notRegularType(err))
		return scanned{}
	}
	q.Logger.Warn("skipping job file that does not parse", "file", q.JobPath(name), "reason", err.Error())
	return scanned{unparsed: true, ctime: st.Ctim}
}

// notRegularType is the type OpenRegular's error names: "FIFO", "symbolic
// link", ...
func notRegularType(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, "("); i >= 0 && strings.HasSuffix(msg, ")") {
		return msg[i+1 : len(msg)-1]
	}
	return msg
}

// readHeader reads the summary of the header of job file f, through the
// decoder when there is one.
func (s *scanner) readHeader(ctx context.Context, f *os.File) (*Header, error) {
	if s.dec.Empty() {
		return s.hs.summary(f)
	}
	st, err := s.dec.Start(ctx, f)
	if err != nil {
		return nil, err
	}
	h, err := s.hs.summary(st.Out)
	derr := st.Stop()
	if err != nil && derr != nil {
		// The decoder's own failure (a wrong key, not an OpenPGP
		// message) is the reason the header is missing.
		return nil, derr
	}
	return h, err
}

// openJob opens job file name for reading: only a regular file, never
// through a link, and never in a way that can block (a FIFO planted under
// a job's name would otherwise hold the queue's lock forever).
func (q *Queue) openJob(name string) (*os.File, error) {
	return fsutil.OpenRegular(filepath.Join(q.JobsDir(), name), true)
}

// FindJob returns the job with sequence number seq (through dec). Two
// job files with that number are a *DuplicateSeqError, unless dec
// verifies and only one of them is verified: that one is the job.
func (q *Queue) FindJob(ctx context.Context, dec *Decoder, seq uint64) (Job, error) {
	jobs, err := q.Scan(ctx, dec)
	if err != nil {
		return Job{}, err
	}
	var found []Job
	for _, j := range jobs {
		if j.Seq == seq {
			found = append(found, j)
		}
	}
	if len(found) > 1 && dec.Verifies() {
		// As for queue-process: a packet that is not verified is no
		// job, and the verified one with that number is the one shown.
		// None verified: the first is shown, which is refused.
		var verified []Job
		for _, j := range found {
			if err := q.VerifyJob(ctx, dec, j); err == nil {
				verified = append(verified, j)
			} else if ctx.Err() != nil {
				return Job{}, context.Cause(ctx)
			}
		}
		if len(verified) > 0 {
			found = verified
		} else {
			found = found[:1]
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
	return fmt.Sprintf("two jobs have sequence number %d: %s and %s; remove the one that should not run", e.Seq, QuoteName(e.First), QuoteName(e.Second))
}
