package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/pipespool/pipespool/proc"
	"github.com/pipespool/pipespool/pump"
	"github.com/pipespool/pipespool/stage"
)

// run starts everything, supervises, and returns when every stage is over
// and every pump has finished.
func (r *running) run(ctx context.Context) {
	e, err := r.wire()
	if err != nil {
		// No stage was started: each reports "not-started".
		r.decide(-1, ResultFailed, fmt.Sprintf("setting up pipes: %v", err))
		return
	}
	// Pumps first: they only move bytes once stages produce them.
	for _, l := range r.links {
		// A fan-out's branch (a branch's input) is run by its fan-out.
		if p, ok := l.pump.(*pump.Pump); ok {
			r.pumpsWG.Add(1)
			go func() {
				defer r.pumpsWG.Done()
				p.Run()
			}()
		}
	}
	// The output is a party of the run: when it stops taking bytes, that
	// is a failure of its own, judged like a stage's after every stage.
	sinkFailed := make(chan struct{}, 1)
	if out := r.links[len(r.stages)].pump; out != nil {
		go func() {
			<-out.Done()
			if pr := out.Result(); pr.ConsumerGone || pr.Err != nil && !errors.Is(pr.Err, pump.ErrStopped) {
				sinkFailed <- struct{}{}
			}
		}()
	}
	events := make(chan int, len(r.stages))
	var stagesWG sync.WaitGroup
	for i, st := range r.stages {
		r.procs.noteStdout(i, e.stdout[i], i == len(r.stages)-1 && r.links[i+1].direct != nil)
		if err := st.Start(e.stdin[i], e.stdout[i]); err != nil {
			r.outcomes[i].startErr = r.startFailure(i, err)
			r.log.Debug("stage did not start", "stage", st.Name(), "err", err)
		} else if r.isFailed() {
			// A line of a tree can be stopped by another line before
			// its stages have started, and a stage's Stop before its
			// Start does nothing: stopRun, which stops every stage
			// once, may have passed this one by.
			st.Stop(r.grace)
		}
		r.outcomes[i].started = true
		stagesWG.Add(1)
		go func(i int) {
			defer stagesWG.Done()
			r.watchStage(i)
			events <- i
		}(i)
	}

	// The monitor watches progress (stall detection, progress display)
	// until every stage is over.
	stopMonitor := make(chan struct{})
	monitorDone := make(chan struct{})
	go func() {
		defer close(monitorDone)
		r.monitor(stopMonitor)
	}()
	defer func() {
		close(stopMonitor)
		<-monitorDone
	}()

	var timeout <-chan time.Time
	if !r.deadline.IsZero() {
		t := time.NewTimer(time.Until(r.deadline))
		defer t.Stop()
		timeout = t.C
	}
	ctxDone := ctx.Done()
	// An own failure waits until every stage upstream of it is judged (at
	// most pendingWait), and the most upstream own failure is the root
	// cause. A stage that exits 7 half-way makes the zstd or gpg after it
	// fail on a truncated stream, and whichever watchStage finished first
	// used to be blamed, most often the decoder
	// (TestRegressionTruncatingStageIsRootCauseNotItsDecoder). And a
	// decoder can fail on corrupt data before the stage that produced it
	// says why: zstd found its checksum wrong while openpgp-decrypt, still
	// running, was about to report the modified message (the MDC is checked
	// at the end), and zstd was blamed in about 1 run in 20. Upstream
	// stages are not stopped meanwhile: with their consumer gone they end
	// at their next write, as a consequence, or fail on their own first.
	judged := make([]bool, len(r.stages))
	var pending []int
	var pendingTimer <-chan time.Time
	var progress int64 // drainProgress when the pending timer was armed
	arm := func() {
		if pendingTimer == nil {
			pendingTimer, progress = time.After(pendingWait), r.drainProgress()
		}
	}
	// In a tree, a line whose stages are all over may still hold an own
	// failure that waits for the line feeding it (a branch failed on data
	// its trunk cut or corrupted, and the trunk's stage is still being
	// judged): the loop goes on until that line is over too, or the wait
	// is.
	var upstreamDone <-chan struct{}
	asked := false
	waitUpstream := func() bool {
		if len(pending) == 0 || r.tree == nil || !r.tree.upstreamBusy() {
			return false
		}
		if !asked {
			asked, upstreamDone = true, r.tree.upstreamDone()
		}
		return true
	}
	for left := len(r.stages); left > 0 || waitUpstream(); {
		select {
		case i := <-events:
			left--
			judged[i] = true
			if r.judge(i, judged) {
				pending = append(pending, i)
				arm()
			}
			pending = r.flushPending(pending, judged, false)
		case <-sinkFailed:
			pending = append(pending, len(r.stages))
			arm()
			pending = r.flushPending(pending, judged, false)
		case <-upstreamDone:
			upstreamDone = nil // the lines upstream are over, and judged
			pending = r.flushPending(pending, judged, false)
		case <-pendingTimer:
			if p := r.drainProgress(); p != progress {
				// A drained link or a verifying built-in is still
				// making progress: its check is still to come.
				pendingTimer, progress = time.After(pendingWait), p
				break
			}
			pending = r.flushPending(pending, judged, true)
			pendingTimer = nil // a failure seen later waits anew
		case <-timeout:
			timeout = nil
			r.decide(-1, ResultTimeout, fmt.Sprintf("timed out after %s (timeout in %s)", r.job.Timeout, r.job.File))
		case <-ctxDone:
			ctxDone = nil
			var ie *proc.InterruptedError
			if errors.As(context.Cause(ctx), &ie) {
				// Dated by when pipespool got the signal: see
				// doneBySignal and promotable.
				r.stopRunAt(*interruptCause(ie), signalTime(ie))
			} else {
				r.decide(-1, ResultFailed, fmt.Sprintf("cancelled: %v", context.Cause(ctx)))
			}
		}
	}
	r.flushPending(pending, judged, true)
	stagesWG.Wait()
	// Every stage is over. Pumps still running feed nobody or read from an
	// input that will never end (an idle stdin): stop them.
	for _, l := range r.links {
		if l.pump != nil {
			if r.isFailed() {
				l.pump.Stop()
			}
		}
	}
	r.pumpsWG.Wait()
}

