package pipeline

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/pipespool/pipespool/proc"
)

// TestLateSignal: which own failures yield to the signal that interrupted
// pipespool (systemd signals a service's every process at once).
func TestLateSignal(t *testing.T) {
	died := func(sigs ...syscall.Signal) func(syscall.Signal) bool {
		return func(s syscall.Signal) bool {
			for _, d := range sigs {
				if d == s {
					return true
				}
			}
			return false
		}
	}
	interrupted := func(sig syscall.Signal) context.Context {
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(&proc.InterruptedError{Signal: sig})
		return ctx
	}
	now := time.Now()
	for _, tc := range []struct {
		name     string
		ctx      context.Context
		failedAt time.Time
		seen     time.Time // zero: not seen while the run ran
		diedOf   func(syscall.Signal) bool
		want     syscall.Signal // 0: the failure stays the run's
	}{
		{"no signal, nobody died of one", context.Background(), now, time.Time{}, died(), 0},
		{"no signal, long after a stage died of SIGTERM", context.Background(), now.Add(-time.Second), time.Time{}, died(syscall.SIGTERM), 0},
		{"signal seen 100 ms after the failure", interrupted(syscall.SIGTERM), now.Add(-time.Second), now.Add(-900 * time.Millisecond), died(), syscall.SIGTERM},
		{"signal seen 1 s after the failure", interrupted(syscall.SIGTERM), now.Add(-2 * time.Second), now.Add(-time.Second), died(), 0},
		{"signal seen 1 s after a stage died of it", interrupted(syscall.SIGTERM), now.Add(-2 * time.Second), now.Add(-time.Second), died(syscall.SIGTERM), syscall.SIGTERM},
		{"SIGTERM, a stage died of SIGINT long before", interrupted(syscall.SIGTERM), now.Add(-2 * time.Second), now.Add(-time.Second), died(syscall.SIGINT), 0},
		{"signal after the run, within the margin", interrupted(syscall.SIGHUP), now.Add(-50 * time.Millisecond), time.Time{}, died(), syscall.SIGHUP},
		{"cancelled for another reason", func() context.Context {
			ctx, cancel := context.WithCancelCause(context.Background())
			cancel(errors.New("stop"))
			return ctx
		}(), now, now, died(syscall.SIGTERM), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ie, ok := lateSignal(tc.ctx, tc.failedAt, tc.seen, tc.diedOf)
			switch {
			case tc.want == 0 && ok:
				t.Errorf("yields to %v, want the failure kept", ie.Signal)
			case tc.want != 0 && (!ok || ie.Signal != tc.want):
				t.Errorf("ok %v (%v), want it to yield to %v", ok, ie, tc.want)
			}
		})
	}
}

// TestLateSignalWaitsForTheSignalOnItsWay: a stage died of SIGTERM and
// pipespool has not seen one yet: the signal that comes within the margin
// is waited for; none coming, the wait ends and the failure stays.
func TestLateSignalWaitsForTheSignalOnItsWay(t *testing.T) {
	diedOfTerm := func(s syscall.Signal) bool { return s == syscall.SIGTERM }
	ctx, cancel := context.WithCancelCause(context.Background())
	go func() {
		time.Sleep(50 * time.Millisecond)
		cancel(&proc.InterruptedError{Signal: syscall.SIGTERM})
	}()
	ie, ok := lateSignal(ctx, time.Now(), time.Time{}, diedOfTerm)
	if !ok || ie.Signal != syscall.SIGTERM {
		t.Errorf("ok %v (%v), want SIGTERM", ok, ie)
	}
	if ie, ok := lateSignal(context.Background(), time.Now(), time.Time{}, diedOfTerm); ok {
		t.Errorf("yields to %v with no signal", ie.Signal)
	}
}
