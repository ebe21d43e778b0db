package stage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Filter is the transformation of a built-in stage. Run reads r to its end
// and writes the result to w; it returns nil only when the whole input was
// consumed and the whole output written. It must stop promptly when ctx is
// cancelled or when r or w return an error. Run must keep its memory flat
// in the length of the stream.
type Filter interface {
	Run(ctx context.Context, r io.Reader, w io.Writer) error
}

// FilterFunc adapts a function to Filter.
type FilterFunc func(ctx context.Context, r io.Reader, w io.Writer) error

// Run calls f.
func (f FilterFunc) Run(ctx context.Context, r io.Reader, w io.Writer) error { return f(ctx, r, w) }

// BuiltinFactory validates a built-in's [stage.with] table and returns its
// filter. Relative file names in with are relative to baseDir (the job
// file's directory). A bad key is reported as a *ParamError.
type BuiltinFactory func(with map[string]any, baseDir string) (Filter, error)

// ParamError is a bad [stage.with] parameter of a built-in.
type ParamError struct {
	Key string // the key in [stage.with], "" when the table as a whole is wrong
	Msg string // what is wrong and what to do
}

func (e *ParamError) Error() string {
	if e.Key == "" {
		return e.Msg
	}
	return fmt.Sprintf("%q: %s", e.Key, e.Msg)
}

var (
	builtinsMu sync.Mutex // guards builtins
	builtins   = map[string]BuiltinFactory{}
)

// RegisterBuiltin makes a built-in available under name. It is called from
// init functions of the files that implement built-ins.
func RegisterBuiltin(name string, f BuiltinFactory) {
	builtinsMu.Lock()
	defer builtinsMu.Unlock()
	if _, dup := builtins[name]; dup {
		panic("stage: built-in registered twice: " + name)
	}
	builtins[name] = f
}

// LookupBuiltin returns the factory of the named built-in.
func LookupBuiltin(name string) (BuiltinFactory, bool) {
	builtinsMu.Lock()
	defer builtinsMu.Unlock()
	f, ok := builtins[name]
	return f, ok
}

// BuiltinNames lists the registered built-ins, sorted.
func BuiltinNames() []string {
	builtinsMu.Lock()
	defer builtinsMu.Unlock()
	names := make([]string, 0, len(builtins))
	for n := range builtins {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Builtin is a stage run by a Filter in this process.
type Builtin struct {
	name, builtin string
	filter        Filter

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
func NewBuiltin(name, builtin string, filter Filter) *Builtin {
	return &Builtin{name: name, builtin: builtin, filter: filter,
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
		res.StderrTail = []byte(err.Error())
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
