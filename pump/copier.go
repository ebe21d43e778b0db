package pump

import (
	"errors"
	"fmt"
	"slices"

	"github.com/pipespool/pipespool/poller"
)

// A copier is one copy strategy: splice (spliceCopier) or read/write
// (rwCopier). The Pump's loop drives it; the Pump keeps what the
// strategies share: the ends, the counters, the state, Stop, and the
// closing of the fds it owns.
type copier interface {
	// copy moves bytes from the source to the destination, waiting for
	// either as its strategy requires, until it cannot go on alone; it
	// says why, with the error for copyFailed.
	copy() (outcome, error)
	// buffered is the count of bytes read from the source and not yet
	// written to the destination.
	buffered() int64
	// close removes what the copier registered with the poller and
	// closes what it opened. The Pump calls it before it closes or
	// replaces an end, and before it uses another copier.
	close() error
}

// outcome is why a copier's copy returned.
type outcome uint8

const (
	sourceEnded   outcome = iota // the source is at its end and every byte read was written
	consumerGone                 // EPIPE: the destination has no reader left
	stopRequested                // Stop was called
	spliceRefused                // splice said EINVAL before any byte moved
	copyFailed                   // the error says what failed
)

// side is one of a transfer's two sides.
type side uint8

const (
	sideSrc side = iota
	sideDst
)

// end returns the end on side s.
func (p *Pump) end(s side) *end {
	if s == sideDst {
		return &p.dst
	}
	return &p.src
}

// registrations are the fds a copier registered with the pump's poller.
// They are removed together, before an end is closed or replaced and
// before another copier registers its own: epoll watches open file
// descriptions, and a registration left behind would report events for
// an fd number that may mean something else by then, or keep the next
// copier from registering the fd as it needs.
type registrations struct {
	poller *poller.Poller
	fds    []int
}

func (r *registrations) has(fd int) bool { return slices.Contains(r.fds, fd) }

// add registers e.FD for events and remembers it.
func (r *registrations) add(e *end, events uint32) error {
	if err := r.poller.Add(e.FD, events); err != nil {
		return fmt.Errorf("waiting for %s: %w", e.Name, err)
	}
	r.fds = append(r.fds, e.FD)
	return nil
}

// removeAll deregisters every fd added.
func (r *registrations) removeAll() error {
	var errs []error
	for _, fd := range r.fds {
		if err := r.poller.Remove(fd); err != nil {
			errs = append(errs, err)
		}
	}
	r.fds = r.fds[:0]
	return errors.Join(errs...)
}
