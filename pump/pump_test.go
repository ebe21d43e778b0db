package pump

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
		{"pipe to append-only file falls back to read/write", pipeSource(smallPipe), appendFileSink,
			producer{total: 2*mib + 1, chunk: 5000}, consumer{}},
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
// The CPU measured is the copying threads' (see cpuTime), or the whole
// process's, where a test's producer may still be making its data (under
// -race, tens of milliseconds on a slow machine) when the pump starts to
// wait. So the check passes if any of three consecutive 300 ms windows is
// idle; a spinning pump uses nearly all of every window.
func assertIdle(t *testing.T, p *Pump, want State) {
	t.Helper()
	waitState(t, p, want)
	var used []time.Duration
	for range 3 {
		before := cpuTime(t)
		time.Sleep(300 * time.Millisecond) // the measurement interval
		u := cpuTime(t) - before
		if p.State() != want {
			t.Fatalf("pump %v: now %v after %v of CPU in 300ms", want, p.State(), u)
		}
		if u <= 20*time.Millisecond {
			return
		}
		used = append(used, u)
	}
	t.Fatalf("pump %v used %v of CPU in three windows of 300ms", want, used)
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

// blockedPump is a pump from a pipe to a pipe (or a socket to a socket,
// for the read/write path) that is left waiting for the side named.
func blockedPump(t *testing.T, sockets bool, on State) (p *Pump, w, r *os.File) {
	t.Helper()
	var src, dst End
	if sockets {
		src, w = socketFor(t)
		dst, r = socketFor(t)
	} else {
		src, w = pipeFor(t, smallPipe, true)
		dst, r = pipeFor(t, smallPipe, false)
	}
	p = mustNew(t, src, dst)
	if on == WaitingDst {
		// More than both buffers hold: the pump fills the destination and
		// the rest stays queued behind it. The write ends with EPIPE or
		// an error when the pump closes its source.
		go w.Write(make([]byte, 8*mib))
	}
	return p, w, r
}

func TestPumpStopReturnsPromptlyWhileBlocked(t *testing.T) {
	tests := []struct {
		name    string
		sockets bool
		on      State
	}{
		{"pipe source empty", false, WaitingSrc},
		{"pipe destination full", false, WaitingDst},
		{"socket source empty (read/write)", true, WaitingSrc},
		{"socket destination full (read/write)", true, WaitingDst},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			p, _, _ := blockedPump(t, tt.sockets, tt.on)
			done := start(p)
			waitState(t, p, tt.on)
			stopped := make(chan time.Time, 1)
			go func() { stopped <- time.Now(); p.Stop() }()
			res := waitFor(t, done, 2*time.Second, "pump after Stop")
			took := time.Since(waitFor(t, stopped, time.Second, "Stop"))
			t.Logf("Run returned %v after Stop", took)
			if !errors.Is(res.Err, ErrStopped) || res.EOF || res.ConsumerGone {
				t.Fatalf("result %+v, want ErrStopped", res)
			}
			if tt.on == WaitingDst && (res.Undelivered == 0 || !tt.sockets && res.Unread == 0) {
				t.Errorf("result %+v: want bytes reported undelivered and unread", res)
			}
			if p.State() != Finished {
				t.Errorf("state %v after Run", p.State())
			}
			if got := p.Result(); got != res {
				t.Errorf("Result() = %+v, Run returned %+v", got, res)
			}
		})
	}
}

func TestPumpStopBeforeRunAndAfterFinish(t *testing.T) {
	checkFDs(t)
	p, _, _ := blockedPump(t, false, WaitingSrc)
	p.Stop()
	if res := waitFor(t, start(p), 2*time.Second, "pump stopped before Run"); !errors.Is(res.Err, ErrStopped) {
		t.Fatalf("result %+v, want ErrStopped", res)
	}
	// After Run: the poller is closed; Stop must be a no-op (it used to
	// write to the eventfd's number, by then perhaps another file's).
	other, w := pipeFor(t, smallPipe, false)
	defer unix.Close(other.FD)
	p.Stop()
	if q := Queued(other.FD); q != 0 {
		t.Fatalf("Stop after Run wrote %d bytes into an unrelated pipe", q)
	}
	_ = w
}

