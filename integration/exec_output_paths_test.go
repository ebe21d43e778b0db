package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestExecOutputThroughSymlink: an output path that is a symbolic link is
// written through, atomically: the link stays, its target gets the stream,
// and the target keeps its mode and owner. It once replaced the link with a
// regular file and left the target stale.
func TestExecOutputThroughSymlink(t *testing.T) {
	dir := t.TempDir()
	in, sum := randomFile(t, dir, "in.bin", 1<<20, 3)
	os.Mkdir(filepath.Join(dir, "store"), 0o755)
	target := writeFile(t, dir, "store/backup.img", "previous backup")
	os.Chmod(target, 0o640)
	if os.Geteuid() == 0 {
		os.Chown(target, 4321, 4322)
	}
	link := filepath.Join(dir, "current")
	if err := os.Symlink("store/backup.img", link); err != nil {
		t.Fatal(err)
	}
	job := writeFile(t, dir, "job.toml", "[[stage]]\ncommand = [\"cat\"]\n")
	res := runPipespool(t, runOpts{}, "exec", job, "-i", in, "-o", link)
	if res.Code != 0 {
		t.Fatalf("exit %d: %s", res.Code, res.Stderr)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v %v", fi, err)
	}
	if got := fileSHA256(t, target); got != sum {
		t.Fatalf("target sha256 %s, want %s (stale?)", got, sum)
	}
	fi, _ := os.Stat(target)
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("target mode %v, want 0640 kept", fi.Mode().Perm())
	}
	if st := fi.Sys().(*syscall.Stat_t); os.Geteuid() == 0 && (st.Uid != 4321 || st.Gid != 4322) {
		t.Errorf("target owner %d:%d, want 4321:4322 kept", st.Uid, st.Gid)
	}
	for _, d := range []string{dir, filepath.Join(dir, "store")} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".tmp") {
				t.Errorf("temporary file left: %s", e.Name())
			}
		}
	}
}

// TestExecStaleTempRemovedByNextRun: the temporary file of a run that was
// killed (its name, no process holding it) is removed by the next run of
// the same output; another output's temporary file is left alone.
func TestExecStaleTempRemovedByNextRun(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.bin")
	stale := writeFile(t, dir, ".out.bin.pipespool-0123456789ab.tmp", "half of a killed run")
	other := writeFile(t, dir, ".other.bin.pipespool-0123456789ab.tmp", "not ours")
	job := writeFile(t, dir, "job.toml", "[input]\npath = \"job.toml\"\n[[stage]]\ncommand = [\"cat\"]\n")
	if res := runPipespool(t, runOpts{}, "exec", job, "-o", out); res.Code != 0 {
		t.Fatalf("exit %d: %s", res.Code, res.Stderr)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale temporary file left: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("another output's temporary file removed: %v", err)
	}
}

// TestExecOutputPlantedInASharedDirectory: in a sticky world-writable
// directory (/tmp), a FIFO or a symlink named like the output and made by
// another user is refused before anything runs (exit 2): the FIFO's
// reader would have received the decrypted stream, the link would have
// made pipespool overwrite a file of the attacker's choosing. Root is
// needed to make files owned by another user (CI runs as root).
func TestExecOutputPlantedInASharedDirectory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create files owned by another user (CI runs as root)")
	}
	shared := t.TempDir()
	if err := os.Chmod(shared, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	const other = 54321
	victim := writeFile(t, t.TempDir(), "victim", "keep")
	fifo := filepath.Join(shared, "restore.img")
	if err := syscall.Mkfifo(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chown(fifo, other, other)
	link := filepath.Join(shared, "restore2.img")
	os.Symlink(victim, link)
	os.Lchown(link, other, other)
	dir := t.TempDir()
	in := writeFile(t, dir, "in.bin", "secret plaintext\n")
	job := writeFile(t, dir, "job.toml", "[[stage]]\ncommand = [\"cat\"]\n")
	for _, out := range []string{fifo, link} {
		res := runPipespool(t, runOpts{Timeout: 20 * time.Second}, "exec", job, "-i", in, "-o", out)
		if res.Code != 2 || !strings.Contains(string(res.Stderr), "shared directory") {
			t.Errorf("-o %s: exit %d, stderr %s; want 2 and a refusal", out, res.Code, res.Stderr)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Errorf("the link's target was written: %q", b)
	}
}
