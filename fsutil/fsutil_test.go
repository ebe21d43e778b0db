package fsutil

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// quick runs f and fails the test if it takes more than a few seconds: the
// opens tested here must never wait for a FIFO's peer.
func quick(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s blocked", what)
	}
}

func mkfifo(t *testing.T, path string) {
	t.Helper()
	if err := unix.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCreateExclusiveRefusesExistingAndLinks(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := CreateExclusive(victim, os.O_WRONLY, 0o644); !errors.Is(err, os.ErrExist) {
		t.Fatalf("existing file: err %v", err)
	}
	dangling := filepath.Join(dir, "dangling")
	os.Symlink(filepath.Join(dir, "made-through-link"), dangling)
	if _, err := CreateExclusive(dangling, os.O_WRONLY, 0o644); err == nil {
		t.Fatal("created through a dangling link")
	}
	if _, err := os.Lstat(filepath.Join(dir, "made-through-link")); err == nil {
		t.Fatal("the link's target was created")
	}
}

func TestCreateReplacingRemovesAPlantedLink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("keep"), 0o644)
	name := filepath.Join(dir, "nextseq.temp")
	os.Symlink(victim, name)
	f, err := CreateReplacing(name, os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("7\n")
	f.Close()
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Fatalf("the link's target was written: %q", b)
	}
	if fi, err := os.Lstat(name); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("%s: %v %v", name, fi, err)
	}
}

func TestOpenRegularNeverOpensAFIFOOrDevice(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fspl-x.fspl")
	mkfifo(t, fifo)
	link := filepath.Join(dir, "fspl-y.fspl")
	os.Symlink(fifo, link)
	reg := filepath.Join(dir, "fspl-z.fspl")
	os.WriteFile(reg, []byte("data"), 0o644)
	regLink := filepath.Join(dir, "fspl-w.fspl")
	os.Symlink(reg, regLink)
	for _, p := range []string{fifo, link, "/dev/null", "/dev/zero", dir} {
		quick(t, "OpenRegular("+p+")", func() {
			f, err := OpenRegular(p, false)
			if err == nil {
				f.Close()
				t.Errorf("%s: opened", p)
			} else if !errors.Is(err, ErrNotRegular) {
				t.Errorf("%s: err %v, want ErrNotRegular", p, err)
			}
		})
	}
	f, err := OpenRegular(regLink, false)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 8)
	n, _ := f.Read(b)
	f.Close()
	if string(b[:n]) != "data" {
		t.Fatalf("read %q", b[:n])
	}
	if _, err := OpenRegular(regLink, true); err == nil {
		t.Fatal("noFollow followed a link")
	}
	if _, err := OpenRegular(filepath.Join(dir, "missing"), false); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
}

func TestResolveForWrite(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	os.WriteFile(target, []byte("old"), 0o600)
	os.Symlink("target", filepath.Join(dir, "rel"))
	os.Symlink(filepath.Join(dir, "rel"), filepath.Join(dir, "chain"))
	os.Symlink(filepath.Join(dir, "new"), filepath.Join(dir, "dangling"))
	os.Symlink("loop2", filepath.Join(dir, "loop1"))
	os.Symlink("loop1", filepath.Join(dir, "loop2"))
	for _, tc := range []struct{ in, want string }{
		{"rel", target}, {"chain", target}, {"target", target}, {"dangling", filepath.Join(dir, "new")},
	} {
		got, err := ResolveForWrite(filepath.Join(dir, tc.in))
		if err != nil || got.Path != tc.want || got.FD != -1 {
			t.Errorf("%s: %+v %v, want %s", tc.in, got, err, tc.want)
		}
	}
	if got, _ := ResolveForWrite(filepath.Join(dir, "chain")); !got.Regular() {
		t.Errorf("chain: not regular: %+v", got)
	}
	if got, _ := ResolveForWrite(filepath.Join(dir, "dangling")); got.Exists() {
		t.Errorf("dangling: exists: %+v", got)
	}
	if _, err := ResolveForWrite(filepath.Join(dir, "loop1")); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("loop: %v", err)
	}
	if _, err := ResolveForWrite(dir); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Errorf("dir: %v", err)
	}
	for p, fd := range map[string]int{"/dev/stdout": 1, "/dev/stderr": 2, "/dev/fd/5": 5, "/proc/self/fd/1": 1} {
		if got, err := ResolveForWrite(p); err != nil || got.FD != fd || !got.Special() {
			t.Errorf("%s: %+v %v", p, got, err)
		}
	}
	if got, err := ResolveForWrite("/dev/null"); err != nil || !got.Special() || got.Regular() {
		t.Errorf("/dev/null: %+v %v", got, err)
	}
}

