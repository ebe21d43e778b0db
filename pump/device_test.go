package pump

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPumpToUnpollableDevice: a destination epoll refuses (/dev/null, as
// `pipespool exec job.toml > /dev/null` makes stdout) is still a sink that
// takes every byte. The pump used to give up at its first wait, about 1 MiB
// in, and the producer died of SIGPIPE as a mere consequence.
func TestPumpToUnpollableDevice(t *testing.T) {
	for _, size := range []int{0, 5 << 20} {
		null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0) // inherited: blocking, not owned
		if err != nil {
			t.Fatal(err)
		}
		defer null.Close()
		src, w := pipeFor(t, 64<<10, true)
		p := mustNew(t, src, End{FD: int(null.Fd()), Name: "/dev/null"})
		res := start(p)
		go func() {
			w.Write(bytes.Repeat([]byte{'x'}, size))
			w.Close()
		}()
		r := waitFor(t, res, 20*time.Second, "pump result")
		if !r.EOF || r.Err != nil || r.Bytes != int64(size) {
			t.Fatalf("%d bytes to /dev/null: result %+v", size, r)
		}
	}
}

// TestPumpToFullDeviceFails: /dev/full refuses every write with ENOSPC; the
// pump reports that error, it does not wait for room forever or call it
// EOF.
func TestPumpToFullDeviceFails(t *testing.T) {
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	src, w := pipeFor(t, 64<<10, true)
	p := mustNew(t, src, End{FD: int(full.Fd()), Name: "/dev/full"})
	res := start(p)
	go func() {
		w.Write(bytes.Repeat([]byte{'x'}, 100<<10))
		w.Close()
	}()
	r := waitFor(t, res, 20*time.Second, "pump result")
	if r.EOF || !errors.Is(r.Err, unix.ENOSPC) {
		t.Fatalf("result %+v, want ENOSPC", r)
	}
}

// TestPumpFromUnpollableDevice: a source epoll refuses (/dev/zero as
// stdin) is read with plain reads until the pump is stopped.
func TestPumpFromUnpollableDevice(t *testing.T) {
	zero, err := os.Open("/dev/zero")
	if err != nil {
		t.Fatal(err)
	}
	defer zero.Close()
	dst, r := pipeFor(t, 64<<10, false)
	p := mustNew(t, End{FD: int(zero.Fd()), Name: "/dev/zero"}, dst)
	res := start(p)
	buf := make([]byte, 1<<20)
	total := 0
	for total < 3<<20 {
		n, err := r.Read(buf)
		if err != nil {
			t.Fatalf("after %d bytes: %v", total, err)
		}
		total += n
	}
	p.Stop()
	r.Close()
	got := waitFor(t, res, 20*time.Second, "pump result")
	if got.Bytes < 3<<20 {
		t.Fatalf("result %+v", got)
	}
}

// TestPumpHoldThenDrain: a pump made with HoldWhenConsumerGone whose
// consumer goes early waits for a decision; Drain lets the producer write
// everything (read and discarded), so that it ends on its own; Stop ends
// the pump as before, the producer getting EPIPE.
func TestPumpHoldThenDrain(t *testing.T) {
	for _, drain := range []bool{true, false} {
		src, w := pipeFor(t, 64<<10, true)
		dst, r := pipeFor(t, 64<<10, false)
		p := mustNew(t, src, dst, HoldWhenConsumerGone())
		res := start(p)
		const size = 4 << 20
		wrote := make(chan error, 1)
		go func() {
			_, err := w.Write(bytes.Repeat([]byte{'y'}, size))
			w.Close()
			wrote <- err
		}()
		buf := make([]byte, 100<<10)
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatal(err)
		}
		r.Close()
		waitState(t, p, WaitingDst)
		if drain {
			p.Drain()
			if err := waitFor(t, wrote, 20*time.Second, "producer"); err != nil {
				t.Fatalf("drain: the producer could not write everything: %v", err)
			}
			got := waitFor(t, res, 20*time.Second, "pump result")
			if !got.EOF || got.Bytes != size || got.Drained <= 0 || got.Drained >= size {
				t.Fatalf("drain: %+v", got)
			}
			continue
		}
		p.Stop()
		got := waitFor(t, res, 20*time.Second, "pump result")
		if !got.ConsumerGone {
			t.Fatalf("stop: %+v", got)
		}
		if err := waitFor(t, wrote, 20*time.Second, "producer"); err == nil {
			t.Fatalf("stop: the producer wrote everything, want EPIPE")
		}
	}
}

// TestPumpDrainAfterReadWriteWaitsForItsSource: a pump that copied with
// read/write (to an inherited blocking socket) and waited for its source,
// one-shot, until its consumer went, then drains: a pipe source by
// splicing it into /dev/null, which waits for the source edge-triggered
// and needs a registration of its own (the one-shot one left from
// read/write had fired and no longer reported anything: the drain waited
// for a producer's write it could not see); any other source with
// read/write again. Either way what the consumer refused is not counted
// as drained: Drained is what was read after the consumer had gone.
func TestPumpDrainAfterReadWriteWaitsForItsSource(t *testing.T) {
	for _, tt := range []struct {
		name string
		src  func(t *testing.T) (End, io.WriteCloser)
	}{
		{"pipe source", func(t *testing.T) (End, io.WriteCloser) { return pipeFor(t, 64<<10, true) }},
		{"socket source", func(t *testing.T) (End, io.WriteCloser) {
			e, w := socketFor(t)
			return e, halfCloser{w}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			src, w := tt.src(t)
			sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(sp[0])
			p := mustNew(t, src, End{FD: sp[0], Name: "stdout (socket)"}, HoldWhenConsumerGone())
			res := start(p)
			waitState(t, p, WaitingSrc) // armed one-shot for its source
			unix.Close(sp[1])           // the consumer goes
			if _, err := w.Write([]byte("refused")); err != nil {
				t.Fatal(err)
			}
			waitState(t, p, WaitingDst) // holding, its consumer gone
			p.Drain()
			waitState(t, p, WaitingSrc) // draining, the source empty
			if _, err := w.Write([]byte("discarded")); err != nil {
				t.Fatal(err)
			}
			w.Close()
			got := waitFor(t, res, 10*time.Second, "pump draining its source")
			if !got.EOF || got.Drained != int64(len("discarded")) {
				t.Fatalf("result %+v, want EOF with %d bytes drained", got, len("discarded"))
			}
		})
	}
}
