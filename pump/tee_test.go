package pump

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startTee runs t in a goroutine; the returned channel gives its results.
func startTee(t *Tee) <-chan []Result {
	ch := make(chan []Result, 1)
	go func() { ch <- t.Run() }()
	return ch
}

func mustNewTee(t *testing.T, src End, dsts []End, opts ...Option) *Tee {
	t.Helper()
	tee, err := NewTee(src, dsts, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return tee
}

// teeSink is one destination of a tee test: how it is set up and how its
// reader reads.
type teeSink struct {
	dst  sink
	cons consumer
}

func TestTeeDeliversEveryByteToEveryDestination(t *testing.T) {
	slow := consumer{chunk: 1000, every: 64, pause: time.Millisecond}
	tests := []struct {
		name     string
		src      source
		prod     producer
		sinks    []teeSink
		zeroCopy bool
	}{
		{"2 destinations, 64 KiB pipes", pipeSource(64 << 10), producer{total: 16 * mib},
			[]teeSink{{pipeSink(64 << 10), consumer{}}, {pipeSink(64 << 10), consumer{}}}, true},
		{"3 destinations, 1 MiB pipes", pipeSource(DefaultPipeSize), producer{total: 32 * mib},
			[]teeSink{{pipeSink(DefaultPipeSize), consumer{}}, {pipeSink(DefaultPipeSize), consumer{}}, {pipeSink(DefaultPipeSize), consumer{}}}, true},
		{"pipes of different sizes", pipeSource(DefaultPipeSize), producer{total: 16*mib + 7, chunk: 5000},
			[]teeSink{{pipeSink(64 << 10), consumer{chunk: 3000}}, {pipeSink(DefaultPipeSize), consumer{}}, {pipeSink(smallPipe), consumer{chunk: 7000}}}, true},
		{"slow first destination", pipeSource(DefaultPipeSize), producer{total: 2 * mib},
			[]teeSink{{pipeSink(smallPipe), slow}, {pipeSink(DefaultPipeSize), consumer{}}}, true},
		{"slow last destination", pipeSource(DefaultPipeSize), producer{total: 2 * mib},
			[]teeSink{{pipeSink(DefaultPipeSize), consumer{}}, {pipeSink(smallPipe), slow}}, true},
		{"tiny pipe destination", pipeSource(64 << 10), producer{total: 4*mib + 1, chunk: 3000},
			[]teeSink{{pipeSink(64 << 10), consumer{}}, {pipeSink(smallPipe), consumer{chunk: 1000}}, {pipeSink(64 << 10), consumer{chunk: 1}}}, true},
		{"slow writer", pipeSource(smallPipe), producer{total: 2 * mib, chunk: 3000, every: 32, pause: time.Millisecond},
			[]teeSink{{pipeSink(DefaultPipeSize), consumer{}}, {pipeSink(smallPipe), consumer{}}}, true},
		{"one destination", pipeSource(64 << 10), producer{total: 8 * mib},
			[]teeSink{{pipeSink(64 << 10), consumer{}}}, true},
		{"regular file destination is read/write", pipeSource(64 << 10), producer{total: 8*mib + 17, chunk: 5000},
			[]teeSink{{pipeSink(64 << 10), consumer{}}, {fileSink, consumer{}}}, false},
		{"regular file source is read/write", fileSource, producer{total: 8*mib + 17},
			[]teeSink{{pipeSink(smallPipe), consumer{chunk: 5000}}, {pipeSink(DefaultPipeSize), consumer{}}}, false},
		{"socket destination with slow reader", pipeSource(64 << 10), producer{total: 2 * mib},
			[]teeSink{{socketSink, slow}, {pipeSink(64 << 10), consumer{}}, {fileSink, consumer{}}}, false},
		{"socket source", socketSource, producer{total: 8 * mib, chunk: 100 << 10},
			[]teeSink{{pipeSink(smallPipe), consumer{chunk: 3000}}, {socketSink, consumer{}}}, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			tt.prod.seed = uint64(i + 100)
			src, produced := tt.src(t, tt.prod)
			var dsts []End
			var collect []func() digest
			for _, s := range tt.sinks {
				e, c := s.dst(t, s.cons)
				dsts, collect = append(dsts, e), append(collect, c)
			}
			tee := mustNewTee(t, src, dsts)
			if tee.zeroCopy != tt.zeroCopy {
				t.Errorf("zero copy %v, want %v", tee.zeroCopy, tt.zeroCopy)
			}
			res := waitFor(t, startTee(tee), time.Minute, "tee results")
			in := waitFor(t, produced, time.Minute, "producer")
			if in.err != nil || in.n != tt.prod.total {
				t.Fatalf("producer %v", in)
			}
			for j, c := range collect {
				out := c()
				if out != in {
					t.Errorf("destination %d: written %v, read %v", j, in, out)
				}
				if r := res[j]; r.Err != nil || !r.EOF || r.Bytes != in.n {
					t.Errorf("destination %d: result %+v, want EOF after %d bytes", j, r, in.n)
				}
				if r := tee.Branch(j).Result(); r != res[j] {
					t.Errorf("destination %d: Result() %+v, Run gave %+v", j, r, res[j])
				}
			}
			if r := tee.Source().Result(); !r.EOF || r.Err != nil || r.Bytes != in.n || r.Undelivered != 0 {
				t.Errorf("source: result %+v, want EOF after %d bytes taken", r, in.n)
			}
			if st := tee.Source().State(); st != Finished {
				t.Errorf("source: state %v after Run", st)
			}
		})
	}
}

