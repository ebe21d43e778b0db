package pipeline

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestJobPathsThroughDotDot: a job read as "a/../job.toml", with a a link,
// is the job beside where a leads, and its relative paths are relative to
// that directory; "-o a/../digest" is checked against the files the job
// writes where the kernel puts it, not where a lexical clean does.
func TestJobPathsThroughDotDot(t *testing.T) {
	root := t.TempDir()
	deep := filepath.Join(root, "real", "deep")
	os.MkdirAll(filepath.Join(deep, "a"), 0o755)
	os.Symlink(filepath.Join(deep, "a"), filepath.Join(root, "a"))
	job := "[[stage]]\nname = \"sum\"\nbuiltin = \"sha256\"\n[stage.with]\nwrite_to = \"digest\"\n[output]\npath = \"out\"\n"
	if err := os.WriteFile(filepath.Join(deep, "job.toml"), []byte(job), 0o644); err != nil {
		t.Fatal(err)
	}
	j, err := Load(root + "/a/../job.toml")
	if err != nil {
		t.Fatal(err)
	}
	if j.Dir != deep {
		t.Errorf("job.Dir = %s, want %s (the directory the kernel read it from)", j.Dir, deep)
	}
	t.Chdir(root)
	err = checkWrittenFiles(j, Options{OutputPath: "a/../digest"})
	var he *HopFlagError
	if !errors.As(err, &he) {
		t.Errorf("-o a/../digest, which is write_to's file for the kernel: %v, want a clash", err)
	}
	if err := checkWrittenFiles(j, Options{OutputPath: "digest"}); err != nil {
		t.Errorf("-o digest (another file, in %s): %v", root, err)
	}
}
