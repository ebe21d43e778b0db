package integration

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestRootCauseAcrossDecoderChain: a bit flipped in the middle of an
// OpenPGP-encrypted zstd stream, restored with an external `gpg -d | zstd
// -d`. zstd finds the garbage first and exits 1, while gpg, which checks
// the message's integrity (MDC) at its end, had not said yet that it was
// modified; zstd's failure cut gpg's output with EPIPE and zstd was blamed
// (3 of 3 in the report). Now the link into zstd is drained while gpg runs,
// gpg finishes and fails ("manipulated"), and gpg is the root cause, every
// time. And an unmodified message whose content zstd rejects for its own
// reason (not a zstd stream) names zstd.
func TestRootCauseAcrossDecoderChain(t *testing.T) {
	needTools(t, "gpg", "zstd")
	keys := newGPGHome(t)
	dir := t.TempDir()
	// Log-like text (38 MB): its zstd frame (12 MiB) is mostly
	// sequences, where a garbled cipher block is found where it lands,
	// mid-stream (in literals or a stored block only the frame's checksum
	// at the end would find it); and far larger than the pipes, so zstd
	// fails while gpg still has megabytes to decrypt.
	plain := filepath.Join(dir, "plain.txt")
	writeLogText(t, plain, 1500000)
	// --compress-algo none: the zstd stream is what is encrypted, as backups
	// do it (gpg would find a flip in its own zlib layer first).
	enc := fmt.Sprintf("gpg -q --batch --trust-model always --compress-algo none --encrypt --recipient-file %s", filepath.Join(keys, "recipient.pub.asc"))
	good := filepath.Join(dir, "good.zst.gpg")
	must(t, dir, nil, nil, "sh", "-c", fmt.Sprintf("zstd -q -c %s | %s > %s", plain, enc, good))
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x10
	bad := filepath.Join(dir, "bad.zst.gpg")
	os.WriteFile(bad, data, 0o644)
	notZstd := filepath.Join(dir, "notzstd.gpg")
	must(t, dir, nil, nil, "sh", "-c", fmt.Sprintf("%s < %s > %s", enc, plain, notZstd))

	job := writeFile(t, dir, "restore.toml", fmt.Sprintf(`
[[stage]]
name = "gpg"
command = ["gpg", "-q", "--batch", "--pinentry-mode", "loopback", "--passphrase-file", %q, "-d"]
[[stage]]
name = "zstd"
command = ["zstd", "-q", "-d"]
`, filepath.Join(keys, "recipient.pass")))
	report := filepath.Join(dir, "report.json")
	runs := 20
	if testing.Short() {
		runs = 5
	}
	for i := range runs {
		res := runPipespool(t, runOpts{}, "exec", job, "-i", bad, "-o", "none", "--report", report)
		rep := readReport(t, report)
		if res.Code != 1 || rep.RootCause != "gpg" {
			t.Fatalf("run %d: exit %d, root cause %q, want 1 and gpg\nstderr: %s", i, res.Code, rep.RootCause, res.Stderr)
		}
	}
	// The same with the built-in decompressor after the external gpg.
	jobBuiltin := writeFile(t, dir, "restore-builtin.toml", fmt.Sprintf(`
[[stage]]
name = "gpg"
command = ["gpg", "-q", "--batch", "--pinentry-mode", "loopback", "--passphrase-file", %q, "-d"]
[[stage]]
name = "zstd"
builtin = "zstd-decompress"
`, filepath.Join(keys, "recipient.pass")))
	for i := range runs / 4 {
		res := runPipespool(t, runOpts{}, "exec", jobBuiltin, "-i", bad, "-o", "none", "--report", report)
		if rep := readReport(t, report); res.Code != 1 || rep.RootCause != "gpg" {
			t.Fatalf("built-in zstd, run %d: exit %d, root cause %q, want 1 and gpg\nstderr: %s", i, res.Code, rep.RootCause, res.Stderr)
		}
	}
	res := runPipespool(t, runOpts{}, "exec", job, "-i", notZstd, "-o", "none", "--report", report)
	if rep := readReport(t, report); res.Code != 1 || rep.RootCause != "zstd" || rep.Stages[0].Status != "ok" {
		t.Fatalf("not a zstd stream: exit %d, root cause %q, gpg %s, want 1, zstd, ok\nstderr: %s", res.Code, rep.RootCause, rep.Stages[0].Status, res.Stderr)
	}
	if res := runPipespool(t, runOpts{}, "exec", job, "-i", good, "-o", "none"); res.Code != 0 {
		t.Fatalf("unmodified: exit %d\n%s", res.Code, res.Stderr)
	}
}

// writeLogText writes n lines of deterministic log-like text to path.
func writeLogText(t *testing.T, path string, n int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	r := rand.New(rand.NewPCG(5, 7))
	words := []string{"alpha", "beta", "gamma", "delta", "tank", "pool", "snap", "zfs", "backup", "restore", "night", "cron"}
	for i := range n {
		fmt.Fprintf(w, "%d %s %s %d\n", i, words[r.IntN(len(words))], words[r.IntN(len(words))], r.IntN(1000000))
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