// TestTeeDestinationAheadWaitsForTheSlowest forces the path where one
// destination has part of the source's head already and the others do not:
// the source holds 300 KiB, one destination's pipe takes all of it at once
// and the other's only 4 KiB, whose reader reads nothing until the first
// has everything. Every byte must then reach both exactly once: a byte the
// fast destination got twice, or the slow one never, changes its hash.
func TestTeeDestinationAheadWaitsForTheSlowest(t *testing.T) {
	const total = 300<<10 + 3
	for _, order := range []string{"slow last (spliced)", "slow first (teed)"} {
		t.Run(order, func(t *testing.T) {
			checkFDs(t)
			src, produced := pipeSource(DefaultPipeSize)(t, producer{total: total, seed: 7, chunk: 5000})
			in := waitFor(t, produced, 10*time.Second, "producer")
			fast, fastR := pipeFor(t, DefaultPipeSize, false)
			slow, slowR := pipeFor(t, smallPipe, false)
			dsts, fi, si := []End{fast, slow}, 0, 1
			if order != "slow last (spliced)" {
				dsts, fi, si = []End{slow, fast}, 1, 0
			}
			tee := mustNewTee(t, src, dsts)
			done := startTee(tee)
			fb, sb := tee.Branch(fi), tee.Branch(si)
			eventually(t, 10*time.Second, "fast destination has it all", func() bool { return fb.Bytes() == total })
			waitBranchState(t, fb, WaitingBranch)
			if s := sb.Bytes(); s > smallPipe {
				t.Fatalf("slow destination got %d bytes, more than its pipe holds", s)
			}
			if q := fb.SrcQueued(); q != 0 {
				t.Errorf("fast destination: SrcQueued %d, want 0 (it has all the source holds)", q)
			}
			if q := sb.SrcQueued(); q <= 0 {
				t.Errorf("slow destination: SrcQueued %d, want > 0", q)
			}
			waitBranchState(t, sb, WaitingDst)
			outS := consumer{chunk: 999}.consume(slowR)
			outF := consumer{}.consume(fastR)
			res := waitFor(t, done, 10*time.Second, "tee")
			if outF != in || outS != in {
				t.Fatalf("written %v; fast read %v, slow read %v", in, outF, outS)
			}
			for j, r := range res {
				if !r.EOF || r.Bytes != total {
					t.Errorf("destination %d: %+v", j, r)
				}
			}
		})
	}
}

