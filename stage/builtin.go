package stage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pipespool/pipespool/filter"
)

// Builtin is a stage run by a filter.Filter in this process.
type Builtin struct {
	name, builtin string
	filter        filter.Filter

	in, out atomic.Int64 // bytes read from stdin and written to stdout

	cancel  context.CancelFunc
	started chan struct{} // closed once Start has set up the fields below
	done    chan struct{} // closed when the filter has returned and files are closed
	stdin   *os.File
	stdout  *os.File
	result  Result // written once before done is closed
	stopped atomic.Bool
}

// NewBuiltin returns a stage that runs filter under the given stage name;
// builtin is the built-in's name (for the report).
func NewBuiltin(name, builtin string, f filter.Filter) *Builtin {
	return &Builtin{name: name, builtin: builtin, filter: f,
		started: make(chan struct{}), done: make(chan struct{})}
}

// Name implements Stage.
func (b *Builtin) Name() string { return b.name }

// Kind implements Stage.
func (b *Builtin) Kind() Kind { return KindBuiltin }

// Argv implements Stage.
func (b *Builtin) Argv() []string { return []string{b.builtin} }

// Pid implements Stage.
func (b *Builtin) Pid() int { return 0 }

// Counters implements Stage.
func (b *Builtin) Counters() (in, out int64) { return b.in.Load(), b.out.Load() }

// Done implements Stage.
func (b *Builtin) Done() <-chan struct{} { return b.done }

// Start implements Stage. The filter runs in its own goroutine, reading stdin
// and writing stdout; stdin and stdout should be non-blocking pipes so that
// Go's poller parks the goroutine instead of a thread, and Stop can
// interrupt it by closing them.
func (b *Builtin) Start(stdin, stdout *os.File) error {
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	b.stdin, b.stdout = stdin, stdout
	b.result.Started = time.Now()
	close(b.started)
	go b.run(ctx)
	return nil
}

func (b *Builtin) run(ctx context.Context) {
	defer close(b.done)
	r := &countingReader{r: b.stdin, n: &b.in}
	w := &countingWriter{w: b.stdout, n: &b.out}
	err := b.filter.Run(ctx, r, w)
	// Whether pipespool stopped the stage is decided by the time the
	// filter returned: a Stop that arrives while the files are being
	// closed must not turn a failure of its own into "stopped".
	ended, stopped := time.Now(), b.stopped.Load()
	if err == nil && !r.eof {
		// The filter says it is done: the input must be too, or bytes
		// would be dropped without anybody noticing.
		var one [1]byte
		n, rerr := io.ReadFull(b.stdin, one[:])
		if n > 0 {
			err = errors.New("did not read all its input: data follows the end of the stream")
		} else if rerr != nil && rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
			err = fmt.Errorf("reading input: %w", rerr)
		}
	}
	cerr := b.stdout.Close()
	b.stdin.Close()
	if err == nil && cerr != nil {
		err = fmt.Errorf("closing output: %w", cerr)
	}
	res := Result{Started: b.result.Started, Ended: ended, Stopped: stopped}
	if err != nil {
		res.Err = err
		res.ExitCode = 1
		res.BrokenPipe = errors.Is(err, syscall.EPIPE)
		// The error is the built-in's stderr; its tail is kept as a
		// process's is, whatever the length of the message.
		msg := err.Error()
		res.StderrTail = []byte(msg[max(0, len(msg)-StderrTailSize):])
	}
	b.result = res
	b.cancel()
}

// Wait implements Stage.
func (b *Builtin) Wait() Result {
	<-b.done
	return b.result
}

// Stop implements Stage: it cancels the filter and closes its files, which
// makes blocked reads and writes return.
func (b *Builtin) Stop(time.Duration) {
	select {
	case <-b.started:
	default:
		return
	}
	select {
	case <-b.done:
		return
	default:
	}
	b.stopped.Store(true)
	b.cancel()
	// Closing an *os.File that is in Go's poller unblocks a pending Read or
	// Write with os.ErrClosed; the run goroutine's Close calls are no-ops
	// after this.
	b.stdin.Close()
	b.stdout.Close()
}

// Signal implements Stage; a built-in has no process to signal.
func (b *Builtin) Signal(syscall.Signal) error { return nil }

type countingReader struct {
	r   io.Reader
	n   *atomic.Int64
	eof bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	if err == io.EOF {
		c.eof = true
	}
	return n, err
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}
