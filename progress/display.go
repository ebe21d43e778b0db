package progress

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Display shows a Board. The pipeline's monitor calls Draw after each
// Update (it updates at most Interval apart, often more often, for stall
// detection) and Close once, after the last Update, when the run is over.
type Display interface {
	// Interval is how often the display wants to be drawn.
	Interval() time.Duration
	Draw(b *Board)
	// Close shows the final state; result is how the run ended ("done",
	// "failed", "timeout", "interrupted").
	Close(b *Board, result string)
}

// TermInterval is how often a terminal display is redrawn: often enough to
// look live, rarely enough to cost nothing measurable.
const TermInterval = 250 * time.Millisecond

// Term draws a Board on a terminal and lets log lines through above it.
// Each frame replaces the previous one; the final frame stays. It moves
// the cursor with cursor-up and clear-line only (ANSI), which every
// terminal emulator has, and never draws a line as wide as the terminal,
// so no line wraps. Safe for concurrent use.
type Term struct {
	mu    sync.Mutex // guards the fields below and serialises writes to out
	out   io.Writer
	width int    // columns, 0: unknown (no limit)
	frame []byte // the frame on screen
	lines int    // its line count
	buf   []byte
}

// NewTerm returns a Term drawing on out, a terminal width columns wide
// (0: unknown).
func NewTerm(out io.Writer, width int) *Term { return &Term{out: out, width: width} }

// Interval is TermInterval.
func (t *Term) Interval() time.Duration { return TermInterval }

// Draw replaces the frame on screen with the Board's.
func (t *Term) Draw(b *Board) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.show(b.Frame(t.width))
}

// Close replaces the frame on screen with the Board's final one and leaves
// it there: what follows (log lines, the failure summary) goes below it.
func (t *Term) Close(b *Board, result string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.show(b.Final(t.width, result))
	t.frame, t.lines = t.frame[:0], 0
}

// Resize sets the terminal's width and redraws the frame on screen cut to
// it at once; the next Draw lays it out for the new width. The old frame
// is erased first: on a terminal that reflows its lines when it narrows,
// a line of the old frame wider than the new width may leave a piece
// above the new frame.
func (t *Term) Resize(width int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if width == t.width {
		return
	}
	t.width = width
	if t.lines == 0 {
		return
	}
	frame := bytes.Clone(t.frame)
	if width > 0 {
		lines := bytes.SplitAfter(frame, []byte{'\n'})
		frame = frame[:0:0]
		for _, l := range lines {
			if len(l) == 0 {
				continue
			}
			frame = append(frame, cut(string(bytes.TrimSuffix(l, []byte{'\n'})), width-1)...)
			frame = append(frame, '\n')
		}
	}
	t.show(frame)
}

// show writes p in place of the frame on screen. t.mu is held.
func (t *Term) show(p []byte) {
	t.buf = t.erase(t.buf[:0])
	t.frame = append(t.frame[:0], p...)
	t.lines = bytes.Count(p, []byte{'\n'})
	t.buf = append(t.buf, p...)
	t.out.Write(t.buf)
}

// erase appends to b what moves the cursor up over the frame on screen and
// clears its lines, leaving the cursor where the frame began.
func (t *Term) erase(b []byte) []byte {
	for range t.lines {
		b = append(b, "\x1b[1A\r\x1b[2K"...)
	}
	return b
}

// Log returns a writer for what else goes to the terminal (log lines): each
// write clears the frame, writes, and draws the frame again below.
func (t *Term) Log() io.Writer { return termLog{t} }

type termLog struct{ t *Term }

func (l termLog) Write(p []byte) (int, error) {
	t := l.t
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = t.erase(t.buf[:0])
	t.buf = append(t.buf, p...)
	if len(p) > 0 && p[len(p)-1] != '\n' {
		t.buf = append(t.buf, '\n')
	}
	t.buf = append(t.buf, t.frame...)
	_, err := t.out.Write(t.buf)
	return len(p), err
}

// DefaultLogInterval is how often a log display writes a line: a line
// every 30 s keeps a three-hour backup's cron mail under 400 lines and
// still shows where a slow run spent its time.
const DefaultLogInterval = 30 * time.Second

// Log writes a Board as plain log records, one per interval and a final
// one, with no escape codes: for journald and cron mail. The records are
// the logger's (key=value text or JSON lines), message "progress", with
// the fields of Board.LogAttrs.
type Log struct {
	log      *slog.Logger
	interval time.Duration
	next     time.Time // when the next line is due (zero: an interval after the start)
}

// NewLog returns a Log writing to log every interval (0: DefaultLogInterval).
func NewLog(log *slog.Logger, interval time.Duration) *Log {
	if interval <= 0 {
		interval = DefaultLogInterval
	}
	return &Log{log: log, interval: interval}
}

// Interval is the interval between two lines.
func (l *Log) Interval() time.Duration { return l.interval }

// Draw writes a line when one is due: every interval from the start, on
// the first draw at or after each due time (a draw that comes late does
// not shift the ones after it). A run shorter than the interval writes
// only its final line.
func (l *Log) Draw(b *Board) {
	if l.next.IsZero() {
		l.next = b.start.Add(l.interval)
	}
	if b.now.Before(l.next) {
		return
	}
	for !b.now.Before(l.next) {
		l.next = l.next.Add(l.interval)
	}
	l.log.LogAttrs(context.Background(), slog.LevelInfo, "progress", b.LogAttrs(false, "")...)
}

// Close writes the final line.
func (l *Log) Close(b *Board, result string) {
	l.log.LogAttrs(context.Background(), slog.LevelInfo, "progress", b.LogAttrs(true, result)...)
}
