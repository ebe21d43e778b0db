package stage

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/pipespool/pipespool/filter"
)

// TestBuiltinStderrTailIsBounded: a built-in's error text is its stderr,
// and its tail is kept like a process's, at most StderrTailSize bytes.
func TestBuiltinStderrTailIsBounded(t *testing.T) {
	long := strings.Repeat("0x0123456789ABCDEF, ", 50000) + "the end"
	b := NewBuiltin("decrypt", "openpgp-decrypt", filter.Func(func(ctx context.Context, r io.Reader, w io.Writer) error {
		io.Copy(io.Discard, r)
		return errors.New(long)
	}))
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	inW.Close()
	defer outR.Close()
	if err := b.Start(inR, outW); err != nil {
		t.Fatal(err)
	}
	res := b.Wait()
	if len(res.StderrTail) > StderrTailSize || !strings.HasSuffix(string(res.StderrTail), "the end") {
		t.Fatalf("stderr tail of %d bytes ending %q, want at most %d ending with the error's end", len(res.StderrTail), res.StderrTail[max(0, len(res.StderrTail)-20):], StderrTailSize)
	}
	if res.Err == nil || res.Err.Error() != long {
		t.Fatal("the error itself was changed")
	}
}
