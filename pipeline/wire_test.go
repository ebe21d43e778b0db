package pipeline

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pipespool/pipespool/filter"
	"github.com/pipespool/pipespool/pump"
)

func TestOwnedFDClosesOnceOrIsReleased(t *testing.T) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r, w := newOwnedFD(p[0]), newOwnedFD(p[1])
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("a second Close must do nothing, got %v", err)
	}
	fd := w.Release()
	if fd != p[1] {
		t.Fatalf("Release returned %d, want %d", fd, p[1])
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close after Release must do nothing, got %v", err)
	}
	// The released fd is still open: its new owner closes it.
	if err := syscall.Close(fd); err != nil {
		t.Fatalf("released fd was closed by the old owner: %v", err)
	}
}

// TestWireFailureClosesEverything makes wiring fail at every point where it
// can run out of descriptors (RLIMIT_NOFILE just above what is open) and
// checks that nothing stays open: every error branch closes what was
// created before it.
func TestWireFailureClosesEverything(t *testing.T) {
	dir := t.TempDir()
	job := &Job{File: filepath.Join(dir, "job.toml"), Dir: dir, Name: "wire", PipeSize: 64 << 10,
		Input: "-", Output: "none"}
	for i, argv := range [][]string{{"cat"}, {"cat"}, {"cat"}} {
		job.Stages = append(job.Stages, StageSpec{Index: i + 1, Name: "cat" + itoa(i), Command: argv, Stderr: "discard"})
	}
	job.Stages = append(job.Stages, StageSpec{Index: 4, Name: "z1", Builtin: "zstd-compress", Filter: mustFilter(t, "zstd-compress")},
		StageSpec{Index: 5, Name: "z2", Builtin: "zstd-decompress", Filter: mustFilter(t, "zstd-decompress")},
		StageSpec{Index: 6, Name: "last", Command: []string{"cat"}, Stderr: "discard"})
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()

	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	defer syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	// Run once so that what the runtime opens once is open.
	if _, err := Run(context.Background(), job, Options{Stdin: devnull, Stdout: devnull}); err != nil {
		t.Fatalf("run without a limit: %v", err)
	}
	failures := 0
	for extra := 0; extra < 64; extra++ {
		base := openFDCount(t)
		l := lim
		l.Cur = uint64(lowestFreeFD(t) + extra)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			t.Fatal(err)
		}
		_, err := Run(context.Background(), job, Options{Stdin: devnull, Stdout: devnull})
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		if err != nil && strings.Contains(err.Error(), "setting up pipes") {
			failures++
		}
		if got := openFDCount(t); got != base {
			t.Fatalf("limit %d (%d above the lowest free fd): %d fds open after the run, %d before (err %v)\n%s", l.Cur, extra, got, base, err, fdList())
		}
	}
	if failures < 5 {
		t.Fatalf("wiring failed only %d times: the test did not reach the error branches", failures)
	}
}

// lowestFreeFD is the descriptor the next open would get.
func lowestFreeFD(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	open := map[string]bool{}
	for _, e := range ents {
		open[e.Name()] = true
	}
	for fd := 0; ; fd++ {
		if !open[itoa(fd)] {
			return fd
		}
	}
}

func mustFilter(t *testing.T, name string) filter.Filter {
	t.Helper()
	f, ok := filter.Lookup(name)
	if !ok {
		t.Fatalf("no built-in %s", name)
	}
	flt, err := f(map[string]any{}, "")
	if err != nil {
		t.Fatal(err)
	}
	return flt
}

// TestPipesNeededMatchesWire: the count the pipes' size is computed from is
// the number wire makes, for every shape of link.
func TestPipesNeededMatchesWire(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	os.WriteFile(in, []byte("x"), 0o644)
	cat := func(i int) StageSpec {
		return StageSpec{Index: i, Name: "cat" + itoa(i), Command: []string{"cat"}, Stderr: "discard"}
	}
	zc := func(i int) StageSpec {
		return StageSpec{Index: i, Name: "zc" + itoa(i), Builtin: "zstd-compress", Filter: mustFilter(t, "zstd-compress")}
	}
	zd := func(i int) StageSpec {
		return StageSpec{Index: i, Name: "zd" + itoa(i), Builtin: "zstd-decompress", Filter: mustFilter(t, "zstd-decompress")}
	}
	// A rate-limited hop always has a pump: none is direct or joins two
	// built-ins.
	limited := func(s StageSpec) StageSpec { s.RateLimit = 1 << 20; return s }
	// A buffered hop too.
	buffered := func(s StageSpec) StageSpec { s.Buffer, s.BufferResumeAt = 4<<20, 100; return s }
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	for _, input := range []string{in, "-", "none"} {
		for _, output := range []string{filepath.Join(dir, "out"), "-", "none"} {
			for _, stages := range [][]StageSpec{{cat(1)}, {zc(1)}, {cat(1), cat(2)}, {zc(1), zd(2)}, {cat(1), zc(2), zd(3), cat(4)}, {zc(1), cat(2), zd(3)},
				{limited(cat(1))}, {limited(zc(1))}, {zc(1), limited(zd(2))}, {cat(1), zc(2), limited(zd(3)), limited(cat(4))},
				{buffered(cat(1))}, {buffered(zc(1))}, {zc(1), buffered(zd(2))}, {buffered(cat(1)), zc(2), buffered(zd(3)), limited(cat(4))}} {
				job := &Job{File: filepath.Join(dir, "j.toml"), Dir: dir, Name: "j", PipeSize: 64 << 10, Input: input, Output: output, Stages: stages}
				run := &running{job: job, opts: Options{Stdin: r, Stdout: w}, log: discardLogger(), failedC: make(chan struct{})}
				if err := run.build(context.Background()); err != nil {
					t.Fatal(err)
				}
				e, err := run.wire()
				if err != nil {
					t.Fatal(err)
				}
				if want := run.pipesNeeded(); run.pipesMade != want {
					t.Errorf("%s -> %d stages -> %s: wire made %d pipes, pipesNeeded says %d", input, len(stages), output, run.pipesMade, want)
				}
				for k, s := range stages {
					if p, _ := run.links[k].pump.(*pump.Pump); s.RateLimit > 0 && (p == nil || p.Burst() == 0) {
						t.Errorf("%s -> %d stages -> %s: the input hop of limited stage %d has no limited pump", input, len(stages), output, k+1)
					}
					if s.Buffer > 0 && (run.links[k].pump == nil || run.links[k].pump.BufferSize() != s.Buffer) {
						t.Errorf("%s -> %d stages -> %s: the input hop of buffered stage %d has no buffered pump", input, len(stages), output, k+1)
					}
				}
				for _, f := range append(e.stdin, e.stdout...) {
					f.Close()
				}
				for _, l := range run.links {
					if p, ok := l.pump.(*pump.Pump); ok {
						pumpCloser{p}.Close()
					}
				}
				run.src.close()
				run.dst.discard()
			}
		}
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