// isOver reports whether stage i has ended (false past the last stage).
func (r *running) isOver(i int) bool {
	if i >= len(r.stages) {
		return false
	}
	select {
	case <-r.stages[i].Done():
		return true
	default:
		return false
	}
}

func (r *running) isFailed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stop != nil
}

// watchStage follows stage i to its end: the main process exits, its output
// link finishes, what is left of its process group is stopped, and its
// input link is settled. Then it records the outcome.
func (r *running) watchStage(i int) {
	st := r.stages[i]
	o := r.outcomes[i]
	<-st.Done()
	first := st.Wait()
	// An input hop that pipespool stopped before the stage ended (a
	// fan-out is stopped with the run, or when the stage feeding it
	// fails) gave it an end of file of pipespool's making: only what it
	// then left in its pipe is input it did not read. Looked at now, as
	// it ends: what follows (its group's cleanup) may take a grace period.
	inputCut := false
	if in := r.links[i].pump; in != nil {
		select {
		case <-in.Done():
			pr := in.Result()
			inputCut = !pr.EOF && pr.Err == pump.ErrStopped
		default:
		}
	}
	// The output link: when the stage succeeded, wait for it to drain (a
	// process the stage left behind may still be writing, as in a shell
	// pipeline); when it failed, give it a moment to say whether the
	// consumer had gone, which makes the failure a consequence.
	if out := r.links[i+1].pump; out != nil {
		// The last link delivers to the job's output, which nobody stops
		// downstream: once the run has failed (or this stage, which fails
		// it), what is left of it is discarded, and a destination that
		// stopped taking bytes (a full socket, a terminal on XOFF) must
		// not hold pipespool past its timeout or a SIGTERM.
		last := i+1 == len(r.stages)
		var failedC <-chan struct{}
		if last {
			failedC = r.failedC
		}
		if first.Failed() {
			select {
			case <-out.Done():
			case <-time.After(time.Second):
			}
		} else {
			select {
			case <-out.Done():
			case <-failedC:
			}
		}
		if last && (first.Failed() || r.isFailed()) {
			out.Stop()
		}
		select {
		case <-out.Done():
			// A pump stopped because its consumer was over (see "the
			// input link" below) closed this stage's stdout reader just
			// as an EPIPE would have: a shell stage then exits 141 (its
			// last command's SIGPIPE) rather than dying of the signal,
			// and was blamed as the root cause
			// (TestRegressionShellStageExit141AfterConsumerEnded). Only
			// when bytes were refused or the status says SIGPIPE: a
			// stage idle at the stop that then fails with nothing to
			// write failed on its own
			// (TestRegressionProducerFailingAfterConsumerClosedIsRootCause).
			pr := out.Result()
			o.outputCut = pr.ConsumerGone || errors.Is(pr.Err, pump.ErrStopped) && r.isOver(i+1)
			o.consumerGone = pr.ConsumerGone || o.outputCut &&
				(pr.Undelivered > 0 || first.ExitCode == 128+int(syscall.SIGPIPE))
		default:
		}
	}
	if r.links[i+1].direct != nil {
		if !first.Failed() && st.Kind() == stage.KindCommand {
			r.waitFileReleased(i)
		}
		r.procs.fileHeld[i].Store(false)
	}
	if p, ok := st.(*stage.Process); ok {
		o.leftovers = p.Cleanup(r.grace)
	}
	res := st.Wait()
	o.res = res
	// The input link: nobody reads it any more. A pump still running (its
	// producer idle, or still writing) has undelivered input: stop it,
	// which also makes the producer get EPIPE at its next write.
	in := r.links[i]
	switch {
	case in.pump != nil && res.Failed() && !res.BrokenPipe && !res.Stopped && !o.consumerGone && r.verifierRunning(i):
		// It failed on its own while a verifying stage upstream still
		// runs: drain its input so that the stage that made the data
		// gets to finish its check (drain.go). The link is read once it
		// has finished (settleDrained).
		in.pump.Drain()
		r.mu.Lock()
		o.drained = true
		r.mu.Unlock()
	case in.pump != nil:
		in.pump.Stop()
		pr := in.pump.Result()
		// Bytes the stage never read: what the pump could not deliver
		// (ConsumerGone, or stopped here with input still queued) plus
		// what it delivered but the stage left in its pipe (the witness).
		left := pr.Undelivered
		w := in.pump.Leftover()
		in.pump.Release()
		if w > 0 {
			left += int64(w)
		}
		o.inputEOF = pr.EOF
		o.bytesIn = pr.Bytes - pr.Unread - int64(max(w, 0))
		if inputCut && w >= 0 {
			// Cut by pipespool (see above): what the hop could not
			// deliver is not the stage's doing, and what its pipe held
			// at the stop it may have read since.
			left = int64(w)
			o.bytesIn = pr.Bytes - int64(w)
		}
		o.unread = left
		// Past the pump's end of file nothing more was to come; before
		// it, the producer's rest is not known.
		o.unreadAll = pr.EOF
		o.partial = left > 0
	case in.direct != nil:
		var pr proc.Reader
		if off := sharedOffset(&pr, in.direct); off >= 0 {
			o.bytesIn = off - in.start
			if fi, err := in.direct.Stat(); err == nil && off < fi.Size() {
				o.partial = true
				o.unread, o.unreadAll = fi.Size()-off, true
			}
		}
	}
	if i > 0 && r.stages[i-1].Kind() == stage.KindBuiltin && !r.isOver(i-1) &&
		!(res.Failed() && !res.BrokenPipe && !res.Stopped && !o.consumerGone) {
		// It ended without failing on its own (it succeeded, maybe
		// reading only what it wanted, or its own consumer went): nothing
		// more of the built-in feeding it is wanted. A decrypter or
		// decompressor whose output fails reads the rest of its input to
		// check it, which matters only when its consumer failed on that
		// data (then its input link is drained instead, above): stop it,
		// or a `head` on a 1 TB restore would wait for all of it to be
		// decrypted.
		r.stages[i-1].Stop(r.grace)
	}
	if out := r.links[i+1]; out.pump != nil {
		// What the stage wrote: what the pump delivered, plus what it
		// left in its source pipe and buffer (Undelivered includes the
		// destination's queue, which Bytes already counts).
		pr := out.pump.Result()
		o.bytesOut = pr.Bytes + pr.Undelivered - pr.Unread
	} else if out.direct != nil {
		var pr proc.Reader
		if off := sharedOffset(&pr, out.direct); off >= 0 {
			o.bytesOut = off - out.start
		}
	}
	if st.Kind() == stage.KindBuiltin {
		// A built-in counts its own bytes, whatever its links are.
		o.bytesIn, o.bytesOut = st.Counters()
	}
}

