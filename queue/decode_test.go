package queue

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipespool/pipespool/filter"
)

func TestParseDecodersOpenPGPNeedsAKey(t *testing.T) {
	if _, err := ParseDecoders([]string{"openpgp"}, nil); err == nil || !strings.Contains(err.Error(), "[decoder.openpgp]") {
		t.Fatalf("no key source: err = %v", err)
	}
	keyErr := errors.New("job.toml: no [decoder.openpgp] table")
	if _, err := ParseDecoders([]string{"zstd", "openpgp"}, func() (OpenPGP, error) { return OpenPGP{}, keyErr }); !errors.Is(err, keyErr) {
		t.Fatalf("the key source's error is not returned: %v", err)
	}
	calls := 0
	d, err := ParseDecoders([]string{"openpgp", "zstd", "openpgp"}, func() (OpenPGP, error) {
		calls++
		return OpenPGP{Filter: filter.Func(func(ctx context.Context, r io.Reader, w io.Writer) error { _, err := io.Copy(w, r); return err })}, nil
	})
	if err != nil || calls != 1 || d.String() != "builtin:openpgp | builtin:zstd | builtin:openpgp" {
		t.Fatalf("decoder %v, err %v, key loaded %d times", d, err, calls)
	}
	// Without "openpgp" the key source is never asked.
	if _, err := ParseDecoders([]string{"zstd", "cat"}, func() (OpenPGP, error) { t.Fatal("asked for a key"); return OpenPGP{}, nil }); err != nil {
		t.Fatal(err)
	}
}

// TestScanNamesTheDecodersFailure: a job file the decoder cannot decode (a
// wrong key) is skipped, and the reason given is the decoder's, not "short
// header".
func TestScanNamesTheDecodersFailure(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, false); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "jobs", "fspl-x.fspl"), []byte("ciphertext"), 0o644); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	q := Open(dir, slog.New(slog.NewTextHandler(&log, nil)))
	d, err := ParseDecoders([]string{"openpgp"}, func() (OpenPGP, error) {
		return OpenPGP{Filter: filter.Func(func(ctx context.Context, r io.Reader, w io.Writer) error {
			return errors.New("openpgp: no secret key for this message")
		})}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := q.Scan(context.Background(), d)
	if err != nil || len(jobs) != 0 {
		t.Fatalf("jobs %v, err %v", jobs, err)
	}
	if !strings.Contains(log.String(), "fspl-x.fspl") || !strings.Contains(log.String(), "no secret key for this message") {
		t.Errorf("log does not name the file and the decoder's reason:\n%s", log.String())
	}
}
