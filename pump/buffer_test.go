package pump

import (
	"bufio"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A buffered pump takes its producer's whole stream while the consumer
// reads nothing (the producer finishes first: without the buffer it would
// block on two small pipes), then delivers every byte in order and EOF,
// whatever the source is: a pipe, a socket, an inherited blocking socket,
// a file; and to a pipe or a socket.
func TestBufferKeepsReadingWhileConsumerPauses(t *testing.T) {
	const total = 6*mib + 12345
	sources := []struct {
		name string
		src  source
	}{
		{"pipe", pipeSource(smallPipe)},
		{"socket", socketSource},
		{"inherited blocking socket", blockingSocketSource},
		{"file", fileSource},
	}
	sinks := []struct {
		name string
		dst  func(t *testing.T) (End, io.Reader)
	}{
		{"pipe", func(t *testing.T) (End, io.Reader) { return pipeFor(t, smallPipe, false) }},
		{"socket", func(t *testing.T) (End, io.Reader) { return socketFor(t) }},
	}
	for _, so := range sources {
		for _, si := range sinks {
			t.Run(so.name+" to "+si.name, func(t *testing.T) {
				checkFDs(t)
				src, wrote := so.src(t, producer{total: total, chunk: 100_000, seed: 11})
				dst, r := si.dst(t)
				p := mustNew(t, src, dst, Buffer(BufferSpec{Size: 8 * mib}))
				done := start(p)
				in := waitFor(t, wrote, time.Minute, "the producer's end (the buffer takes its stream)")
				if in.err != nil || in.n != total {
					t.Fatalf("producer: %v", in)
				}
				// Everything the producer wrote is in the buffer or the
				// consumer's pipe once the pump waits for room.
				waitState(t, p, WaitingDst)
				if b := p.Buffered(); b < total-2*mib || b > total {
					t.Errorf("buffered %d of %d with the consumer paused", b, total)
				}
				out := goConsume(t, consumer{}, r)()
				res := waitFor(t, done, time.Minute, "pump")
				if !res.EOF || res.Err != nil || res.Bytes != total || out != in {
					t.Fatalf("result %+v\nwrote %v\nread  %v", res, in, out)
				}
				if res.BufferPeak < total-2*mib || res.BufferPeak > total {
					t.Errorf("peak %d", res.BufferPeak)
				}
				if p.Buffered() != 0 || p.BufferMapped() != 0 {
					t.Errorf("after the end: buffered %d, mapped %d", p.Buffered(), p.BufferMapped())
				}
			})
		}
	}
}

// A full buffer is back-pressure: the pump stops reading (the producer
// blocks on its full pipe), waits for room without spinning, and the
// stream goes on intact when the consumer reads again.
func TestBufferFullStopsReadingWithoutSpinning(t *testing.T) {
	checkFDs(t)
	const size = 2 * mib
	src, w := pipeFor(t, smallPipe, true)
	dst, r := pipeFor(t, smallPipe, false)
	p := mustNew(t, src, dst, Buffer(BufferSpec{Size: size}))
	done := start(p)
	wrote := goProduce(producer{total: 16 * mib, seed: 3}, w)
	eventually(t, 10*time.Second, "a full buffer", func() bool { return p.Buffered() == size })
	assertIdle(t, p, WaitingDst)
	select {
	case d := <-wrote:
		t.Fatalf("the producer finished (%v) though the buffer is smaller than its stream", d)
	default:
	}
	if q := p.SrcQueued(); q != smallPipe {
		t.Errorf("source pipe holds %d, want it full (%d): the producer is held back", q, smallPipe)
	}
	out := goConsume(t, consumer{}, r)()
	in := waitFor(t, wrote, time.Minute, "producer")
	res := waitFor(t, done, time.Minute, "pump")
	if !res.EOF || res.Bytes != in.n || out != in || res.BufferPeak != size {
		t.Fatalf("result %+v\nwrote %v\nread  %v", res, in, out)
	}
}

// An empty buffer waits for its source alone: no spinning on the
// destination's room.
func TestBufferEmptyWaitsWithoutSpinning(t *testing.T) {
	checkFDs(t)
	src, w := pipeFor(t, smallPipe, true)
	dst, r := pipeFor(t, smallPipe, false)
	p := mustNew(t, src, dst, Buffer(BufferSpec{Size: 4 * mib}))
	done := start(p)
	if _, err := w.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(r, got); err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v", got, err)
	}
	assertIdle(t, p, WaitingSrc)
	w.Close()
	res := waitFor(t, done, 10*time.Second, "pump")
	if !res.EOF || res.Bytes != 5 {
		t.Fatalf("result %+v", res)
	}
}

