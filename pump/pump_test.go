package pump

import (
	"io"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	smallPipe = 4096 // F_SETPIPE_SZ minimum that still holds a page: one slot
	mib       = 1 << 20
)

func TestPumpDeliversEveryByteOnceInOrder(t *testing.T) {
	tests := []struct {
		name string
		src  source
		dst  sink
		prod producer
		cons consumer
	}{
		{"pipe to pipe", pipeSource(DefaultPipeSize), pipeSink(DefaultPipeSize),
			producer{total: 32 * mib}, consumer{}},
		{"slow reader", pipeSource(DefaultPipeSize), pipeSink(smallPipe),
			producer{total: 2 * mib}, consumer{chunk: 1000, every: 64, pause: time.Millisecond}},
		{"slow writer", pipeSource(smallPipe), pipeSink(DefaultPipeSize),
			producer{total: 2 * mib, chunk: 3000, every: 32, pause: time.Millisecond}, consumer{}},
		{"4 KiB pipes", pipeSource(smallPipe), pipeSink(smallPipe),
			producer{total: 8 * mib, chunk: 5000}, consumer{chunk: 3000}},
		{"1-byte writes", pipeSource(smallPipe), pipeSink(smallPipe),
			producer{total: 64 << 10, chunk: 1}, consumer{chunk: 7}},
		{"1-byte reads", pipeSource(smallPipe), pipeSink(smallPipe),
			producer{total: 64 << 10}, consumer{chunk: 1}},
		{"file to pipe", fileSource, pipeSink(smallPipe),
			producer{total: 8*mib + 17}, consumer{chunk: 5000}},
		{"pipe to file", pipeSource(smallPipe), fileSink,
			producer{total: 8*mib + 17, chunk: 5000}, consumer{}},
		{"file to file is read/write", fileSource, fileSink,
			producer{total: 3*mib + 1}, consumer{}},
		{"socket to socket is read/write", socketSource, socketSink,
			producer{total: 16*mib + 3, chunk: 100 << 10}, consumer{chunk: 3000}},
		{"socket to socket with slow reader", socketSource, socketSink,
			producer{total: 2 * mib}, consumer{chunk: 1000, every: 64, pause: time.Millisecond}},
		{"socket to pipe", socketSource, pipeSink(smallPipe),
			producer{total: 8 * mib}, consumer{chunk: 3000}},
		{"pipe to socket", pipeSource(smallPipe), socketSink,
			producer{total: 8 * mib}, consumer{chunk: 3000}},
		{"inherited blocking socket to pipe", blockingSocketSource, pipeSink(smallPipe),
			producer{total: 4 * mib, chunk: 1000}, consumer{chunk: 3000}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			tt.prod.seed = uint64(i + 1)
			src, produced := tt.src(t, tt.prod)
			dst, consumed := tt.dst(t, tt.cons)
			p := mustNew(t, src, dst)
			res := waitFor(t, start(p), time.Minute, "pump result")
			in := waitFor(t, produced, time.Minute, "producer")
			out := consumed()
			if in.err != nil || out.err != nil {
				t.Fatalf("producer %v, consumer %v", in, out)
			}
			if res.Err != nil || !res.EOF || res.Bytes != in.n {
				t.Errorf("result %+v, want EOF after %d bytes", res, in.n)
			}
			if in.n != tt.prod.total || in != out {
				t.Errorf("written %v, read %v", in, out)
			}
		})
	}
}

