package queue

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestUseNextAdvancesOnlyOnSuccess: a failed f leaves the number to the
// next packet and no staged file behind; a successful one advances it.
func TestUseNextAdvancesOnlyOnSuccess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seq")
	var got []uint64
	use := func(seq uint64) error { got = append(got, seq); return nil }
	boom := errors.New("boom")
	if err := UseNext(path, use); err != nil {
		t.Fatal(err)
	}
	if err := UseNext(path, func(seq uint64) error { got = append(got, seq); return boom }); !errors.Is(err, boom) {
		t.Fatalf("err %v, want boom", err)
	}
	if err := UseNext(path, use); err != nil {
		t.Fatal(err)
	}
	if want := []uint64{1, 2, 2}; !slices.Equal(got, want) {
		t.Errorf("numbers %v, want %v", got, want)
	}
	if n, err := PeekNext(path); err != nil || n != 3 {
		t.Errorf("PeekNext = %d, %v; want 3", n, err)
	}
	if _, err := os.Lstat(path + ".temp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("staged number left behind: %v", err)
	}
}

// TestUseNextRefusesToWrap: after 2^64-1 there is no number; f is not run.
func TestUseNextRefusesToWrap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seq")
	if err := SetNext(path, math.MaxUint64); err != nil {
		t.Fatal(err)
	}
	ran := false
	err := UseNext(path, func(uint64) error { ran = true; return nil })
	if err == nil || ran || !strings.Contains(err.Error(), "largest sequence number") {
		t.Fatalf("err %v, ran %v", err, ran)
	}
}

// TestNoSeqFile: "-" is number 1 every time, and is never written.
func TestNoSeqFile(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for range 2 {
		if err := UseNext(NoSeqFile, func(seq uint64) error {
			if seq != 1 {
				t.Errorf("seq %d, want 1", seq)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := PeekNext(NoSeqFile); n != 1 || err != nil {
		t.Errorf("PeekNext = %d, %v", n, err)
	}
	if err := SetNext(NoSeqFile, 7); err != nil {
		t.Error(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("files written: %v", ents)
	}
}

// TestQueueNextSeq: queue-get-next and queue-set-next read and write
// nextseq under the queue's lock, which they never create: an append-only
// queue has none, and is said to be one.
func TestQueueNextSeq(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "q")
	if err := Init(dir, false); err != nil {
		t.Fatal(err)
	}
	q := Open(dir, nil)
	if err := q.SetNextSeq(43); err != nil {
		t.Fatal(err)
	}
	if n, err := q.NextSeq(); n != 43 || err != nil {
		t.Errorf("NextSeq = %d, %v; want 43", n, err)
	}
	ao := filepath.Join(t.TempDir(), "ao")
	if err := Init(ao, true); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ao, nil).NextSeq(); err == nil || !strings.Contains(err.Error(), "not a processable queue") {
		t.Errorf("append-only queue: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(ao, "nextseq.lock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the lock file was created: %v", err)
	}
}
