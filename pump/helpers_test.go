package pump

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// helperEnv makes the test binary act as a producer or consumer child
// process instead of running tests (see runHelper).
const helperEnv = "PUMP_TEST_HELPER"

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		// exit_group at once, not os.Exit: under -race, os.Exit runs the
		// race runtime's finalizer, which was seen to hang for minutes in
		// a helper stopped and continued by TestPumpSurvivesSignals... at
		// its exit (its stdout, the pump's source, then never closes, and
		// the test reports a hung pump). The helper has nothing to flush:
		// stdout and stderr are unbuffered.
		syscall.Exit(runHelper(h))
	}
	// Go's netpoller opens its epoll fd and wake-up fd on first use: do
	// that now, so that the fd leak checks do not count them.
	if r, w, err := os.Pipe(); err == nil {
		r.SetReadDeadline(time.Now())
		r.Close()
		w.Close()
	}
	goleak.VerifyTestMain(m)
}

// runHelper is the child process side. "produce N SEED" writes N bytes of
// the PRNG stream to stdout and then "N SHA256" to stderr; "consume LIMIT"
// reads stdin to EOF (or LIMIT bytes when LIMIT > 0, then exits) and writes
// "N SHA256" to stdout.
func runHelper(spec string) int {
	f := strings.Fields(spec)
	switch f[0] {
	case "produce":
		n, _ := strconv.ParseInt(f[1], 10, 64)
		seed, _ := strconv.ParseUint(f[2], 10, 64)
		h := sha256.New()
		w := bufio.NewWriterSize(io.MultiWriter(os.Stdout, h), 256<<10)
		if _, err := io.CopyN(w, newPRNG(seed), n); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := w.Flush(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "%d %x\n", n, h.Sum(nil))
		return 0
	case "consume":
		limit, _ := strconv.ParseInt(f[1], 10, 64)
		var r io.Reader = os.Stdin
		if limit > 0 {
			r = io.LimitReader(r, limit)
		}
		h := sha256.New()
		n, err := io.CopyBuffer(h, r, make([]byte, 256<<10))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Printf("%d %x\n", n, h.Sum(nil))
		return 0
	}
	return 2
}

// helperCmd returns the test binary run as a helper child process.
func helperCmd(spec string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+spec)
	return cmd
}

// prng is a fast deterministic byte stream (splitmix64): the same seed
// gives the same bytes whatever the sizes of the reads.
type prng struct {
	s   uint64
	blk [8 << 10]byte
	off int
}

func newPRNG(seed uint64) *prng {
	g := &prng{s: seed}
	g.off = len(g.blk)
	return g
}

func (g *prng) Read(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		if g.off == len(g.blk) {
			for i := 0; i < len(g.blk); i += 8 {
				g.s += 0x9e3779b97f4a7c15
				z := g.s
				z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
				z = (z ^ z>>27) * 0x94d049bb133111eb
				binary.LittleEndian.PutUint64(g.blk[i:], z^z>>31)
			}
			g.off = 0
		}
		c := copy(b[n:], g.blk[g.off:])
		g.off += c
		n += c
	}
	return n, nil
}

// digest is what one side saw of a stream.
type digest struct {
	n   int64
	sum string
	err error
}

func (d digest) String() string {
	return fmt.Sprintf("%d bytes sha256 %.16s (err %v)", d.n, d.sum, d.err)
}

// producer describes how a test writes its stream.
type producer struct {
	total int64
	chunk int           // bytes per write; 0: 64 KiB
	every int           // pause after every this many writes (0: never)
	pause time.Duration // the slow writer's pause
	seed  uint64
}

// produce writes p's stream to w, then closes w. It stops at the first
// error (EPIPE when the pump went away) and reports what it wrote.
func (p producer) produce(w io.WriteCloser) digest {
	defer w.Close()
	chunk := p.chunk
	if chunk == 0 {
		chunk = 64 << 10
	}
	g, h := newPRNG(p.seed), sha256.New()
	buf := make([]byte, chunk)
	var d digest
	for i := 1; d.n < p.total; i++ {
		b := buf[:min(int64(chunk), p.total-d.n)]
		g.Read(b)
		n, err := w.Write(b)
		h.Write(b[:n])
		d.n += int64(n)
		if err != nil {
			d.err = err
			break
		}
		if p.every > 0 && i%p.every == 0 {
			time.Sleep(p.pause) // the slow writer: the behaviour under test
		}
	}
	d.sum = hex.EncodeToString(h.Sum(nil))
	return d
}

