package pipeline

// monitor watches the running stages until stop is closed. Stall detection
// and the progress display live here (issue 6); until then it only waits.
func (r *running) monitor(stop <-chan struct{}) {
	<-stop
}
