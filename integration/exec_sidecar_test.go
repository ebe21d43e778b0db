package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExecSidecarCommittedOnlyWithTheOutput: sha256's write_to digest was
// written when the stage finished, so a run that failed after it (here the
// last stage exits 3 after reading everything) replaced the digest of the
// last good output with the digest of an output that was never made (4-9
// runs of 10 in the report; 10 of 10 here, where sha256 always finishes
// first). The digest is now committed after the output, only on success.
func TestExecSidecarCommittedOnlyWithTheOutput(t *testing.T) {
	dir := t.TempDir()
	in, sum := randomFile(t, dir, "in.bin", 3<<20, 12)
	digest := filepath.Join(dir, "out.sha256")
	out := filepath.Join(dir, "out.bin")
	for _, f := range []string{digest, out} {
		os.WriteFile(f, []byte("old\n"), 0o644)
	}
	failing := writeFile(t, dir, "failing.toml", `
[[stage]]
builtin = "sha256"
[stage.with]
write_to = "out.sha256"
[[stage]]
shell = "cat; exit 3"
`)
	for i := range 10 {
		if res := runPipespool(t, runOpts{}, "exec", failing, "-i", in, "-o", out); res.Code != 1 {
			t.Fatalf("run %d: exit %d, want 1\n%s", i, res.Code, res.Stderr)
		}
		for _, f := range []string{digest, out} {
			if b, _ := os.ReadFile(f); string(b) != "old\n" {
				t.Fatalf("run %d: %s was replaced by a failed run: %.80q", i, filepath.Base(f), b)
			}
		}
	}
	good := writeFile(t, dir, "good.toml", `
[[stage]]
builtin = "sha256"
[stage.with]
write_to = "out.sha256"
[[stage]]
command = ["cat"]
`)
	if res := runPipespool(t, runOpts{}, "exec", good, "-i", in, "-o", out); res.Code != 0 {
		t.Fatalf("good run: exit %d\n%s", res.Code, res.Stderr)
	}
	b, _ := os.ReadFile(digest)
	if strings.TrimSpace(string(b)) != sum || fileSHA256(t, out) != sum {
		t.Fatalf("after a good run the digest is %q, the output %s; want both %s", b, fileSHA256(t, out), sum)
	}
}
