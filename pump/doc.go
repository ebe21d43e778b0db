// Package pump moves bytes from one file descriptor to another until end of
// file: splice(2) when one side is a pipe, read/write otherwise. It is the
// copy loop that pipespool puts between every two stages, so it is where a
// missed wake-up would hang a backup; the loop is written to make one
// impossible.
//
// The loop waits only when a side is known to be exhausted: after a
// transfer returned EAGAIN, or after a splice between two pipes stopped
// short (which splice does only when the source ran empty or the
// destination filled up). Then the change that ends the exhaustion (a
// write into the source, a read from the full destination) is still to
// come, and the wait sees it:
//
//   - On the splice path both ends stay registered in the pump's own epoll
//     instance, edge-triggered, the source for input and the destination
//     for room. A change wakes the pipe's wait queue, which queues an event
//     whether or not the pump is in epoll_wait yet, so a change between the
//     failed attempt and the wait is not lost; and a state that persists (a
//     hang-up, a full destination) is reported once, so the loop cannot
//     spin on it. A hang-up or error, once harvested, is remembered: from
//     then on only splice's own EOF, EAGAIN or EPIPE ends the attempts.
//     Between two pipes of 256 KiB or more, a short splice may instead be
//     followed by a sleep of at most 100 us that lets a quarter of the pipe
//     gather (see batchDelay): fewer wake-ups, and less lock contention
//     with the stages, for a fast stream.
//   - On the read/write path (an inherited blocking fd, or files splice
//     refuses), the side that returned EAGAIN is armed one-shot and
//     level-triggered, and an inherited blocking fd is touched only after
//     epoll said it was ready. A read then returns what is there; a write
//     could still sleep until all of it was taken, so an inherited
//     blocking socket is written with send(2) and MSG_DONTWAIT, and a
//     terminal through a second opening of it with O_NONBLOCK (its own
//     flags are shared and never changed): no read or write blocks where
//     Stop cannot reach it. A device epoll refuses (/dev/null, /dev/full,
//     a tape) never waits: it is read and written with plain calls, like a
//     regular file.
//
// Each path is a copier of its own (spliceCopier in splice.go, rwCopier
// in readwrite.go) with its loop's invariant stated at the loop. The Pump
// drives the copier in use and keeps what both share: the ends and their
// closing, the counters, the state for a stall diagnosis, and Stop. It
// switches copier when splice refuses a pair of files before any byte
// moved, and when a drain makes /dev/null the destination (consumer.go).
//
// A pump made with RateLimit asks a token bucket before each transfer how
// many bytes it may move, and asks for no more (ratelimit.go states the
// limit's invariant). With too few tokens it sleeps on its own thread until
// three quarters of the burst have accrued, in a timed wait that Stop's wake-up
// ends (poller.Sleep): readiness of the ends does not wake it, and the
// first attempt after the sleep is a transfer, never a wait, so the edge-
// triggered invariant above holds. A limited splice that moved all it
// asked for says nothing about the pipes and is followed by another
// attempt, not a wait. A pump without a limit pays one nil check per
// transfer for the feature.
//
// A pump made with Buffer copies through memory instead (bufferCopier in
// buffer.go): it reads its source whenever its buffer has room and writes
// its destination whenever it holds bytes, each side on its own, and waits
// only for the sides it wants that returned EAGAIN, one-shot and
// level-triggered like the read/write path. A full buffer is not waited
// on for input and an empty one not for room, so neither spins. Its
// memory is mapped in chunks as it fills and returned as it drains. The
// pumps without a buffer do not run a line of it.
//
// After any wake-up the loop tries the transfer again rather than trusting
// the event bits: the transfer's own result (bytes, 0 for EOF, EAGAIN,
// EPIPE) is the only truth.
//
// While it runs, the pump's goroutine is locked to its thread and that
// thread runs as SCHED_BATCH (unless someone chose another policy for it):
// its wake-ups then wait for the stage on the CPU to finish its slice
// instead of preempting it mid-copy. The stages keep the default policy;
// see batchThread. A pump with a buffer keeps the default policy too: it
// copies through memory, and its consumer, having read the pipe empty,
// should not wait for another task's slice to end before it is refilled.
//
// A Tee (tee.go, tee_copy.go) copies one source to several destinations,
// the fan-out point of a job that is a tree. Every destination receives
// exactly the source's bytes, in order, and the slowest sets the pace:
// when one destination has no room, the others get what the source holds
// and then wait (WaitingBranch). The tee holds no more than the source
// pipe's contents beyond what the slowest destination has, and no user
// memory on the zero-copy path (but 256 KiB to read and throw away a head
// no destination still needs, once one was dropped); on the read/write
// path one buffer of rwBufSize (256 KiB). When the source and every destination are pipes it
// copies nothing through user space: tee(2) duplicates the source's head
// into every destination that is level with the source but one, and
// splice(2) then consumes into that one at most what each of the others
// got, so no destination ever falls behind the source; one that got more
// is ahead and waits until the others have taken what it has (tee_copy.go
// states the invariant). Otherwise it reads once and writes the bytes to
// every destination from its own offset. A destination whose reader is
// gone (EPIPE) is dropped, its Result ConsumerGone with what it missed,
// and the tee goes on with the others; when none is left it closes its
// source, as a Pump whose consumer is gone; a reader that went after the
// source's last byte missed nothing, and its destination ends at EOF. Made
// with HoldWhenConsumerGone, the tee instead holds a destination whose
// reader went (the others go on as far as the source holds, then wait)
// until TeeBranch.Drain makes it throw its share away or TeeBranch.Stop
// drops it; when every destination drains, the tee reads its source to
// the end. TeeBranch.Stop drops one destination, Tee.Stop ends them all. Waits follow the rules above: after
// a round in which nothing moved, edge-triggered on every pipe on the
// zero-copy path, one-shot on the blocked sides on the read/write path. A
// tee has no rate limit and no buffer: a branch that needs one gets a
// pipe and an ordinary Pump after the tee.
//
// EINTR is retried at the syscall, but for the batching sleep, which a
// signal ends (see sleep in splice.go). Short transfers are normal and simply
// continue. EPIPE means the consumer is gone: the pump stops, reports how
// many bytes it could not deliver, and closes its source so that the
// producer gets EPIPE or SIGPIPE at its next write, as in a shell pipeline.
// At EOF the pump closes its destination so that the next stage sees EOF.
package pump
