package filter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

// needTools fails the test when a tool the interop tests run is missing:
// skipping would hide that nothing was checked.
func needTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed; the built-in interop tests need it: apt-get install -y gnupg zstd", tool)
		}
	}
}

// backupLike returns n deterministic bytes that compress the way a backup
// does: runs of incompressible data between runs of repetitive text.
func backupLike(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([]byte, 0, n)
	line := []byte("2024-05-01T12:00:00Z host backup[4242]: wrote block 0000 of dataset tank/home\n")
	for len(out) < n {
		chunk := 4096 + rng.IntN(64<<10)
		if rng.IntN(2) == 0 {
			b := make([]byte, chunk)
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			out = append(out, b...)
		} else {
			for k := 0; k < chunk; k += len(line) {
				line[40] = byte('0' + rng.IntN(10))
				out = append(out, line...)
			}
		}
	}
	return out[:n]
}

// pieceReader hands out data in reads of at most size bytes (0: as much
// as asked), as a pipe whose writer writes small pieces does, then fails
// with err (io.EOF when nil).
type pieceReader struct {
	data []byte
	size int
	err  error
}

func (r *pieceReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		if r.err == nil {
			return 0, io.EOF
		}
		return 0, r.err
	}
	if r.size > 0 {
		p = p[:min(len(p), r.size)]
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// randomBytes returns n deterministic incompressible bytes.
func randomBytes(n int, seed uint64) []byte {
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 1, 2, 3})
	b := make([]byte, n)
	rng.Read(b)
	return b
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// runFilter runs f between two OS pipes, as a stage runs, feeding it input
// and returning what it wrote and its error.
func runFilter(t testing.TB, f Filter, input io.Reader) ([]byte, error) {
	t.Helper()
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	feedDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(inW, input)
		inW.Close()
		feedDone <- err
	}()
	var out bytes.Buffer
	drainDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(&out, outR)
		outR.Close()
		drainDone <- err
	}()
	ferr := f.Run(context.Background(), inR, outW)
	outW.Close()
	// Like the stage runtime: whatever the filter left unread is discarded
	// so that the feeder ends.
	io.Copy(io.Discard, inR)
	inR.Close()
	if err := <-drainDone; err != nil {
		t.Fatalf("draining filter output: %v", err)
	}
	if err := <-feedDone; err != nil && !errors.Is(err, os.ErrClosed) {
		t.Logf("feeding filter input: %v", err)
	}
	return out.Bytes(), ferr
}

// newFilter builds a built-in through the registry, the way the pipeline
// does, failing the test on a parameter error.
func newFilter(t testing.TB, name string, with map[string]any, baseDir string) Filter {
	t.Helper()
	f, err := buildFilter(name, with, baseDir)
	if err != nil {
		t.Fatalf("%s with %v: %v", name, with, err)
	}
	return f
}

func buildFilter(name string, with map[string]any, baseDir string) (Filter, error) {
	factory, ok := Lookup(name)
	if !ok {
		return nil, errors.New("no built-in " + name)
	}
	if with == nil {
		with = map[string]any{}
	}
	return factory(with, baseDir)
}

// wantErr fails unless err's text contains every part.
func wantErr(t testing.TB, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not contain %q", err, p)
		}
	}
}

// wantParamError fails unless err is a *ParamError about key whose text
// contains msg.
func wantParamError(t testing.TB, err error, key, msg string) {
	t.Helper()
	var pe *ParamError
	if !errors.As(err, &pe) {
		t.Fatalf("got %v (%T), want a *ParamError", err, err)
	}
	if pe.Key != key || !strings.Contains(pe.Msg, msg) {
		t.Fatalf("got ParamError{Key: %q, Msg: %q}, want key %q and a message containing %q", pe.Key, pe.Msg, key, msg)
	}
}

