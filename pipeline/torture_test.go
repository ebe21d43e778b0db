package pipeline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestTortureInProcess runs pipeline.Run many times, several at once, in
// this long-lived process (the in-process part of the torture
// harness): random pipelines of external and built-in stages, some failing,
// each checked against its expected output and root cause. After every
// batch the open fds (/proc/self/fd) must be back to the baseline and the
// goroutines must have ended: a leak of either, repeated over thousands
// of runs, is what would kill a long-lived queue-process.
//
// TORTURE_SEED and TORTURE_BUDGET as for integration's TestTorture
// (default 20s, 5s with -short).
func TestTortureInProcess(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("TORTURE_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seed = n
	}
	budget := 20 * time.Second
	if testing.Short() {
		budget = 5 * time.Second
	}
	if v := os.Getenv("TORTURE_BUDGET"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		budget = d
	}
	pass, err := filepath.Abs("../testdata/keys/symmetric.pass")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	input := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog\n"), 50000) // 2.2 MB
	inPath := filepath.Join(dir, "in.txt")
	if err := os.WriteFile(inPath, input, 0o644); err != nil {
		t.Fatal(err)
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()

	// Settle what the runtime opens once (netpoller epoll fd, its wake-up
	// pipe, signal handling threads) before taking the baseline.
	runOne(t, seed, 0, dir, inPath, input, pass, devnull)
	baseFDs, baseG := openFDCount(t), settledGoroutines(0)
	t.Logf("TORTURE_SEED=%d budget %s: baseline %d fds, %d goroutines", seed, budget, baseFDs, baseG)

	const batch = 8
	deadline := time.Now().Add(budget)
	runs := 0
	for b := 1; time.Now().Before(deadline); b++ {
		var wg sync.WaitGroup
		for k := 0; k < batch; k++ {
			i := b*batch + k
			wg.Add(1)
			go func() {
				defer wg.Done()
				runOne(t, seed, i, dir, inPath, input, pass, devnull)
			}()
		}
		wg.Wait()
		runs += batch
		if t.Failed() {
			t.Fatalf("TORTURE_SEED=%d: stopping at batch %d", seed, b)
		}
		if n := openFDCount(t); n != baseFDs {
			// A stage's stderr reader may finish a moment after Run
			// returns only on the rare timeout path; give it a second.
			deadline := time.Now().Add(time.Second)
			for n != baseFDs && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
				n = openFDCount(t)
			}
			if n != baseFDs {
				t.Fatalf("TORTURE_SEED=%d batch %d: %d fds open, baseline %d:\n%s", seed, b, n, baseFDs, fdList())
			}
		}
		if g := settledGoroutines(baseG); g > baseG {
			buf := make([]byte, 1<<20)
			t.Fatalf("TORTURE_SEED=%d batch %d: %d goroutines, baseline %d:\n%s", seed, b, g, baseG, buf[:runtime.Stack(buf, true)])
		}
	}
	t.Logf("TORTURE_SEED=%d: %d runs of pipeline.Run, %d at a time, fds and goroutines back to baseline after each batch", seed, runs, batch)
}

// runOne runs in-process pipeline i of seed and checks it.
func runOne(t *testing.T, seed uint64, i int, dir, inPath string, input []byte, pass string, devnull *os.File) {
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	upper := false
	failAt := -1
	var stages []string
	n := 1 + r.IntN(5)
	for len(stages) < n {
		switch r.IntN(7) {
		case 0:
			stages = append(stages, `command = ["cat"]`)
		case 1:
			stages = append(stages, `command = ["tr", "a-z", "A-Z"]`)
			upper = true
		case 2:
			stages = append(stages, "builtin = \"zstd-compress\"", "builtin = \"zstd-decompress\"")
		case 3:
			stages = append(stages, fmt.Sprintf("builtin = \"openpgp-encrypt\"\n[stage.with]\npassphrase_file = %q", pass),
				fmt.Sprintf("builtin = \"openpgp-decrypt\"\n[stage.with]\npassphrase_file = %q", pass))
		case 4:
			stages = append(stages, `shell = "cat | cat"`)
		case 5:
			if failAt < 0 {
				failAt = len(stages)
				stages = append(stages, fmt.Sprintf(`shell = "head -c %d >/dev/null; exit 3"`, r.IntN(100000)))
			}
		default:
			stages = append(stages, "command = [\"head\", \"-c\", \"1000000\"]\nallow_partial_read = true")
			if len(input) > 1000000 {
				input = input[:1000000]
			}
		}
	}
	var job strings.Builder
	fmt.Fprintf(&job, "pipe_size = %q\n", []string{"4KiB", "64KiB", "1MiB"}[r.IntN(3)])
	for k, s := range stages {
		fmt.Fprintf(&job, "[[stage]]\nname = \"s%d\"\n%s\n", k, s)
	}
	j, err := Parse(filepath.Join(dir, fmt.Sprintf("job-%d.toml", i)), []byte(job.String()))
	if err != nil {
		t.Errorf("run %d: %v\n%s", i, err, job.String())
		return
	}
	out := filepath.Join(dir, fmt.Sprintf("out-%d", i))
	defer os.Remove(out)
	rep, err := Run(context.Background(), j, Options{InputPath: inPath, OutputPath: out, Stdin: devnull, Stdout: devnull, Grace: time.Second})
	if failAt >= 0 {
		want := fmt.Sprintf("s%d", failAt)
		if err == nil || rep == nil || rep.RootCause != want {
			t.Errorf("TORTURE_SEED=%d run %d: err %v root cause %q, want stage %s to fail\n%s", seed, i, err, rootOf(rep), want, job.String())
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("run %d: output of a failed run exists", i)
		}
		return
	}
	if err != nil {
		t.Errorf("TORTURE_SEED=%d run %d: %v\n%s", seed, i, err, job.String())
		return
	}
	want := input
	if upper {
		want = bytes.ToUpper(input)
	}
	got, err := os.ReadFile(out)
	if err != nil || sha256.Sum256(got) != sha256.Sum256(want) {
		t.Errorf("TORTURE_SEED=%d run %d: output %d bytes (%v), want %d bytes\n%s", seed, i, len(got), err, len(want), job.String())
	}
}

func rootOf(r *Report) string {
	if r == nil {
		return ""
	}
	return r.RootCause
}

func openFDCount(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents) - 1 // ReadDir's own fd
}

func fdList() string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var b strings.Builder
	for _, e := range ents {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		fmt.Fprintf(&b, "  %s -> %s\n", e.Name(), l)
	}
	return b.String()
}

// settledGoroutines waits up to 5 s for the goroutine count to fall to
// want (goroutines that are ending need a moment to be gone) and returns
// the count.
func settledGoroutines(want int) int {
	deadline := time.Now().Add(5 * time.Second)
	n := runtime.NumGoroutine()
	for want > 0 && n > want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	return n
}
