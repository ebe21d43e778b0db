package pipeline

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runBuffered runs a job body (in dir, input "in" of size bytes of random
// data) and returns the report, the error, the log and the frames drawn.
func runBuffered(t *testing.T, body string, size int) (*Report, error, string, []string, []byte) {
	t.Helper()
	dir := t.TempDir()
	in := make([]byte, size)
	rand.Read(in)
	if err := os.WriteFile(filepath.Join(dir, "in"), in, 0o644); err != nil {
		t.Fatal(err)
	}
	job, err := Parse(filepath.Join(dir, "job.toml"), []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	var fr frames
	rep, err := Run(context.Background(), job, Options{Progress: &fr,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Grace: time.Second})
	fr.mu.Lock()
	defer fr.mu.Unlock()
	return rep, err, logs.String(), fr.f, in
}

// TestBufferFullIsBackPressureNotAStall: a consumer that reads nothing
// while its buffer is full is the stage that stalled; its producer,
// idle for as long behind the full buffer, waits on it and is not.
func TestBufferFullIsBackPressureNotAStall(t *testing.T) {
	rep, err, logs, fr, _ := runBuffered(t, `
stall_timeout = "500ms"
on_stall = "kill"
pipe_size = "64KiB"
[input]
path = "in"
[output]
path = "none"
[[stage]]
name = "feed"
command = ["cat"]
[[stage]]
name = "slow"
shell = "sleep 30; cat"
buffer = "2MiB"
`, 8<<20)
	var re *RunError
	if !errors.As(err, &re) || rep.RootCause != "slow" {
		t.Fatalf("err %v, root cause %q: want slow stalled and killed\nlog: %s", err, rep.RootCause, logs)
	}
	if rep.Stages[0].Stalls != 0 || rep.Stages[1].Stalls == 0 {
		t.Errorf("stalls feed %d, slow %d: want 0 and at least 1 (%q)", rep.Stages[0].Stalls, rep.Stages[1].Stalls, rep.Stages[1].Diagnoses)
	}
	if d := strings.Join(rep.Stages[1].Diagnoses, " "); !strings.Contains(d, "its input buffer holds 2.0 MiB of 2.0 MiB") {
		t.Errorf("diagnosis %q does not say what the buffer holds", d)
	}
	if s := rep.Stages[1]; s.Buffer != 2<<20 || s.BufferPeak == nil || *s.BufferPeak != 2<<20 {
		t.Errorf("report: buffer %d, peak %v; want a full 2 MiB", s.Buffer, s.BufferPeak)
	}
	if rep.Stages[0].Buffer != 0 || rep.Stages[0].BufferPeak != nil {
		t.Errorf("feed has no buffer: %+v", rep.Stages[0])
	}
	var waiting bool
	for _, f := range fr {
		for _, l := range strings.Split(f, "\n") {
			waiting = waiting || strings.HasPrefix(l, "feed") && strings.Contains(l, "waiting on slow")
		}
	}
	if !waiting {
		t.Errorf("the display never showed feed waiting on slow: %q", fr)
	}
}

// TestBufferBelowStartLevelWaitsOnProducer: below buffer_start_at the
// buffer delivers nothing; its consumer, starved, waits on the producer,
// and the producer that sends nothing more is the stage that stalled.
func TestBufferBelowStartLevelWaitsOnProducer(t *testing.T) {
	rep, err, logs, _, _ := runBuffered(t, `
stall_timeout = "500ms"
on_stall = "kill"
pipe_size = "64KiB"
[input]
path = "none"
[output]
path = "none"
[[stage]]
name = "trickle"
shell = "head -c 1048576 /dev/zero; sleep 30"
[[stage]]
name = "tape"
command = ["cat"]
buffer = "4MiB"
buffer_start_at = "50%"
`, 0)
	var re *RunError
	if !errors.As(err, &re) || rep.RootCause != "trickle" {
		t.Fatalf("err %v, root cause %q: want trickle stalled and killed\nlog: %s", err, rep.RootCause, logs)
	}
	// Tape is never called stalled: it waits on trickle, and 1 MiB is
	// below the start level. Once trickle is killed its stream ends, and a
	// buffer writes out what it holds at the end of its input, start
	// level or not: that race with the run's stop may hand tape part of
	// the 1 MiB, never more.
	if rep.Stages[1].Stalls != 0 || rep.Stages[1].BytesIn > 1<<20 {
		t.Errorf("tape: %d stalls, %d bytes in: want no stall and at most the 1 MiB trickle wrote", rep.Stages[1].Stalls, rep.Stages[1].BytesIn)
	}
	if p := rep.Stages[1].BufferPeak; p == nil || *p != 1<<20 {
		t.Errorf("peak %v, want 1 MiB", p)
	}
}

// TestBufferPausingConsumerGetsEveryByte: a consumer that reads in bursts
// with pauses gets every byte in order, the buffer fills meanwhile, and
// the counts are exact on both sides of the buffered hop.
func TestBufferPausingConsumerGetsEveryByte(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	rep, err, logs, _, in := runBuffered(t, `
pipe_size = "64KiB"
[input]
path = "in"
[output]
path = "`+out+`"
[[stage]]
name = "feed"
command = ["cat"]
[[stage]]
name = "bursts"
shell = "for i in 1 2 3; do head -c 1048576; sleep 0.1; done; cat"
buffer = "2MiB"
`, 6<<20)
	if err != nil {
		t.Fatalf("%v\nlog: %s", err, logs)
	}
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, in) {
		t.Fatalf("output %d bytes (%v), want the %d bytes of the input", len(got), err, len(in))
	}
	feed, bursts := rep.Stages[0], rep.Stages[1]
	if feed.BytesOut != int64(len(in)) || bursts.BytesIn != int64(len(in)) || bursts.BytesOut != int64(len(in)) {
		t.Errorf("bytes: feed out %d, bursts in %d out %d; want %d", feed.BytesOut, bursts.BytesIn, bursts.BytesOut, len(in))
	}
	if p := bursts.BufferPeak; p == nil || *p != 2<<20 {
		t.Errorf("peak %v: the buffer never filled during the pauses", p)
	}
}
