// Package filter holds the transformations of pipespool's built-in stages
// (zstd-compress, zstd-decompress, sha256, openpgp-encrypt,
// openpgp-decrypt), the registry that names them, and the parsing of their
// [stage.with] tables. A filter only reads and writes streams; running it
// as a stage of a pipeline (its pipes, counters, Stop) is package stage's
// job, and a queue decoder runs the same filters.
package filter

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
)

// Filter is the transformation of a built-in stage. Run reads r to its end
// and writes the result to w; it returns nil only when the whole input was
// consumed and the whole output written. It must stop promptly when ctx is
// cancelled or when r or w return an error. Run must keep its memory flat
// in the length of the stream.
type Filter interface {
	Run(ctx context.Context, r io.Reader, w io.Writer) error
}

// Func adapts a function to Filter.
type Func func(ctx context.Context, r io.Reader, w io.Writer) error

// Run calls f.
func (f Func) Run(ctx context.Context, r io.Reader, w io.Writer) error { return f(ctx, r, w) }

// Factory validates a built-in's [stage.with] table and returns its
// filter. Relative file names in with are relative to baseDir (the job
// file's directory). A bad key is reported as a *ParamError.
type Factory func(with map[string]any, baseDir string) (Filter, error)

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

// ConfigWarner is implemented by the filters of built-ins whose
// configuration is accepted but deserves a word to the user: a secret key
// or passphrase file that other users can read, for instance. The pipeline
// logs each warning once, after the job file validated, naming the stage.
type ConfigWarner interface {
	// Warnings returns the messages, each a full sentence without the
	// stage name; nil when there is nothing to say.
	Warnings() []string
}

var (
	registryMu sync.Mutex // guards registry
	registry   = map[string]Factory{}
)

// Register makes a built-in available under name. It is called from init
// functions of the files that implement built-ins.
func Register(name string, f Factory) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("filter: built-in registered twice: " + name)
	}
	registry[name] = f
}

// Lookup returns the factory of the named built-in.
func Lookup(name string) (Factory, bool) {
	registryMu.Lock()
	defer registryMu.Unlock()
	f, ok := registry[name]
	return f, ok
}

// Names lists the registered built-ins, sorted.
func Names() []string {
	registryMu.Lock()
	defer registryMu.Unlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
