package filter

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/pipespool/pipespool/fsutil"
)

// copyBufSize is the buffer used between io layers in the built-ins. Pipes
// pipespool creates are asked for 1 MiB (pipe_size); a read of 256 KiB takes
// what a pipe usually holds in one syscall without making the working set
// of a built-in larger than the L2 cache of common CPUs.
const copyBufSize = 256 << 10

// withParams reads a built-in's [stage.with] table. Every accessor marks its
// key as known; unknown reports the keys nobody asked for.
type withParams struct {
	m        map[string]any
	baseDir  string
	allowed  map[string]bool
	warnings []string
}

func newWithParams(with map[string]any, baseDir string, allowed ...string) (*withParams, error) {
	p := &withParams{m: with, baseDir: baseDir, allowed: map[string]bool{}}
	for _, k := range allowed {
		p.allowed[k] = true
	}
	var unknown []string
	for k := range with {
		if !p.allowed[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		known := append([]string(nil), allowed...)
		sort.Strings(known)
		return nil, &ParamError{Key: unknown[0],
			Msg: fmt.Sprintf("unknown key (known keys: %s)", strings.Join(known, ", "))}
	}
	return p, nil
}

func (p *withParams) has(key string) bool {
	_, ok := p.m[key]
	return ok
}

// typeName describes a decoded TOML value for an error message.
func typeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64, int, uint64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	default:
		return fmt.Sprintf("%T", v)
	}
}

func (p *withParams) str(key string) (string, bool, error) {
	v, ok := p.m[key]
	if !ok {
		return "", false, nil
	}
	s, ok := v.(string)
	if !ok {
		return "", false, &ParamError{Key: key, Msg: "must be a string, not " + typeName(v)}
	}
	return s, true, nil
}

func (p *withParams) boolean(key string) (bool, bool, error) {
	v, ok := p.m[key]
	if !ok {
		return false, false, nil
	}
	b, ok := v.(bool)
	if !ok {
		return false, false, &ParamError{Key: key, Msg: "must be true or false, not " + typeName(v)}
	}
	return b, true, nil
}

// integer accepts the int64 go-toml decodes integers to (and int, for
// callers building the table in Go).
func (p *withParams) integer(key string) (int64, bool, error) {
	v, ok := p.m[key]
	if !ok {
		return 0, false, nil
	}
	switch n := v.(type) {
	case int64:
		return n, true, nil
	case int:
		return int64(n), true, nil
	}
	return 0, false, &ParamError{Key: key, Msg: "must be an integer, not " + typeName(v)}
}

// strings accepts an array of strings, or a single string as an array of one.
func (p *withParams) strings(key string) ([]string, bool, error) {
	v, ok := p.m[key]
	if !ok {
		return nil, false, nil
	}
	switch a := v.(type) {
	case string:
		return []string{a}, true, nil
	case []string:
		return a, true, nil
	case []any:
		out := make([]string, 0, len(a))
		for i, e := range a {
			s, ok := e.(string)
			if !ok {
				return nil, false, &ParamError{Key: key,
					Msg: fmt.Sprintf("element %d must be a string, not %s", i+1, typeName(e))}
			}
			out = append(out, s)
		}
		return out, true, nil
	}
	return nil, false, &ParamError{Key: key, Msg: "must be an array of strings, not " + typeName(v)}
}

// resolve makes a file name from the job file absolute: relative names are
// relative to the job file's directory, not to pipespool's working
// directory, so that a job behaves the same from cron and from a shell.
func (p *withParams) resolve(name string) string {
	if filepath.IsAbs(name) || p.baseDir == "" {
		return name
	}
	// Not filepath.Join: "sub/../key" is where the kernel finds it when
	// sub is a link, not "key" (fsutil.JoinAsKernel).
	return fsutil.JoinAsKernel(p.baseDir, name)
}

