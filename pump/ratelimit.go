package pump

import (
	"math/bits"
	"time"

	"golang.org/x/sys/unix"
)

// This file holds the rate limit of a pump (RateLimit): a token bucket that
// the copy loop asks before each transfer how much it may move.
//
// Limit invariant: a transfer never asks for more bytes than the bucket
// holds, and the bucket never holds more than its burst; so in any
// interval of t seconds the pump delivers at most burst + rate*t bytes.
// And the pump never waits for tokens longer than it takes three quarters
// of the burst to accrue (it then moves what it has), so oversleeping by
// up to the time of the last quarter loses no tokens: a stream whose ends
// keep up moves at the rate.
//
// Why three quarters: every transfer wakes the stages on both sides, and
// the pump's own sleep wakes the Go runtime's monitor thread; in a VM a
// wake-up costs more than the splice. Three quarters of a burst per
// transfer (768 KiB with 1 MiB pipes, about 133 a second at 100 MiB/s)
// keeps the pump's CPU near 5% of a core even on a VM where an idle CPU
// is slow to wake, and still leaves 2.5 ms of slack for a late wake-up at
// that rate.

// nsPerSec is a second in the bucket's clock, nanoseconds.
const nsPerSec = int64(time.Second)

// burstWindow is how long a burst may be, in seconds of the rate: 0.2 s,
// which keeps the bytes of any 10 s window within 2% of the limit (10 s of
// rate plus one burst). A pipe's size bounds it too (see burstFor).
const burstWindow = 5 // burst <= rate / burstWindow

// bucket is a token bucket: a token is a byte the pump may move. Tokens
// accrue at rate bytes a second, exactly (frac carries what is not yet a
// whole byte), up to burst. Its clock is nanoseconds from any origin,
// passed in, so that it can be tested with a fake one.
type bucket struct {
	rate   int64 // bytes per second, 1 to units.MaxRate
	burst  int64 // the most tokens it holds, >= 1
	low    int64 // the fewest tokens worth a transfer: 3/4 of the burst
	tokens int64 // 0 to burst
	frac   int64 // byte-nanoseconds accrued and not yet a whole token, < nsPerSec
	last   int64 // clock reading of the last refill
}

// newBucket returns a full bucket: a limited pump may start with a burst,
// as after any pause.
func newBucket(rate, burst, now int64) bucket {
	burst = max(burst, 1)
	return bucket{rate: rate, burst: burst, low: max(burst-burst/4, 1), tokens: burst, last: now}
}

// burstFor is the burst of a limit of rate bytes a second on a hop whose
// smallest pipe holds pipe bytes: at most one pipe, and at most
// 1/burstWindow s of the rate.
func burstFor(rate int64, pipe int) int64 {
	return max(min(int64(pipe), rate/burstWindow), 1)
}

// refill adds the tokens accrued up to now. The product of time and rate
// is taken in 128 bits: any time, any rate, nothing overflows.
func (b *bucket) refill(now int64) {
	el := now - b.last
	if el <= 0 {
		return
	}
	b.last = now
	if b.tokens >= b.burst {
		b.frac = 0
		return
	}
	hi, lo := bits.Mul64(uint64(el), uint64(b.rate))
	lo, carry := bits.Add64(lo, uint64(b.frac), 0)
	hi += carry
	if hi >= uint64(nsPerSec) { // the quotient needs more than 64 bits
		b.tokens, b.frac = b.burst, 0
		return
	}
	q, r := bits.Div64(hi, lo, uint64(nsPerSec))
	if q >= uint64(b.burst-b.tokens) {
		b.tokens, b.frac = b.burst, 0
		return
	}
	b.tokens += int64(q)
	b.frac = int64(r)
}

// allow returns how many of want bytes (want >= 1) may be moved now, or 0
// and how long to wait first: until the bucket holds 3/4 of its
// burst, or want when that is less.
func (b *bucket) allow(want int, now int64) (n int, wait time.Duration) {
	b.refill(now)
	need := min(int64(want), b.low)
	if b.tokens >= need {
		return int(min(int64(want), b.tokens)), 0
	}
	// The nanoseconds until need tokens, rounded up.
	ns := ((need-b.tokens)*nsPerSec - b.frac + b.rate - 1) / b.rate
	return 0, time.Duration(max(ns, 1))
}

// take spends n tokens: n bytes moved after allow said they might be.
func (b *bucket) take(n int) { b.tokens -= int64(n) }

// limiter is a pump's rate limit: its bucket on the monotonic clock.
type limiter struct {
	bucket
	origin time.Time
}

func (l *limiter) now() int64 { return int64(time.Since(l.origin)) }

// RateLimit limits the pump to rate bytes a second (1 to units.MaxRate):
// the average over any 10 s within 2% of it, a burst at most one pipe's
// size. It is enforced on the pump's own thread, which sleeps until enough
// tokens have accrued (no busy wait; Stop wakes it) and caps each transfer
// by the tokens it holds. A drain (see Drain) is not limited: its bytes
// reach no consumer. rate <= 0 means no limit.
func RateLimit(rate int64) Option {
	return func(p *Pump) { p.opts.rate = rate }
}

// startLimit makes the limiter of a pump made with RateLimit, once its ends
// are known: the burst is bounded by the smaller pipe of the two (maxSplice
// when neither is a pipe).
func (p *Pump) startLimit() {
	if p.opts.rate <= 0 {
		return
	}
	pipe := maxSplice
	for _, e := range []*end{&p.src, &p.dst} {
		if e.kind != kindPipe {
			continue
		}
		if sz, err := unix.FcntlInt(uintptr(e.FD), unix.F_GETPIPE_SZ, 0); err == nil && sz > 0 {
			pipe = min(pipe, sz)
		}
	}
	l := &limiter{origin: time.Now()}
	l.bucket = newBucket(p.opts.rate, burstFor(p.opts.rate, pipe), 0)
	p.limit = l
	p.opts.burst = l.burst
}

// Burst returns the burst of the pump's rate limit in bytes, 0 when it has
// none. Safe from any goroutine (it is fixed by New).
func (p *Pump) Burst() int64 { return p.opts.burst }

// allowance returns how many of want bytes the rate limit lets the next
// transfer move, after sleeping until the bucket holds enough; 0 and
// stopRequested when Stop came meanwhile, 0 and sourceEnded when the
// source is a pipe at its end (nothing queued, no writer left: no sleep
// for tokens to learn that). Run's goroutine only, and only when p.limit is
// set and the copier holds no bytes.
func (p *Pump) allowance(want int) (int, outcome, error) {
	l := p.limit
	for {
		n, d := l.allow(want, l.now())
		if n > 0 {
			return n, 0, nil
		}
		if p.srcDrained() {
			return 0, sourceEnded, nil
		}
		p.state.Store(int32(Limited))
		if _, err := p.poller.Sleep(d); err != nil {
			return 0, copyFailed, p.copyError(err)
		}
		if p.stopping.Load() {
			return 0, stopRequested, nil
		}
	}
}
