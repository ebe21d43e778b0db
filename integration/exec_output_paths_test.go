package integration

import (
	"fmt"
	"os"
	"os/exec"
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

// TestExecStaleTempHeldAtTheStart: a killed run's temporary file that is
// still held when the next run starts (by a child the killed run was
// forking, for a moment; by a process it left running, for as long as
// that runs) is removed at the end of that run if it is free by then, and
// named with the process holding it in a warning if not (TORTURE_SEED=20261201
// runs 4637 and 5989 left it behind the run after a SIGKILL).
func TestExecStaleTempHeldAtTheStart(t *testing.T) {
	needTools(t, "flock")
	for _, freed := range []bool{true, false} {
		t.Run(fmt.Sprintf("freed=%v", freed), func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "out.bin")
			stale := writeFile(t, dir, ".out.bin.pipespool-0123456789ab.tmp", "half of a killed run")
			// The holder: flock(1) takes the file's lock and keeps it
			// while its command runs.
			holder := exec.Command("flock", "-o", stale, "sleep", "300")
			if err := holder.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				holder.Process.Kill()
				holder.Wait()
			}()
			waitLocked(t, stale)
			script := "cat"
			if freed {
				// The holder ends while the run goes on; the stage
				// ends only once the lock is free.
				script = fmt.Sprintf("cat; kill %d; flock %s true", holder.Process.Pid, stale)
			}
			job := writeFile(t, dir, "job.toml", fmt.Sprintf("[input]\npath = \"job.toml\"\n[[stage]]\nshell = %q\n", script))
			res := runPipespool(t, runOpts{}, "exec", job, "-o", out)
			if res.Code != 0 {
				t.Fatalf("exit %d: %s", res.Code, res.Stderr)
			}
			_, err := os.Stat(stale)
			if freed {
				if !os.IsNotExist(err) {
					t.Errorf("stale temporary file left once free: %v\nstderr: %s", err, res.Stderr)
				}
				return
			}
			if err != nil {
				t.Errorf("stale temporary file held by a process removed: %v", err)
			}
			for _, want := range []string{stale, fmt.Sprintf("(pid %d)", holder.Process.Pid)} {
				if !strings.Contains(string(res.Stderr), want) {
					t.Errorf("stderr lacks %q:\n%s", want, res.Stderr)
				}
			}
		})
	}
}

// waitLocked waits until another process holds path's flock.
func waitLocked(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == syscall.EWOULDBLOCK {
			return
		}
		if err == nil {
			syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		}
		if time.Now().After(end) {
			t.Fatalf("%s never locked: %v", path, err)
		}
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