// consumer describes how a test reads its stream.
type consumer struct {
	chunk int // bytes per read; 0: 64 KiB
	every int
	pause time.Duration
}

func (c consumer) consume(r io.Reader) digest {
	chunk := c.chunk
	if chunk == 0 {
		chunk = 64 << 10
	}
	h := sha256.New()
	buf := make([]byte, chunk)
	var d digest
	for i := 1; ; i++ {
		n, err := r.Read(buf)
		h.Write(buf[:n])
		d.n += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			d.err = err
			break
		}
		if c.every > 0 && i%c.every == 0 {
			time.Sleep(c.pause) // the slow reader: the behaviour under test
		}
	}
	d.sum = hex.EncodeToString(h.Sum(nil))
	return d
}

// pipeFor returns a pipe whose pump side is a non-blocking End the pump
// owns and whose test side is an *os.File on Go's poller (non-blocking, so
// that closing it interrupts a blocked Read or Write). toPump: the test
// writes, the pump reads.
func pipeFor(t *testing.T, size int, toPump bool) (End, *os.File) {
	t.Helper()
	p, _, err := NewPipe(size)
	if err != nil {
		t.Fatal(err)
	}
	pumpFD, testFD := p.W, p.R
	if toPump {
		pumpFD, testFD = p.R, p.W
	}
	if err := SetNonblock(pumpFD); err != nil {
		t.Fatal(err)
	}
	return End{FD: pumpFD, Own: true, Name: "pipe"}, testSide(t, testFD, "pipe")
}

// socketFor is pipeFor for a unix stream socketpair: no pipe on this side.
func socketFor(t *testing.T) (End, *os.File) {
	t.Helper()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	return End{FD: sp[0], Own: true, Name: "socket"}, testSide(t, sp[1], "socket")
}

func testSide(t *testing.T, fd int, name string) *os.File {
	t.Helper()
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), name)
	t.Cleanup(func() { f.Close() })
	return f
}

// source sets up the pump's source with a producer behind it and returns
// a channel that gives what the producer wrote.
type source func(t *testing.T, p producer) (End, <-chan digest)

// sink sets up the pump's destination and returns a function that gives
// what arrived there once the pump has finished.
type sink func(t *testing.T, c consumer) (End, func() digest)

func pipeSource(size int) source {
	return func(t *testing.T, p producer) (End, <-chan digest) {
		e, w := pipeFor(t, size, true)
		return e, goProduce(p, w)
	}
}

func socketSource(t *testing.T, p producer) (End, <-chan digest) {
	e, w := socketFor(t)
	return e, goProduce(p, halfCloser{w})
}

// blockingSocketSource looks like an inherited stdin: blocking and not
// owned, so the pump must poll it before each read and never close it.
func blockingSocketSource(t *testing.T, p producer) (End, <-chan digest) {
	e, w := socketFor(t)
	if err := unix.SetNonblock(e.FD, false); err != nil {
		t.Fatal(err)
	}
	e.Own = false
	t.Cleanup(func() {
		if !isOpen(e.FD) {
			t.Errorf("pump closed fd %d it did not own", e.FD)
		}
		unix.Close(e.FD)
	})
	return e, goProduce(p, halfCloser{w})
}

// halfCloser shuts down the write half of a socket on Close, so that the
// other end sees EOF even while this end stays open for reading.
type halfCloser struct{ *os.File }

func (h halfCloser) Close() error {
	sc, err := h.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := sc.Control(func(fd uintptr) { serr = unix.Shutdown(int(fd), unix.SHUT_WR) }); err != nil {
		return err
	}
	return serr
}

func fileSource(t *testing.T, p producer) (End, <-chan digest) {
	path := filepath.Join(t.TempDir(), "src")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan digest, 1)
	ch <- p.produce(f)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return End{FD: fd, Own: true, Name: "file"}, ch
}

func goProduce(p producer, w io.WriteCloser) <-chan digest {
	ch := make(chan digest, 1)
	go func() { ch <- p.produce(w) }()
	return ch
}

func pipeSink(size int) sink {
	return func(t *testing.T, c consumer) (End, func() digest) {
		e, r := pipeFor(t, size, false)
		return e, goConsume(t, c, r)
	}
}

func socketSink(t *testing.T, c consumer) (End, func() digest) {
	e, r := socketFor(t)
	return e, goConsume(t, c, r)
}

