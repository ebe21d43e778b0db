package queue

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeSigned adds a packet with seq to q whose payload says whether the
// required key signed it (see signingFilter), and returns its file name.
func writeSigned(t *testing.T, q *Queue, seq uint64, signed bool) string {
	t.Helper()
	payload := "signed-" + string(rune('0'+seq))
	if !signed {
		payload = "UNSIGNED attacker's payload"
	}
	name, err := q.Write(strings.NewReader(string(Encode(&Header{Seq: seq, Params: [][]byte{[]byte("p")}})) + payload))
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// TestUnverifiedPacketIsNoJob: with require_signed_by, a packet that is
// not verified was a failed job: under Retry an attacker's packet carrying
// the next number stopped the queue, under Delete it consumed the number,
// and the sender's packet with it was then never run. Now it is skipped
// and left in place, nextseq stays, and the verified packet with that
// number runs, whether it is there already or comes later.
func TestUnverifiedPacketIsNoJob(t *testing.T) {
	for _, onError := range []OnError{OnErrorRetry, OnErrorDelete, OnErrorLeave} {
		t.Run(onError.String(), func(t *testing.T) {
			run := func(q *Queue) (*fakeRunner, string) {
				t.Helper()
				var log strings.Builder
				q.Logger = logTo(&log)
				r := &fakeRunner{}
				if err := q.Process(context.Background(), ProcessOptions{Runner: r, Decoder: verifyingDecoder(t), OnError: onError, AllowJobParams: true}); err != nil {
					t.Fatalf("Process: %v\n%s", err, log.String())
				}
				return r, log.String()
			}
			leftInPlace := func(q *Queue, name string) {
				t.Helper()
				if _, err := os.Stat(filepath.Join(q.JobsDir(), name)); err != nil {
					t.Errorf("the unverified packet is gone: %v", err)
				}
			}
			t.Run("before the sender's packet", func(t *testing.T) {
				q := newTestQueue(t)
				evil := writeSigned(t, q, 1, false)
				r, log := run(q)
				if len(r.ran) != 0 || nextSeq(t, q) != 1 {
					t.Fatalf("ran %v, nextseq %d: the attacker's packet ran or took the number", r.ran, nextSeq(t, q))
				}
				if !strings.Contains(log, evil) || !strings.Contains(log, "not verified") || !strings.Contains(log, "signature missing") {
					t.Errorf("the warning does not name the packet and why:\n%s", log)
				}
				leftInPlace(q, evil)
				writeSigned(t, q, 1, true)
				writeSigned(t, q, 2, true)
				r, _ = run(q)
				if len(r.ran) != 2 || r.ran[0] != 1 || r.data[1] != "signed-1" || r.ran[1] != 2 || nextSeq(t, q) != 3 {
					t.Fatalf("ran %v (%q), nextseq %d: want the sender's 1 then 2", r.ran, r.data[1], nextSeq(t, q))
				}
				leftInPlace(q, evil)
			})
			t.Run("beside the sender's packet", func(t *testing.T) {
				q := newTestQueue(t)
				evil := writeSigned(t, q, 1, false)
				writeSigned(t, q, 1, true)
				later := writeSigned(t, q, 2, false) // and one for a number to come
				r, log := run(q)
				if len(r.ran) != 1 || r.data[1] != "signed-1" || nextSeq(t, q) != 2 {
					t.Fatalf("ran %v (%q), nextseq %d: want the sender's 1 only", r.ran, r.data[1], nextSeq(t, q))
				}
				if strings.Count(log, "not verified") != 2 || !strings.Contains(log, evil) || !strings.Contains(log, later) {
					t.Errorf("want one warning for each unverified packet:\n%s", log)
				}
				leftInPlace(q, evil)
				leftInPlace(q, later)
				writeSigned(t, q, 2, true)
				if r, _ = run(q); len(r.ran) != 1 || r.data[2] != "signed-2" || nextSeq(t, q) != 3 {
					t.Fatalf("ran %v (%q), nextseq %d: want the sender's 2", r.ran, r.data[2], nextSeq(t, q))
				}
			})
		})
	}
}

// TestTwoVerifiedPacketsAreADuplicate: an unverified candidate does not
// hide two verified ones with the same number, which stop the queue as
// without a decoder.
func TestTwoVerifiedPacketsAreADuplicate(t *testing.T) {
	q := newTestQueue(t)
	writeSigned(t, q, 1, true)
	writeSigned(t, q, 1, false)
	writeSigned(t, q, 1, true)
	r := &fakeRunner{}
	err := q.Process(context.Background(), ProcessOptions{Runner: r, Decoder: verifyingDecoder(t), OnError: OnErrorDelete})
	var dup *DuplicateSeqError
	if !errors.As(err, &dup) || len(r.ran) != 0 || nextSeq(t, q) != 1 || jobCount(t, q) != 3 {
		t.Fatalf("err %v, ran %v, nextseq %d, %d jobs", err, r.ran, nextSeq(t, q), jobCount(t, q))
	}
}

// TestUnverifiedPacketByTimestamp: in Timestamp order, where every job
// present runs, an unverified packet is skipped and stays, also under
// Delete.
func TestUnverifiedPacketByTimestamp(t *testing.T) {
	q := newTestQueue(t)
	evil := writeSigned(t, q, 5, false)
	writeSigned(t, q, 6, true)
	r := &fakeRunner{}
	if err := q.Process(context.Background(), ProcessOptions{Runner: r, Decoder: verifyingDecoder(t), OrderBy: OrderTimestamp, OnError: OnErrorDelete}); err != nil {
		t.Fatal(err)
	}
	if len(r.ran) != 1 || r.ran[0] != 6 || jobCount(t, q) != 1 {
		t.Fatalf("ran %v, %d jobs left", r.ran, jobCount(t, q))
	}
	if _, err := os.Stat(filepath.Join(q.JobsDir(), evil)); err != nil {
		t.Errorf("the unverified packet was deleted: %v", err)
	}
}

// TestFindJobPrefersTheVerifiedPacket: queue-info and queue-payload show
// the verified packet of two with one number.
func TestFindJobPrefersTheVerifiedPacket(t *testing.T) {
	q := newTestQueue(t)
	writeSigned(t, q, 1, false)
	good := writeSigned(t, q, 1, true)
	writeSigned(t, q, 1, false)
	job, err := q.FindJob(context.Background(), verifyingDecoder(t), 1)
	if err != nil || job.Name != good {
		t.Fatalf("FindJob = %v, %v; want %s", job.Name, err, good)
	}
	if _, err := q.FindJob(context.Background(), nil, 1); err == nil {
		t.Errorf("without a verifying decoder, three packets with one number are no duplicate")
	}
}
