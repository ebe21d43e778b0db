package pipeline

import (
	"context"
	"errors"
	"slices"
	"syscall"
	"time"

	"github.com/pipespool/pipespool/proc"
	"github.com/pipespool/pipespool/stage"
)

// signalMargin: a failure that happened less than this before pipespool
// got the signal that interrupted it is not taken for the run's cause.
// systemd (KillMode=control-group) signals a service's main process, then
// every other process of its cgroup; a shutdown signals every process; a
// user may kill a process group: a stage may die of the signal, or exit as
// its program does on SIGTERM (ssh 255, rsync 20), a moment before
// pipespool's own handler runs, or even before pipespool gets the signal.
const signalMargin = 250 * time.Millisecond

// death is a stage's main process that died of a signal (or exited 128 +
// it, as a shell reports its child's death), and when.
type death struct {
	sig syscall.Signal
	at  time.Time
}

// doneBySignal reports whether a line's own failure at failedAt is the
// doing of the signal sig that pipespool got at sigAt: it came less than
// signalMargin before (or after) it, or a stage of the line died of that
// very signal then (deaths).
func doneBySignal(failedAt time.Time, deaths []death, sig syscall.Signal, sigAt time.Time) bool {
	since := sigAt.Add(-signalMargin)
	if !failedAt.Before(since) {
		return true
	}
	return slices.ContainsFunc(deaths, func(d death) bool { return d.sig == sig && !d.at.Before(since) })
}

// awaitSignal returns the signal that interrupted pipespool (ctx's cause),
// or nil. When none has come yet but a stage died of one of the signals
// pipespool stops on less than signalMargin ago (deaths), the signal may
// be on its way to pipespool too: it is waited for, until signalMargin
// after that death.
func awaitSignal(ctx context.Context, deaths []death) *proc.InterruptedError {
	if ie := interruption(ctx); ie != nil {
		return ie
	}
	var latest time.Time
	for _, d := range deaths {
		if slices.Contains(proc.StopSignals, d.sig) && d.at.After(latest) {
			latest = d.at
		}
	}
	wait := time.Until(latest.Add(signalMargin))
	if latest.IsZero() || wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return interruption(ctx)
	case <-t.C:
		return nil
	}
}

// interruption is the signal that cancelled ctx, or nil.
func interruption(ctx context.Context) *proc.InterruptedError {
	var ie *proc.InterruptedError
	if errors.As(context.Cause(ctx), &ie) {
		return ie
	}
	return nil
}

// signalTime is when pipespool got ie's signal (now when unknown).
func signalTime(ie *proc.InterruptedError) time.Time {
	if ie.At.IsZero() {
		return time.Now()
	}
	return ie.At
}

// deaths are the run's stages that died of a signal, other than by
// pipespool's own stop.
func (r *running) deaths() []death {
	var ds []death
	for i := range r.stages {
		res := r.outcomes[i].res
		switch {
		case res.Stopped: // pipespool's own SIGTERM, when it stopped the run
		case res.Signal != 0:
			ds = append(ds, death{res.Signal, res.Ended})
		case res.ExitCode > 128 && res.ExitCode < 128+65:
			ds = append(ds, death{syscall.Signal(res.ExitCode - 128), res.Ended})
		}
	}
	return ds
}

// leftDiedOf reports whether a process that a stage of the run left
// behind died of sig (or exited 128 + sig), other than by pipespool's own
// stop. When it did is not known.
func (r *running) leftDiedOf(sig syscall.Signal) bool {
	for i := range r.stages {
		if r.outcomes[i].res.Stopped {
			continue
		}
		if p, ok := r.stages[i].(*stage.Process); ok {
			for _, e := range p.LeftFailures() {
				if e.Status.Signal == sig || e.Status.Code == 128+int(sig) {
					return true
				}
			}
		}
	}
	return false
}

// ownFailure returns when the run's own failure happened, when an own
// failure stopped it: when its stage ended, not when it was judged (the
// judgement may wait for the stages before it, or for what the stage left
// in its group); when it was judged for a failure of the output or of a
// process the stage left behind.
func (r *running) ownFailure() (time.Time, bool) {
	r.mu.Lock()
	stop, at, ownAt := r.stop, r.stopAt, r.ownAt
	r.mu.Unlock()
	if stop == nil || !stop.Own {
		return time.Time{}, false
	}
	if !ownAt.IsZero() && ownAt.Before(at) {
		at = ownAt // it failed then, and waited for its trunk
	}
	if i := stop.Stage; i >= 0 && i < len(r.stages) {
		if res := r.outcomes[i].res; res.Failed() && !res.Ended.IsZero() && res.Ended.Before(at) {
			at = res.Ended
		}
	}
	return at, true
}

// interrupt makes the run stopped by ie rather than by its own failure.
func (r *running) interrupt(ie *proc.InterruptedError) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stop, r.stopAt, r.ownAt = interruptCause(ie), signalTime(ie), time.Time{}
}

// interruptCause is the stop cause of a run interrupted by ie.
func interruptCause(ie *proc.InterruptedError) *stopCause {
	return &stopCause{Stage: -1, Result: ResultInterrupted, Msg: ie.Error(), Signal: ie.Signal}
}

// yieldToSignal makes a line interrupted rather than failed when the own
// failure that stopped it is the doing of the signal that interrupted
// pipespool (see doneBySignal): `systemctl stop` is reported as exit 143,
// not as a stage's failure.
func (r *running) yieldToSignal(ctx context.Context) {
	failedAt, ok := r.ownFailure()
	if !ok {
		return
	}
	deaths := r.deaths()
	if ie := awaitSignal(ctx, deaths); ie != nil && doneBySignal(failedAt, deaths, ie.Signal, signalTime(ie)) {
		r.interrupt(ie)
	}
}

// yieldToSignal is the tree's: each line stopped by an own failure that
// can fail the run (not an optional branch's, which stays a warning) is
// interrupted instead when that failure is the signal's doing, whether the
// signal reached the other lines before that failure stopped them or not.
func (t *treeRun) yieldToSignal(ctx context.Context) {
	var own []int
	var all []death
	for l, r := range t.runs {
		all = append(all, r.deaths()...)
		if _, ok := r.ownFailure(); ok && optionalRoot(t.lines, l) < 0 {
			own = append(own, l)
		}
	}
	if len(own) == 0 {
		return
	}
	ie := awaitSignal(ctx, all)
	if ie == nil {
		return
	}
	for _, l := range own {
		r := t.runs[l]
		if failedAt, ok := r.ownFailure(); ok && doneBySignal(failedAt, r.deaths(), ie.Signal, signalTime(ie)) {
			r.interrupt(ie)
		}
	}
}
