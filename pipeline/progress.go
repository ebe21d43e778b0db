package pipeline

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/pipespool/pipespool/units"
)

// rateWindow is how far back the displayed rate looks: long enough to
// smooth the bursts of a pipe-sized transfer, short enough to follow a
// change of speed.
const rateWindow = 3 * time.Second

// rateSamples is the ring size: at the progress tick (250 ms) it covers
// rateWindow.
const rateSamples = 16

// rateMeter computes a byte rate over the last rateWindow.
type rateMeter struct {
	t    [rateSamples]time.Time
	b    [rateSamples]int64
	n    int // samples held
	head int // index of the newest
}

func (m *rateMeter) add(now time.Time, b int64) {
	m.head = (m.head + 1) % rateSamples
	m.t[m.head], m.b[m.head] = now, b
	m.n = min(m.n+1, rateSamples)
}

// rate returns bytes per second between the oldest sample within
// rateWindow and the newest.
func (m *rateMeter) rate() float64 {
	if m.n < 2 {
		return 0
	}
	newest := m.head
	oldest := newest
	for k := 1; k < m.n; k++ {
		j := (m.head - k + rateSamples) % rateSamples
		if m.t[newest].Sub(m.t[j]) > rateWindow {
			break
		}
		oldest = j
	}
	dt := m.t[newest].Sub(m.t[oldest]).Seconds()
	if dt <= 0 {
		return 0
	}
	return float64(m.b[newest]-m.b[oldest]) / dt
}

// progressView renders one frame per tick into Options.Progress.
type progressView struct {
	w     io.Writer
	start time.Time
	buf   bytes.Buffer
	drawn bool
}

func newProgressView(w io.Writer, now time.Time) *progressView {
	return &progressView{w: w, start: now}
}

// maxNameWidth keeps a progress line within 80 columns: a line that wraps
// would break the cursor arithmetic of the redraw.
const maxNameWidth = 16

// draw writes a frame: one line per stage with its bytes in and out, its
// rate (of input or output, whichever is higher: a first stage reading
// its own file has no input link) and its state.
func (v *progressView) draw(m *monitorState, now time.Time) {
	v.buf.Reset()
	width := 5
	for _, st := range m.r.stages {
		width = max(width, min(len(st.Name()), maxNameWidth))
	}
	for i, st := range m.r.stages {
		w := &m.w[i]
		name := st.Name()
		if len(name) > maxNameWidth {
			name = name[:maxNameWidth-1] + "~"
		}
		fmt.Fprintf(&v.buf, "%-*s  in %10s  out %10s  %12s  %s\n", width, name,
			units.FormatSize(max(w.in, 0)), units.FormatSize(max(w.out, 0)), units.FormatSize(int64(max(w.rateIn.rate(), w.rateOut.rate())))+"/s", m.stateOf(i))
	}
	v.w.Write(v.buf.Bytes())
	v.drawn = true
}

// stateOf is the state column: running, waiting on X, stalled, nudged,
// done, failed.
func (m *monitorState) stateOf(i int) string {
	w := &m.w[i]
	switch {
	case w.done && w.failed:
		return "failed"
	case w.done:
		return "done"
	case w.killed:
		return "stalled, stopping"
	case w.exited && w.episode:
		return "exited, stdout held open"
	case w.episode && !w.nudgedAt.IsZero():
		return "stalled, nudged"
	case w.episode:
		return "stalled"
	case w.waitingOn != "":
		return "waiting on " + w.waitingOn
	}
	return "running"
}

// closeProgress clears the display: an empty frame.
func (m *monitorState) closeProgress() {
	if m.progress != nil && m.progress.drawn {
		m.progress.w.Write(nil)
	}
}

// TermProgress draws the frames of a progress display (Options.Progress) on
// a terminal, and lets log lines through above them. Each Write is one whole
// frame, lines ending in "\n", that replaces the previous one; an empty
// Write clears it. It uses only cursor-up and clear-line (ANSI), which
// every terminal emulator has. Safe for concurrent use.
type TermProgress struct {
	mu    sync.Mutex // guards the fields below and serialises writes to out
	out   io.Writer
	frame []byte // the frame on screen
	lines int    // its line count
	buf   []byte
}

// NewTermProgress returns a TermProgress drawing on out (a terminal).
func NewTermProgress(out io.Writer) *TermProgress { return &TermProgress{out: out} }

// Write replaces the frame on screen with p.
func (t *TermProgress) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = t.erase(t.buf[:0])
	t.frame = append(t.frame[:0], p...)
	t.lines = bytes.Count(p, []byte{'\n'})
	t.buf = append(t.buf, p...)
	_, err := t.out.Write(t.buf)
	return len(p), err
}

// erase appends to b what moves the cursor up over the frame on screen and
// clears its lines, leaving the cursor where the frame began.
func (t *TermProgress) erase(b []byte) []byte {
	for range t.lines {
		b = append(b, "\x1b[1A\r\x1b[2K"...)
	}
	return b
}

// Log returns a writer for what else goes to the terminal (log lines): each
// write clears the frame, writes, and draws the frame again below.
func (t *TermProgress) Log() io.Writer { return termLog{t} }

type termLog struct{ t *TermProgress }

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
