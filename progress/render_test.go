package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// TestNoLineReachesTheWidth: at any width, with long names, a long state,
// a buffer column and a known size, no line of a frame or a final frame
// takes the last column (where a terminal would wrap it).
func TestNoLineReachesTheWidth(t *testing.T) {
	b := NewBoard(Config{Job: "nightly-backup-of-everything", Stages: []string{"decrypt", "décompresse-avec-un-nom-très-long", "x\x1b[2Jy"}, Size: 5 << 40}, t0)
	b.Update(t0.Add(time.Hour), []StageSample{
		{In: 3 << 40, Out: 3 << 40, State: "running", Buffer: -1},
		{In: 3 << 40, Out: 9 << 40, State: "waiting on receive-with-a-long-name", Buffer: 100},
		{In: 9 << 40, Out: 0, State: "stalled, nudged", Buffer: -1},
	})
	for width := 1; width <= 160; width++ {
		for _, frame := range [][]byte{b.Frame(width), b.Final(width, "failed")} {
			lines := strings.Split(strings.TrimSuffix(string(frame), "\n"), "\n")
			if len(lines) != 4 {
				t.Fatalf("width %d: %d lines: %q", width, len(lines), frame)
			}
			for _, l := range lines {
				if n := utf8.RuneCountInString(l); n > max(width-1, 0) {
					t.Errorf("width %d: line of %d columns: %q", width, n, l)
				}
				if strings.ContainsRune(l, '\x1b') {
					t.Errorf("width %d: control character of a name drawn: %q", width, l)
				}
			}
		}
	}
	// Unlimited: everything is there.
	f := string(b.Frame(0))
	for _, want := range []string{"of 5.0 TiB", "60.0%", "ETA", "buf 100%", "in ", "/s"} {
		if !strings.Contains(f, want) {
			t.Errorf("frame without a width limit lacks %q:\n%s", want, f)
		}
	}
}

// TestPercentHeldBelowHundredUntilDone: 99.97% is shown as 99.9%, so that
// "100.0%" means the whole stream moved.
func TestPercentHeldBelowHundredUntilDone(t *testing.T) {
	b := NewBoard(Config{Job: "j", Stages: []string{"s"}, Size: 10000}, t0)
	b.Update(t0.Add(time.Second), []StageSample{{In: 9997, Buffer: -1}})
	if f := b.Frame(0); !bytes.Contains(f, []byte(" 99.9% ")) {
		t.Errorf("frame %q", f)
	}
	b.Update(t0.Add(2*time.Second), []StageSample{{In: 10000, Buffer: -1, State: "done"}})
	if f := b.Final(0, "done"); !bytes.Contains(f, []byte(" 100.0%")) {
		t.Errorf("final %q", f)
	}
}

// TestTermFinalFrameStays: after Close, a log line goes below the final
// frame instead of erasing and redrawing it.
func TestTermFinalFrameStays(t *testing.T) {
	var out bytes.Buffer
	term := NewTerm(&out, 0)
	b := NewBoard(Config{Job: "j", Stages: []string{"s"}}, t0)
	term.Draw(b)
	term.Close(b, "done")
	out.Reset()
	term.Log().Write([]byte("after\n"))
	if out.String() != "after\n" {
		t.Errorf("a log line after the end: %q, want it alone", out.String())
	}
}

// TestLogLineIsDueEveryInterval: the log display writes nothing before an
// interval has passed, then one line per interval, and always a final one.
func TestLogLineIsDueEveryInterval(t *testing.T) {
	var out bytes.Buffer
	l := NewLog(newTestLogger(&out), 10*time.Second)
	b := NewBoard(Config{Job: "j", Stages: []string{"s"}}, t0)
	for tick := time.Second; tick <= 35*time.Second; tick += time.Second {
		b.Update(t0.Add(tick), []StageSample{{In: int64(tick), Buffer: -1}})
		l.Draw(b)
	}
	l.Close(b, "done")
	got := strings.Count(out.String(), "\n")
	if got != 4 || !strings.Contains(out.String(), "final=true result=done") {
		t.Errorf("%d lines, want 3 and a final one:\n%s", got, out.String())
	}
}

// BenchmarkTermDraw is the cost of one redraw of a four-stage display on
// a terminal (render and write): at four redraws a second, the display's
// whole cost.
func BenchmarkTermDraw(b *testing.B) {
	board := NewBoard(Config{Job: "restore", Stages: []string{"decrypt", "decompress", "checksum", "receive"}, Size: 1 << 40}, t0)
	term := NewTerm(discard{}, 120)
	now := t0
	var moved int64
	for b.Loop() {
		now = now.Add(TermInterval)
		moved += 25 << 20
		board.Update(now, []StageSample{{In: moved, Out: moved, State: "running", Buffer: -1},
			{In: moved, Out: moved, State: "running", Buffer: -1}, {In: moved, Out: moved, State: "running", Buffer: -1},
			{In: moved, Out: 0, State: "running", Buffer: -1}})
		term.Draw(board)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