// TestTeeRoundShortness: a zero-copy round whose tee(2) got less than it
// asked (the source ran dry, or that destination filled) is short even when
// the splice then moved all it was given, so the tee waits for the change
// to come instead of trying again at once, which would only meet EAGAIN at
// every destination, each attempt taking a pipe's lock that a stage may
// hold for a whole read. A round whose splice a destination ahead bounded is
// not short: no change need come, and waiting could hang.
func TestTeeRoundShortness(t *testing.T) {
	checkFDs(t)
	src, w := pipeFor(t, DefaultPipeSize, true)
	big, bigR := pipeFor(t, DefaultPipeSize, false)
	small, smallR := pipeFor(t, 64<<10, false)
	tee := mustNewTee(t, src, []End{big, small})
	defer func() {
		tee.Stop()
		tee.Run()
	}()
	c := &teeZC{t: tee, events: make([]unix.EpollEvent, 3)}
	round := func(what string, wantMoved int, wantShort bool) {
		t.Helper()
		r, how, err := c.round()
		if err != nil || how != keepCopying {
			t.Fatalf("%s: round ended the tee: %v, %v", what, how, err)
		}
		if r.moved != wantMoved || r.short != wantShort || r.dropped {
			t.Fatalf("%s: round %+v, want moved %d, short %v", what, r, wantMoved, wantShort)
		}
	}
	drain := func(f *os.File, n int) {
		t.Helper()
		if _, err := io.ReadFull(f, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	write := func(n int) {
		t.Helper()
		if _, err := w.Write(make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}

	// The source ran dry: the tee got 16 KiB of the 1 MiB it asked, the
	// splice all of those 16 KiB.
	write(16 << 10)
	round("source ran dry", 16<<10, true)
	drain(bigR, 16<<10)
	drain(smallR, 16<<10)

	// The small destination fills: the tee gets 96 KiB into the big one,
	// the splice only 64 of them into the small one, which is then behind
	// the big one's head: the big one is ahead by 32 KiB.
	write(96 << 10)
	round("small destination full", 96<<10, true)
	if a := tee.Branch(0).ahead.Load(); a != 32<<10 {
		t.Fatalf("big destination ahead by %d, want %d", a, 32<<10)
	}
	// With room again, the splice into the small one may move only what
	// the big one is ahead by. It moves all of it; the source still holds
	// 32 KiB more that both destinations have room for, and nothing will
	// change on its own: not short.
	drain(smallR, 64<<10)
	write(32 << 10)
	round("bounded by a destination ahead", 32<<10, false)
	round("the rest", 32<<10, true)
	drain(bigR, 128<<10)
	drain(smallR, 64<<10)
	if q := Queued(src.FD); q != 0 {
		t.Fatalf("source still holds %d bytes", q)
	}
}

// TestTeeProducerInOneLargeWrite: a producer that writes in large
// blocking write(2)s (dd bs=32M) wakes the tee's wait only when the pipe
// was empty as it took its lock, or once the whole write is done; when it
// refills a source the tee did not empty, it sleeps for room without a
// wake-up. A round that took what a short tee(2) saw and then waited,
// while the writer had refilled the source behind it, hung for ever: the
// source full, the destinations empty, the writer asleep.
func TestTeeProducerInOneLargeWrite(t *testing.T) {
	checkFDs(t)
	const size = 64 << 10
	p, _, err := NewPipe(size)
	if err != nil {
		t.Fatal(err)
	}
	if err := SetNonblock(p.R); err != nil {
		t.Fatal(err)
	}
	a, aR := pipeFor(t, size, false)
	b, bR := pipeFor(t, size, false)
	tee := mustNewTee(t, End{FD: p.R, Own: true, Name: "source"}, []End{a, b})
	done := startTee(tee)
	const total = 128 << 20
	go func() {
		buf := make([]byte, 32<<20) // each write(2) blocks, for room, many times
		for left := total; left > 0; {
			n, err := unix.Write(p.W, buf[:min(left, len(buf))])
			left -= max(n, 0)
			if err != nil && err != unix.EINTR {
				break
			}
		}
		unix.Close(p.W)
	}()
	var got [2]atomic.Int64
	read := func(f *os.File, got *atomic.Int64, chunk int, pause bool) {
		buf := make([]byte, chunk)
		for i := 0; ; i++ {
			n, err := f.Read(buf)
			got.Add(int64(n))
			if err != nil {
				return
			}
			if pause && i%8 == 0 {
				time.Sleep(20 * time.Microsecond)
			}
		}
	}
	go read(aR, &got[0], 24<<10, true)
	go read(bR, &got[1], 64<<10, false)
	last, lastAt := int64(-1), time.Now()
	for {
		select {
		case res := <-done:
			for i, r := range res {
				if !r.EOF || r.Bytes != total {
					t.Errorf("destination %d: %+v, want EOF after %d bytes", i, r, total)
				}
			}
			return
		case <-time.After(10 * time.Millisecond):
		}
		if now := got[0].Load() + got[1].Load(); now != last {
			last, lastAt = now, time.Now()
		} else if time.Since(lastAt) > 5*time.Second {
			t.Errorf("no byte moved for 5 s: read %d and %d of %d; the source holds %d, the destinations %d and %d",
				got[0].Load(), got[1].Load(), total, Queued(p.R), Queued(a.FD), Queued(b.FD))
			tee.Stop()
			<-done
			return
		}
	}
}

func waitBranchState(t *testing.T, b *TeeBranch, s State) {
	t.Helper()
	eventually(t, 10*time.Second, "branch "+s.String(), func() bool { return b.State() == s })
}

// teeOfPipes is a tee from a pipe to n pipes, with a producer of total
// bytes (1<<40: until EPIPE) behind the source; the readers are returned
// for the test to use.
func teeOfPipes(t *testing.T, n, size int, total int64, zeroCopy bool) (*Tee, <-chan digest, []*os.File) {
	t.Helper()
	src, w := pipeFor(t, DefaultPipeSize, true)
	produced := goProduce(producer{total: total, seed: 3}, w)
	var dsts []End
	var readers []*os.File
	for i := range n {
		var e End
		var r *os.File
		if !zeroCopy && i == n-1 {
			e, r = socketFor(t)
		} else {
			e, r = pipeFor(t, size, false)
		}
		dsts, readers = append(dsts, e), append(readers, r)
	}
	return mustNewTee(t, src, dsts), produced, readers
}

func TestTeeDropsADestinationWhoseReaderLeft(t *testing.T) {
	const read = 300 << 10 // what the leaving reader reads first
	const total = 8 * mib
	for _, zc := range []bool{true, false} {
		for _, leaving := range []int{0, 1, 2} {
			t.Run(fmt.Sprintf("zero copy %v, reader %d leaves", zc, leaving), func(t *testing.T) {
				checkFDs(t)
				tee, produced, readers := teeOfPipes(t, 3, 64<<10, total, zc)
				done := startTee(tee)
				outs := make([]chan digest, len(readers))
				for i, r := range readers {
					outs[i] = make(chan digest, 1)
					go func() {
						if i == leaving {
							d := consumer{}.consume(io.LimitReader(r, read))
							r.Close()
							outs[i] <- d
							return
						}
						outs[i] <- consumer{chunk: 5000}.consume(r)
					}()
				}
				res := waitFor(t, done, 30*time.Second, "tee")
				in := waitFor(t, produced, 10*time.Second, "producer")
				if in.err != nil || in.n != total {
					t.Fatalf("producer %v", in)
				}
				for i := range readers {
					out := waitFor(t, outs[i], 10*time.Second, "reader")
					r := res[i]
					if i == leaving {
						if !r.ConsumerGone || !errors.Is(r.Err, ErrConsumerGone) || r.EOF || r.Undelivered <= 0 || r.Bytes < read || out.n != read {
							t.Errorf("leaving reader read %v; result %+v: want ConsumerGone, Bytes >= %d, Undelivered > 0", out, r, read)
						}
						continue
					}
					if out != in || !r.EOF || r.Bytes != total || r.Err != nil {
						t.Errorf("destination %d: written %v, read %v, result %+v", i, in, out, r)
					}
				}
			})
		}
	}
}

func TestTeeEndsWhenEveryReaderLeft(t *testing.T) {
	for _, zc := range []bool{true, false} {
		t.Run(fmt.Sprintf("zero copy %v", zc), func(t *testing.T) {
			checkFDs(t)
			tee, produced, readers := teeOfPipes(t, 2, 64<<10, 1<<40, zc)
			done := startTee(tee)
			// One leaves at once, the other after a while.
			readers[1].Close()
			consumer{}.consume(io.LimitReader(readers[0], 1*mib))
			readers[0].Close()
			res := waitFor(t, done, 10*time.Second, "tee after every reader left")
			for i, r := range res {
				if !r.ConsumerGone || !errors.Is(r.Err, ErrConsumerGone) {
					t.Errorf("destination %d: %+v, want ConsumerGone", i, r)
				}
				if b := tee.Branch(i); b.State() != Finished || b.DstQueued() != -1 || b.SrcQueued() != -1 {
					t.Errorf("destination %d after Run: state %v, queued %d and %d", i, b.State(), b.SrcQueued(), b.DstQueued())
				}
			}
			// The tee closed its source: the producer gets EPIPE.
			in := waitFor(t, produced, 10*time.Second, "producer EPIPE")
			if !errors.Is(in.err, syscall.EPIPE) {
				t.Errorf("producer ended with %v, want EPIPE", in.err)
			}
			// The source's result says so, and accounts for what the
			// producer wrote (it may write more between the tee's look at
			// its pipe and the close).
			if r := tee.Source().Result(); !r.ConsumerGone || !errors.Is(r.Err, ErrConsumerGone) || r.EOF || r.Bytes < 1*mib || r.Bytes+r.Undelivered > in.n {
				t.Errorf("source: %+v, want ConsumerGone, at least 1 MiB taken, at most the %d written", r, in.n)
			}
			if in.n < res[0].Bytes {
				t.Errorf("producer wrote %d, destination 0 got %d", in.n, res[0].Bytes)
			}
		})
	}
}

func TestTeeBranchStopDropsThatDestinationOnly(t *testing.T) {
	const total = 8 * mib
	for _, zc := range []bool{true, false} {
		t.Run(fmt.Sprintf("zero copy %v", zc), func(t *testing.T) {
			checkFDs(t)
			tee, produced, readers := teeOfPipes(t, 3, 64<<10, total, zc)
			done := startTee(tee)
			// Destination 1 is not read: the tee blocks on it, then it is
			// dropped and the others go on.
			b := tee.Branch(1)
			eventually(t, 10*time.Second, "destination 1 full", func() bool { return b.Bytes() > 0 && b.State() == WaitingDst })
			outs := []chan digest{make(chan digest, 1), make(chan digest, 1)}
			go func() { outs[0] <- consumer{}.consume(readers[0]) }()
			go func() { outs[1] <- consumer{}.consume(readers[2]) }()
			b.Stop()
			waitFor(t, b.Done(), 10*time.Second, "dropped destination")
			got := b.Result()
			if !errors.Is(got.Err, ErrBranchStopped) || !errors.Is(got.Err, ErrStopped) || got.EOF || got.Bytes == 0 || got.Undelivered <= 0 {
				t.Errorf("stopped destination: %+v, want ErrBranchStopped with bytes delivered and undelivered", got)
			}
			// Its reader sees the end of its input (the tee closed it).
			if d := (consumer{}).consume(readers[1]); d.n != got.Bytes {
				t.Errorf("stopped destination's reader read %v, result says %d delivered", d, got.Bytes)
			}
			res := waitFor(t, done, 30*time.Second, "tee")
			in := waitFor(t, produced, 10*time.Second, "producer")
			for k, i := range []int{0, 2} {
				out := waitFor(t, outs[k], 10*time.Second, "reader")
				if out != in || !res[i].EOF || res[i].Bytes != total {
					t.Errorf("destination %d: written %v, read %v, result %+v", i, in, out, res[i])
				}
			}
			if res[1] != got {
				t.Errorf("Run gave %+v for the stopped destination, Result %+v", res[1], got)
			}
			b.Stop() // after the end: nothing
		})
	}
}

func TestTeeStopWhileBlockedOnAFullDestination(t *testing.T) {
	for _, zc := range []bool{true, false} {
		t.Run(fmt.Sprintf("zero copy %v", zc), func(t *testing.T) {
			checkFDs(t)
			tee, produced, readers := teeOfPipes(t, 2, 64<<10, 1<<40, zc)
			done := startTee(tee)
			// Destination 0 is read, destination 1 never.
			go consumer{}.consume(readers[0])
			b := tee.Branch(1)
			eventually(t, 10*time.Second, "destination 1 full", func() bool { return b.Bytes() > 0 && b.State() == WaitingDst })
			before := tee.Branch(0).Bytes()
			stopped := time.Now()
			tee.Stop()
			res := waitFor(t, done, 2*time.Second, "tee after Stop")
			t.Logf("Run returned %v after Stop", time.Since(stopped))
			for i, r := range res {
				if !errors.Is(r.Err, ErrStopped) || errors.Is(r.Err, ErrBranchStopped) || r.EOF {
					t.Errorf("destination %d: %+v, want ErrStopped", i, r)
				}
			}
			if r := res[1]; r.Undelivered <= 0 || zc && r.Unread <= 0 { // a socket counts no unread bytes
				t.Errorf("full destination: %+v, want Undelivered and Unread", r)
			}
			if res[0].Bytes < before {
				t.Errorf("destination 0: %d bytes, had %d before Stop", res[0].Bytes, before)
			}
			readers[1].Close()
			readers[0].Close()
			if in := waitFor(t, produced, 10*time.Second, "producer"); !errors.Is(in.err, syscall.EPIPE) {
				t.Errorf("producer %v, want EPIPE", in)
			}
		})
	}
}

func TestTeeStopBeforeRunAndAfterFinish(t *testing.T) {
	checkFDs(t)
	tee, _, readers := teeOfPipes(t, 2, smallPipe, 0, true)
	tee.Stop()
	res := waitFor(t, startTee(tee), 2*time.Second, "tee stopped before Run")
	for _, r := range res {
		if !errors.Is(r.Err, ErrStopped) {
			t.Errorf("%+v, want ErrStopped", r)
		}
	}
	tee.Stop()
	tee.Branch(0).Stop()
	for _, r := range readers {
		r.Close()
	}
}

func TestNewTeeRefusesPumpOnlyOptions(t *testing.T) {
	checkFDs(t)
	for _, o := range []Option{RateLimit(1 << 20), Buffer(BufferSpec{Size: 4 * mib}), AwaitRead()} {
		src, _ := pipeFor(t, smallPipe, true)
		dst, _ := pipeFor(t, smallPipe, false)
		if _, err := NewTee(src, []End{dst}, o); err == nil || !strings.Contains(err.Error(), "put a pump after it") {
			t.Errorf("NewTee with a pump-only option: %v", err)
		}
		unix.Close(src.FD)
		unix.Close(dst.FD)
	}
}

func TestTeeKeepsWitnesses(t *testing.T) {
	checkFDs(t)
	const total = 100<<10 + 1
	src, produced := pipeSource(DefaultPipeSize)(t, producer{total: total, seed: 9})
	waitFor(t, produced, 10*time.Second, "producer")
	a, ra := pipeFor(t, DefaultPipeSize, false)
	b, rb := pipeFor(t, DefaultPipeSize, false)
	tee := mustNewTee(t, src, []End{a, b}, KeepWitness())
	waitFor(t, startTee(tee), 10*time.Second, "tee")
	if _, err := io.ReadFull(ra, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	ra.Close()
	rb.Close()
	for i, want := range []int{total - 1000, total} {
		if got := tee.Branch(i).Leftover(); got != want {
			t.Errorf("destination %d: Leftover %d, want %d", i, got, want)
		}
		tee.Branch(i).Release()
	}
}

// TestTeeStoppedWithWitnessCountsPipeOnce: a tee stopped while its
// destinations' pipes hold bytes keeps a witness on each, which counts
// what the reader left there (Leftover); the Result must not count those
// bytes as Unread too: a stalled branch killed, whose pipe held 1 MiB, was
// reported with bytes_in -1 MiB (Bytes - Unread - Leftover).
func TestTeeStoppedWithWitnessCountsPipeOnce(t *testing.T) {
	checkFDs(t)
	const total = 50 << 10
	src, w := pipeFor(t, DefaultPipeSize, true)
	defer w.Close() // the source stays open: the tee ends only by Stop
	if _, err := w.Write(make([]byte, total)); err != nil {
		t.Fatal(err)
	}
	a, ra := pipeFor(t, DefaultPipeSize, false)
	b, rb := pipeFor(t, DefaultPipeSize, false)
	defer ra.Close()
	defer rb.Close()
	tee := mustNewTee(t, src, []End{a, b}, KeepWitness())
	done := startTee(tee)
	if _, err := io.ReadFull(ra, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "every byte delivered to both", func() bool {
		return tee.Branch(0).Bytes() == total && tee.Branch(1).Bytes() == total
	})
	tee.Stop()
	res := waitFor(t, done, 10*time.Second, "tee")
	for i, read := range []int64{1000, 0} {
		r, left := res[i], tee.Branch(i).Leftover()
		tee.Branch(i).Release()
		if left != int(total-read) {
			t.Errorf("destination %d: Leftover %d, want %d", i, left, total-read)
		}
		if got := r.Bytes - r.Unread - int64(left); got != read {
			t.Errorf("destination %d: %+v with Leftover %d says its reader read %d, want %d", i, r, left, got, read)
		}
	}
}

// TestTeeSurvivesSignalStorm: a tee between real processes, the children
// stopped and continued at random points, and every thread of the test
// process (the tee's among them) sent the runtime's preemption signal over
// and over, must still deliver every byte to both consumers.
func TestTeeSurvivesSignalStorm(t *testing.T) {
	checkFDs(t)
	size := longCopySize() / 4
	a, _, err := NewPipe(DefaultPipeSize)
	if err != nil {
		t.Fatal(err)
	}
	if err := SetNonblock(a.R); err != nil {
		t.Fatal(err)
	}
	prod := helperCmd(fmt.Sprintf("produce %d 13", size))
	var prodOut strings.Builder
	prodStdout := File(a.W, "producer stdout")
	prod.Stdout, prod.Stderr = prodStdout, &prodOut
	if err := prod.Start(); err != nil {
		prodStdout.Close()
		unix.Close(a.R)
		t.Fatal(err)
	}
	prodStdout.Close()
	procs := []*os.Process{prod.Process}
	var consOuts []*strings.Builder
	var conss []interface{ Wait() error }
	dsts := []End{}
	for range 2 {
		b, _, err := NewPipe(64 << 10)
		if err != nil {
			t.Fatal(err)
		}
		if err := SetNonblock(b.W); err != nil {
			t.Fatal(err)
		}
		cons := helperCmd("consume 0")
		out := &strings.Builder{}
		stdin := File(b.R, "consumer stdin")
		cons.Stdin, cons.Stdout, cons.Stderr = stdin, out, os.Stderr
		err = cons.Start()
		stdin.Close()
		if err != nil {
			unix.Close(b.W)
			t.Fatal(err)
		}
		procs = append(procs, cons.Process)
		consOuts, conss = append(consOuts, out), append(conss, cons)
		dsts = append(dsts, End{FD: b.W, Own: true, Name: "consumer"})
	}
	tee := mustNewTee(t, End{FD: a.R, Own: true, Name: "producer"}, dsts)
	done := startTee(tee)

	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		pid := unix.Getpid()
		for !stop.Load() {
			ents, _ := os.ReadDir("/proc/self/task")
			for _, e := range ents {
				var tid int
				fmt.Sscan(e.Name(), &tid)
				unix.Tgkill(pid, tid, unix.SIGURG)
			}
			spinFor(50 * time.Microsecond)
		}
	}()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(3 * time.Millisecond) // the stop-and-continue pace
		defer tick.Stop()
		for i := 0; !stop.Load(); i++ {
			<-tick.C
			pr := procs[i/2%len(procs)]
			if i%2 == 0 {
				pr.Signal(syscall.SIGSTOP)
			} else {
				pr.Signal(syscall.SIGCONT)
			}
		}
		for _, pr := range procs {
			pr.Signal(syscall.SIGCONT) // never leave a child stopped
		}
	}()
	var res []Result
	select {
	case res = <-done:
	case <-time.After(5 * time.Minute):
		stop.Store(true)
		wg.Wait()
		for _, pr := range procs {
			pr.Kill()
		}
		t.Fatalf("tee of %d bytes hangs (%d, %d bytes delivered)\n%s", size, tee.Branch(0).Bytes(), tee.Branch(1).Bytes(), goroutines())
	}
	stop.Store(true)
	wg.Wait()
	if err := prod.Wait(); err != nil {
		t.Fatal(err)
	}
	want := strings.TrimSpace(prodOut.String())
	for i, c := range conss {
		if err := c.Wait(); err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(consOuts[i].String()); got != want {
			t.Errorf("consumer %d read %s, producer wrote %s", i, got, want)
		}
		if !res[i].EOF || res[i].Bytes != size {
			t.Errorf("destination %d: %+v", i, res[i])
		}
	}
}

func BenchmarkTeePipeToTwoPipes(b *testing.B) {
	in, _, err := NewPipe(DefaultPipeSize)
	if err != nil {
		b.Fatal(err)
	}
	SetNonblock(in.R)
	unix.SetNonblock(in.W, true)
	w := os.NewFile(uintptr(in.W), "w")
	var dsts []End
	var readers []*os.File
	for range 2 {
		out, _, err := NewPipe(DefaultPipeSize)
		if err != nil {
			b.Fatal(err)
		}
		SetNonblock(out.W)
		unix.SetNonblock(out.R, true)
		dsts = append(dsts, End{FD: out.W, Own: true})
		readers = append(readers, os.NewFile(uintptr(out.R), "r"))
	}
	tee, err := NewTee(End{FD: in.R, Own: true}, dsts)
	if err != nil {
		b.Fatal(err)
	}
	feedMiBs(b, w)
	done := startTee(tee)
	counts := make(chan int64, 2)
	for _, r := range readers {
		go func() {
			defer r.Close()
			n, _ := io.CopyBuffer(io.Discard, r, make([]byte, mib))
			counts <- n
		}()
	}
	res := waitFor(b, done, time.Minute, "tee")
	for range readers {
		if n := <-counts; n != int64(b.N)*mib {
			b.Fatalf("read %d, want %d", n, int64(b.N)*mib)
		}
	}
	for _, r := range res {
		if !r.EOF {
			b.Fatalf("result %+v", r)
		}
	}
}

// TestTeeGoesOnWhenTheDestinationSplicedIntoLeaves: the one destination
// that is level with the source is the one spliced into; when it leaves,
// the others, all ahead (here by a whole pipe), must still get every byte.
// The first version took "no level destination, every other ahead by 1
// MiB" for "no destination left" and ended the tee there: the destination
// left got no EOF and 1 MiB was lost without an error.
func TestTeeGoesOnWhenTheDestinationSplicedIntoLeaves(t *testing.T) {
	checkFDs(t)
	const total = 3 * mib
	src, w := pipeFor(t, DefaultPipeSize, true)
	produced := goProduce(producer{total: total, seed: 21}, w)
	eventually(t, 10*time.Second, "source full", func() bool { return Queued(src.FD) == DefaultPipeSize })
	fast, fastR := pipeFor(t, DefaultPipeSize, false)
	last, lastR := pipeFor(t, smallPipe, false)
	// The last destination is full before the tee starts: it gets nothing
	// while the first one takes a whole pipe (maxSplice) ahead.
	if _, err := unix.Write(last.FD, make([]byte, smallPipe)); err != nil {
		t.Fatal(err)
	}
	tee := mustNewTee(t, src, []End{fast, last})
	done := startTee(tee)
	eventually(t, 10*time.Second, "first destination a pipe ahead", func() bool { return tee.Branch(0).Bytes() == maxSplice })
	waitBranchState(t, tee.Branch(1), WaitingDst)
	lastR.Close()
	out := consumer{}.consume(fastR)
	res := waitFor(t, done, 10*time.Second, "tee")
	in := waitFor(t, produced, 10*time.Second, "producer")
	if out != in || !res[0].EOF || res[0].Bytes != total {
		t.Errorf("written %v, read %v; result %+v", in, out, res[0])
	}
	if !res[1].ConsumerGone || res[1].Bytes != 0 {
		t.Errorf("destination that left: %+v", res[1])
	}
}

// TestTeeStopsWhileInheritedBlockingPipeIsFull: on the read/write path (a
// regular file source) a destination that is an inherited blocking pipe
// must be written without blocking: a write(2) of the tee's buffer into a
// blocking pipe with less room sleeps until its reader takes all of it,
// and Stop could not end a tee whose reader stopped reading. The first
// version wrote such a pipe with plain write(2) and hung here.
func TestTeeStopsWhileInheritedBlockingPipeIsFull(t *testing.T) {
	checkFDs(t)
	src, _ := fileSource(t, producer{total: 8 * mib, seed: 5})
	p, _, err := NewPipe(64 << 10)
	if err != nil {
		t.Fatal(err)
	}
	r := os.NewFile(uintptr(p.R), "reader that never reads")
	defer r.Close()
	defer unix.Close(p.W)
	inherited := End{FD: p.W, Name: "inherited stdout"} // blocking, not owned
	file, _ := fileSink(t, consumer{})
	tee := mustNewTee(t, src, []End{inherited, file})
	done := startTee(tee)
	eventually(t, 10*time.Second, "the blocking pipe full", func() bool { return Queued(p.W) >= 60<<10 })
	tee.Stop()
	var res []Result
	select {
	case res = <-done:
	case <-time.After(5 * time.Second):
		r.Close() // the write then fails with EPIPE and the tee ends
		<-done
		t.Fatalf("Stop did not end a tee whose inherited blocking pipe was full")
	}
	if !errors.Is(res[0].Err, ErrStopped) || !isOpen(p.W) {
		t.Errorf("result %+v, inherited fd open %v", res[0], isOpen(p.W))
	}
	if fl, _ := unix.FcntlInt(uintptr(p.W), unix.F_GETFL, 0); fl&unix.O_NONBLOCK != 0 {
		t.Errorf("the tee made an inherited fd non-blocking")
	}
}

// TestTeeReaderThatLeftAfterTheLastByteIsEOF: tee(2) and splice(2) look
// for a reader on the destination before they look for the source's end,
// so a reader that took every byte and exited before the tee saw the end
// makes the last attempt fail with EPIPE. Nothing was refused: that
// destination's result is EOF, not ConsumerGone (which would fail a run
// whose branch read all it had to). The first version said ConsumerGone.
//
// On the read/write path a destination is written only with bytes to
// give, so it cannot happen there.
func TestTeeReaderThatLeftAfterTheLastByteIsEOF(t *testing.T) {
	const total = 300 << 10 // the source holds it all: it ends before anyone reads
	for _, order := range []string{"quick first", "quick last"} {
		t.Run(order, func(t *testing.T) {
			checkFDs(t)
			src, produced := pipeSource(DefaultPipeSize)(t, producer{total: total, seed: 31})
			in := waitFor(t, produced, 10*time.Second, "producer")
			quick, quickR := pipeFor(t, DefaultPipeSize, false)
			slow, slowR := pipeFor(t, smallPipe, false)
			dsts, qi := []End{quick, slow}, 0
			if order == "quick last" {
				dsts, qi = []End{slow, quick}, 1
			}
			tee := mustNewTee(t, src, dsts)
			done := startTee(tee)
			// The quick reader takes its whole stream and goes, without
			// waiting for the end of file, while the slow one is full.
			eventually(t, 10*time.Second, "quick destination has it all", func() bool { return tee.Branch(qi).Bytes() == total })
			if d := (consumer{}).consume(io.LimitReader(quickR, total)); d != in {
				t.Fatalf("quick reader read %v, written %v", d, in)
			}
			quickR.Close()
			out := consumer{}.consume(slowR)
			res := waitFor(t, done, 10*time.Second, "tee")
			if out != in {
				t.Errorf("slow reader read %v, written %v", out, in)
			}
			for i, r := range res {
				if !r.EOF || r.Err != nil || r.ConsumerGone || r.Bytes != total {
					t.Errorf("destination %d: %+v, want EOF after %d bytes", i, r, total)
				}
			}
		})
	}
}

// holdingTee is a tee with HoldWhenConsumerGone from a producer of total
// bytes to two destinations whose readers are returned.
func holdingTee(t *testing.T, zc bool, total int64) (*Tee, <-chan digest, []*os.File) {
	t.Helper()
	src, w := pipeFor(t, DefaultPipeSize, true)
	produced := goProduce(producer{total: total, seed: 41}, w)
	a, ra := pipeFor(t, 64<<10, false)
	var b End
	var rb *os.File
	if zc {
		b, rb = pipeFor(t, 64<<10, false)
	} else {
		b, rb = socketFor(t)
	}
	return mustNewTee(t, src, []End{a, b}, HoldWhenConsumerGone()), produced, []*os.File{ra, rb}
}

func TestTeeHoldsADestinationWhoseReaderLeftUntilDrainOrStop(t *testing.T) {
	const total = 16 * mib
	const read = 200 << 10
	for _, zc := range []bool{true, false} {
		for _, decision := range []string{"drain", "drain asked before", "stop"} {
			t.Run(fmt.Sprintf("zero copy %v, %s", zc, decision), func(t *testing.T) {
				checkFDs(t)
				tee, produced, readers := holdingTee(t, zc, total)
				b := tee.Branch(0)
				if decision == "drain asked before" {
					b.Drain()
				}
				done := startTee(tee)
				kept := make(chan digest, 1)
				go func() { kept <- consumer{}.consume(readers[1]) }()
				got := consumer{}.consume(io.LimitReader(readers[0], read))
				readers[0].Close()
				if decision != "drain asked before" {
					// Held: the stream waits for the decision, and the
					// source is not closed (the producer has not failed).
					eventually(t, 10*time.Second, "destination held", b.holding.Load)
					waitBranchState(t, b, WaitingDst)
					select {
					case d := <-produced:
						t.Fatalf("producer ended while a destination was held: %v", d)
					case <-done:
						t.Fatal("tee ended while a destination was held")
					default:
					}
					if decision == "drain" {
						b.Drain()
					} else {
						b.Stop()
					}
				}
				res := waitFor(t, done, 30*time.Second, "tee")
				in := waitFor(t, produced, 10*time.Second, "producer")
				if in.err != nil || in.n != total {
					t.Fatalf("producer %v", in)
				}
				if out := waitFor(t, kept, 10*time.Second, "reader"); out != in || !res[1].EOF {
					t.Errorf("kept destination: written %v, read %v, %+v", in, out, res[1])
				}
				r := res[0]
				if decision == "stop" {
					if !r.ConsumerGone || r.EOF || r.Drained != 0 {
						t.Errorf("held then stopped: %+v, want ConsumerGone", r)
					}
					return
				}
				if !r.EOF || r.Err != nil || r.Drained <= 0 || r.ConsumerGone {
					t.Errorf("drained destination: %+v, want EOF with bytes drained", r)
				}
				if r.Bytes-r.Drained-r.Unread != got.n || r.Bytes+r.Undelivered-r.Unread != total {
					t.Errorf("drained destination: %+v; its reader read %d of %d", r, got.n, total)
				}
			})
		}
	}
}

func TestTeeReadsItsSourceToTheEndWhenEveryDestinationDrains(t *testing.T) {
	const total = 16 * mib
	for _, zc := range []bool{true, false} {
		t.Run(fmt.Sprintf("zero copy %v", zc), func(t *testing.T) {
			checkFDs(t)
			tee, produced, readers := holdingTee(t, zc, total)
			done := startTee(tee)
			for i, r := range readers {
				consumer{}.consume(io.LimitReader(r, int64(i+1)*100<<10))
				r.Close()
				tee.Branch(i).Drain()
			}
			res := waitFor(t, done, 30*time.Second, "tee")
			// The producer was let finish: no EPIPE.
			if in := waitFor(t, produced, 10*time.Second, "producer"); in.err != nil || in.n != total {
				t.Fatalf("producer %v", in)
			}
			for i, r := range res {
				if !r.EOF || r.Drained <= 0 || r.Bytes+r.Undelivered-r.Unread != total {
					t.Errorf("destination %d: %+v", i, r)
				}
			}
		})
	}
}

// TestTeeIdleUsesNoCPU: a tee that cannot move must sleep in epoll_wait:
// one destination full (its reader stopped) while the other has all the
// source holds, with the producer idle, writing, or gone, on both paths;
// and an idle source. A spinning tee uses nearly all of every window.
func TestTeeIdleUsesNoCPU(t *testing.T) {
	tests := []struct {
		name     string
		zc       bool
		producer string // "idle", "gone": what the producer does after filling
		want     State  // of the full destination
	}{
		{"zero copy, one full, producer idle", true, "idle", WaitingDst},
		{"zero copy, one full, producer gone", true, "gone", WaitingDst},
		{"read/write, one full, producer idle", false, "idle", WaitingDst},
		{"read/write, one full, producer gone", false, "gone", WaitingDst},
		{"zero copy, idle source", true, "empty", WaitingSrc},
		{"read/write, idle source", false, "empty", WaitingSrc},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			src, w := pipeFor(t, DefaultPipeSize, true)
			var full End
			if tt.zc {
				full, _ = pipeFor(t, 64<<10, false)
			} else {
				full, _ = socketFor(t)
			}
			read, r := pipeFor(t, 64<<10, false)
			go consumer{}.consume(r)
			if tt.producer != "empty" {
				// More than the full destination and the source hold.
				if _, err := w.Write(make([]byte, DefaultPipeSize)); err != nil {
					t.Fatal(err)
				}
				go w.Write(make([]byte, 4*mib)) // blocks; ends at cleanup
			}
			if tt.producer == "gone" {
				w.Close()
			}
			tee := mustNewTee(t, src, []End{full, read})
			done := startTee(tee)
			defer func() {
				tee.Stop()
				waitFor(t, done, 10*time.Second, "tee after Stop")
			}()
			b := tee.Branch(0)
			waitBranchState(t, b, tt.want)
			var used []time.Duration
			for range 3 {
				before := cpuTime(t)
				time.Sleep(300 * time.Millisecond) // the measurement interval
				u := cpuTime(t) - before
				if s := b.State(); s != tt.want {
					t.Fatalf("state %v after the window, want %v", s, tt.want)
				}
				if u <= 20*time.Millisecond {
					return
				}
				used = append(used, u)
			}
			t.Fatalf("tee waiting used %v of CPU in three windows of 300ms", used)
		})
	}
}

