package pipeline

import (
	"context"
	"errors"
	"syscall"
	"time"

	"github.com/pipespool/pipespool/proc"
	"github.com/pipespool/pipespool/stage"
)

// signalMargin: a failure that happened less than this before pipespool
// saw the signal that interrupted it is not taken for the run's cause.
// systemd (KillMode=control-group) signals a service's main process, then
// every other process of its cgroup; a shutdown signals every process; a
// user may kill a process group: a stage may die of the signal, or exit as
// its program does on SIGTERM (ssh 255, rsync 20), a moment before
// pipespool's own handler runs, or even before pipespool gets the signal.
const signalMargin = 250 * time.Millisecond

// lateSignal returns the signal that interrupted pipespool (ctx's cause)
// when it, rather than the own failure that stopped the run at failedAt,
// is what failed the run: pipespool saw it (at seen; zero: not while the
// run ran) less than signalMargin after that failure, or a stage died of
// it (diedOf). When no signal has come yet but a stage died of one of
// those pipespool stops on, the signal may be on its way to pipespool
// too: it is waited for, until signalMargin after the failure.
func lateSignal(ctx context.Context, failedAt, seen time.Time, diedOf func(syscall.Signal) bool) (*proc.InterruptedError, bool) {
	ie := interruption(ctx)
	if ie == nil {
		wait := time.Until(failedAt.Add(signalMargin))
		if wait <= 0 || !diedOfStopSignal(diedOf) {
			return nil, false
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
			return nil, false
		}
		if ie = interruption(ctx); ie == nil {
			return nil, false
		}
	}
	if seen.IsZero() {
		seen = time.Now()
	}
	if seen.Before(failedAt.Add(signalMargin)) || diedOf(ie.Signal) {
		return ie, true
	}
	return nil, false
}

// interruption is the signal that cancelled ctx, or nil.
func interruption(ctx context.Context) *proc.InterruptedError {
	var ie *proc.InterruptedError
	if errors.As(context.Cause(ctx), &ie) {
		return ie
	}
	return nil
}

func diedOfStopSignal(diedOf func(syscall.Signal) bool) bool {
	for _, s := range proc.StopSignals {
		if diedOf(s) {
			return true
		}
	}
	return false
}

// interruptCause is the stop cause of a run interrupted by ie.
func interruptCause(ie *proc.InterruptedError) *stopCause {
	return &stopCause{Stage: -1, Result: ResultInterrupted, Msg: ie.Error(), Signal: ie.Signal}
}

// diedOf reports whether a stage of the run died of sig (its main process
// or one it left behind; a shell's 128 + sig counts), other than by
// pipespool's own stop.
func (r *running) diedOf(sig syscall.Signal) bool {
	for i := range r.stages {
		res := r.outcomes[i].res
		if res.Stopped {
			continue // pipespool's own SIGTERM, when it stopped the run
		}
		if res.Signal == sig || res.ExitCode == 128+int(sig) {
			return true
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

// yieldToSignal makes a line interrupted rather than failed when the own
// failure that stopped it is the doing of the signal that interrupted
// pipespool (see lateSignal): `systemctl stop` is reported as exit 143,
// not as a stage's failure.
func (r *running) yieldToSignal(ctx context.Context) {
	r.mu.Lock()
	stop, at, seen := r.stop, r.stopAt, r.sigSeen
	r.mu.Unlock()
	if stop == nil || !stop.Own {
		return
	}
	if ie, ok := lateSignal(ctx, at, seen, r.diedOf); ok {
		r.mu.Lock()
		r.stop = interruptCause(ie)
		r.mu.Unlock()
	}
}

// yieldToSignal is the tree's: when the first own failure of a line is the
// doing of the signal that interrupted pipespool (see lateSignal), every
// line stopped by an own failure is interrupted instead, whether the
// signal reached the other lines before that failure stopped them or not.
func (t *treeRun) yieldToSignal(ctx context.Context) {
	var first, seen time.Time
	for _, r := range t.runs {
		r.mu.Lock()
		stop, at, sn := r.stop, r.stopAt, r.sigSeen
		if stop != nil && stop.Own && !r.ownAt.IsZero() && r.ownAt.Before(at) {
			at = r.ownAt // it failed then, and waited for its trunk
		}
		r.mu.Unlock()
		if stop == nil {
			continue
		}
		if stop.Own && (first.IsZero() || at.Before(first)) {
			first = at
		}
		if !sn.IsZero() && (seen.IsZero() || sn.Before(seen)) {
			seen = sn
		}
	}
	if first.IsZero() {
		return
	}
	diedOf := func(sig syscall.Signal) bool {
		for _, r := range t.runs {
			if r.diedOf(sig) {
				return true
			}
		}
		return false
	}
	ie, ok := lateSignal(ctx, first, seen, diedOf)
	if !ok {
		return
	}
	for _, r := range t.runs {
		r.mu.Lock()
		if r.stop != nil && r.stop.Own {
			r.stop, r.ownAt = interruptCause(ie), time.Time{}
		}
		r.mu.Unlock()
	}
}
