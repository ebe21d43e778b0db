package pipeline

import (
	"time"

	"github.com/pipespool/pipespool/progress"
)

// progressSize is the expected size of the stream entering the pipeline,
// for the percentage and the time left: Options.ExpectedSize (--size), the
// job's expected_size, or the size of a regular input file from where the
// run starts reading it. sizedOut reports a pipeline with no input, whose
// first stage produces the stream: the size is then that of its output.
func (r *running) progressSize() (size int64, sizedOut bool) {
	sizedOut = r.src.desc == "none"
	switch {
	case r.opts.ExpectedSize > 0:
		return r.opts.ExpectedSize, sizedOut
	case r.job.ExpectedSize > 0:
		return r.job.ExpectedSize, sizedOut
	case r.src.direct && !sizedOut:
		if fi, err := r.src.file.Stat(); err == nil && fi.Mode().IsRegular() {
			return max(fi.Size()-r.src.start, 0), false
		}
	}
	return 0, sizedOut
}

// newBoard is the progress board of the run, or nil without a display.
func (m *monitorState) newBoard(now time.Time) *progress.Board {
	r := m.r
	names := make([]string, len(r.stages))
	for i, st := range r.stages {
		names[i] = st.Name()
	}
	size, sizedOut := r.progressSize()
	return progress.NewBoard(progress.Config{Job: r.job.Name, Stages: names, Size: size, SizedOut: sizedOut}, now)
}

// drawProgress feeds the board the last samples and draws it.
func (m *monitorState) drawProgress(now time.Time) {
	m.board.Update(now, m.progressSamples(false))
	m.r.opts.Progress.Draw(m.board)
}

// closeProgress draws the final state: every stage is over, and their
// outcomes hold their exact byte counts (a file's final offset, what each
// pump delivered), which replace the last samples.
func (m *monitorState) closeProgress(now time.Time) {
	if m.publish {
		m.r.tree.progress(m.progressSamples(true))
	}
	if m.board == nil {
		return
	}
	m.board.Update(now, m.progressSamples(true))
	result := "done"
	r := m.r
	r.mu.Lock()
	if r.stop != nil && !r.stop.Own {
		result = r.stop.Result
	}
	r.mu.Unlock()
	for i := range m.w {
		if m.w[i].failed && result == "done" {
			result = ResultFailed
		}
	}
	r.opts.Progress.Close(m.board, result)
}

// progressSamples are the board's samples of every stage; final: from the
// outcomes, once every stage is over.
func (m *monitorState) progressSamples(final bool) []progress.StageSample {
	s := make([]progress.StageSample, len(m.w))
	for i := range m.w {
		w := &m.w[i]
		// Buffer is the fill of the stage's input hop's memory buffer, in
		// percent, while the hop has one; -1: none, and in the final
		// lines, where the report has the buffer's peak.
		s[i] = progress.StageSample{In: w.in, Out: w.out, State: m.stateOf(i), Buffer: -1}
		if w.BufferSize > 0 && !final {
			s[i].Buffer = int(100 * w.Buffered / w.BufferSize)
		}
		if final {
			o := m.r.outcomes[i]
			m.r.mu.Lock()
			drained := o.drained
			m.r.mu.Unlock()
			if drained {
				// Its input link is still being drained: its count is
				// settled after the run, the last sample stands.
				s[i].Out = o.bytesOut
			} else {
				s[i].In, s[i].Out = o.bytesIn, o.bytesOut
			}
			if !o.res.Started.IsZero() && !o.res.Ended.IsZero() {
				s[i].Duration = o.res.Ended.Sub(o.res.Started)
			}
		}
	}
	return s
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
	case w.exited && len(w.holders) == 0:
		// Its process is gone and nothing holds its stdout: what it
		// wrote is still on its way (in its pipe, or a buffer).
		return "exited"
	case w.waitingOn != "":
		return "waiting on " + w.waitingOn
	}
	return "running"
}
