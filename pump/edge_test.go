package pump

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

// The splice path waits edge-triggered and, between two pipes, may wait (or
// let bytes gather) right after a short splice instead of trying again.
// These tests aim at the moments where that could miss the last change: the
// producer closing, or the consumer going, just before, during or after the
// short splice, the batching sleep and the wait.

// TestPumpEdgeEndsWhenProducerClosesAtAnyMoment: the producer writes a few
// bursts and closes at a random moment; every run must end in EOF with
// every byte delivered, whether the close lands during a splice, the
// batching sleep or the wait.
func TestPumpEdgeEndsWhenProducerClosesAtAnyMoment(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	runs := 300
	if testing.Short() {
		runs = 60
	}
	for i := range runs {
		size := []int{smallPipe, 64 << 10, DefaultPipeSize}[i%3]
		src, w := pipeFor(t, size, true)
		dst, r := pipeFor(t, size, false)
		p := mustNew(t, src, dst)
		res := start(p)
		var sent bytes.Buffer
		bursts, chunk := 1+rng.IntN(4), 1+rng.IntN(300<<10)
		pause := time.Duration(rng.IntN(3)) * time.Duration(rng.IntN(150)) * time.Microsecond
		for b := range bursts {
			sent.Write(bytes.Repeat([]byte{byte(i + b)}, chunk))
		}
		go func(data []byte) {
			defer w.Close()
			for len(data) > 0 {
				if _, err := w.Write(data[:chunk]); err != nil {
					return
				}
				data = data[chunk:]
				if pause > 0 {
					time.Sleep(pause)
				}
			}
		}(sent.Bytes())
		got := make(chan []byte, 1)
		go func() { b, _ := io.ReadAll(r); got <- b }()
		out := waitFor(t, got, 20*time.Second, "consumer EOF")
		rr := waitFor(t, res, 20*time.Second, "pump result")
		if !rr.EOF || rr.Err != nil || !bytes.Equal(out, sent.Bytes()) {
			t.Fatalf("run %d (pipe %d): result %+v, %d bytes out of %d sent", i, size, rr, len(out), sent.Len())
		}
	}
}

// TestPumpEdgeReportsConsumerGoneAtAnyMoment: the consumer reads a random
// part and goes while the producer keeps writing; the pump must report the
// consumer gone, never hang and never claim EOF.
func TestPumpEdgeReportsConsumerGoneAtAnyMoment(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	runs := 200
	if testing.Short() {
		runs = 40
	}
	for i := range runs {
		size := []int{smallPipe, DefaultPipeSize}[i%2]
		src, w := pipeFor(t, size, true)
		dst, r := pipeFor(t, size, false)
		p := mustNew(t, src, dst)
		res := start(p)
		stop := make(chan struct{})
		buf := make([]byte, 1+rng.IntN(200<<10))
		go func() {
			defer w.Close()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := w.Write(buf); err != nil {
					return // EPIPE once the pump closed its source
				}
			}
		}()
		limit := int64(rng.IntN(2 << 20))
		go func() {
			io.Copy(io.Discard, io.LimitReader(r, limit))
			r.Close()
		}()
		rr := waitFor(t, res, 20*time.Second, "pump result")
		close(stop)
		if !rr.ConsumerGone || rr.EOF {
			t.Fatalf("run %d (pipe %d, consumer read %d): result %+v, want consumer gone", i, size, limit, rr)
		}
	}
}

// TestPumpEdgeTrickle: single bytes written one at a time, each only after
// the previous one arrived, must each arrive: a missed edge would leave one
// queued with nobody to move it.
func TestPumpEdgeTrickle(t *testing.T) {
	for _, size := range []int{smallPipe, DefaultPipeSize} {
		src, w := pipeFor(t, size, true)
		dst, r := pipeFor(t, size, false)
		p := mustNew(t, src, dst)
		res := start(p)
		for i := range 300 {
			if _, err := w.Write([]byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
			got := make(chan byte, 1)
			go func() {
				var b [1]byte
				if _, err := io.ReadFull(r, b[:]); err == nil {
					got <- b[0]
				}
			}()
			if b := waitFor(t, got, 10*time.Second, "trickled byte"); b != byte(i) {
				t.Fatalf("pipe %d: byte %d is %d", size, i, b)
			}
		}
		w.Close()
		if rr := waitFor(t, res, 10*time.Second, "pump result"); !rr.EOF || rr.Bytes != 300 {
			t.Fatalf("pipe %d: result %+v", size, rr)
		}
	}
}

func TestPumpBatchDelay(t *testing.T) {
	for _, tc := range []struct {
		size       int
		wantTarget int
		wantMax    time.Duration
	}{
		{DefaultPipeSize, DefaultPipeSize / 4, maxBatchDelay},
		{256 << 10, 64 << 10, time.Duration(256<<10) / fastestFill},
		{64 << 10, 0, 0}, // fills in 6.5 us at 10 GB/s: not batched
		{smallPipe, 0, 0},
	} {
		src, _ := pipeFor(t, tc.size, true)
		dst, _ := pipeFor(t, tc.size, false)
		c, ok := mustNew(t, src, dst).copier.(*spliceCopier)
		if !ok {
			t.Fatalf("pipes of %d: not spliced", tc.size)
		}
		if c.batchTarget != tc.wantTarget || c.batchMax != tc.wantMax {
			t.Errorf("pipes of %d: target %d max %v, want %d %v", tc.size, c.batchTarget, c.batchMax, tc.wantTarget, tc.wantMax)
		}
	}

	c := &spliceCopier{batchTarget: 256 << 10, batchMax: 100 * time.Microsecond}
	for _, tc := range []struct {
		n       int
		elapsed time.Duration
		want    time.Duration
	}{
		{128 << 10, 20 * time.Microsecond, 40 * time.Microsecond}, // twice as long for twice the bytes
		{128 << 10, time.Second, 100 * time.Microsecond},          // slow stream: capped
		{256 << 10, 20 * time.Microsecond, 0},                     // a quarter moved already
		{1 << 20, 20 * time.Microsecond, 0},
		{1, 0, 0}, // no elapsed time: no rate
	} {
		if got := c.batchDelay(tc.n, int64(tc.elapsed)); got != tc.want {
			t.Errorf("batchDelay(%d, %v) = %v, want %v", tc.n, tc.elapsed, got, tc.want)
		}
	}
	if got := (&spliceCopier{}).batchDelay(1, int64(time.Second)); got != 0 {
		t.Errorf("unbatched pump: batchDelay = %v, want 0", got)
	}
}
