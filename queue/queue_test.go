package queue

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeRunner records the jobs it runs and fails those listed.
type fakeRunner struct {
	ran  []uint64
	fail map[uint64]bool
	data map[uint64]string
}

func (f *fakeRunner) RunJob(ctx context.Context, r *Run) error {
	f.ran = append(f.ran, r.Header.Seq)
	b, err := io.ReadAll(r.Payload)
	if err != nil {
		return err
	}
	if f.data == nil {
		f.data = map[uint64]string{}
	}
	f.data[r.Header.Seq] = string(b)
	if f.fail[r.Header.Seq] {
		return errors.New("told to fail")
	}
	return nil
}

func newTestQueue(t *testing.T, packets ...*Header) *Queue {
	t.Helper()
	dir := t.TempDir()
	if err := Init(dir, false); err != nil {
		t.Fatal(err)
	}
	q := Open(dir, nil)
	for _, h := range packets {
		payload := "payload-" + string(rune('a'+h.Seq%26))
		if _, err := q.Write(strings.NewReader(string(Encode(h)) + payload)); err != nil {
			t.Fatal(err)
		}
	}
	return q
}

func nextSeq(t *testing.T, q *Queue) uint64 {
	t.Helper()
	n, err := q.NextSeqFile().Read()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func jobCount(t *testing.T, q *Queue) int {
	t.Helper()
	ents, err := os.ReadDir(q.JobsDir())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if IsJobFilename(e.Name()) {
			n++
		}
	}
	return n
}

func TestProcessRunsInSequenceOrderAndStopsAtGap(t *testing.T) {
	q := newTestQueue(t, &Header{Seq: 3}, &Header{Seq: 1}, &Header{Seq: 2, Type: CmdNOP}, &Header{Seq: 5})
	r := &fakeRunner{}
	if err := q.Process(context.Background(), ProcessOptions{Runner: r}); err != nil {
		t.Fatal(err)
	}
	if len(r.ran) != 2 || r.ran[0] != 1 || r.ran[1] != 3 {
		t.Fatalf("ran %v, want [1 3] (2 is a NOP, 4 is missing)", r.ran)
	}
	if r.data[1] != "payload-b" {
		t.Fatalf("payload %q", r.data[1])
	}
	if n := nextSeq(t, q); n != 4 {
		t.Fatalf("nextseq %d, want 4", n)
	}
	if n := jobCount(t, q); n != 1 {
		t.Fatalf("%d jobs left, want 1 (seq 5)", n)
	}
}

func TestProcessOnError(t *testing.T) {
	for _, tc := range []struct {
		name     string
		onError  OnError
		wantErr  bool
		wantNext uint64
		wantJobs int
	}{
		{"Retry", OnErrorRetry, true, 2, 2},
		{"Delete", OnErrorDelete, false, 4, 0},
		{"Leave", OnErrorLeave, false, 4, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := newTestQueue(t, &Header{Seq: 1}, &Header{Seq: 2, Type: CmdFail}, &Header{Seq: 3})
			err := q.Process(context.Background(), ProcessOptions{Runner: &fakeRunner{}, OnError: tc.onError})
			var jf *JobFailedError
			if tc.wantErr != errors.As(err, &jf) || (tc.wantErr && jf.ExitCode() != 1) {
				t.Fatalf("err %v", err)
			}
			if n := nextSeq(t, q); n != tc.wantNext {
				t.Fatalf("nextseq %d, want %d", n, tc.wantNext)
			}
			if n := jobCount(t, q); n != tc.wantJobs {
				t.Fatalf("%d jobs left, want %d", n, tc.wantJobs)
			}
		})
	}
}

func TestProcessMaxJobsAndNeverDelete(t *testing.T) {
	q := newTestQueue(t, &Header{Seq: 1}, &Header{Seq: 2}, &Header{Seq: 3})
	r := &fakeRunner{}
	if err := q.Process(context.Background(), ProcessOptions{Runner: r, MaxJobs: 2, NeverDelete: true}); err != nil {
		t.Fatal(err)
	}
	if len(r.ran) != 2 || nextSeq(t, q) != 3 || jobCount(t, q) != 3 {
		t.Fatalf("ran %v, nextseq %d, jobs %d", r.ran, nextSeq(t, q), jobCount(t, q))
	}
}

func TestProcessDuplicateSeqNamesBothFiles(t *testing.T) {
	q := newTestQueue(t, &Header{Seq: 1}, &Header{Seq: 1})
	err := q.Process(context.Background(), ProcessOptions{Runner: &fakeRunner{}})
	var dup *DuplicateSeqError
	if !errors.As(err, &dup) || dup.First == dup.Second || !strings.Contains(err.Error(), dup.First) || !strings.Contains(err.Error(), dup.Second) {
		t.Fatalf("err %v", err)
	}
}

func TestProcessByTimestamp(t *testing.T) {
	q := newTestQueue(t, &Header{Seq: 9, CTimeSecs: 100}, &Header{Seq: 4, CTimeSecs: 300}, &Header{Seq: 7, CTimeSecs: 200})
	r := &fakeRunner{}
	if err := q.Process(context.Background(), ProcessOptions{Runner: r, OrderBy: OrderTimestamp}); err != nil {
		t.Fatal(err)
	}
	if len(r.ran) != 3 || r.ran[0] != 9 || r.ran[1] != 7 || r.ran[2] != 4 || nextSeq(t, q) != 1 || jobCount(t, q) != 0 {
		t.Fatalf("ran %v, nextseq %d", r.ran, nextSeq(t, q))
	}
}

