package progress

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pipespool/pipespool/units"
)

// maxNameWidth bounds the name column, so that a long stage name does not
// push the numbers off a narrow terminal.
const maxNameWidth = 16

// field is a piece of a line. A line too wide for the terminal drops its
// fields by level: at level L, the fields with 0 < drop <= L are left out.
// Every row of a frame is drawn at the same level, so the columns stay
// aligned.
type field struct {
	text string
	drop int
}

// maxLevel is the highest drop level of any field. In order: 1 the total
// size, a buffer's fill, the final durations; 2 the rates; 3 the in
// column; 4 the out column and, with a known size, the bytes of the
// header (the percentage says it): on a very narrow terminal the states
// and the percentage stay.
const maxLevel = 4

// Frame draws the live display as of the last Update: a header line (the
// job, the elapsed time, the bytes of the sized stream, and when its size
// is known the percentage and the time left) and one line per stage. No
// line is wider than width-1 columns (0: no limit), so none wraps.
func (b *Board) Frame(width int) []byte {
	head := b.header(false, "")
	rows := make([][]field, len(b.samples))
	nw := b.nameWidth()
	for i := range b.samples {
		rows[i] = b.row(i, nw, false)
	}
	return layout(head, rows, width)
}

// Final draws the display at the end of a run, to stay on the terminal:
// the header says how the run ended (result: "done", "failed", ...), and
// each stage's line has its totals, its average rate and its duration.
func (b *Board) Final(width int, result string) []byte {
	head := b.header(true, result)
	rows := make([][]field, len(b.samples))
	nw := b.nameWidth()
	for i := range b.samples {
		rows[i] = b.row(i, nw, true)
	}
	return layout(head, rows, width)
}

func (b *Board) header(final bool, result string) []field {
	name := b.job
	if name == "" {
		name = "pipespool"
	}
	f := []field{{text: clean(name)}}
	if final {
		f = append(f, field{text: result})
	}
	f = append(f, field{text: formatClock(b.Elapsed())})
	moved := units.FormatSize(b.sized())
	if b.size > 0 {
		f = append(f, field{text: moved, drop: 4}, field{text: "of " + units.FormatSize(b.size), drop: 1},
			field{text: b.percentText()})
		if !final {
			if left, ok := b.ETA(); ok {
				f = append(f, field{text: "ETA " + formatClock(left)})
			} else {
				f = append(f, field{text: "ETA --:--:--"})
			}
		}
	} else {
		f = append(f, field{text: moved})
	}
	return f
}

// percentText is the percentage with one decimal, held at 99.9% until the
// whole stream has moved: "100.0%" means done.
func (b *Board) percentText() string {
	p := b.Percent()
	if b.sized() < b.size {
		p = min(p, 99.9)
	}
	return strconv.FormatFloat(p, 'f', 1, 64) + "%"
}

// row is stage i's line: name, bytes in and out, rate (the average over
// its run in the final line), the fill of its input hop's buffer when it
// has one, and its state (in the final line: its duration and how it
// ended).
func (b *Board) row(i, nameWidth int, final bool) []field {
	s := &b.samples[i]
	f := []field{
		{text: pad(abbrev(clean(b.names[i]), nameWidth), nameWidth)},
		{text: "in " + padLeft(units.FormatSize(max(s.In, 0)), 10), drop: 3},
		{text: "out " + padLeft(units.FormatSize(max(s.Out, 0)), 10), drop: 4},
	}
	if final {
		f = append(f, field{text: "avg " + padLeft(units.FormatRate(int64(b.avgRate(i))), 12), drop: 2})
	} else {
		f = append(f, field{text: padLeft(units.FormatRate(int64(b.rate(i))), 12), drop: 2})
	}
	if s.Buffer >= 0 {
		// A hop with a memory buffer: how full it is, before the state
		// (a full buffer is back-pressure, which the state says).
		f = append(f, field{text: "buf " + padLeft(strconv.Itoa(s.Buffer), 3) + "%", drop: 1})
	}
	if final && s.Duration > 0 {
		f = append(f, field{text: formatClock(s.Duration), drop: 1})
	}
	return append(f, field{text: clean(s.State)})
}

// layout joins the fields of each line at the lowest drop level at which
// every line fits in width-1 columns, and cuts what still does not fit.
// The last column is kept free: a terminal that wraps on writing it would
// break the cursor arithmetic of the redraw.
func layout(head []field, rows [][]field, width int) []byte {
	limit := width - 1
	level := 0
	if width > 0 {
		for ; level < maxLevel; level++ {
			fits := columns(join(head, level)) <= limit
			for _, r := range rows {
				fits = fits && columns(join(r, level)) <= limit
			}
			if fits {
				break
			}
		}
	}
	var out strings.Builder
	for _, line := range append([][]field{head}, rows...) {
		s := join(line, level)
		if width > 0 {
			s = cut(s, limit)
		}
		out.WriteString(s)
		out.WriteByte('\n')
	}
	return []byte(out.String())
}

func join(fs []field, level int) string {
	var parts []string
	for _, f := range fs {
		if f.drop == 0 || f.drop > level {
			parts = append(parts, f.text)
		}
	}
	return strings.TrimRight(strings.Join(parts, "  "), " ")
}

// nameWidth is the width of the name column: the longest name, within
// 5..maxNameWidth.
func (b *Board) nameWidth() int {
	w := 5
	for _, n := range b.names {
		w = max(w, min(columns(n), maxNameWidth))
	}
	return w
}

// columns counts the columns s takes, one per rune (the names and numbers
// drawn are mostly ASCII; a double-width rune in a stage name may take
// one column more than counted).
func columns(s string) int { return utf8.RuneCountInString(s) }

// cut shortens s to at most n columns, without trailing blanks.
func cut(s string, n int) string {
	if n < 0 {
		n = 0
	}
	if columns(s) <= n {
		return s
	}
	r := []rune(s)
	return strings.TrimRight(string(r[:n]), " ")
}

// abbrev shortens s to n columns, marking the cut with "~".
func abbrev(s string, n int) string {
	if columns(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "~"
}

func pad(s string, n int) string     { return s + strings.Repeat(" ", max(n-columns(s), 0)) }
func padLeft(s string, n int) string { return strings.Repeat(" ", max(n-columns(s), 0)) + s }

// clean replaces control characters (a newline or an escape in a stage's
// name) with "?": they would break the lines and the cursor movements.
func clean(s string) string {
	if strings.IndexFunc(s, unicode.IsControl) < 0 {
		return s
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}

// formatClock writes d as H:MM:SS, as pv does.
func formatClock(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	if s < 0 {
		s = 0
	}
	return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
}
