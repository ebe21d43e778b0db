package filter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/pipespool/pipespool/fsutil"
)

func init() {
	Register("sha256", newSHA256)
}

// sha256Filter passes its input through unchanged and checks or records
// its SHA-256 digest.
type sha256Filter struct {
	writeTo string // absolute or baseDir-relative path to receive the digest
	expect  []byte // the digest the stream must have

	mu     sync.Mutex // guards staged
	staged []byte     // the last run's digest line for writeTo, not yet committed
}

// newSHA256 validates write_to (a file to receive the hex digest and a
// newline, replaced atomically) or expect (a hex digest to compare with).
// One of them is required: a checksum nobody looks at is a mistake.
func newSHA256(with map[string]any, baseDir string) (Filter, error) {
	p, err := newWithParams(with, baseDir, "write_to", "expect")
	if err != nil {
		return nil, err
	}
	f := &sha256Filter{}
	writeTo, hasWrite, err := p.str("write_to")
	if err != nil {
		return nil, err
	}
	expect, hasExpect, err := p.str("expect")
	if err != nil {
		return nil, err
	}
	switch {
	case hasWrite && hasExpect:
		return nil, &ParamError{Key: "expect", Msg: "give either write_to or expect, not both"}
	case !hasWrite && !hasExpect:
		return nil, &ParamError{Msg: `sha256 needs write_to (a file to receive the digest) or expect (the hex digest the stream must have)`}
	case hasWrite:
		if writeTo == "" {
			return nil, &ParamError{Key: "write_to", Msg: "must name a file, not be empty"}
		}
		f.writeTo = p.resolve(writeTo)
		dir := fsutil.DirAsKernel(f.writeTo)
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return nil, &ParamError{Key: "write_to", Msg: fmt.Sprintf("directory %s does not exist", dir)}
		}
	default:
		d, err := hex.DecodeString(strings.TrimSpace(expect))
		if err != nil || len(d) != sha256.Size {
			return nil, &ParamError{Key: "expect", Msg: fmt.Sprintf("%q is not a SHA-256 digest (64 hex digits)", expect)}
		}
		f.expect = d
	}
	return f, nil
}

// Run implements Filter.
func (f *sha256Filter) Run(ctx context.Context, r io.Reader, w io.Writer) error {
	in, out := &ioSide{ctx: ctx, r: r}, &ioSide{ctx: ctx, w: w}
	h := sha256.New()
	buf := make([]byte, copyBufSize)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			h.Write(buf[:n])
			if _, werr := out.Write(buf[:n]); werr != nil {
				return fmt.Errorf("writing output: %w", werr)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading input: %w", err)
		}
	}
	return f.finish(h)
}

func (f *sha256Filter) finish(h hash.Hash) error {
	sum := h.Sum(nil)
	if f.expect != nil {
		if string(sum) != string(f.expect) {
			return fmt.Errorf("sha256 mismatch: the stream's digest is %x, expected %x", sum, f.expect)
		}
		return nil
	}
	// Staged, not written: the digest belongs beside an output that the
	// run may still fail to make (CommitSidecar).
	f.mu.Lock()
	f.staged = []byte(hex.EncodeToString(sum) + "\n")
	f.mu.Unlock()
	return nil
}

// CommitSidecar writes the digest staged by the last run to write_to,
// atomically. The pipeline calls it after the run's output was committed,
// only when the run succeeded; a run that did not see the stream's end
// staged nothing, and nothing is written.
func (f *sha256Filter) CommitSidecar() error {
	f.mu.Lock()
	staged := f.staged
	f.staged = nil
	f.mu.Unlock()
	if staged == nil || f.writeTo == "" {
		return nil
	}
	if err := fsutil.WriteFileAtomic(f.writeTo, staged, 0o644); err != nil {
		return fmt.Errorf("writing its digest: %w", err)
	}
	return nil
}

// SidecarPath is the file CommitSidecar writes (write_to), "" for none:
// the pipeline checks that no output and no other built-in writes it.
func (f *sha256Filter) SidecarPath() string { return f.writeTo }

// DiscardSidecar drops the staged digest: the run failed.
func (f *sha256Filter) DiscardSidecar() {
	f.mu.Lock()
	f.staged = nil
	f.mu.Unlock()
}