func TestPassphraseFileFirstLine(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ content, want string }{
		{"secret\n", "secret"},
		{"secret\r\n", "secret"},
		{"secret", "secret"},
		{"two words \nsecond line\n", "two words "},
	} {
		path := filepath.Join(dir, "pass")
		if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		p, _ := newWithParams(map[string]any{"passphrase_file": "pass"}, dir, "passphrase_file")
		got, _, _, err := p.passphraseFile("passphrase_file")
		if err != nil || string(got) != tc.want {
			t.Errorf("passphrase of %q = %q, %v; want %q", tc.content, got, err, tc.want)
		}
		if len(p.warnings) != 0 {
			t.Errorf("mode 0600 gave warnings %q", p.warnings)
		}
	}
	path := filepath.Join(dir, "open")
	os.WriteFile(path, []byte("x\n"), 0o644)
	os.Chmod(path, 0o644)
	p, _ := newWithParams(map[string]any{"passphrase_file": path}, dir, "passphrase_file")
	if _, _, _, err := p.passphraseFile("passphrase_file"); err != nil {
		t.Fatal(err)
	}
	if len(p.warnings) != 1 || !strings.Contains(p.warnings[0], "can be read by other users") {
		t.Errorf("mode 0644: warnings %q, want one about other users", p.warnings)
	}

	os.WriteFile(path, []byte("\nsecond\n"), 0o600)
	p, _ = newWithParams(map[string]any{"passphrase_file": path}, dir, "passphrase_file")
	_, _, _, err := p.passphraseFile("passphrase_file")
	wantParamError(t, err, "passphrase_file", "empty passphrase")

	p, _ = newWithParams(map[string]any{"passphrase_file": "missing"}, dir, "passphrase_file")
	_, _, _, err = p.passphraseFile("passphrase_file")
	wantParamError(t, err, "passphrase_file", "no such file")
}

func TestUnknownWithKey(t *testing.T) {
	for _, name := range []string{"zstd-compress", "zstd-decompress", "sha256", "openpgp-encrypt", "openpgp-decrypt"} {
		_, err := buildFilter(name, map[string]any{"requir_signed_by": "x"}, t.TempDir())
		wantParamError(t, err, "requir_signed_by", "unknown key")
	}
}

// TestBuiltinsLeaveNoGoroutines: every built-in's helper goroutines (the
// zstd coder's, the OpenPGP workers and hasher) are gone when Run returns,
// whether it succeeded, met bad input, or lost its output.
func TestBuiltinsLeaveNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	keys := testKeys(t)
	input := backupLike(3<<20, 21)
	sym := map[string]any{"passphrase_file": "symmetric.pass"}
	compressed, err := runFilter(t, newFilter(t, "zstd-compress", map[string]any{"concurrency": int64(2)}, ""), bytes.NewReader(input))
	if err != nil {
		t.Fatal(err)
	}
	encrypted, err := runFilter(t, newFilter(t, "openpgp-encrypt", sym, keys), bytes.NewReader(input))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		with map[string]any
		in   []byte
		own  string // the error when the input is bad: its own, found after the output failed
	}{
		{"zstd-decompress", nil, compressed, ""},
		{"zstd-decompress", nil, compressed[:len(compressed)/2], "unexpected end of stream"},
		{"openpgp-decrypt", sym, encrypted, ""},
		{"openpgp-decrypt", sym, encrypted[:len(encrypted)/2], "truncated message"},
		{"openpgp-encrypt", sym, input, ""},
		{"zstd-compress", map[string]any{"concurrency": int64(1)}, input, ""},
		{"zstd-compress", map[string]any{"concurrency": int64(2)}, input, ""},
	} {
		f := newFilter(t, tc.name, tc.with, keys)
		runFilter(t, f, bytes.NewReader(tc.in))
		// The output fails after the first write: the consumer is gone,
		// and the error says so (the stage runtime reports a broken pipe
		// as a consequence, not a cause), unless the decoder, reading on,
		// finds its input bad.
		// A compressor in frames writes its one frame of these 3 MiB in
		// one write: that one fails.
		left := 1
		if tc.name == "zstd-compress" && tc.with["concurrency"] != int64(1) {
			left = 0
		}
		err := f.Run(t.Context(), bytes.NewReader(tc.in), &failingWriter{left: left})
		switch {
		case tc.own == "" && !errors.Is(err, syscall.EPIPE):
			t.Errorf("%s with its output gone: %v, want an error wrapping EPIPE", tc.name, err)
		case tc.own != "" && (errors.Is(err, syscall.EPIPE) || !strings.Contains(fmt.Sprint(err), tc.own)):
			t.Errorf("%s with its output gone, input cut short: %v, want its own error %q", tc.name, err, tc.own)
		}
	}
}

// failingWriter accepts left writes, then fails like a closed pipe.
type failingWriter struct{ left int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.left == 0 {
		return 0, syscall.EPIPE
	}
	w.left--
	return len(p), nil
}