func TestLockExcludes(t *testing.T) {
	q := newTestQueue(t, &Header{Seq: 1})
	l, err := q.NextSeqFile().Lock(false)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	err = q.Process(context.Background(), ProcessOptions{Runner: &fakeRunner{}})
	var held *LockHeldError
	if !errors.As(err, &held) || held.ExitCode() != 75 {
		t.Fatalf("err %v, want *LockHeldError", err)
	}
}

func TestScanSkipsBadFilesAndOtherNames(t *testing.T) {
	q := newTestQueue(t, &Header{Seq: 1})
	os.WriteFile(filepath.Join(q.JobsDir(), "fspl-bad.fspl"), []byte("garbage"), 0o644)
	os.WriteFile(filepath.Join(q.JobsDir(), "tmp-fspl-x.fspl.tmp"), Encode(&Header{Seq: 2}), 0o644)
	os.WriteFile(filepath.Join(q.JobsDir(), "other"), Encode(&Header{Seq: 3}), 0o644)
	jobs, err := q.Scan(context.Background(), nil)
	if err != nil || len(jobs) != 1 || jobs[0].Seq != 1 {
		t.Fatalf("jobs %v, err %v", jobs, err)
	}
}

func TestSeqFileDurableWriteAndInit(t *testing.T) {
	sf := SeqFile{Path: filepath.Join(t.TempDir(), "seq")}
	n, err := sf.ReadOrInit()
	if err != nil || n != 1 {
		t.Fatalf("%d %v", n, err)
	}
	if err := sf.Write(1<<64 - 1); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(sf.Path)
	if string(b) != "18446744073709551615\n" {
		t.Fatalf("%q", b)
	}
	if _, err := os.Stat(sf.Path + ".temp"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temp file left: %v", err)
	}
}

func TestSeqFileStageThenCommitOrDiscard(t *testing.T) {
	sf := SeqFile{Path: filepath.Join(t.TempDir(), "seq")}
	if err := sf.Write(4); err != nil {
		t.Fatal(err)
	}
	if err := sf.Stage(5); err != nil {
		t.Fatal(err)
	}
	// Staged is not current: a kill here leaves 4.
	if n, err := sf.Read(); err != nil || n != 4 {
		t.Fatalf("after Stage(5): %d %v, want 4", n, err)
	}
	if err := sf.Commit(); err != nil {
		t.Fatal(err)
	}
	if n, err := sf.Read(); err != nil || n != 5 {
		t.Fatalf("after Commit: %d %v, want 5", n, err)
	}
	if _, err := os.Stat(sf.Path + ".temp"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temp file left after Commit: %v", err)
	}
	if err := sf.Stage(6); err != nil {
		t.Fatal(err)
	}
	sf.Discard()
	if n, err := sf.Read(); err != nil || n != 5 {
		t.Fatalf("after Discard: %d %v, want 5", n, err)
	}
	if _, err := os.Stat(sf.Path + ".temp"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temp file left after Discard: %v", err)
	}
	// Nothing staged: Commit fails and leaves the number alone.
	if err := sf.Commit(); err == nil {
		t.Fatal("Commit with nothing staged succeeded")
	}
	if n, _ := sf.Read(); n != 5 {
		t.Fatalf("after a failed Commit: %d, want 5", n)
	}
}

func TestJobEnvOrder(t *testing.T) {
	h := &Header{Seq: 45, CTimeSecs: 1651970311, CTimeNanos: 425412511, Params: [][]byte{[]byte("a")},
		Env: []EnvVar{{Name: []byte("X"), Value: []byte("1\n2")}}}
	got := strings.Join(JobEnv(h, Open("q", nil), "fspl-x.fspl"), "|")
	want := "FSPL_SEQ=45|FSPL_CTIME_SECS=1651970311|FSPL_CTIME_NANOS=425412511|FSPL_CTIME_RFC3339_UTC=2022-05-08T00:38:31Z|" +
		"FSPL_CTIME_RFC3339_LOCAL=" + FormatLocalTime(h.CTime()) + "|FSPL_JOB_FILENAME=fspl-x.fspl|FSPL_JOB_QUEUEDIR=q|" +
		"FSPL_JOB_FULLPATH=q/jobs/fspl-x.fspl|FSPL_PARAM_1=a|FSPL_SET_X=1\n2"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestWithDecoderFailureNamesTheDecoderFirst(t *testing.T) {
	cmdErr, decErr := errors.New("sh: exit status 4"), errors.New(`decoder "openpgp": integrity check failed`)
	if got := withDecoderFailure(nil, nil); got != nil {
		t.Errorf("no failure: %v", got)
	}
	if got := withDecoderFailure(cmdErr, nil); got != cmdErr {
		t.Errorf("the command alone: %v", got)
	}
	if got := withDecoderFailure(nil, decErr); got != decErr {
		t.Errorf("the decoder alone: %v", got)
	}
	got := withDecoderFailure(cmdErr, decErr)
	if want := `decoder "openpgp": integrity check failed (then the command failed: sh: exit status 4)`; got.Error() != want {
		t.Errorf("both: %q, want %q", got, want)
	}
	if !errors.Is(got, cmdErr) || !errors.Is(got, decErr) {
		t.Errorf("both: %v does not wrap the two failures", got)
	}
}