func fileSink(t *testing.T, c consumer) (End, func() digest) {
	path := filepath.Join(t.TempDir(), "dst")
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	return End{FD: fd, Own: true, Name: "file"}, func() digest {
		f, err := os.Open(path)
		if err != nil {
			return digest{err: err}
		}
		defer f.Close()
		return c.consume(f)
	}
}

// appendFileSink is fileSink with O_APPEND, which splice refuses (EINVAL):
// the pump falls back to read/write before it has moved a byte.
func appendFileSink(t *testing.T, c consumer) (End, func() digest) {
	e, collect := fileSink(t, c)
	if _, err := unix.FcntlInt(uintptr(e.FD), unix.F_SETFL, unix.O_APPEND); err != nil {
		t.Fatal(err)
	}
	return e, collect
}

func goConsume(t *testing.T, c consumer, r io.Reader) func() digest {
	ch := make(chan digest, 1)
	go func() { ch <- c.consume(r) }()
	return func() digest { return waitFor(t, ch, time.Minute, "consumer EOF") }
}

// start runs p in a goroutine; the returned channel gives its result.
func start(p *Pump) <-chan Result {
	ch := make(chan Result, 1)
	go func() { ch <- p.Run() }()
	return ch
}

func mustNew(t *testing.T, src, dst End, opts ...Option) *Pump {
	t.Helper()
	p, err := New(src, dst, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func goroutines() string {
	buf := make([]byte, 4<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// waitFor receives from ch or fails the test with a goroutine dump.
func waitFor[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("%s: nothing after %v\n%s", what, d, goroutines())
		panic("unreachable")
	}
}

// eventually polls cond until it holds or d passes (then the test fails
// with a goroutine dump): for states that no channel announces.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v\n%s", what, d, goroutines())
		}
		time.Sleep(time.Millisecond) // a poll tick, bounded by the deadline
	}
}

// waitState waits until p is in state s.
func waitState(t *testing.T, p *Pump, s State) {
	t.Helper()
	eventually(t, 10*time.Second, "pump "+s.String(), func() bool { return p.State() == s })
}

// checkFDs fails the test if it ends with other fds open than it started
// with. Call it first, so that its cleanup runs after all the others.
func checkFDs(t *testing.T) {
	t.Helper()
	before := openFDs(t)
	t.Cleanup(func() {
		if after := openFDs(t); strings.Join(after, " ") != strings.Join(before, " ") {
			t.Errorf("fd leak:\nbefore %v\nafter  %v", before, after)
		}
	})
}

func openFDs(t *testing.T) []string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		l, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if l == "" {
			continue // the directory's own fd, gone already
		}
		out = append(out, e.Name()+"="+l)
	}
	return out
}

// cpuTime is the CPU time of the copying threads so far: the threads
// that run as SCHED_BATCH, which only a pump or a tee makes while it runs
// (see batchThread), so that a test's producer still making its data, the
// race detector or the garbage collector is not counted as the pump's. When
// no thread is SCHED_BATCH (the test runs under a policy somebody chose,
// which the pump leaves alone), the whole process's user+system time.
func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	if d, ok := batchThreadsCPU(); ok {
		return d
	}
	return processCPU(t)
}

// batchThreadsCPU sums the time on CPU (/proc/self/task/*/schedstat, in
// nanoseconds) of the process's SCHED_BATCH threads; ok is false when
// there is none, or the kernel does not say.
func batchThreadsCPU() (time.Duration, bool) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0, false
	}
	var sum time.Duration
	found := false
	for _, e := range tasks {
		stat, err := os.ReadFile(filepath.Join("/proc/self/task", e.Name(), "stat"))
		if err != nil {
			continue // the thread ended
		}
		// The fields after the command's closing parenthesis start with
		// the third; policy is the 41st.
		i := strings.LastIndexByte(string(stat), ')')
		f := strings.Fields(string(stat[i+1:]))
		if i < 0 || len(f) < 39 || f[38] != strconv.Itoa(unix.SCHED_BATCH) {
			continue
		}
		ss, err := os.ReadFile(filepath.Join("/proc/self/task", e.Name(), "schedstat"))
		if err != nil {
			continue
		}
		var ns int64
		if _, err := fmt.Sscan(string(ss), &ns); err != nil {
			return 0, false
		}
		sum += time.Duration(ns)
		found = true
	}
	return sum, found
}

// processCPU is the user+system CPU time of the whole process so far.
func processCPU(t *testing.T) time.Duration {
	t.Helper()
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// isOpen reports whether fd is an open file descriptor.
func isOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return !errors.Is(err, unix.EBADF)
}