// pendingWait bounds how long an own failure waits for the judgement of the
// stages upstream of it (see run): one that ended is about to be judged, one
// still running ends at its next write into the failed stage; one that does
// neither (it waits for its own input) is stopped when the wait is over.
const pendingWait = 2 * time.Second

// flushPending decides the pending own failures whose upstream stages have
// been judged (all of them when force): each stops the run, unless
// something stopped it already. It returns those still pending.
func (r *running) flushPending(pending []int, judged []bool, force bool) []int {
	slices.Sort(pending)
	var keep []int
	for _, i := range pending {
		if !force && r.upstreamUnjudged(i, judged) {
			if !upstreamUnjudged(i, judged) {
				// It waits for another line only: see noteOwn.
				r.noteOwn(i)
			}
			keep = append(keep, i)
			continue
		}
		r.stopOwn(i)
	}
	return keep
}

// upstreamUnjudged reports whether a stage upstream of i has not been
// judged yet, in this line or (in a tree) in a line that feeds it: a
// branch that fails on a stream its trunk cut or corrupted waits for the
// trunk's stage to say why, as a stage does for the stages before it.
func (r *running) upstreamUnjudged(i int, judged []bool) bool {
	return upstreamUnjudged(i, judged) || r.tree != nil && r.tree.upstreamBusy()
}