func TestPumpReportsConsumerGone(t *testing.T) {
	const read = 100 << 10 // what the consumer reads before it goes
	tests := []struct {
		name string
		// consumer starts the consumer on dst's read end and returns
		// when it has gone, with what it read.
		consumer func(t *testing.T, r *os.File) int64
	}{
		{"consumer closes its end", func(t *testing.T, r *os.File) int64 {
			d := consumer{}.consume(io.LimitReader(r, read))
			r.Close()
			return d.n
		}},
		{"consumer process exits", func(t *testing.T, r *os.File) int64 {
			// The child needs a blocking stdin: hand it a blocking dup.
			fd, err := unix.FcntlInt(r.Fd(), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			r.Close()
			cmd := helperCmd(fmt.Sprintf("consume %d", read))
			stdin := os.NewFile(uintptr(fd), "stdin")
			cmd.Stdin = stdin
			var out strings.Builder
			cmd.Stdout = &out
			if err := cmd.Start(); err != nil {
				stdin.Close()
				t.Fatal(err)
			}
			stdin.Close()
			if err := cmd.Wait(); err != nil {
				t.Fatal(err)
			}
			var n int64
			fmt.Sscan(out.String(), &n)
			return n
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			src, w := pipeFor(t, DefaultPipeSize, true)
			dst, r := pipeFor(t, smallPipe, false)
			produced := goProduce(producer{total: 1 << 40, seed: 3}, w) // until EPIPE
			p := mustNew(t, src, dst)
			done := start(p)
			got := tt.consumer(t, r)
			res := waitFor(t, done, 10*time.Second, "pump after consumer left")
			if !res.ConsumerGone || !errors.Is(res.Err, ErrConsumerGone) || res.EOF {
				t.Fatalf("result %+v, want ConsumerGone", res)
			}
			if got != read || res.Bytes < read || res.Undelivered <= 0 {
				t.Errorf("consumer read %d; result %+v: want Bytes >= %d and Undelivered > 0", got, res, read)
			}
			// The pump closed its source: the producer gets EPIPE, as in a
			// shell pipeline, and does not hang.
			in := waitFor(t, produced, 10*time.Second, "producer EPIPE")
			if !errors.Is(in.err, syscall.EPIPE) {
				t.Errorf("producer ended with %v, want EPIPE", in.err)
			}
			if in.n < res.Bytes+res.Undelivered-int64(res.Unread) {
				t.Errorf("producer wrote %d, pump reports %+v", in.n, res)
			}
		})
	}
}

func TestPumpReportsEOFOnlyAfterEveryByteIsQueued(t *testing.T) {
	const total = 300<<10 + 5 // fits the 1 MiB pipes: the pump ends before anyone reads
	tests := []struct {
		name    string
		src     source
		witness bool
		read    int64 // what the consumer reads after the pump ended; -1: all
		want    int   // Leftover
	}{
		{"pipe, consumer reads all", pipeSource(DefaultPipeSize), true, -1, 0},
		{"pipe, consumer reads part", pipeSource(DefaultPipeSize), true, 1000, total - 1000},
		{"pipe, consumer reads nothing", pipeSource(DefaultPipeSize), true, 0, total},
		{"file, consumer reads part", fileSource, true, 7, total - 7},
		{"no witness", pipeSource(DefaultPipeSize), false, -1, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			src, produced := tt.src(t, producer{total: total, seed: 5})
			in := waitFor(t, produced, 10*time.Second, "producer") // done and closed before the pump starts
			dst, r := pipeFor(t, DefaultPipeSize, false)
			var opts []Option
			if tt.witness {
				opts = append(opts, KeepWitness())
			}
			p := mustNew(t, src, dst, opts...)
			res := waitFor(t, start(p), 10*time.Second, "pump")
			defer p.Release()
			if !res.EOF || res.Err != nil || res.Bytes != total {
				t.Fatalf("result %+v, want EOF after %d bytes", res, total)
			}
			if q := Queued(int(r.Fd())); q != total {
				t.Fatalf("%d bytes queued for the consumer at EOF, want %d", q, total)
			}
			if tt.read < 0 {
				if out := (consumer{}).consume(r); out != in {
					t.Fatalf("wrote %v, read %v", in, out)
				}
			} else {
				if n, err := io.ReadFull(r, make([]byte, tt.read)); err != nil {
					t.Fatalf("read %d: %v", n, err)
				}
			}
			r.Close() // the consumer exits
			if got := p.Leftover(); got != tt.want {
				t.Errorf("Leftover = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestPumpQueuedIsMinusOneAfterFinish(t *testing.T) {
	checkFDs(t)
	p, _, r := blockedPump(t, false, WaitingDst)
	done := start(p)
	waitState(t, p, WaitingDst)
	// The writer refills the source behind the pump.
	eventually(t, 10*time.Second, "source refilled", func() bool { return p.SrcQueued() > 0 })
	if s, d := p.SrcQueued(), p.DstQueued(); s <= 0 || d <= 0 {
		t.Errorf("while blocked: SrcQueued %d, DstQueued %d; want both > 0", s, d)
	}
	r.Close()
	res := waitFor(t, done, 10*time.Second, "pump")
	if !res.ConsumerGone {
		t.Fatalf("result %+v, want ConsumerGone", res)
	}
	if s, d := p.SrcQueued(), p.DstQueued(); s != -1 || d != -1 {
		t.Errorf("after Run: SrcQueued %d, DstQueued %d; want -1, -1", s, d)
	}

	// Not a pipe: -1 at any time.
	fsrc, _ := fileSource(t, producer{total: 10})
	dst, _ := socketFor(t)
	fp := mustNew(t, fsrc, dst)
	if s, d := fp.SrcQueued(), fp.DstQueued(); s != -1 || d != -1 {
		t.Errorf("file to socket: SrcQueued %d, DstQueued %d; want -1, -1", s, d)
	}
	waitFor(t, start(fp), 10*time.Second, "file pump")
}

func TestPumpNeverClosesEndItDoesNotOwn(t *testing.T) {
	tests := []struct {
		name string
		// end makes the pump end; the test side is a Go file.
		end  func(r, w *os.File) // what the test does with its sides while the pump runs
		want func(Result) bool
	}{
		{"EOF", func(r, w *os.File) { w.Close() }, func(res Result) bool { return res.EOF }},
		{"consumer gone", func(r, w *os.File) { r.Close(); go w.Write(make([]byte, 64<<10)) },
			func(res Result) bool { return res.ConsumerGone }},
		{"stopped", nil, func(res Result) bool { return errors.Is(res.Err, ErrStopped) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			// Inherited ends: blocking, not owned. Their flags must not
			// change and they must stay open.
			in, _, err := NewPipe(smallPipe)
			if err != nil {
				t.Fatal(err)
			}
			out, _, err := NewPipe(smallPipe)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(in.R)
			defer unix.Close(out.W)
			w := testSide(t, in.W, "producer")
			r := testSide(t, out.R, "consumer")
			p := mustNew(t, End{FD: in.R, Name: "stdin"}, End{FD: out.W, Name: "stdout"})
			done := start(p)
			if tt.end != nil {
				tt.end(r, w)
			} else {
				waitState(t, p, WaitingSrc)
				p.Stop()
			}
			res := waitFor(t, done, 10*time.Second, "pump")
			if !tt.want(res) {
				t.Fatalf("result %+v", res)
			}
			for _, fd := range []int{in.R, out.W} {
				fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
				if err != nil {
					t.Fatalf("fd %d not owned by the pump: %v", fd, err)
				}
				if fl&unix.O_NONBLOCK != 0 {
					t.Errorf("fd %d not owned by the pump was made non-blocking", fd)
				}
			}
			w.Close() // unblocks the writer of "consumer gone"
		})
	}
}

// longCopySize is the stream of the signal test: 1 GiB, or 64 MiB where
// that would take too long.
func longCopySize() int64 {
	if testing.Short() || raceEnabled {
		return 64 * mib
	}
	return 1 << 30
}

func TestPumpSurvivesSignalsDuringLongCopy(t *testing.T) {
	checkFDs(t)
	size := longCopySize()
	// SIGUSR1 with a handler interrupts the pump's own syscalls (EINTR);
	// SIGSTOP and SIGCONT to the children make both sides stall and
	// resume at random points.
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)

	a, _, err := NewPipe(DefaultPipeSize)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := NewPipe(DefaultPipeSize)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range []int{a.R, b.W} {
		if err := SetNonblock(fd); err != nil {
			t.Fatal(err)
		}
	}
	prod := helperCmd(fmt.Sprintf("produce %d 11", size))
	cons := helperCmd("consume 0")
	var prodOut, consOut strings.Builder
	prodStdout, consStdin := File(a.W, "producer stdout"), File(b.R, "consumer stdin")
	prod.Stdout, prod.Stderr = prodStdout, &prodOut
	cons.Stdin, cons.Stdout, cons.Stderr = consStdin, &consOut, os.Stderr
	errP, errC := prod.Start(), cons.Start()
	// The children's ends are theirs now: close ours at once, also on
	// error, or the pump never sees EOF and the consumer never EPIPE.
	prodStdout.Close()
	consStdin.Close()
	if errP != nil || errC != nil {
		unix.Close(a.R)
		unix.Close(b.W)
		t.Fatal(errP, errC)
	}
	p := mustNew(t, End{FD: a.R, Own: true, Name: "producer"}, End{FD: b.W, Own: true, Name: "consumer"})
	begin := time.Now()
	done := start(p)

	stopSignals := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	signals := 0
	go func() {
		defer wg.Done()
		tick := time.NewTicker(3 * time.Millisecond) // the signal sender's pace
		defer tick.Stop()
		procs := []*os.Process{prod.Process, cons.Process}
		for i := 0; ; i++ {
			select {
			case <-stopSignals:
				for _, pr := range procs {
					pr.Signal(syscall.SIGCONT) // never leave a child stopped
				}
				return
			case <-usr1:
				continue // delivered: the handler ran, the pump saw EINTR or not
			case <-tick.C:
			}
			pr := procs[i/2%2]
			if i%2 == 0 {
				pr.Signal(syscall.SIGSTOP)
			} else {
				pr.Signal(syscall.SIGCONT)
			}
			syscall.Kill(os.Getpid(), syscall.SIGUSR1)
			signals++
		}
	}()
	var res Result
	select {
	case res = <-done:
	case <-time.After(5 * time.Minute):
		close(stopSignals)
		wg.Wait()
		prod.Process.Kill()
		cons.Process.Kill()
		t.Fatalf("copy of %d bytes hangs after %v (pump %v, %d bytes)\n%s", size, time.Since(begin), p.State(), p.Bytes(), goroutines())
	}
	close(stopSignals)
	wg.Wait()
	errP, errC = prod.Wait(), cons.Wait()
	took := time.Since(begin)
	if errP != nil || errC != nil {
		t.Fatalf("producer %v, consumer %v", errP, errC)
	}
	t.Logf("%d MiB in %v (%.0f MiB/s) with %d signals", size/mib, took, float64(size)/mib/took.Seconds(), signals)
	if !res.EOF || res.Bytes != size {
		t.Fatalf("result %+v, want EOF after %d bytes", res, size)
	}
	if w, r := strings.TrimSpace(prodOut.String()), strings.TrimSpace(consOut.String()); w != r {
		t.Fatalf("producer wrote %s, consumer read %s", w, r)
	}
}

func BenchmarkPumpPipeToPipe(b *testing.B) {
	in, _, err := NewPipe(DefaultPipeSize)
	if err != nil {
		b.Fatal(err)
	}
	out, _, err := NewPipe(DefaultPipeSize)
	if err != nil {
		b.Fatal(err)
	}
	SetNonblock(in.R)
	SetNonblock(out.W)
	unix.SetNonblock(in.W, true)
	unix.SetNonblock(out.R, true)
	w, r := os.NewFile(uintptr(in.W), "w"), os.NewFile(uintptr(out.R), "r")
	defer r.Close()
	p, err := New(End{FD: in.R, Own: true}, End{FD: out.W, Own: true})
	if err != nil {
		b.Fatal(err)
	}
	feedMiBs(b, w)
	done := start(p)
	n, _ := io.CopyBuffer(io.Discard, r, make([]byte, mib))
	res := waitFor(b, done, time.Minute, "pump")
	if n != int64(b.N)*mib || !res.EOF {
		b.Fatalf("read %d, result %+v", n, res)
	}
}

// TestPumpStateOfAWakeUpNotActedOn: after a splice that returned EAGAIN,
// State looks at the pipes. Bytes in the source with room in the
// destination are a change the pump has not acted on yet (it was woken, or
// is about to be): Moving, not waiting for output; a full destination is
// waiting for output, an empty source waiting for input. The pump is not
// run here, so that the moment cannot pass.
func TestPumpStateOfAWakeUpNotActedOn(t *testing.T) {
	checkFDs(t)
	src, w := pipeFor(t, smallPipe, true)
	dst, r := pipeFor(t, smallPipe, false)
	defer w.Close()
	defer r.Close()
	p := mustNew(t, src, dst)
	defer func() { p.Stop(); p.Run() }()
	p.state.Store(int32(waitingEither)) // as waitEdge leaves it
	if s := p.State(); s != WaitingSrc {
		t.Errorf("empty source, empty destination: %v, want %v", s, WaitingSrc)
	}
	if _, err := w.Write([]byte("woken")); err != nil {
		t.Fatal(err)
	}
	if s := p.State(); s != Moving {
		t.Errorf("bytes in the source, room in the destination: %v, want %v", s, Moving)
	}
	// Fill the destination (non-blocking, the pump's end) until it takes
	// no more.
	full := make([]byte, smallPipe)
	for {
		if _, err := unix.Write(dst.FD, full); err != nil {
			break
		}
	}
	if s := p.State(); s != WaitingDst {
		t.Errorf("full destination: %v, want %v", s, WaitingDst)
	}
}

// stuckDestination is an inherited (blocking, not owned) destination that
// takes a little and then nothing more: a socket whose peer stopped
// reading, or a terminal whose master side is never read (a terminal on
// XOFF looks the same to a writer).
type stuckDestination func(t *testing.T) End

// stuckSocket has a send buffer far smaller than the pump's 256 KiB writes.
func stuckSocket(t *testing.T) End {
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(sp[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 16<<10); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(sp[0]); unix.Close(sp[1]) })
	return End{FD: sp[0], Name: "stdout (socket)"}
}

// stuckTerminal is the slave side of a new pseudo-terminal.
func stuckTerminal(t *testing.T) End {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	t.Cleanup(func() { unix.Close(m) })
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(m, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := unix.Open("/dev/pts/"+strconv.Itoa(n), unix.O_WRONLY|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s) })
	return End{FD: s, Name: "stdout (terminal)"}
}

// An inherited destination is written without changing its flags. epoll
// only says it has some room; a blocking write(2) of more than that sleeps
// until all of it is taken, and a pump asleep in write cannot be stopped:
// pipespool then outlived its timeout and SIGTERM whenever its stdout was a
// socket or a terminal that stopped taking bytes. The pump must write such
// an end without blocking, return promptly from Stop, leave the end open
// with its flags as they were, and close what it opened for it.
func TestPumpStopsWhileInheritedDestinationIsStuck(t *testing.T) {
	for _, tt := range []struct {
		name string
		dst  stuckDestination
	}{{"socket", stuckSocket}, {"terminal", stuckTerminal}} {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			dst := tt.dst(t)
			flags, err := unix.FcntlInt(uintptr(dst.FD), unix.F_GETFL, 0)
			if err != nil {
				t.Fatal(err)
			}
			src, w := pipeFor(t, DefaultPipeSize, true)
			go w.Write(make([]byte, 768<<10)) // ends with an error when the pump closes its source
			p := mustNew(t, src, dst)
			done := start(p)
			// The pump has delivered what the destination took and waits
			// for room that never comes. (Waiting alone is not enough: a
			// terminal is polled before its first write, so the pump can
			// wait for it with nothing delivered yet.)
			eventually(t, 10*time.Second, "pump waiting for the destination after delivering", func() bool {
				return p.Bytes() > 0 && p.State() == WaitingDst
			})
			p.Stop()
			res := waitFor(t, done, 5*time.Second, "pump after Stop")
			if !errors.Is(res.Err, ErrStopped) || res.Bytes == 0 || res.Undelivered == 0 {
				t.Fatalf("result %+v: want stopped with bytes delivered and undelivered", res)
			}
			got, err := unix.FcntlInt(uintptr(dst.FD), unix.F_GETFL, 0)
			if err != nil {
				t.Fatalf("the pump closed %s, which it does not own: %v", dst.Name, err)
			}
			if got != flags {
				t.Errorf("flags of %s: %#x, were %#x", dst.Name, got, flags)
			}
		})
	}
}

