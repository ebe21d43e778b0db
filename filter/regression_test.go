package filter

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// TestRegressionZstdEmptyInputRoundTrip: found by the torture harness
// (TORTURE_SEED=2 runs 128 and 158: an empty stream through zstd-compress
// -> zstd-decompress failed with "empty input: not a zstd frame").
// zstd-compress wrote 0 bytes for an empty input; it now writes an empty
// frame, as the zstd CLI does, which both decoders accept.
func TestRegressionZstdEmptyInputRoundTrip(t *testing.T) {
	compressed, err := runFilter(t, newFilter(t, "zstd-compress", map[string]any{}, ""), bytes.NewReader(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(compressed) == 0 {
		t.Fatal("zstd-compress wrote nothing for an empty input")
	}
	out, err := runFilter(t, newFilter(t, "zstd-decompress", map[string]any{}, ""), bytes.NewReader(compressed))
	if err != nil || len(out) != 0 {
		t.Fatalf("zstd-decompress: %d bytes, %v; want 0 bytes, no error", len(out), err)
	}
	if got := zstdCLI(t, compressed, "-d", "-c"); len(got) != 0 {
		t.Fatalf("zstd -d: %d bytes, want 0", len(got))
	}
}

// failingReader yields n blocks of data, then fails.
type failingReader struct{ blocks int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.blocks == 0 {
		return 0, errors.New("input gone")
	}
	r.blocks--
	for i := range p {
		p[i] = byte(i*7 + r.blocks)
	}
	return len(p), nil
}

// TestRegressionZstdCompressInputAndOutputFailTogether: found by the
// in-process torture under the race detector (TORTURE_SEED=
// 1795458936807107925): when a stopped stage's input and output failed at
// once, klauspost's Encoder.ReadFrom stored the read error while a block
// goroutine stored the write error. The filter no longer uses ReadFrom;
// under -race this test ran into that race, and it must end with an error
// and no goroutine of the encoder left (goleak in TestMain).
func TestRegressionZstdCompressInputAndOutputFailTogether(t *testing.T) {
	f, err := newZstdCompress(map[string]any{"concurrency": int64(2)}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		err := f.Run(context.Background(), &failingReader{blocks: 3 + i%5}, &failingWriter{left: i % 3})
		if err == nil {
			t.Fatalf("trial %d: no error though input and output failed", i)
		}
	}
}
