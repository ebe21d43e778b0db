package pipeline

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipespool/pipespool/progress"
)

// syncBuffer is a bytes.Buffer safe for the monitor and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// frames records the frames of the progress display, the final one last.
type frames struct {
	mu sync.Mutex
	f  []string
}

func (f *frames) Interval() time.Duration { return progress.TermInterval }

func (f *frames) Draw(b *progress.Board) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.f = append(f.f, string(b.Frame(0)))
}

func (f *frames) Close(b *progress.Board, result string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.f = append(f.f, string(b.Final(0, result)))
}

// TestStallKillInProcess runs a stall through Run itself, so that the race
// detector sees the monitor next to the runner, pumps and stages: a
// stage that never reads is blamed and stopped, the one writing to it is
// only waiting, and the progress display says so and ends with its final
// frame.
func TestStallKillInProcess(t *testing.T) {
	dir := t.TempDir()
	job, err := Parse(filepath.Join(dir, "job.toml"), []byte(`
stall_timeout = "1s"
on_stall = "kill"
[output]
path = "none"
[[stage]]
name = "zero"
command = ["cat", "/dev/zero"]
[[stage]]
name = "sleeper"
command = ["sleep", "30"]
`))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	var fr frames
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	rep, err := Run(context.Background(), job, Options{Stdin: devnull, Progress: &fr,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Grace: time.Second})
	var re *RunError
	if !errors.As(err, &re) {
		t.Fatalf("err %v, want a RunError\nlog: %s", err, logs.String())
	}
	if rep.RootCause != "sleeper" || rep.Stages[1].Stalls != 1 || rep.Stages[0].Stalls != 0 {
		t.Errorf("root %q, stalls %d/%d", rep.RootCause, rep.Stages[0].Stalls, rep.Stages[1].Stalls)
	}
	// The diagnosis is logged; sleep is no missed wake-up.
	if l := logs.String(); !strings.Contains(l, "stalled: no progress") || strings.Contains(l, "missed wake-up") {
		t.Errorf("log: %s", l)
	}
	fr.mu.Lock()
	defer fr.mu.Unlock()
	if len(fr.f) < 2 || !strings.Contains(fr.f[len(fr.f)-1], "sleeper") || !strings.Contains(fr.f[len(fr.f)-1], "failed") {
		t.Fatalf("progress frames %q: want some, and a final one with the sleeper failed", fr.f)
	}
	var sawWaiting, sawStalled bool
	for _, f := range fr.f {
		sawWaiting = sawWaiting || strings.Contains(f, "waiting on sleeper")
		sawStalled = sawStalled || strings.Contains(f, "stalled")
	}
	if !sawWaiting || !sawStalled {
		t.Errorf("frames never showed zero waiting on sleeper (%v) and sleeper stalled (%v): %q", sawWaiting, sawStalled, fr.f)
	}
}

// TestStallExitedStageHoldingStdoutInProcess runs, under the race
// detector, a stage whose main process exits while the process it left in
// its group holds its stdout: the monitor diagnoses it, on_stall = kill
// stops the holder, and the run fails with the stage as the root cause
// instead of waiting for ever.
func TestStallExitedStageHoldingStdoutInProcess(t *testing.T) {
	dir := t.TempDir()
	job, err := Parse(filepath.Join(dir, "job.toml"), []byte(`
stall_timeout = "1s"
on_stall = "kill"
[output]
path = "none"
[[stage]]
name = "leaver"
shell = "sleep 300 & cat"
[[stage]]
name = "sink"
command = ["cat"]
`))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	in, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	start := time.Now()
	rep, err := Run(context.Background(), job, Options{Stdin: in,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Grace: time.Second})
	var re *RunError
	if !errors.As(err, &re) {
		t.Fatalf("err %v, want a RunError\nlog: %s", err, logs.String())
	}
	if rep.RootCause != "leaver" || len(rep.Stages[0].Diagnoses) != 1 || len(rep.Stages[1].Diagnoses) != 0 {
		t.Fatalf("root %q, diagnoses %q / %q", rep.RootCause, rep.Stages[0].Diagnoses, rep.Stages[1].Diagnoses)
	}
	if d := rep.Stages[0].Diagnoses[0]; !strings.Contains(d, "exited (exit 0); PID ") || !strings.Contains(d, "(sleep 300) still holds its stdout") {
		t.Errorf("diagnosis %q", d)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s", took)
	}
}

// TestRateLimitIsNotAStall: at 1 B/s a limited hop moves a byte a second,
// slower than a stall_timeout of 500 ms; neither the stage it feeds (which
// has read all it was given) nor the stage writing into it (blocked on its
// full pipe) is stalled: both wait on the rate limit, and the display says
// so. The job's timeout then ends the run, limited pump and all, at once.
func TestRateLimitIsNotAStall(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	if err := os.WriteFile(in, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	job, err := Parse(filepath.Join(dir, "job.toml"), []byte(`
stall_timeout = "500ms"
on_stall = "kill"
timeout = "3s"
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
command = ["cat"]
rate_limit = "1B/s"
`))
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	var fr frames
	start := time.Now()
	rep, err := Run(context.Background(), job, Options{Progress: &fr,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Grace: time.Second})
	took := time.Since(start)
	var re *RunError
	if !errors.As(err, &re) || rep.Result != ResultTimeout {
		t.Fatalf("err %v, result %v: want the job's timeout\nlog: %s", err, rep.Result, logs.String())
	}
	for _, s := range rep.Stages {
		if s.Stalls != 0 {
			t.Errorf("stage %s: %d stalls: %q", s.Name, s.Stalls, s.Diagnoses)
		}
	}
	if rep.Stages[1].RateLimit != 1 || rep.Stages[0].RateLimit != 0 {
		t.Errorf("report rate limits %d, %d; want 0, 1", rep.Stages[0].RateLimit, rep.Stages[1].RateLimit)
	}
	if in := rep.Stages[1].BytesIn; in < 1 || in > 5 {
		t.Errorf("slow read %d bytes in 3 s at 1 B/s", in)
	}
	if took > 3*time.Second+5*time.Second {
		t.Errorf("the run took %v: the timeout of 3s did not end the limited pump at once", took)
	}
	fr.mu.Lock()
	defer fr.mu.Unlock()
	var upstream, downstream bool
	for _, f := range fr.f {
		for _, l := range strings.Split(f, "\n") {
			upstream = upstream || strings.HasPrefix(l, "feed") && strings.Contains(l, "waiting on the rate limit")
			downstream = downstream || strings.HasPrefix(l, "slow") && strings.Contains(l, "waiting on the rate limit")
		}
	}
	if !upstream || !downstream {
		t.Errorf("the display never showed feed (%v) and slow (%v) waiting on the rate limit: %q", upstream, downstream, fr.f)
	}
}
