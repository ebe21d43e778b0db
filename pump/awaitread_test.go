package pump

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

// TestPumpAwaitReadWaitsForTheReader: with AwaitRead, the end of the source
// is EOF only once the destination pipe's reader has read every byte; a
// reader that goes away with bytes in the pipe makes the pump end as
// ConsumerGone with those bytes unread; Stop ends the wait.
func TestPumpAwaitReadWaitsForTheReader(t *testing.T) {
	const size = 40000 // fits in the destination pipe: every write succeeds
	run := func(t *testing.T, reader func(r *os.File)) (*Pump, <-chan Result) {
		src, w := pipeFor(t, 64<<10, true)
		r, dw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		p := mustNew(t, src, End{FD: int(dw.Fd()), Name: "stdout"}, AwaitRead())
		t.Cleanup(func() { dw.Close() })
		res := start(p)
		w.Write(bytes.Repeat([]byte{'x'}, size))
		w.Close()
		go reader(r)
		return p, res
	}
	t.Run("read to the end", func(t *testing.T) {
		_, res := run(t, func(r *os.File) {
			time.Sleep(50 * time.Millisecond) // a reader late to the bytes
			io.CopyN(io.Discard, r, size)
		})
		got := waitFor(t, res, 20*time.Second, "pump result")
		if !got.EOF || got.Err != nil || got.Bytes != size {
			t.Fatalf("result %+v", got)
		}
	})
	t.Run("read to the end, then gone", func(t *testing.T) {
		// The reader takes every byte and closes at once, while the
		// pump waits in poll: the hang-up comes with nothing left, which
		// is the end the pump waited for, not a consumer gone (the
		// torture, seed 20261201 run 14299: a run whose every byte
		// reached its reader failed, "its reader went away after 82
		// bytes").
		for i := range 20 {
			_, res := run(t, func(r *os.File) {
				time.Sleep(5 * time.Millisecond)
				io.CopyN(io.Discard, r, size)
				r.Close()
			})
			got := waitFor(t, res, 20*time.Second, "pump result")
			if !got.EOF || got.Err != nil || got.ConsumerGone {
				t.Fatalf("round %d: result %+v, want EOF", i, got)
			}
		}
	})
	t.Run("reader gone", func(t *testing.T) {
		_, res := run(t, func(r *os.File) {
			io.CopyN(io.Discard, r, 1000)
			r.Close()
		})
		got := waitFor(t, res, 20*time.Second, "pump result")
		if got.EOF || !got.ConsumerGone || got.Unread != size-1000 || !errors.Is(got.Err, ErrConsumerGone) {
			t.Fatalf("result %+v, want ConsumerGone with %d unread", got, size-1000)
		}
	})
	t.Run("reader gone before the source's end", func(t *testing.T) {
		// Everything is in the destination pipe; its reader reads a part
		// and goes, and only then does the producer close: the pump's
		// next splice fails with EPIPE (a reader is looked for before
		// the source's end), the case that once skipped the wait.
		src, w := pipeFor(t, 64<<10, true)
		r, dw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer dw.Close()
		p := mustNew(t, src, End{FD: int(dw.Fd()), Name: "stdout"}, AwaitRead())
		res := start(p)
		w.Write(bytes.Repeat([]byte{'x'}, size))
		eventually(t, 10*time.Second, "the bytes in the destination pipe", func() bool { return Queued(int(dw.Fd())) == size })
		io.CopyN(io.Discard, r, 1000)
		r.Close()
		w.Close()
		got := waitFor(t, res, 20*time.Second, "pump result")
		if got.EOF || !got.ConsumerGone || got.Unread != size-1000 {
			t.Fatalf("result %+v, want ConsumerGone with %d unread", got, size-1000)
		}
	})
	t.Run("stopped", func(t *testing.T) {
		p, res := run(t, func(r *os.File) {})
		waitState(t, p, WaitingDst)
		p.Stop()
		got := waitFor(t, res, 20*time.Second, "pump result")
		if got.EOF || !errors.Is(got.Err, ErrStopped) || got.Unread != size {
			t.Fatalf("result %+v, want stopped with %d unread", got, size)
		}
	})
}
