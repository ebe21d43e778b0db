// Package progress is the progress display of a run: what it knows of each
// stage (bytes, rates, the percentage and the time left when the size of
// the stream is known), the frames it draws on a terminal, and the plain
// lines it writes into a log.
//
// It knows nothing of how the numbers are obtained: the pipeline samples
// its stages and feeds a Board; a Display decides when and how to show it.
// Every method takes the time, so that a test drives it on a fake clock.
package progress

import (
	"time"
)

// StageSample is what the pipeline knows of one stage at one moment.
type StageSample struct {
	// In and Out are the bytes the stage has read from its input and
	// written to its output so far.
	In, Out int64
	// State is a few words: "running", "waiting on NAME", "stalled",
	// "done", "failed".
	State string
	// Buffer is how full the memory buffer of the stage's input hop is,
	// in percent, or -1 when the hop has none.
	Buffer int
	// Duration is how long the stage ran, once it is over (0 while it
	// runs, or when unknown: the run's elapsed time is used for its
	// average rate).
	Duration time.Duration
}

// Board holds the state of a progress display. It is not safe for
// concurrent use: the pipeline's monitor owns it.
type Board struct {
	job   string
	names []string
	start time.Time
	// size is the expected size of the sized stream (0: unknown); the
	// sized stream is the first stage's input, or its output when
	// sizedOut (a pipeline with no input, whose first stage produces).
	size     int64
	sizedOut bool

	now     time.Time // of the last Update
	samples []StageSample
	rows    []meter // per-stage display rate (of input or output, whichever is higher)
	rowsOut []meter
	etaM    meter // of the sized stream
}

// Config describes the run a Board shows.
type Config struct {
	Job    string   // the job's name
	Stages []string // the stages' names, in order
	// Size is the expected size of the stream entering the pipeline (the
	// input file's size, expected_size, --size); 0 when unknown.
	Size int64
	// SizedOut: the pipeline has no input (its first stage produces the
	// stream), so Size is that of the first stage's output.
	SizedOut bool
}

// NewBoard returns a Board for a run that started at start.
func NewBoard(c Config, start time.Time) *Board {
	b := &Board{job: c.Job, names: c.Stages, start: start, size: max(c.Size, 0), sizedOut: c.SizedOut,
		now: start, samples: make([]StageSample, len(c.Stages)),
		rows: make([]meter, len(c.Stages)), rowsOut: make([]meter, len(c.Stages)), etaM: newETAMeter()}
	for i := range b.rows {
		b.rows[i], b.rowsOut[i] = newRowMeter(), newRowMeter()
		b.rows[i].add(start, 0)
		b.rowsOut[i].add(start, 0)
		b.samples[i] = StageSample{State: "starting", Buffer: -1}
	}
	b.etaM.add(start, 0)
	return b
}

// Update records the samples of every stage (one per stage, in order) at
// now.
func (b *Board) Update(now time.Time, s []StageSample) {
	b.now = now
	copy(b.samples, s)
	for i := range b.samples {
		b.rows[i].add(now, b.samples[i].In)
		b.rowsOut[i].add(now, b.samples[i].Out)
	}
	b.etaM.add(now, b.sized())
}

// sized is how many bytes of the sized stream have moved.
func (b *Board) sized() int64 {
	if len(b.samples) == 0 {
		return 0
	}
	if b.sizedOut {
		return b.samples[0].Out
	}
	return b.samples[0].In
}

// Elapsed is the time since the start, as of the last Update.
func (b *Board) Elapsed() time.Duration { return b.now.Sub(b.start) }

// ETA is the estimated time left, as of the last Update; ok is false when
// the size is unknown or there is no rate to go by yet.
func (b *Board) ETA() (time.Duration, bool) { return eta(&b.etaM, b.sized(), b.size) }

// Percent is how much of the sized stream has moved, or -1 when the size
// is unknown. It stays below 100 until the stream is complete and may
// exceed 100 when the size given was too small.
func (b *Board) Percent() float64 {
	if b.size <= 0 {
		return -1
	}
	return 100 * float64(b.sized()) / float64(b.size)
}

// rate is stage i's displayed rate: of its input or its output, whichever
// is higher (a first stage reading a file it was handed has its input
// counted from the file's offset, a producer has only an output).
func (b *Board) rate(i int) float64 { return max(b.rows[i].rate(), b.rowsOut[i].rate()) }

// avgRate is stage i's average rate over its run, for the final line.
func (b *Board) avgRate(i int) float64 {
	d := b.samples[i].Duration
	if d <= 0 {
		d = b.Elapsed()
	}
	if d <= 0 {
		return 0
	}
	return float64(max(b.samples[i].In, b.samples[i].Out)) / d.Seconds()
}
