package queue

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/pipespool/pipespool/proc"
)

// TestRunResult: the result of a queue-process run, one row per rule.
func TestRunResult(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		failed int
		want   string
	}{
		{"all ran", nil, 0, ResultSuccess},
		{"a failure under Delete or Leave exits 0 but is no success", nil, 2, ResultFailed},
		{"a failure under Retry", &JobFailedError{Seq: 3, Err: errors.New("exit status 1")}, 1, ResultFailed},
		{"interrupted", fmt.Errorf("job 3: %w", &proc.InterruptedError{Signal: syscall.SIGTERM}), 0, ResultInterrupted},
		{"interrupted after a failure", &proc.InterruptedError{Signal: syscall.SIGINT}, 1, ResultInterrupted},
		{"stopped on an error", &DuplicateSeqError{Seq: 4, First: "a", Second: "b"}, 0, ResultError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := runResult(tc.err, tc.failed); got != tc.want {
				t.Errorf("runResult = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestProcessReportCounts: Add counts each job once, as succeeded or
// failed; Finish sets the times, the result and the message.
func TestProcessReportCounts(t *testing.T) {
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	r := ProcessReport{Start: start}
	for _, res := range []string{ResultSuccess, ResultFailed, ResultSuccess, ResultInterrupted} {
		r.Add(JobOutcome{Result: res})
	}
	err := &proc.InterruptedError{Signal: syscall.SIGTERM}
	r.Finish(err, start.Add(1500*time.Millisecond))
	if r.JobsProcessed != 4 || r.JobsSucceeded != 2 || r.JobsFailed != 2 || len(r.Jobs) != 4 {
		t.Errorf("processed %d succeeded %d failed %d jobs %d", r.JobsProcessed, r.JobsSucceeded, r.JobsFailed, len(r.Jobs))
	}
	if r.Duration != 1.5 || r.Result != ResultInterrupted || r.Message != err.Error() {
		t.Errorf("duration %v result %q message %q", r.Duration, r.Result, r.Message)
	}
}
