package filter

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestSHA256WriteTo(t *testing.T) {
	dir := t.TempDir()
	input := randomBytes(5<<20+17, 1)
	// The directory must exist when the job is validated.
	_, err := buildFilter("sha256", map[string]any{"write_to": "sums/out.sha256"}, dir+"/nope")
	wantParamError(t, err, "write_to", "does not exist")

	os.Mkdir(filepath.Join(dir, "sums"), 0o755)
	// An old digest is replaced, not appended to.
	os.WriteFile(filepath.Join(dir, "sums/out.sha256"), []byte("old\n"), 0o644)
	f := newFilter(t, "sha256", map[string]any{"write_to": "sums/out.sha256"}, dir)
	out, err := runFilter(t, f, bytes.NewReader(input))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, input) {
		t.Fatal("sha256 changed the stream")
	}
	// The digest is staged until the pipeline commits it with the output.
	if got, _ := os.ReadFile(filepath.Join(dir, "sums/out.sha256")); string(got) != "old\n" {
		t.Fatalf("digest written before its commit: %q", got)
	}
	if err := f.(interface{ CommitSidecar() error }).CommitSidecar(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "sums/out.sha256"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != sum(input)+"\n" {
		t.Fatalf("digest file holds %q, want %q", got, sum(input)+"\n")
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "sums"))
	if len(entries) != 1 {
		t.Fatalf("sums/ holds %d entries, want only the digest (temp files left?)", len(entries))
	}
}

func TestSHA256Expect(t *testing.T) {
	input := randomBytes(3<<20, 2)
	f := newFilter(t, "sha256", map[string]any{"expect": sum(input)}, "")
	out, err := runFilter(t, f, bytes.NewReader(input))
	if err != nil {
		t.Fatalf("matching digest: %v", err)
	}
	if !bytes.Equal(out, input) {
		t.Fatal("sha256 changed the stream")
	}
	other := sum([]byte("something else"))
	f = newFilter(t, "sha256", map[string]any{"expect": other}, "")
	_, err = runFilter(t, f, bytes.NewReader(input))
	wantErr(t, err, "sha256 mismatch", sum(input), other)
}

func TestSHA256Params(t *testing.T) {
	_, err := buildFilter("sha256", nil, "")
	wantParamError(t, err, "", "needs write_to")
	_, err = buildFilter("sha256", map[string]any{"write_to": "x", "expect": sum(nil)}, t.TempDir())
	wantParamError(t, err, "expect", "not both")
	_, err = buildFilter("sha256", map[string]any{"expect": "abc"}, "")
	wantParamError(t, err, "expect", "not a SHA-256 digest")
	_, err = buildFilter("sha256", map[string]any{"expect": int64(3)}, "")
	wantParamError(t, err, "expect", "must be a string")
}

func BenchmarkSHA256(b *testing.B) {
	input := randomBytes(64<<20, 3)
	f := newFilter(b, "sha256", map[string]any{"expect": sum(input)}, "")
	b.SetBytes(int64(len(input)))
	for b.Loop() {
		if err := f.Run(b.Context(), bytes.NewReader(input), discard{}); err != nil {
			b.Fatal(err)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestSHA256WriteToThroughDotDot: write_to is resolved as the kernel
// resolves it: "a/../digest" with a a link to deep/a is deep/digest, and
// its directory is checked there (the lexical reading, "digest" beside the
// job, is another place).
func TestSHA256WriteToThroughDotDot(t *testing.T) {
	dir := t.TempDir()
	deep := filepath.Join(dir, "real", "deep")
	os.MkdirAll(filepath.Join(deep, "a"), 0o755)
	os.Symlink(filepath.Join(deep, "a"), filepath.Join(dir, "a"))
	f := newFilter(t, "sha256", map[string]any{"write_to": "a/../digest"}, dir)
	input := []byte("backup\n")
	if _, err := runFilter(t, f, bytes.NewReader(input)); err != nil {
		t.Fatal(err)
	}
	if err := f.(interface{ CommitSidecar() error }).CommitSidecar(); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(deep, "digest")); err != nil || string(got) != sum(input)+"\n" {
		t.Errorf("deep/digest holds %q, %v", got, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "digest")); err == nil {
		t.Error("digest written beside the job: a lexical reading of a/../digest")
	}
	// "b/../sums/x": b leads to deep/b, whose parent has no sums/.
	os.MkdirAll(filepath.Join(deep, "b"), 0o755)
	os.Symlink(filepath.Join(deep, "b"), filepath.Join(dir, "b"))
	os.Mkdir(filepath.Join(dir, "sums"), 0o755)
	_, err := buildFilter("sha256", map[string]any{"write_to": "b/../sums/x"}, dir)
	wantParamError(t, err, "write_to", "does not exist")
}
