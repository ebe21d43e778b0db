// Package pump moves bytes from one file descriptor to another until end of
// file: splice(2) when one side is a pipe, read/write otherwise. It is the
// copy loop that pipespool puts between every two stages, so it is where a
// missed wake-up would hang a backup; the loop is written to make one
// impossible.
//
// The loop keeps one invariant: it waits only after a transfer attempt
// returned EAGAIN, and then only for the side that made it return EAGAIN
// (the source when it had nothing to give, the destination when it had no
// room). That side is armed one-shot and level-triggered in the pump's own
// epoll instance, so readiness that arrived between the failed attempt and
// epoll_wait is still reported, and the other side's hang-up or error can
// never wake the loop while it has nothing to do (which is how an event
// loop spins at 100% CPU). After any wake-up the loop tries the transfer
// again rather than trusting the event bits: the transfer's own result
// (bytes, 0 for EOF, EAGAIN, EPIPE) is the only truth.
//
// EINTR is retried at the syscall. Short transfers are normal and simply
// continue. EPIPE means the consumer is gone: the pump stops, reports how
// many bytes it could not deliver, and closes its source so that the
// producer gets EPIPE or SIGPIPE at its next write, as in a shell pipeline.
// At EOF the pump closes its destination so that the next stage sees EOF.
package pump
