// Package poller is a thin epoll wrapper: registration of file descriptors
// (level-triggered, one-shot or edge-triggered), an eventfd so that another
// goroutine can interrupt a wait, and bookkeeping that refuses to let a
// registered fd be forgotten.
//
// A Poller is used by one goroutine (its owner) for Add, Modify, Remove and
// Wait; only Wake may be called from other goroutines.
package poller

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Event bits, re-exported so that callers need not import x/sys/unix.
const (
	In  = unix.EPOLLIN
	Out = unix.EPOLLOUT
	Err = unix.EPOLLERR
	Hup = unix.EPOLLHUP
	// OneShot disarms the fd after one event until Modify re-arms it. A
	// disarmed fd reports nothing, not even Err or Hup: this is how a
	// caller waits on exactly one side of a transfer without the other
	// side's hang-up waking it over and over.
	OneShot = unix.EPOLLONESHOT
	// Edge reports an fd only when its state changes (a wake-up on its wait
	// queue) after the last Wait: a side that stays ready, or stays hung
	// up, reports once. A caller may wait on it only after the fd returned
	// EAGAIN (or its last event was harvested after that), or it may wait
	// for a change that has already happened.
	Edge = unix.EPOLLET
)

// ErrNotPollable is returned by Add for an fd that epoll cannot watch (a
// regular file or a directory: always ready, never waited for).
var ErrNotPollable = errors.New("fd is not pollable (regular file?)")

// Poller waits for readiness of a set of fds.
type Poller struct {
	epfd   int
	wakefd int // eventfd: readable when Wake was called

	mu         sync.Mutex   // guards registered and closed, and wakefd against Close
	registered map[int]bool // fds added and not yet removed
	closed     bool
}

// New returns a Poller with its eventfd registered. Both fds are
// close-on-exec.
func New() (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(wakefd)
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll_ctl add eventfd: %w", err)
	}
	return &Poller{epfd: epfd, wakefd: wakefd, registered: map[int]bool{}}, nil
}

// Add registers fd for events (level-triggered unless events has
// unix.EPOLLET, which a caller may use only if it drains fd to EAGAIN on
// every event).
func (p *Poller) Add(fd int, events uint32) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("poller closed")
	}
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	if err := ignoringEINTR(func() error { return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev) }); err != nil {
		if err == unix.EPERM {
			return ErrNotPollable
		}
		return fmt.Errorf("epoll_ctl add fd %d: %w", fd, err)
	}
	p.registered[fd] = true
	return nil
}

// Modify changes the events fd is registered for (and re-arms a OneShot fd).
func (p *Poller) Modify(fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	if err := ignoringEINTR(func() error { return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, fd, &ev) }); err != nil {
		return fmt.Errorf("epoll_ctl mod fd %d: %w", fd, err)
	}
	return nil
}

// Remove deregisters fd. It must be called before fd is closed: epoll
// tracks open file descriptions, not fd numbers, so a closed-but-registered
// fd (still open through a dup elsewhere) would keep reporting events for a
// number that now means something else.
func (p *Poller) Remove(fd int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.registered[fd] {
		return fmt.Errorf("poller: fd %d is not registered", fd)
	}
	delete(p.registered, fd)
	if err := ignoringEINTR(func() error { return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil) }); err != nil {
		return fmt.Errorf("epoll_ctl del fd %d: %w", fd, err)
	}
	return nil
}

// Registered reports whether fd is registered.
func (p *Poller) Registered(fd int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.registered[fd]
}

// Wait blocks until at least one registered fd is ready, Wake is called, or
// timeoutMs passes (-1: no timeout). It fills events with the ready fds (the
// wake-up eventfd is never among them) and reports whether Wake was called
// since the last Wait. EINTR (a signal, a ptrace attach, Go's preemption
// signal) is retried here and nowhere else.
//
// epoll_wait is asked for at most len(events) events, the wake-up's
// included: an event it returns is taken off epoll's ready list, and an
// edge-triggered one taken and dropped would never be reported again.
// Events beyond the slice stay queued for the next Wait. events must hold
// at least one.
func (p *Poller) Wait(events []unix.EpollEvent, timeoutMs int) (n int, woken bool, err error) {
	if len(events) == 0 {
		return 0, false, errors.New("poller: Wait needs room for at least one event")
	}
	for {
		m, err := unix.EpollWait(p.epfd, events, timeoutMs)
		if err == unix.EINTR {
			// A retried wait restarts its timeout; callers here wait
			// either forever or for short ticks, where that is harmless.
			continue
		}
		if err != nil {
			return 0, false, fmt.Errorf("epoll_wait: %w", err)
		}
		for _, ev := range events[:m] {
			if int(ev.Fd) == p.wakefd {
				woken = true
				p.drainWake()
				continue
			}
			events[n] = ev
			n++
		}
		return n, woken, nil
	}
}

func (p *Poller) drainWake() {
	var b [8]byte
	// The eventfd is non-blocking: one read resets its counter to zero, and
	// EAGAIN means another drain got there first.
	_ = ignoringEINTR(func() error { _, err := unix.Read(p.wakefd, b[:]); return err })
}

// Sleep waits for d, or less when Wake is called meanwhile (woken; the
// wake-up is consumed, as by Wait). Readiness of the registered fds does not
// end it: it is a timed pause that Wake can interrupt, for a caller that
// must not act before d has passed (a rate limit) and must not sleep
// through a stop request either. A Wake made before Sleep ends it at once.
func (p *Poller) Sleep(d time.Duration) (woken bool, err error) {
	deadline := time.Now().Add(d)
	fds := []unix.PollFd{{Fd: int32(p.wakefd), Events: unix.POLLIN}}
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false, nil
		}
		ts := unix.NsecToTimespec(int64(left))
		n, err := unix.Ppoll(fds, &ts, nil)
		if err == unix.EINTR {
			continue // a signal: sleep what is left
		}
		if err != nil {
			return false, fmt.Errorf("ppoll: %w", err)
		}
		if n == 0 {
			return false, nil
		}
		p.drainWake()
		return true, nil
	}
}

// Wake makes a current or the next Wait return with woken set. It is safe to
// call from any goroutine, any number of times, also after Close (it then
// does nothing: no Wait can follow).
func (p *Poller) Wake() error {
	// Hold mu so that Close cannot close wakefd under us: after Close the
	// number may belong to a file opened since, and the write below would
	// put 8 bytes into it (a pump's Stop can come after the pump ended).
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	one := [8]byte{1}
	err := ignoringEINTR(func() error { _, err := unix.Write(p.wakefd, one[:]); return err })
	if err == unix.EAGAIN {
		return nil // the counter is saturated: a wake-up is pending anyway
	}
	return err
}

// Close releases the poller. Every fd added must have been removed first;
// otherwise Close removes them and reports the leak as an error, because it
// means an owner forgot to deregister before closing.
func (p *Poller) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	var leaked []int
	for fd := range p.registered {
		leaked = append(leaked, fd)
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	}
	p.registered = nil
	err1 := unix.Close(p.wakefd)
	err2 := unix.Close(p.epfd)
	if len(leaked) > 0 {
		return fmt.Errorf("poller closed with fds still registered: %v", leaked)
	}
	return errors.Join(err1, err2)
}

func ignoringEINTR(f func() error) error {
	for {
		err := f()
		if err != unix.EINTR {
			return err
		}
	}
}
