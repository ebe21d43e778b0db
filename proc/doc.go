// Package proc is pipespool's one process runner and its one /proc reader.
//
// Every child process of pipespool (an external stage, a queue command, a
// queue's shell decoder) is started by Scope.Start as the leader of a
// process group of its own, forked by one long-lived thread with a
// parent-death signal, so that a kill -9 of pipespool takes its children
// with it. A Group is waited for without being reaped until its Cleanup,
// so that its process group id is never reused while it may be signalled;
// Stop signals the group and whatever left it below it; Cleanup stops what
// is left in the group once the leader has exited. A Scope (one run) stops,
// when it closes, the orphans its processes left behind: with
// BecomeSubreaper every descendant of pipespool stays its child when its
// parent exits, and is reaped when it exits.
//
// The /proc reader (Reader, ParseStat, Snapshot, GroupMembers) serves the
// runner and the pipeline's stall monitor; system call names come from a
// table keyed by x/sys/unix's numbers, signal names from unix.SignalName,
// so that both are right on every architecture.
package proc
