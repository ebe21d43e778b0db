package progress

import (
	"math"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)

// TestETASteadyRunHalfway: a steady 20 s run sampled at the terminal's
// redraw rate has, halfway through, an ETA within 10% of the 10 s left;
// also when the bytes arrive in pipe-sized bursts rather than smoothly.
func TestETASteadyRunHalfway(t *testing.T) {
	const rate = 50 << 20 // bytes per second
	const total = 20 * rate
	for _, burst := range []int64{0, 1 << 20} {
		b := NewBoard(Config{Job: "j", Stages: []string{"s"}, Size: total}, t0)
		var left time.Duration
		var ok bool
		for tick := time.Duration(0); tick <= 10*time.Second; tick += TermInterval {
			moved := int64(tick.Seconds() * rate)
			if burst > 0 {
				moved -= moved % burst // whole bursts only
			}
			b.Update(t0.Add(tick), []StageSample{{In: moved, Out: moved, Buffer: -1}})
			left, ok = b.ETA()
		}
		if !ok || math.Abs(left.Seconds()-10) > 1 {
			t.Errorf("burst %d: ETA halfway %v (ok %v), want 10s ± 10%%", burst, left, ok)
		}
		if p := b.Percent(); math.Abs(p-50) > 1 {
			t.Errorf("burst %d: %.1f%% halfway", burst, p)
		}
	}
}

// TestETAFollowsAChangeOfSpeed: after the rate halves, the ETA follows
// within the ETA window, not the average since the start.
func TestETAFollowsAChangeOfSpeed(t *testing.T) {
	const total = 1 << 40
	b := NewBoard(Config{Job: "j", Stages: []string{"s"}, Size: total}, t0)
	var moved int64
	for s := 1; s <= 120; s++ {
		r := int64(100 << 20)
		if s > 60 {
			r = 50 << 20
		}
		moved += r
		b.Update(t0.Add(time.Duration(s)*time.Second), []StageSample{{In: moved, Buffer: -1}})
	}
	left, ok := b.ETA()
	want := float64(total-moved) / (50 << 20)
	if !ok || math.Abs(left.Seconds()-want)/want > 0.02 {
		t.Errorf("ETA %v (ok %v), want %.0fs: the rate of the last %v", left, ok, want, etaWindow)
	}
}

// TestETAUnknown: no size, or nothing moved: no ETA, and the display says
// so rather than inventing one.
func TestETAUnknown(t *testing.T) {
	b := NewBoard(Config{Job: "j", Stages: []string{"s"}}, t0)
	b.Update(t0.Add(time.Second), []StageSample{{In: 100, Buffer: -1}})
	if _, ok := b.ETA(); ok || b.Percent() != -1 {
		t.Errorf("no size: ETA ok %v, percent %v", ok, b.Percent())
	}
	b = NewBoard(Config{Job: "j", Stages: []string{"s"}, Size: 1000}, t0)
	b.Update(t0.Add(time.Second), []StageSample{{In: 0, Buffer: -1}})
	if _, ok := b.ETA(); ok {
		t.Error("nothing moved: an ETA")
	}
}

// TestMeterSpansItsWindowAtAnyCadence: fed far more often than its step,
// the meter still measures over its whole window (samples within a step
// replace the newest), so the rate is that of the window, not of the last
// few ticks.
func TestMeterSpansItsWindowAtAnyCadence(t *testing.T) {
	m := newETAMeter()
	var moved int64
	// 40 s at 10 ms ticks: 60 MiB/s for the first 20 s, then 0 for 20 s.
	for k := 0; k <= 4000; k++ {
		if k <= 2000 && k > 0 {
			moved += 60 << 20 / 100
		}
		m.add(t0.Add(time.Duration(k)*10*time.Millisecond), moved)
	}
	// Over the last 30 s, 10 s at 60 MiB/s: 20 MiB/s.
	if r := m.rate(); math.Abs(r-20<<20)/(20<<20) > 0.05 {
		t.Errorf("rate %.0f, want about %d", r, 20<<20)
	}
}