// The rules of protected_symlinks and protected_fifos=2, in a sticky
// world-writable directory. Needs root to make files owned by another user.
func TestResolveForWriteInASharedDirectory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create files owned by another user (CI runs as root)")
	}
	shared := t.TempDir()
	if err := os.Chmod(shared, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	const other = 54321
	link := filepath.Join(shared, "out")
	os.Symlink("/etc/passwd", link)
	os.Lchown(link, other, other)
	if _, err := ResolveForWrite(link); err == nil || !strings.Contains(err.Error(), "refusing to follow") {
		t.Errorf("another user's link in a sticky directory: %v", err)
	}
	fifo := filepath.Join(shared, "fifo")
	mkfifo(t, fifo)
	os.Chown(fifo, other, other)
	if _, err := ResolveForWrite(fifo); err == nil || !strings.Contains(err.Error(), "another user made it") {
		t.Errorf("another user's FIFO in a sticky directory: %v", err)
	}
	// Ours, or in a directory that is not shared: allowed.
	mine := filepath.Join(shared, "mine")
	os.Symlink(fifo+"-x", mine)
	if _, err := ResolveForWrite(mine); err != nil {
		t.Errorf("own link: %v", err)
	}
	private := t.TempDir()
	pf := filepath.Join(private, "fifo")
	mkfifo(t, pf)
	os.Chown(pf, other, other)
	if _, err := ResolveForWrite(pf); err != nil {
		t.Errorf("FIFO in a private directory: %v", err)
	}
}

func TestAtomicFileCommitAndDiscard(t *testing.T) {
	dir := t.TempDir()
	final := filepath.Join(dir, "out.img")
	tg, _ := ResolveForWrite(final)
	a, err := CreateAtomic(tg, AtomicOptions{Perm: 0o666})
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(a.TempPath()); fi.Mode().Perm() != 0o600 {
		t.Errorf("temp mode %v, want 0600 while written", fi.Mode())
	}
	a.File().WriteString("new")
	if _, err := os.Stat(final); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("final name exists before Commit")
	}
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(); err != nil {
		t.Fatal("second Commit:", err)
	}
	a.Discard() // no-op after Commit
	fi, err := os.Stat(final)
	if err != nil || fi.Mode().Perm() != 0o666&^umask() {
		t.Fatalf("final: %v %v, want %v", fi.Mode(), err, 0o666&^umask())
	}
	// Replacing an existing file keeps its mode.
	os.Chmod(final, 0o640)
	tg, _ = ResolveForWrite(final)
	a, _ = CreateAtomic(tg, AtomicOptions{Perm: 0o666})
	a.File().WriteString("newer")
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(final); fi.Mode().Perm() != 0o640 {
		t.Errorf("replaced file's mode %v, want 0640 kept", fi.Mode())
	}
	// Unless the caller names one.
	tg, _ = ResolveForWrite(final)
	a, _ = CreateAtomic(tg, AtomicOptions{Mode: 0o604, ModeSet: true})
	a.Commit()
	if fi, _ := os.Stat(final); fi.Mode().Perm() != 0o604 {
		t.Errorf("mode %v, want 0604 as asked", fi.Mode())
	}
	// Discard leaves nothing, and the old file as it was.
	os.WriteFile(final, []byte("old"), 0o644)
	tg, _ = ResolveForWrite(final)
	a, _ = CreateAtomic(tg, AtomicOptions{Perm: 0o666})
	a.File().WriteString("half")
	a.Discard()
	a.Discard()
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("dir holds %v", ents)
	}
	if b, _ := os.ReadFile(final); string(b) != "old" {
		t.Fatalf("final %q", b)
	}
}

func TestAtomicFileKeepsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file another owner (CI runs as root)")
	}
	final := filepath.Join(t.TempDir(), "out")
	os.WriteFile(final, []byte("old"), 0o640)
	os.Chown(final, 4321, 4322)
	tg, _ := ResolveForWrite(final)
	a, _ := CreateAtomic(tg, AtomicOptions{Perm: 0o666})
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(final)
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 4321 || st.Gid != 4322 || fi.Mode().Perm() != 0o640 {
		t.Fatalf("owner %d:%d mode %v, want 4321:4322 0640", st.Uid, st.Gid, fi.Mode())
	}
}