// StartAt (mbuffer -P): nothing is delivered until the buffer holds the
// start level, and again after it ran empty; the source's end delivers
// what is held below it.
func TestBufferStartLevel(t *testing.T) {
	checkFDs(t)
	src, w := pipeFor(t, smallPipe, true)
	dst, r := pipeFor(t, smallPipe, false)
	p := mustNew(t, src, dst, Buffer(BufferSpec{Size: 4 * mib, StartAt: 3 * mib}))
	done := start(p)
	in := make(chan int64, 1)
	write := func(n int) {
		t.Helper()
		if _, err := w.Write(make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	held := func(n int64) {
		t.Helper()
		eventually(t, 10*time.Second, "buffer holding "+strconv.FormatInt(n, 10), func() bool {
			return p.Buffered() == n && p.State() == WaitingSrc
		})
		if q := p.DstQueued(); q != 0 {
			t.Fatalf("%d bytes delivered below the start level", q)
		}
	}
	write(2 * mib)
	held(2 * mib)
	write(mib) // reaches 3 MiB: delivery starts
	got := make([]byte, 3*mib)
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatal(err)
	}
	// Empty again: the start level holds again.
	write(mib)
	held(mib)
	w.Close() // the end delivers the rest
	go func() {
		n, _ := io.Copy(io.Discard, r)
		in <- n
	}()
	if n := waitFor(t, in, 10*time.Second, "the rest"); n != mib {
		t.Errorf("after the end: read %d, want %d", n, mib)
	}
	res := waitFor(t, done, 10*time.Second, "pump")
	if !res.EOF || res.Bytes != 4*mib {
		t.Fatalf("result %+v", res)
	}
}

// ResumeBelow (mbuffer -p): once full, the buffer reads again only when
// it holds less than the resume level.
func TestBufferResumeLevel(t *testing.T) {
	checkFDs(t)
	const size = 4 * mib
	src, w := pipeFor(t, smallPipe, true)
	dst, r := pipeFor(t, smallPipe, false)
	p := mustNew(t, src, dst, Buffer(BufferSpec{Size: size, ResumeBelow: mib}))
	done := start(p)
	wrote := goProduce(producer{total: 32 * mib, seed: 5}, w)
	eventually(t, 10*time.Second, "a full buffer", func() bool { return p.Buffered() == size })
	waitState(t, p, WaitingDst)
	br := bufio.NewReaderSize(r, 64<<10)
	// Take 2 MiB: the buffer drops to about 2 MiB (less what refills the
	// consumer's pipe) and must not read, being above 1 MiB.
	if _, err := io.CopyN(io.Discard, br, 2*mib); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the pump waiting for room", func() bool {
		return p.State() == WaitingDst && p.DstQueued() == smallPipe
	})
	if b := p.Buffered(); b > size-2*mib+smallPipe {
		t.Fatalf("buffer holds %d after 2 MiB were taken: it read above its resume level", b)
	}
	// Below 1 MiB it reads again, up to full.
	if _, err := io.CopyN(io.Discard, br, 2*mib); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a full buffer again", func() bool { return p.Buffered() == size })
	h := consumer{}.consume(io.MultiReader(br, r))
	in := waitFor(t, wrote, time.Minute, "producer")
	res := waitFor(t, done, time.Minute, "pump")
	if !res.EOF || res.Bytes != in.n || h.n != in.n-4*mib {
		t.Fatalf("result %+v, wrote %v, read %d after the first 4 MiB", res, in, h.n)
	}
}

// A consumer that goes away while the buffer holds bytes is a consumer
// gone, as without a buffer: nothing is lost from the count, the held
// bytes are undelivered.
func TestBufferConsumerGoneWithBytesHeld(t *testing.T) {
	checkFDs(t)
	src, w := pipeFor(t, smallPipe, true)
	dst, r := pipeFor(t, smallPipe, false)
	p := mustNew(t, src, dst, Buffer(BufferSpec{Size: 8 * mib}))
	done := start(p)
	in := producer{total: 3 * mib, seed: 9}.produce(w)
	waitState(t, p, WaitingDst)
	r.Close()
	res := waitFor(t, done, 10*time.Second, "pump")
	if !res.ConsumerGone || !errors.Is(res.Err, ErrConsumerGone) || res.EOF {
		t.Fatalf("result %+v: want consumer gone", res)
	}
	if res.Bytes+res.Undelivered-res.Unread != in.n || res.Undelivered < 2*mib {
		t.Errorf("result %+v: bytes + undelivered - unread != %d written", res, in.n)
	}
	if p.BufferMapped() != 0 {
		t.Errorf("%d bytes still mapped", p.BufferMapped())
	}
}

// Stop with bytes held counts them undelivered.
func TestBufferStopWithBytesHeld(t *testing.T) {
	checkFDs(t)
	src, w := pipeFor(t, smallPipe, true)
	dst, _ := pipeFor(t, smallPipe, false)
	p := mustNew(t, src, dst, Buffer(BufferSpec{Size: 8 * mib}))
	done := start(p)
	in := producer{total: 3 * mib, seed: 9}.produce(w)
	waitState(t, p, WaitingDst)
	p.Stop()
	res := waitFor(t, done, 10*time.Second, "pump")
	if !errors.Is(res.Err, ErrStopped) || res.Bytes+res.Undelivered-res.Unread != in.n {
		t.Fatalf("result %+v; wrote %d", res, in.n)
	}
}