func TestPumpIdleUsesNoCPU(t *testing.T) {
	// A pump with nothing to do must sleep in epoll_wait, whichever side
	// it waits for and whatever the other side's state: an event left
	// pending (a hang-up, a writable fd) would spin it at 100%.
	const (
		window = time.Second
		budget = 50 * time.Millisecond
	)
	type setup func(t *testing.T) (p *Pump, want State)
	tests := []struct {
		name  string
		setup setup
	}{
		{"idle source", func(t *testing.T) (*Pump, State) {
			src, _ := pipeFor(t, smallPipe, true)
			dst, _ := pipeFor(t, smallPipe, false)
			return mustNew(t, src, dst), WaitingSrc
		}},
		{"full destination, producer idle", func(t *testing.T) (*Pump, State) {
			src, w := pipeFor(t, smallPipe, true)
			dst, _ := pipeFor(t, smallPipe, false)
			// Fills dst, and src behind it once the pump has run.
			go w.Write(make([]byte, 2*smallPipe))
			return mustNew(t, src, dst), WaitingDst
		}},
		{"full destination, producer gone", func(t *testing.T) (*Pump, State) {
			src, w := pipeFor(t, smallPipe, true)
			dst, _ := pipeFor(t, smallPipe, false)
			w.Write(make([]byte, smallPipe)) // exactly what dst holds
			w.Close()
			return mustNew(t, src, dst), WaitingDst
		}},
		{"destination consumer gone, producer idle", func(t *testing.T) (*Pump, State) {
			src, _ := pipeFor(t, smallPipe, true)
			dst, r := pipeFor(t, smallPipe, false)
			r.Close()
			return mustNew(t, src, dst), WaitingSrc
		}},
		{"idle socket source to pipe", func(t *testing.T) (*Pump, State) {
			src, _ := socketFor(t)
			dst, _ := pipeFor(t, smallPipe, false)
			return mustNew(t, src, dst), WaitingSrc
		}},
		{"pipe to full socket", func(t *testing.T) (*Pump, State) {
			src, w := pipeFor(t, DefaultPipeSize, true)
			dst, _ := socketFor(t)
			go w.Write(make([]byte, 4*mib)) // more than a socket buffer holds
			return mustNew(t, src, dst), WaitingDst
		}},
		{"idle socket to socket", func(t *testing.T) (*Pump, State) {
			src, _ := socketFor(t)
			dst, _ := socketFor(t)
			return mustNew(t, src, dst), WaitingSrc
		}},
		{"socket to full socket", func(t *testing.T) (*Pump, State) {
			src, w := socketFor(t)
			dst, _ := socketFor(t)
			go w.Write(make([]byte, 4*mib)) // ends with an error at cleanup
			return mustNew(t, src, dst), WaitingDst
		}},
		{"idle inherited blocking socket", func(t *testing.T) (*Pump, State) {
			src, _ := socketFor(t) // the test side stays open: no EOF
			if err := unix.SetNonblock(src.FD, false); err != nil {
				t.Fatal(err)
			}
			src.Own = false
			t.Cleanup(func() { unix.Close(src.FD) })
			dst, _ := pipeFor(t, smallPipe, false)
			return mustNew(t, src, dst), WaitingSrc
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			p, want := tt.setup(t)
			done := start(p)
			defer func() {
				p.Stop()
				waitFor(t, done, 10*time.Second, "pump after Stop")
			}()
			waitState(t, p, want)
			before := cpuTime(t)
			time.Sleep(window) // the measurement interval, not a wait for an event
			used := cpuTime(t) - before
			if s := p.State(); s != want {
				t.Fatalf("state %v after the window, want %v", s, want)
			}
			t.Logf("CPU %v over %v", used, window)
			if used > budget {
				t.Errorf("pump waiting (%v) used %v of CPU in %v, want < %v", want, used, window, budget)
			}
		})
	}
}

// assertIdle fails the test if the process uses more than a few
// milliseconds of CPU over 300 ms while p stays in state want.
func assertIdle(t *testing.T, p *Pump, want State) {
	t.Helper()
	waitState(t, p, want)
	before := cpuTime(t)
	time.Sleep(300 * time.Millisecond) // the measurement interval
	if used := cpuTime(t) - before; used > 20*time.Millisecond || p.State() != want {
		t.Fatalf("pump %v used %v of CPU in 300ms (now %v)", want, used, p.State())
	}
}

// Regression: pipe to pipe, the producer wrote its last bytes and exited
// while the destination was full. splice returns EAGAIN for the full
// destination before it looks for EOF; the pump, seeing the source empty,
// waited for the source, whose hang-up is always pending: 100% CPU until
// the consumer read.
func TestPumpNoSpinWhenDestinationFullAfterProducerExit(t *testing.T) {
	checkFDs(t)
	src, w := pipeFor(t, smallPipe, true)
	dst, r := pipeFor(t, smallPipe, false)
	prod := producer{total: smallPipe, seed: 7}
	in := prod.produce(w) // fits the source pipe; closes w
	p := mustNew(t, src, dst)
	done := start(p)
	assertIdle(t, p, WaitingDst)
	out := consumer{}.consume(r)
	res := waitFor(t, done, 10*time.Second, "pump")
	if !res.EOF || res.Bytes != in.n || in != out {
		t.Fatalf("result %+v; wrote %v, read %v", res, in, out)
	}
}

// Regression: with a socket the pump owns on one side and a pipe on the
// other the pump splices, and assumed the socket never blocks: an empty
// socket source made it wait for the (writable) destination pipe, a full
// socket destination for the (readable) source pipe, both at 100% CPU.
func TestPumpNoSpinOnOwnedSocket(t *testing.T) {
	tests := []struct {
		name      string
		srcSock   bool
		want      State
		prodFirst bool // producer runs during the idle check, consumer after
	}{
		{"empty socket source", true, WaitingSrc, false},
		{"full socket destination", false, WaitingDst, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			var src, dst End
			var w io.WriteCloser
			var r io.Reader
			if tt.srcSock {
				var f *os.File
				src, f = socketFor(t)
				w = halfCloser{f}
				dst, r = pipeFor(t, smallPipe, false)
			} else {
				src, w = pipeFor(t, DefaultPipeSize, true)
				dst, r = socketFor(t)
			}
			prod := producer{total: 4 * mib, seed: 9}
			p := mustNew(t, src, dst)
			done := start(p)
			var produced <-chan digest
			if tt.prodFirst {
				produced = goProduce(prod, w) // more than the socket holds
			}
			assertIdle(t, p, tt.want)
			consumed := goConsume(t, consumer{}, r)
			if !tt.prodFirst {
				produced = goProduce(prod, w)
			}
			res := waitFor(t, done, time.Minute, "pump")
			in, out := waitFor(t, produced, time.Minute, "producer"), consumed()
			if !res.EOF || in.n != prod.total || in != out {
				t.Fatalf("result %+v; wrote %v, read %v", res, in, out)
			}
		})
	}
}
