package pipeline

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/pipespool/pipespool/proc"
	"github.com/pipespool/pipespool/stage"
)

// TestDoneBySignal: which own failures are the doing of the signal that
// interrupted pipespool (systemd signals a service's every process at
// once), and which stay the line's.
func TestDoneBySignal(t *testing.T) {
	sigAt := time.Now()
	ago := func(d time.Duration) time.Time { return sigAt.Add(-d) }
	term := syscall.SIGTERM
	for _, tc := range []struct {
		name     string
		failedAt time.Time
		deaths   []death
		want     bool
	}{
		{"failed 100 ms before the signal", ago(100 * time.Millisecond), nil, true},
		{"failed after the signal", sigAt.Add(50 * time.Millisecond), nil, true},
		{"failed 1 s before, nobody died of a signal", ago(time.Second), nil, false},
		{"failed 1 s before, a stage died of it 100 ms before", ago(time.Second), []death{{term, ago(100 * time.Millisecond)}}, true},
		{"failed 1 s before, a stage died of it then", ago(time.Second), []death{{term, ago(time.Second)}}, false},
		{"failed 1 s before, a stage died of another signal 100 ms before", ago(time.Second), []death{{syscall.SIGINT, ago(100 * time.Millisecond)}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := doneBySignal(tc.failedAt, tc.deaths, term, sigAt); got != tc.want {
				t.Errorf("doneBySignal = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestAwaitSignal: the signal is taken as it is; waited for, up to the
// margin, only after a stage died of a signal pipespool stops on.
func TestAwaitSignal(t *testing.T) {
	interrupted := func(sig syscall.Signal) context.Context {
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(&proc.InterruptedError{Signal: sig, At: time.Now()})
		return ctx
	}
	now := time.Now()
	if ie := awaitSignal(interrupted(syscall.SIGHUP), nil); ie == nil || ie.Signal != syscall.SIGHUP {
		t.Errorf("already interrupted: %v, want SIGHUP", ie)
	}
	if ie := awaitSignal(context.Background(), []death{{syscall.SIGTERM, now.Add(-time.Second)}}); ie != nil {
		t.Errorf("a death a second ago: %v, want no signal (and no wait)", ie)
	}
	if ie := awaitSignal(context.Background(), []death{{syscall.SIGKILL, now}}); ie != nil {
		t.Errorf("a SIGKILL: %v, want no signal", ie)
	}
	other, cancel := context.WithCancelCause(context.Background())
	cancel(errors.New("stop"))
	if ie := awaitSignal(other, []death{{syscall.SIGTERM, now}}); ie != nil {
		t.Errorf("cancelled for another reason: %v, want no signal", ie)
	}
	// A stage just died of SIGTERM: the signal that comes 50 ms later is
	// waited for; none coming, the wait ends.
	ctx, cancelSig := context.WithCancelCause(context.Background())
	go func() {
		time.Sleep(50 * time.Millisecond)
		cancelSig(&proc.InterruptedError{Signal: syscall.SIGTERM, At: time.Now()})
	}()
	if ie := awaitSignal(ctx, []death{{syscall.SIGTERM, time.Now()}}); ie == nil || ie.Signal != syscall.SIGTERM {
		t.Errorf("signal on its way: %v, want SIGTERM", ie)
	}
	if ie := awaitSignal(context.Background(), []death{{syscall.SIGTERM, time.Now()}}); ie != nil {
		t.Errorf("no signal coming: %v", ie)
	}
}

// TestOwnFailureIsDatedByItsStage: a line's own failure is dated by when
// its stage ended, not by when it was judged, which may be seconds later
// (the stages before it are waited for): a signal that came 2 s after the
// stage failed, right after the judgement, is not the failure's cause
// (found by review: exit 143 where 1 naming the stage was right).
func TestOwnFailureIsDatedByItsStage(t *testing.T) {
	ended := time.Now().Add(-2 * time.Second)
	judged := time.Now().Add(-100 * time.Millisecond)
	r := &running{
		stages:   make([]stage.Stage, 2),
		outcomes: []*outcome{{}, {res: stage.Result{ExitCode: 3, Ended: ended}}},
		stop:     &stopCause{Own: true, Stage: 1},
		stopAt:   judged,
	}
	at, ok := r.ownFailure()
	if !ok || !at.Equal(ended) {
		t.Fatalf("ownFailure = %v, %v; want the stage's end, %v", at, ok, ended)
	}
	if doneBySignal(at, r.deaths(), syscall.SIGTERM, time.Now()) {
		t.Errorf("a failure 2 s before the signal taken for its doing")
	}
	// The output's failure has no stage: dated by its judgement.
	r.stop = &stopCause{Own: true, Stage: 2}
	if at, _ := r.ownFailure(); !at.Equal(judged) {
		t.Errorf("the output's failure dated %v, want its judgement %v", at, judged)
	}
}
