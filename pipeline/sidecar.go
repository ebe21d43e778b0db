package pipeline

// sidecar is a built-in's file of its own beside the run's output (the
// digest sha256 writes to write_to). The built-in stages it while it runs;
// the run commits it after its output, and only if the run succeeded, or
// discards it: a failed run leaves the previous digest beside the previous
// output, never a new digest beside an output that was not made.
type sidecar interface {
	CommitSidecar() error
	DiscardSidecar()
}

// sidecarFailure is a sidecar that could not be committed.
type sidecarFailure struct {
	Stage int
	Err   error
}

// sidecarOf returns stage i's sidecar, or nil.
func (r *running) sidecarOf(i int) sidecar {
	s, _ := r.job.Stages[i].Filter.(sidecar)
	return s
}

// commitSidecars commits every sidecar, in pipeline order, after the
// output; the first that fails is returned (the others are discarded).
func (r *running) commitSidecars() *sidecarFailure {
	var failed *sidecarFailure
	for i := range r.job.Stages {
		s := r.sidecarOf(i)
		switch {
		case s == nil:
		case failed != nil:
			s.DiscardSidecar()
		default:
			if err := s.CommitSidecar(); err != nil {
				failed = &sidecarFailure{Stage: i, Err: err}
			}
		}
	}
	return failed
}

// discardSidecars drops what the stages staged: the run failed.
func (r *running) discardSidecars() {
	for i := range r.job.Stages {
		if s := r.sidecarOf(i); s != nil {
			s.DiscardSidecar()
		}
	}
}