func TestRemoveStaleTempsKeepsLiveOnes(t *testing.T) {
	dir := t.TempDir()
	final := filepath.Join(dir, "out")
	tg, _ := ResolveForWrite(final)
	live, err := CreateAtomic(tg, AtomicOptions{Perm: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Discard()
	// What a killed writer leaves: the name, no lock.
	stale := filepath.Join(dir, tempPrefix(final)+"0123456789ab"+tempSuffix)
	os.WriteFile(stale, []byte("half"), 0o600)
	other := filepath.Join(dir, ".other.pipespool-0123456789ab.tmp")
	os.WriteFile(other, []byte("x"), 0o600)
	second, err := CreateAtomic(tg, AtomicOptions{Perm: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Discard()
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Error("stale temp left")
	}
	if _, err := os.Stat(live.TempPath()); err != nil {
		t.Error("live temp removed:", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Error("another output's temp removed:", err)
	}
}

func TestWriteFileAtomicThroughLinkKeepsTheLink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "digest.real")
	os.WriteFile(target, []byte("old\n"), 0o640)
	link := filepath.Join(dir, "digest")
	os.Symlink("digest.real", link)
	if err := WriteFileAtomic(link, []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("link replaced: %v %v", fi, err)
	}
	if b, _ := os.ReadFile(target); string(b) != "new\n" {
		t.Fatalf("target %q", b)
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o640 {
		t.Fatalf("target mode %v", fi.Mode())
	}
	if err := WriteFileAtomic("/dev/null", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	mkfifo(t, fifo)
	quick(t, "WriteFileAtomic to a FIFO without a reader", func() {
		if err := WriteFileAtomic(fifo, []byte("x"), 0o644); err == nil {
			t.Error("wrote to a FIFO nobody reads")
		}
	})
}

func TestAcquireLock(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "job.lock")
	ctx := context.Background()
	l, err := Acquire(ctx, path, LockOptions{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	var held *LockHeldError
	if _, err := Acquire(ctx, path, LockOptions{Create: true, Holder: "a test"}); !errors.As(err, &held) || held.ExitCode() != 75 || !strings.Contains(err.Error(), "a test") {
		t.Fatalf("held: %v", err)
	}
	released := make(chan struct{})
	go func() {
		defer close(released)
		// Released while the other Acquire waits (most likely): not a
		// wait for an event, the condition under test.
		time.Sleep(50 * time.Millisecond)
		l.Release()
	}()
	l2, err := Acquire(ctx, path, LockOptions{Wait: 10 * time.Second})
	if err != nil {
		t.Fatal("wait:", err)
	}
	<-released
	l.Release() // idempotent
	cctx, cancel := context.WithCancelCause(ctx)
	cause := errors.New("interrupted")
	go cancel(cause)
	if _, err := Acquire(cctx, path, LockOptions{Wait: time.Minute}); err != cause {
		t.Fatalf("cancelled wait: %v", err)
	}
	l2.Release()

	var pe *LockPathError
	if _, err := Acquire(ctx, filepath.Join(dir, "missing", "x.lock"), LockOptions{Create: true}); !errors.As(err, &pe) || pe.ExitCode() != 2 || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing dir: %v", err)
	}
	if _, err := Acquire(ctx, filepath.Join(dir, "absent.lock"), LockOptions{}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("absent, no create: %v", err)
	}
	fifo := filepath.Join(dir, "fifo.lock")
	mkfifo(t, fifo)
	link := filepath.Join(dir, "link.lock")
	os.Symlink(path, link)
	for _, p := range []string{fifo, link} {
		quick(t, "Acquire("+p+")", func() {
			if l, err := Acquire(ctx, p, LockOptions{Create: true}); err == nil {
				l.Release()
				t.Errorf("%s: locked", p)
			}
		})
	}
}

// write_to = "/dev/stderr" once replaced the /dev/stderr symlink with a
// regular file: a link to something that is not a regular file is written
// through, in place.
func TestWriteFileAtomicKeepsSymlinkToDevice(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "out")
	if err := os.Symlink(os.DevNull, link); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(link, []byte("digest\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := os.Lstat(link)
	if err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the symlink was replaced: %v %v", st.Mode(), err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
}

// TestRemoveStaleTempsNamesHeldOnes: a stale temp whose lock another open
// file description holds (a process a killed writer left) is left and
// returned; once the lock is free the next call removes it.
func TestRemoveStaleTempsNamesHeldOnes(t *testing.T) {
	dir := t.TempDir()
	final := filepath.Join(dir, "out")
	stale := filepath.Join(dir, tempPrefix(final)+"0123456789ab"+tempSuffix)
	os.WriteFile(stale, []byte("half"), 0o600)
	f, err := os.Open(stale)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if n, held := RemoveStaleTemps(final); n != 0 || len(held) != 1 || held[0] != stale {
		t.Fatalf("removed %d, held %q; want 0 and [%s]", n, held, stale)
	}
	f.Close()
	if n, held := RemoveStaleTemps(final); n != 1 || len(held) != 0 {
		t.Fatalf("removed %d, held %q; want 1 and none", n, held)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale temp left once free: %v", err)
	}
}

// TestWriteFileAtomicDotDotAfterALink writes where the kernel resolves a
// path, not where a lexical clean of it leads: "a/../x" with a a link to
// deep/a is deep/x, and so is the target "../x" of a link inside a.
func TestWriteFileAtomicDotDotAfterALink(t *testing.T) {
	dir := t.TempDir()
	deep := filepath.Join(dir, "real", "deep")
	if err := os.MkdirAll(filepath.Join(deep, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Symlink(filepath.Join(deep, "a"), filepath.Join(dir, "a"))
	os.Symlink("../y", filepath.Join(deep, "a", "out"))
	for _, tc := range []struct{ path, want string }{
		{dir + "/a/../x", filepath.Join(deep, "x")},     // ".." in the path given
		{dir + "/a/out", filepath.Join(deep, "y")},      // ".." in a link's target
		{dir + "/a/../a/out", filepath.Join(deep, "y")}, // both
	} {
		os.Remove(tc.want)
		if err := WriteFileAtomic(tc.path, []byte("digest\n"), 0o644); err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		if b, err := os.ReadFile(tc.want); err != nil || string(b) != "digest\n" {
			t.Errorf("%s: %s holds %q, %v; want the digest there", tc.path, tc.want, b, err)
		}
		for _, wrong := range []string{filepath.Join(dir, "x"), filepath.Join(dir, "y")} {
			if _, err := os.Lstat(wrong); err == nil {
				t.Errorf("%s: written to %s, a lexical reading of the path", tc.path, wrong)
				os.Remove(wrong)
			}
		}
		// Nothing left beside it: the temporary file was made in the
		// directory of the final name.
		if ents, _ := os.ReadDir(deep); len(ents) != 2 {
			t.Errorf("%s: %s holds %d entries, want a and the file", tc.path, deep, len(ents))
		}
		os.Remove(tc.want)
	}
}

func TestAsKernel(t *testing.T) {
	for _, tc := range []struct{ dir, name, join string }{
		{"/a/b", "../c", "/a/b/../c"},
		{"/a/b/", "c", "/a/b/c"},
		{"/", "c", "/c"},
		{"", "c", "c"},
		{"/a", "/abs", "/abs"},
	} {
		if got := JoinAsKernel(tc.dir, tc.name); got != tc.join {
			t.Errorf("JoinAsKernel(%q, %q) = %q, want %q", tc.dir, tc.name, got, tc.join)
		}
	}
	for _, tc := range []struct{ path, dir string }{
		{"/a/b/../c", "/a/b/.."},
		{"/a/", "/"},
		{"/a", "/"},
		{"name", "."},
		{"x/y", "x"},
	} {
		if got := DirAsKernel(tc.path); got != tc.dir {
			t.Errorf("DirAsKernel(%q) = %q, want %q", tc.path, got, tc.dir)
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	// A leading "." is the working directory itself: left out, so that a
	// job file named without a directory is in wd, not in wd + "/.".
	for _, tc := range []struct{ path, abs string }{
		{".", wd},
		{"./", wd},
		{"./x", wd + "/x"},
		{".//x/./y", wd + "/x/./y"},
		{"././x", wd + "/x"},
		{"../x", wd + "/../x"},
		{".x", wd + "/.x"},
		{"/abs/./x", "/abs/./x"},
	} {
		if got := AbsAsKernel(tc.path); got != tc.abs {
			t.Errorf("AbsAsKernel(%q) = %q, want %q", tc.path, got, tc.abs)
		}
	}
	if got := DirAsKernelAbs("job.toml"); got != wd {
		t.Errorf("DirAsKernelAbs(%q) = %q, want %q", "job.toml", got, wd)
	}
}

// TestResolveForWriteSharedDirectoryThroughDotDot: the sticky-directory
// rules look at the directory the kernel reaches, also when a ".." (in the
// path given, or in a link's target) leads there from a private one.
func TestResolveForWriteSharedDirectoryThroughDotDot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create files owned by another user (CI runs as root)")
	}
	const other = 54321
	shared := t.TempDir()
	if err := os.Chmod(shared, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(shared, "sub"), 0o755)
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("keep\n"), 0o644)
	evil := filepath.Join(shared, "evil")
	os.Symlink(victim, evil)
	os.Lchown(evil, other, other)
	fifo := filepath.Join(shared, "fifo")
	mkfifo(t, fifo)
	os.Chown(fifo, other, other)
	priv := t.TempDir()
	os.Symlink(filepath.Join(shared, "sub"), filepath.Join(priv, "a"))
	os.Symlink("a/../evil", filepath.Join(priv, "out"))
	os.Symlink("a/../fifo", filepath.Join(priv, "outfifo"))
	for _, p := range []string{filepath.Join(priv, "out"), priv + "/a/../evil"} {
		if _, err := ResolveForWrite(p); err == nil || !strings.Contains(err.Error(), "refusing to follow") {
			t.Errorf("%s reaches another user's link in a sticky directory: %v", p, err)
			WriteFileAtomic(p, []byte("overwritten\n"), 0o644)
		}
	}
	for _, p := range []string{filepath.Join(priv, "outfifo"), priv + "/a/../fifo"} {
		if _, err := ResolveForWrite(p); err == nil || !strings.Contains(err.Error(), "another user made it") {
			t.Errorf("%s reaches another user's FIFO in a sticky directory: %v", p, err)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep\n" {
		t.Errorf("victim overwritten: %q", b)
	}
}

// TestResolveForWriteDotDotEdges: a loop of links through ".." is a loop
// (not a path grown past the system's limit), a directory that cannot be
// reached is an error before any file is made, and ".." next to /dev/fd is
// not pipespool's descriptor.
func TestResolveForWriteDotDotEdges(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "d"), 0o755)
	os.Symlink("d/"+strings.Repeat("../d/", 30)+"../l", filepath.Join(dir, "l"))
	if _, err := ResolveForWrite(filepath.Join(dir, "l")); !errors.Is(err, syscall.ELOOP) || len(err.Error()) > 1024 {
		t.Errorf("loop through ..: %.200v (%d bytes), want ELOOP", err, len(err.Error()))
	}
	os.Symlink(filepath.Join(dir, "gone"), filepath.Join(dir, "dangling"))
	if tg, err := ResolveForWrite(dir + "/dangling/../x"); err == nil {
		t.Errorf("dangling/../x resolved to %+v; the kernel cannot reach it", tg)
	}
	if err := WriteFileAtomic(dir+"/dangling/../x", []byte("x"), 0o644); err == nil {
		t.Error("written through a directory the kernel cannot reach")
	}
	if _, err := os.Lstat(filepath.Join(dir, "x")); err == nil {
		t.Error("x written at the lexical reading of dangling/../x")
	}
	if fd, ok := OwnFD("/dev/fd/../stdout"); ok {
		t.Errorf("/dev/fd/../stdout taken for descriptor %d (the kernel reads /proc/self/stdout)", fd)
	}
	// A link whose target reaches "/dev/stdout" lexically but a file of
	// the temp directory for the kernel.
	os.MkdirAll(filepath.Join(dir, "real", "x", "y", "z"), 0o755)
	os.Symlink(filepath.Join(dir, "real", "x", "y", "z"), filepath.Join(dir, "a"))
	up := strings.Repeat("../", strings.Count(dir, "/")+1)
	os.Symlink("a/"+up+"dev/stdout", filepath.Join(dir, "out"))
	if tg, err := ResolveForWrite(filepath.Join(dir, "out")); err == nil && tg.FD >= 0 {
		t.Errorf("a link to a/%sdev/stdout taken for descriptor %d", up, tg.FD)
	}
}
