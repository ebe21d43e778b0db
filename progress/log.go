package progress

import (
	"log/slog"
	"math"
	"strconv"
)

// LogAttrs are the fields of a progress line in a log: the job, the
// elapsed seconds, the bytes of the sized stream, and when its size is
// known the size, the percentage and the estimated seconds left; then per
// stage, under s1, s2, ... (in pipeline order): name, in, out, rate
// (bytes/s, smoothed; at the end the average) and state. Numbers are plain:
// bytes and bytes per second as integers, seconds with one decimal.
func (b *Board) LogAttrs(final bool, result string) []slog.Attr {
	a := []slog.Attr{slog.String("job", b.job)}
	if final {
		a = append(a, slog.Bool("final", true), slog.String("result", result))
	}
	a = append(a, slog.Float64("elapsed", round1(b.Elapsed().Seconds())), slog.Int64("bytes", b.sized()))
	if b.size > 0 {
		a = append(a, slog.Int64("size", b.size), slog.Float64("percent", round1(b.Percent())))
		if left, ok := b.ETA(); ok && !final {
			a = append(a, slog.Float64("eta", round1(left.Seconds())))
		}
	}
	for i := range b.samples {
		s := &b.samples[i]
		rate := b.rate(i)
		if final {
			rate = b.avgRate(i)
		}
		a = append(a, slog.Group("s"+strconv.Itoa(i+1), slog.String("name", b.names[i]),
			slog.Int64("in", max(s.In, 0)), slog.Int64("out", max(s.Out, 0)),
			slog.Int64("rate", int64(rate)), slog.String("state", s.State)))
		if s.Buffer >= 0 {
			a[len(a)-1].Value = slog.GroupValue(append(a[len(a)-1].Value.Group(), slog.Int("buffer", s.Buffer))...)
		}
	}
	return a
}

func round1(x float64) float64 { return math.Round(x*10) / 10 }