// TestPumpDeliversToInheritedSocketAndTerminal: an inherited blocking
// destination is written without blocking (a socket with send(2) and
// MSG_DONTWAIT, a terminal through a second, non-blocking opening of it),
// and every byte still arrives once, in order, through short writes and
// waits for room.
func TestPumpDeliversToInheritedSocketAndTerminal(t *testing.T) {
	const total = 4*mib + 3
	for _, tt := range []struct {
		name string
		// dst returns the inherited destination and the consumer's side.
		dst func(t *testing.T) (End, *os.File)
	}{
		{"socket", func(t *testing.T) (End, *os.File) {
			e, r := socketFor(t)
			if err := unix.SetNonblock(e.FD, false); err != nil {
				t.Fatal(err)
			}
			e.Own = false
			t.Cleanup(func() { unix.Close(e.FD) })
			return e, r
		}},
		{"terminal", rawTerminal},
	} {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			dst, r := tt.dst(t)
			src, produced := pipeSource(DefaultPipeSize)(t, producer{total: total, seed: 13})
			consumed := make(chan digest, 1)
			go func() { consumed <- consumer{chunk: 3000}.consume(io.LimitReader(r, total)) }()
			p := mustNew(t, src, dst)
			res := waitFor(t, start(p), time.Minute, "pump result")
			in := waitFor(t, produced, time.Minute, "producer")
			out := waitFor(t, consumed, time.Minute, "consumer")
			if !res.EOF || res.Err != nil || res.Bytes != total || in.n != total || in != out {
				t.Fatalf("result %+v; wrote %v, read %v", res, in, out)
			}
		})
	}
}

// rawTerminal is the slave side of a new pseudo-terminal in raw mode (no
// echo, no line discipline: bytes pass unchanged), inherited (blocking,
// not owned), and the master side for the consumer.
func rawTerminal(t *testing.T) (End, *os.File) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	master := testSide(t, m, "terminal master")
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(m, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := unix.Open("/dev/pts/"+strconv.Itoa(n), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s) })
	tio, err := unix.IoctlGetTermios(s, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	tio.Cflag &^= unix.CSIZE | unix.PARENB
	tio.Cflag |= unix.CS8
	if err := unix.IoctlSetTermios(s, unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	return End{FD: s, Name: "stdout (terminal)"}, master
}

// feedMiBs starts the timed part of a benchmark: b.N MiB of pseudo-random
// bytes written into w by a goroutine, which closes w when done (or when
// the reader is gone).
func feedMiBs(b *testing.B, w *os.File) {
	chunk := make([]byte, mib)
	newPRNG(1).Read(chunk)
	b.SetBytes(mib)
	b.ResetTimer()
	go func() {
		defer w.Close()
		for range b.N {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}()
}
