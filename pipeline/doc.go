// Package pipeline loads a job file and runs it: it opens the input and the
// output, creates every pipe, starts the stages and the pumps between them,
// waits for all of them, and decides the result and its root cause.
//
// The entry points are Load (job file -> validated *Job) and Run (a *Job ->
// *Report). Errors that a caller maps to exit codes are typed: *JobError
// (exit 2), *InputError (exit 2), *RunError (exit 1), *proc.InterruptedError
// (128 + the signal).
//
// A job whose stages form a tree (a stage names its producer with from) is
// run as a tree of lines (fanout.go): each line is run as a job that is a
// line is, joined to the others by pump.Tee, and decideTree decides the run
// from the lines' own decisions.
package pipeline