// upstreamUnjudged reports whether a stage upstream of i has not been
// judged yet: it is still running, or its end is still being looked at.
func upstreamUnjudged(i int, judged []bool) bool {
	for j := range i {
		if !judged[j] {
			return true
		}
	}
	return false
}

// judge classifies stage i once it is over, and stops the run at the first
// failure of a stage's own. It returns true, deciding nothing, for an own
// failure that must wait for the judgement of an upstream stage (see run).
func (r *running) judge(i int, judged []bool) bool {
	f := r.stageFacts(i)
	if !f.ownFailure() {
		return false
	}
	// A stage that could not start read nothing: no stage upstream can
	// have made it fail, so there is nothing to wait for.
	if f.StartErr == "" && r.upstreamUnjudged(i, judged) {
		if !upstreamUnjudged(i, judged) {
			r.noteOwn(i) // it waits for another line only
		}
		return true
	}
	r.stopOwn(i)
	return false
}

// startFailure is why stage i could not start, naming the real cause: its
// dir gone since the job was validated is reported by the exec machinery
// as the program's "no such file or directory".
func (r *running) startFailure(i int, err error) error {
	if dir := r.job.Stages[i].Dir; dir != "" {
		if derr := checkDir(dir); derr != nil {
			return derr
		}
	}
	if p := r.programs[i]; p != "" && errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(p); serr == nil {
			return fmt.Errorf("%w (%s exists: is the interpreter on its #! line missing?)", err, p)
		}
	}
	return err
}

// stopOwn stops the run for the own failure of stage i (unless something
// stopped it first); decideRun names the root cause once every stage is
// over.
func (r *running) stopOwn(i int) { r.stopRun(stopCause{Own: true, Stage: i}) }

// decide stops the run for a reason of the run's (a timeout, a signal, a
// stalled stage killed: root is that stage, else -1), unless something
// stopped it first.
func (r *running) decide(root int, result, msg string) {
	r.stopRun(stopCause{Stage: root, Result: result, Msg: msg})
}

// stopRun records the first reason the run failed and stops every stage
// that is still running but the one the reason names. Later calls keep the
// first reason.
func (r *running) stopRun(c stopCause) { r.stopRunAt(c, time.Now()) }

// stopRunAt is stopRun for a reason that happened at at.
func (r *running) stopRunAt(c stopCause, at time.Time) {
	r.mu.Lock()
	if r.stop != nil {
		r.mu.Unlock()
		return
	}
	r.stop = &c
	r.stopAt = at
	r.mu.Unlock()
	close(r.failedC)
	if r.tree != nil {
		r.tree.onStop(c)
	}
	for i, st := range r.stages {
		if i == c.Stage {
			continue
		}
		select {
		case <-st.Done():
		default:
			st.Stop(r.grace)
		}
	}
}
