package main

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/pipespool/pipespool/progress"
)

// progressRun replays a restore of 4 GiB on a fake clock: decrypt reads
// its file at 100 MiB/s, decompress doubles the bytes, receive is held up
// at the 20 s mark and has a buffer on its input hop. It returns the board
// at each of the given times.
func progressRun(t *testing.T, at []time.Duration, each func(b *progress.Board, now time.Duration)) {
	t.Helper()
	start := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	b := progress.NewBoard(progress.Config{Job: "restore", Stages: []string{"decrypt", "decompress", "zfs-receive-tank-backup"}, Size: 4 << 30}, start)
	const rate = 100 << 20
	k := 0
	for tick := time.Duration(0); k < len(at); tick += progress.TermInterval {
		moved := min(int64(tick.Seconds()*rate), 4<<30)
		state := "running"
		if tick >= 20*time.Second && tick < 25*time.Second {
			state = "waiting on zfs-receive-tank-backup"
		}
		s := []progress.StageSample{
			{In: moved, Out: moved - moved/100, State: state, Buffer: -1},
			{In: moved - moved/100, Out: 2 * (moved - moved/100), State: state, Buffer: -1},
			{In: 2 * (moved - moved/100), Out: 0, State: "running", Buffer: 37},
		}
		if moved == 4<<30 {
			for i := range s {
				s[i].State, s[i].Duration = "done", tick-time.Duration(i)*time.Second
			}
		}
		b.Update(start.Add(tick), s)
		if tick >= at[k] {
			each(b, tick)
			k++
		}
	}
}

// TestProgressFramesGolden: the frames drawn at the start, halfway and at
// the end of a run, at a wide and a narrow width: a header with the
// elapsed time, percentage and ETA; one row per stage with its bytes, rate,
// buffer fill and state; the final lines with averages and durations.
func TestProgressFramesGolden(t *testing.T) {
	var out bytes.Buffer
	for _, width := range []int{100, 60, 34} {
		progressRun(t, []time.Duration{250 * time.Millisecond, 20 * time.Second, 41 * time.Second}, func(b *progress.Board, now time.Duration) {
			fmt.Fprintf(&out, "--- width %d, at %v\n", width, now)
			if b.Percent() >= 100 {
				out.Write(b.Final(width, "done"))
			} else {
				out.Write(b.Frame(width))
			}
		})
	}
	golden(t, "progress_frames", out.Bytes())
}

// TestProgressTermGolden: what the terminal display writes, escape codes
// and all: frames replacing each other, a log line scrolling above the
// frame, a resize redrawing it cut to the new width, and the final frame
// that stays, with a line after it going below.
func TestProgressTermGolden(t *testing.T) {
	var out bytes.Buffer
	term := progress.NewTerm(&out, 80)
	progressRun(t, []time.Duration{time.Second, 2 * time.Second, 41 * time.Second}, func(b *progress.Board, now time.Duration) {
		switch now {
		case time.Second:
			term.Draw(b)
			term.Log().Write([]byte("level=WARN msg=\"stage decrypt: gpg: WARNING: ...\"\n"))
		case 2 * time.Second:
			term.Draw(b)
			term.Resize(40)
		default:
			term.Close(b, "done")
			term.Log().Write([]byte("after the end\n"))
		}
	})
	golden(t, "progress_term", out.Bytes())
}

// TestProgressLogGolden: the lines of --progress log, one per interval and
// the final one.
func TestProgressLogGolden(t *testing.T) {
	var out bytes.Buffer
	log := progress.NewLog(progressLogger(&globalOptions{streams: &IOStreams{ErrOut: &out}}), 10*time.Second)
	// Draw at every tick (1 s) writes every 10 s.
	start := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	b := progress.NewBoard(progress.Config{Job: "restore", Stages: []string{"decrypt", "receive"}, Size: 4 << 30}, start)
	for tick := time.Duration(0); tick <= 41*time.Second; tick += time.Second {
		moved := min(int64(tick.Seconds()*(100<<20)), 4<<30)
		b.Update(start.Add(tick), []progress.StageSample{{In: moved, Out: moved, State: "running", Buffer: -1}, {In: moved, State: "running", Buffer: -1}})
		log.Draw(b)
	}
	log.Close(b, "done")
	golden(t, "progress_log", out.Bytes())
}