// prefixDigest is the digest of the first n bytes of a producer's stream
// of the given seed (what a destination dropped after n bytes must have).
func prefixDigest(seed uint64, n int64) digest {
	h := sha256.New()
	io.CopyN(h, newPRNG(seed), n)
	return digest{n: n, sum: hex.EncodeToString(h.Sum(nil))}
}

// TestTeeRandomTopologies: random trees of a pump into a tee, as the
// pipeline wires a fan-out (the trunk's pump splices into the fan-out's
// pipe, the tee copies it into each branch's pipe), with random pipe sizes,
// random write and read patterns, and now and then a destination dropped
// half way (its Stop) or a reader that leaves. Every destination that is
// kept must read every byte once, in order (its hash); one dropped must
// read a prefix of the stream, exactly as many bytes as its Result says.
func TestTeeRandomTopologies(t *testing.T) {
	sizes := []int{smallPipe, 2 * smallPipe, 64 << 10, DefaultPipeSize}
	runs := 40
	if testing.Short() {
		runs = 8
	}
	if v, err := strconv.Atoi(os.Getenv("REVIEW_TEE_RUNS")); err == nil {
		runs = v
	}
	for seed := range uint64(runs) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			checkFDs(t)
			rnd := rand.New(rand.NewPCG(seed, 77))
			total := int64(rnd.IntN(3<<20) + 1)
			prod := producer{total: total, chunk: 1 + rnd.IntN(100000), seed: seed + 1000}
			if rnd.IntN(3) == 0 {
				prod.every, prod.pause = 1+rnd.IntN(16), time.Millisecond
			}
			// producer -> pipe -> pump -> pipe -> tee
			in, w := pipeFor(t, sizes[rnd.IntN(len(sizes))], true)
			produced := goProduce(prod, w)
			mid, _, err := NewPipe(sizes[rnd.IntN(len(sizes))])
			if err != nil {
				t.Fatal(err)
			}
			if err := SetNonblock(mid.R); err != nil {
				t.Fatal(err)
			}
			if err := SetNonblock(mid.W); err != nil {
				t.Fatal(err)
			}
			p := mustNew(t, in, End{FD: mid.W, Own: true, Name: "mid"})
			pumped := start(p)
			n := 2 + rnd.IntN(3)
			var dsts []End
			var readers []*os.File
			for range n {
				e, r := pipeFor(t, sizes[rnd.IntN(len(sizes))], false)
				dsts, readers = append(dsts, e), append(readers, r)
			}
			tee := mustNewTee(t, End{FD: mid.R, Own: true, Name: "fan-out"}, dsts)
			done := startTee(tee)
			// At most one destination is dropped (Stop) or left (its
			// reader closes), after a random number of bytes.
			odd, how := -1, rnd.IntN(3) // 0: none, 1: Stop, 2: reader leaves
			var after int64
			if how > 0 {
				odd, after = rnd.IntN(n), rnd.Int64N(total+1)
			}
			outs := make([]chan digest, n)
			for i, r := range readers {
				c := consumer{chunk: 1 + rnd.IntN(70000)}
				if rnd.IntN(3) == 0 {
					c.every, c.pause = 1+rnd.IntN(8), time.Millisecond
				}
				outs[i] = make(chan digest, 1)
				go func() {
					if i == odd && how == 2 {
						d := c.consume(io.LimitReader(r, after))
						r.Close()
						outs[i] <- d
						return
					}
					outs[i] <- c.consume(r)
				}()
			}
			if how == 1 {
				b := tee.Branch(odd)
				eventually(t, time.Minute, "bytes before the drop", func() bool {
					select {
					case <-b.Done():
						return true
					default:
					}
					return b.Bytes() >= after
				})
				b.Stop()
			}
			res := waitFor(t, done, 2*time.Minute, "tee")
			pr := waitFor(t, pumped, time.Minute, "pump")
			inD := waitFor(t, produced, time.Minute, "producer")
			if inD.err != nil || inD.n != total || !pr.EOF {
				t.Fatalf("producer %v, pump %+v", inD, pr)
			}
			for i := range n {
				out := waitFor(t, outs[i], time.Minute, "reader")
				r := res[i]
				if i == odd && (how == 1 && !r.EOF || how == 2 && r.ConsumerGone) {
					if how == 1 && out != prefixDigest(prod.seed, r.Bytes) {
						t.Errorf("dropped destination %d: read %v, result %+v: not the stream's first %d bytes", i, out, r, r.Bytes)
					}
					if how == 2 && out != prefixDigest(prod.seed, out.n) {
						t.Errorf("left destination %d: read %v: not a prefix of the stream", i, out)
					}
					continue
				}
				if i == odd && how == 2 {
					// Its reader left after reading all: it may have
					// got EOF first.
					if out != prefixDigest(prod.seed, out.n) {
						t.Errorf("destination %d: read %v, not a prefix", i, out)
					}
					continue
				}
				if out != inD || !r.EOF || r.Bytes != total || r.Err != nil {
					t.Errorf("destination %d of %d: written %v, read %v, result %+v", i, n, inD, out, r)
				}
			}
		})
	}
}

