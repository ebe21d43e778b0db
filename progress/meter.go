package progress

import "time"

// meterSamples is the ring size of a meter: enough for the ETA window at
// one sample a second, and for the row window at the terminal's redraw
// rate.
const meterSamples = 32

// meter measures a byte rate over a sliding window of time. Samples closer
// together than step replace the newest one instead of taking a slot, so
// the ring always spans about window whatever the caller's cadence.
type meter struct {
	window, step time.Duration
	t            [meterSamples]time.Time
	b            [meterSamples]int64
	n            int // samples held
	head         int // index of the newest
}

// add records that b bytes had moved at now. Time never goes backwards
// between two calls; a sample at the same time replaces the newest.
func (m *meter) add(now time.Time, b int64) {
	if m.n >= 2 {
		prev := (m.head - 1 + meterSamples) % meterSamples
		if now.Sub(m.t[prev]) < m.step {
			// The newest sample is still within step of the one
			// before: move it forward rather than use a slot.
			m.t[m.head], m.b[m.head] = now, b
			return
		}
	}
	if m.n > 0 && !now.After(m.t[m.head]) {
		m.t[m.head], m.b[m.head] = now, b
		return
	}
	m.head = (m.head + 1) % meterSamples
	m.t[m.head], m.b[m.head] = now, b
	m.n = min(m.n+1, meterSamples)
}

// rate returns bytes per second over the window: between the newest
// sample and the point a window before it, interpolated between the two
// samples around that point (or from the oldest sample, while the ring
// spans less than the window). 0 before two samples.
func (m *meter) rate() float64 {
	if m.n < 2 {
		return 0
	}
	newT, newB := m.t[m.head], m.b[m.head]
	oldT, oldB := newT, newB
	for k := 1; k < m.n; k++ {
		j := (m.head - k + meterSamples) % meterSamples
		if age := newT.Sub(m.t[j]); age > m.window {
			// j is beyond the window and the previous one within:
			// the bytes at exactly a window ago lie between them.
			from := newT.Add(-m.window)
			span := oldT.Sub(m.t[j]).Seconds()
			frac := from.Sub(m.t[j]).Seconds() / span
			oldB = m.b[j] + int64(frac*float64(oldB-m.b[j]))
			oldT = from
			break
		}
		oldT, oldB = m.t[j], m.b[j]
	}
	dt := newT.Sub(oldT).Seconds()
	if dt <= 0 {
		return 0
	}
	return float64(newB-oldB) / dt
}

// etaWindow is how far back the ETA's rate looks (pv's default
// --average-rate-window): long enough that the bursts of a stream with
// pauses (a tape repositioning, zfs receive committing) do not make the
// estimate swing, short enough to follow a lasting change of speed.
const etaWindow = 30 * time.Second

// rowWindow is how far back a stage's displayed rate looks: long enough
// to smooth the bursts of pipe-sized transfers, short enough to follow a
// change of speed within a few redraws.
const rowWindow = 3 * time.Second

func newETAMeter() meter { return meter{window: etaWindow, step: time.Second} }
func newRowMeter() meter { return meter{window: rowWindow, step: 100 * time.Millisecond} }

// eta estimates the time left until total bytes have moved, from the rate
// over the ETA window. ok is false while there is no rate to go by (the
// first sample, or nothing moved within the window) or no total.
func eta(m *meter, done, total int64) (left time.Duration, ok bool) {
	if total <= 0 {
		return 0, false
	}
	if done >= total {
		return 0, true
	}
	r := m.rate()
	if r <= 0 {
		return 0, false
	}
	secs := float64(total-done) / r
	if secs > float64(100*365*24*3600) {
		return 0, false // a trickle: no meaningful estimate
	}
	return time.Duration(secs * float64(time.Second)), true
}
