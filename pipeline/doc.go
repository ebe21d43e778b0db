// Package pipeline loads a job file and runs it: it opens the input and the
// output, creates every pipe, starts the stages and the pumps between them,
// waits for all of them, and decides the result and its root cause.
//
// The entry points are Load (job file -> validated *Job) and Run (a *Job ->
// *Report). Errors that a caller maps to exit codes are typed: *JobError
// (exit 2), *InputError (exit 2), *RunError (exit 1), *proc.InterruptedError
// (128 + the signal).
package pipeline