// TestTeeSourceStates follows the source of a tee as the hop out of the
// stage that writes it: WaitingSrc while nothing is written, WaitingDst
// once a destination's reader stops reading with bytes queued for it,
// Finished and ErrStopped after a Stop, with every byte the
// producer wrote either taken or left in the source.
func TestTeeSourceStates(t *testing.T) {
	for _, zc := range []bool{true, false} {
		t.Run(fmt.Sprintf("zero copy %v", zc), func(t *testing.T) {
			checkFDs(t)
			src, w := pipeFor(t, DefaultPipeSize, true)
			var dsts []End
			var readers []*os.File
			for i := range 2 {
				var e End
				var r *os.File
				if !zc && i == 1 {
					e, r = socketFor(t)
				} else {
					e, r = pipeFor(t, smallPipe, false)
				}
				dsts, readers = append(dsts, e), append(readers, r)
			}
			tee := mustNewTee(t, src, dsts)
			s := tee.Source()
			done := startTee(tee)
			eventually(t, 10*time.Second, "source waiting for its writer", func() bool { return s.State() == WaitingSrc })
			if q := s.SrcQueued(); q != 0 {
				t.Errorf("source queues %d with nothing written", q)
			}
			// Nobody reads the destinations: the producer writes until
			// every pipe is full, then blocks.
			produced := goProduce(producer{total: 1 << 40, seed: 9}, w)
			eventually(t, 10*time.Second, "source waiting for a full destination", func() bool { return s.State() == WaitingDst })
			if q := s.SrcQueued(); q <= 0 {
				t.Errorf("source queues %d while waiting for a destination", q)
			}
			taken := s.Bytes()
			if taken <= 0 || s.LastProgress().IsZero() {
				t.Errorf("source took %d bytes, last at %v", taken, s.LastProgress())
			}
			tee.Stop()
			res := waitFor(t, done, 10*time.Second, "tee after Stop")
			r := s.Result()
			if !errors.Is(r.Err, ErrStopped) || r.EOF || r.ConsumerGone || r.Bytes != taken || r.Undelivered <= 0 {
				t.Errorf("source after Stop: %+v, want ErrStopped with %d taken and the rest undelivered", r, taken)
			}
			if st := s.State(); st != Finished || s.SrcQueued() != -1 || s.DstQueued() != -1 || s.Leftover() != -1 {
				t.Errorf("source after Run: state %v, queued %d, leftover %d", st, s.SrcQueued(), s.Leftover())
			}
			for i, br := range res {
				if !errors.Is(br.Err, ErrStopped) {
					t.Errorf("destination %d after Stop: %+v", i, br)
				}
			}
			in := waitFor(t, produced, 10*time.Second, "producer EPIPE")
			if !errors.Is(in.err, syscall.EPIPE) || r.Bytes+r.Undelivered > in.n {
				t.Errorf("producer wrote %d and ended with %v; source result %+v", in.n, in.err, r)
			}
			for _, rd := range readers {
				rd.Close()
			}
		})
	}
}
