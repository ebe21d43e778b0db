package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// sample is one timed run of a variant: wall time from the first process
// start to the last exit, CPU seconds (user+sys) of every process it ran
// (wait4 rusage of the direct children, which includes the descendants
// they reaped), and the largest ru_maxrss among the direct children.
type sample struct {
	wall time.Duration
	cpu  time.Duration
	rss  int64 // bytes
}

// median returns the middle value of ds, or the mean of the two middle
// values when len(ds) is even; 0 for none.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// ratio is a/b, the case's median time over the baseline's: below 1 the
// case is faster. It is 0 when b is 0 (no baseline measured).
func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// summary condenses a variant's samples: median wall and CPU time, and the
// largest peak RSS seen in any run (a peak, so the worst run counts).
type summary struct {
	n    int
	wall time.Duration
	cpu  time.Duration
	rss  int64
}

func summarize(ss []sample) summary {
	var walls, cpus []time.Duration
	var rss int64
	for _, s := range ss {
		walls = append(walls, s.wall)
		cpus = append(cpus, s.cpu)
		rss = max(rss, s.rss)
	}
	return summary{n: len(ss), wall: median(walls), cpu: median(cpus), rss: rss}
}

// fmtSeconds prints a duration in seconds with millisecond precision.
func fmtSeconds(d time.Duration) string {
	return fmt.Sprintf("%.3f s", d.Seconds())
}

// fmtRatio prints a time ratio the way the targets are written (1.05x).
func fmtRatio(r float64) string {
	if r == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", r)
}

// fmtMiB prints a byte count in MiB.
func fmtMiB(b int64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

// fmtRate prints how much work per second a run did: GB/s (10^9 bytes)
// for a byte stream, packets/s for a packet count, "-" for neither.
func fmtRate(amount int64, unit string, d time.Duration) string {
	if amount <= 0 || d <= 0 {
		return "-"
	}
	per := float64(amount) / d.Seconds()
	switch unit {
	case "bytes":
		return fmt.Sprintf("%.2f GB/s", per/1e9)
	case "":
		return "-"
	default:
		return fmt.Sprintf("%.0f %s/s", per, unit)
	}
}

// fmtSize prints a data size the way the case names use it (256 MiB, 4 GiB).
func fmtSize(b int64) string {
	switch {
	case b >= 1<<30 && b%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", b>>30)
	case b >= 1<<20 && b%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", b>>20)
	default:
		return fmt.Sprintf("%d B", b)
	}
}

// markdownTable lays out a GitHub-flavoured markdown table whose columns
// are padded to a common width, so it reads as well in a terminal as
// rendered. Cells must not contain '|' (it is escaped if they do).
func markdownTable(header []string, rows [][]string) string {
	width := make([]int, len(header))
	cell := func(r []string, i int) string {
		if i < len(r) {
			return strings.ReplaceAll(r[i], "|", `\|`)
		}
		return ""
	}
	for i, h := range header {
		width[i] = len([]rune(h))
	}
	for _, r := range rows {
		for i := range header {
			width[i] = max(width[i], len([]rune(cell(r, i))))
		}
	}
	var b strings.Builder
	line := func(cells func(i int) string) {
		b.WriteString("|")
		for i := range header {
			c := cells(i)
			b.WriteString(" " + c + strings.Repeat(" ", width[i]-len([]rune(c))) + " |")
		}
		b.WriteString("\n")
	}
	line(func(i int) string { return header[i] })
	line(func(i int) string { return strings.Repeat("-", width[i]) })
	for _, r := range rows {
		line(func(i int) string { return cell(r, i) })
	}
	return b.String()
}