// readFile reads a (small) key or passphrase file named by key. Whoever
// can change such a file decides what pipespool decrypts, signs or trusts,
// so, as ssh does with its keys, a file another user can write is refused:
// one writable by others (mode o+w), or owned by another user than the one
// running pipespool and root. A group-writable file is accepted with a
// warning (a backup group may share it). secret says the file holds a
// secret: one that other users can read is accepted with a warning, where
// ssh would refuse it.
func (p *withParams) readFile(key, name string, secret bool) ([]byte, string, error) {
	if name == "" {
		return nil, "", &ParamError{Key: key, Msg: "must name a file, not be empty"}
	}
	path := p.resolve(name)
	f, err := os.Open(path)
	if err != nil {
		return nil, path, &ParamError{Key: key, Msg: fmt.Sprintf("cannot read %s: %v", path, unwrapPathError(err))}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, path, &ParamError{Key: key, Msg: fmt.Sprintf("cannot stat %s: %v", path, err)}
	}
	if !fi.Mode().IsRegular() {
		return nil, path, &ParamError{Key: key, Msg: fmt.Sprintf("%s is not a regular file", path)}
	}
	perm := fi.Mode().Perm()
	if perm&0o002 != 0 {
		return nil, path, &ParamError{Key: key, Msg: fmt.Sprintf("%s can be changed by any user (mode %04o): refused, anyone could put their key or passphrase there; chmod o-w it", path, perm)}
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return nil, path, &ParamError{Key: key, Msg: fmt.Sprintf("%s is owned by another user (uid %d) than the one running pipespool (uid %d): refused, that user could change it; chown it to this user or root", path, st.Uid, os.Geteuid())}
	}
	// Key files are small; the limit keeps a mistaken path (a disk image)
	// from being read into memory.
	const maxKeyFile = 16 << 20
	if fi.Size() > maxKeyFile {
		return nil, path, &ParamError{Key: key, Msg: fmt.Sprintf("%s is too large (%d bytes) for a key or passphrase file", path, fi.Size())}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile))
	if err != nil {
		return nil, path, &ParamError{Key: key, Msg: fmt.Sprintf("cannot read %s: %v", path, err)}
	}
	if perm&0o020 != 0 {
		p.warnings = append(p.warnings, fmt.Sprintf(
			"%s (%s) can be changed by the users of its group (mode %04o); chmod g-w it", path, key, perm))
	}
	if secret && perm&0o044 != 0 {
		p.warnings = append(p.warnings, fmt.Sprintf(
			"%s (%s) can be read by other users (mode %04o); chmod 600 it", path, key, perm))
	}
	return data, path, nil
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// passphraseFile reads the passphrase from the file named by key: its
// first line, without the line ending (\n or \r\n), as gpg
// --passphrase-file does.
func (p *withParams) passphraseFile(key string) (pass []byte, path string, ok bool, err error) {
	name, ok, err := p.str(key)
	if err != nil || !ok {
		return nil, "", ok, err
	}
	data, path, err := p.readFile(key, name, true)
	if err != nil {
		return nil, path, true, err
	}
	pass = firstLine(data)
	if len(pass) == 0 {
		return nil, path, true, &ParamError{Key: key, Msg: fmt.Sprintf("%s holds an empty passphrase (the passphrase is the file's first line)", path)}
	}
	return pass, path, true, nil
}

func firstLine(data []byte) []byte {
	line := data
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		line = data[:i]
	}
	line = bytes.TrimSuffix(line, []byte("\r"))
	return append([]byte(nil), line...)
}

// newBufReader returns a reader with a buffer of copyBufSize, so that the
// small reads of a decoder's header parsing do not each become a syscall.
func newBufReader(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, copyBufSize) }

// ioSide wraps a built-in's input (r) or output (w). It stops with ctx's
// error once ctx is cancelled, so a stopped stage ends at its next read or
// write even when its file is not closed under it, and it remembers the
// first error of the file itself: a decoder reports a failed read as
// "corrupt input", but the user needs to hear that the pipe broke.
type ioSide struct {
	ctx context.Context
	r   io.Reader
	w   io.Writer
	err error // first error other than io.EOF from r or w, or ctx's
}

func (s *ioSide) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		s.remember(err)
		return 0, err
	}
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.remember(err)
	}
	return n, err
}

func (s *ioSide) Write(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		s.remember(err)
		return 0, err
	}
	n, err := s.w.Write(p)
	if err != nil {
		s.remember(err)
	}
	return n, err
}

func (s *ioSide) remember(err error) {
	if s.err == nil {
		s.err = err
	}
}

// sideError prefers an error of the input or the output over err, the
// decoder's view of it: "writing output: broken pipe" tells the user where
// to look, and keeps errors.Is(err, syscall.EPIPE) working for the caller.
func sideError(in, out *ioSide, err error) error {
	switch {
	case out.err != nil:
		return fmt.Errorf("writing output: %w", out.err)
	case in.err != nil:
		return fmt.Errorf("reading input: %w", in.err)
	}
	return err
}

// drainingWriter passes writes to w until one fails, then discards them
// all and says they succeeded. A decoder whose consumer is gone (EPIPE:
// the stage after it failed, maybe on the corrupt bytes it was handed)
// still reads its input to the end and checks its integrity: a corrupt
// stream is then the decoder's own failure, named as the root cause,
// instead of a broken pipe. The cost is reading and decoding the rest of
// the input, what the stream would have cost anyway; stopping the stage
// (cancelling its context) still ends it at its next read.
type drainingWriter struct {
	w   io.Writer
	err error // the first error of w; writes since were discarded
}

func (d *drainingWriter) Write(p []byte) (int, error) {
	if d.err == nil {
		if _, err := d.w.Write(p); err != nil {
			d.err = err
		}
	}
	return len(p), nil
}

// decoderResult is what a decoder that wrote through sink reports, given
// err, its own verdict on the input.
func decoderResult(in *ioSide, sink *drainingWriter, err error) error {
	switch {
	case in.err != nil && sink.err != nil:
		// The output failed first, and checking the rest of the input was
		// cut short (pipespool stopped the stage): the output's failure
		// stands.
		return fmt.Errorf("writing output: %w", sink.err)
	case in.err != nil:
		// A decoder sees a failed read as a broken stream; say what broke.
		return fmt.Errorf("reading input: %w", in.err)
	case err != nil:
		// The stream's own failure, even when found after the output
		// failed.
		return err
	case sink.err != nil:
		return fmt.Errorf("writing output: %w", sink.err)
	}
	return nil
}
