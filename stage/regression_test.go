package stage

import (
	"bytes"
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