// A drain (the consumer failed while a verifier upstream runs) discards
// what the buffer holds, as undelivered, and drains the rest; the
// producer's bytes stay exact.
func TestBufferDrainDiscardsWhatItHolds(t *testing.T) {
	checkFDs(t)
	src, w := pipeFor(t, smallPipe, true)
	dst, r := pipeFor(t, smallPipe, false)
	p := mustNew(t, src, dst, Buffer(BufferSpec{Size: 8 * mib}), HoldWhenConsumerGone())
	done := start(p)
	wrote := goProduce(producer{total: 12 * mib, seed: 2}, w)
	eventually(t, 10*time.Second, "a full buffer", func() bool { return p.Buffered() == 8*mib })
	r.Close()
	p.Drain()
	in := waitFor(t, wrote, time.Minute, "producer")
	res := waitFor(t, done, time.Minute, "pump")
	// Delivered (the consumer's pipe, unread), held (undelivered) or
	// drained: every byte, once.
	if !res.EOF || res.Unread != smallPipe || res.Undelivered != 8*mib+smallPipe || res.Bytes+res.Undelivered-res.Unread != in.n ||
		res.Drained != in.n-8*mib-smallPipe {
		t.Fatalf("result %+v, wrote %d: want every byte delivered, held or drained", res, in.n)
	}
}

// The buffer's memory is mapped as it fills and returned once it has
// drained: the process's resident memory rises with what is held and
// falls back, with the buffer still in use and its pump idle.
func TestBufferMemoryReturnedWhenDrained(t *testing.T) {
	checkFDs(t)
	const held = 48 * mib
	src, w := pipeFor(t, smallPipe, true)
	dst, r := pipeFor(t, smallPipe, false)
	p := mustNew(t, src, dst, Buffer(BufferSpec{Size: 64 * mib}))
	done := start(p)
	base := rss(t)
	if m := p.BufferMapped(); m > bufChunk {
		t.Fatalf("%d bytes mapped before any byte: more than the chunk of the first read", m)
	}
	chunk := make([]byte, mib)
	for range held / mib {
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "the stream held", func() bool { return p.Buffered()+int64(max(p.DstQueued(), 0)) == held })
	full := rss(t)
	t.Logf("RSS %d MiB before, %d MiB holding %d MiB; mapped %d MiB", base/mib, full/mib, held/mib, p.BufferMapped()/mib)
	if m := p.BufferMapped(); m < held-mib || m > held+mib {
		t.Errorf("mapped %d holding %d", m, held)
	}
	if full-base < held*3/4 {
		t.Errorf("RSS rose by %d MiB only, holding %d MiB: is the accounting honest?", (full-base)/mib, held/mib)
	}
	if _, err := io.CopyN(io.Discard, r, held); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the buffer drained", func() bool { return p.Buffered() == 0 && p.State() == WaitingSrc })
	// Its spares go back bufRelease after the last chunk was needed, while
	// the pump waits for its source.
	eventually(t, 10*bufRelease, "the drained buffer's memory returned", func() bool {
		return p.BufferMapped() <= (bufSpare+1)*bufChunk
	})
	drained := rss(t)
	t.Logf("RSS %d MiB drained; mapped %d MiB", drained/mib, p.BufferMapped()/mib)
	if full-drained < held*3/4 {
		t.Errorf("RSS fell by %d MiB only when %d MiB drained", (full-drained)/mib, held/mib)
	}
	w.Close()
	res := waitFor(t, done, 10*time.Second, "pump")
	if !res.EOF || res.Bytes != held || res.BufferPeak < held-smallPipe {
		t.Fatalf("result %+v", res)
	}
}

// rss is the process's resident memory now (VmRSS), in bytes.
func rss(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

func TestBufferSpecCheck(t *testing.T) {
	tests := []struct {
		spec BufferSpec
		ok   bool
	}{
		{BufferSpec{Size: MinBuffer}, true},
		{BufferSpec{Size: MaxBuffer}, true},
		{BufferSpec{Size: MinBuffer - 1}, false},
		{BufferSpec{Size: MaxBuffer + 1}, false},
		{BufferSpec{Size: 4 * mib, StartAt: 4 * mib, ResumeBelow: 1}, true},
		{BufferSpec{Size: 4 * mib, StartAt: 4*mib + 1}, false},
		{BufferSpec{Size: 4 * mib, ResumeBelow: 4*mib + 1}, false},
		{BufferSpec{Size: 4 * mib, StartAt: -1}, false},
	}
	for _, tt := range tests {
		if err := tt.spec.Check(); (err == nil) != tt.ok {
			t.Errorf("%+v: %v", tt.spec, err)
		}
	}
	src, _ := pipeFor(t, smallPipe, true)
	dst, _ := pipeFor(t, smallPipe, false)
	if _, err := New(src, dst, Buffer(BufferSpec{Size: 4 * mib}), RateLimit(1<<20)); err == nil {
		t.Error("a buffer and a rate limit on one pump: no error")
	}
	unix.Close(src.FD)
	unix.Close(dst.FD)
}
