package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runResult is what one run of the binary did.
type runResult struct {
	Stdout, Stderr []byte
	Code           int
	Elapsed        time.Duration
}

// runOpts tune runPipespool.
type runOpts struct {
	Dir     string        // working directory ("" = the test's temp dir is not implied)
	Stdin   io.Reader     // nil = empty stdin (/dev/null)
	Stdout  io.Writer     // nil = captured into runResult.Stdout
	Env     []string      // added to the environment
	Timeout time.Duration // 0 = 2 minutes; the test fails if the run outlives it
	// OnHang, when not nil, is called when the run outlives Timeout,
	// before pipespool is made to print its stacks: what it returns (the
	// state of the processes around the run) is added to the failure.
	OnHang func() string
}

// runPipespool runs the built binary with args and waits for it, failing the
// test (with the output so far) if it does not finish within the timeout.
func runPipespool(t *testing.T, o runOpts, args ...string) runResult {
	t.Helper()
	return runPipespoolWith(t, o, nil, args...)
}

// runPipespoolWith is runPipespool calling onStart, when not nil, with the
// process's pid once it has started (to signal it, or close the test's copy
// of a pipe end it was given).
func runPipespoolWith(t *testing.T, o runOpts, onStart func(pid int), args ...string) runResult {
	t.Helper()
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, pipespoolBin, args...)
	// On a hang, SIGABRT first: the Go runtime then prints every
	// goroutine's stack to stderr, which the failure message shows
	// (SIGQUIT would only stop the run: pipespool handles it). The kill
	// follows if it does not exit.
	var hang string
	cmd.Cancel = func() error {
		if o.OnHang != nil {
			hang = o.OnHang()
		}
		return cmd.Process.Signal(syscall.SIGABRT)
	}
	cmd.WaitDelay = 10 * time.Second
	cmd.Dir = o.Dir
	cmd.Env = append(os.Environ(), o.Env...)
	cmd.Stdin = o.Stdin
	var stdout, stderr bytes.Buffer
	if o.Stdout != nil {
		cmd.Stdout = o.Stdout
	} else {
		cmd.Stdout = &stdout
	}
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Start()
	if err == nil {
		if onStart != nil {
			onStart(cmd.Process.Pid)
		}
		err = cmd.Wait()
	}
	res := runResult{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), Elapsed: time.Since(start)}
	if ctx.Err() != nil {
		t.Fatalf("pipespool %s: still running after %s (hang?)\n%s\nstderr:\n%s", strings.Join(args, " "), timeout, hang, compactStacks(stderr.String()))
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.Code = ee.ExitCode()
	default:
		t.Fatalf("running pipespool: %v", err)
	}
	return res
}

// needTools fails the test, saying how to install them, when tools are
// missing: a missing tool must not look like a passing test.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed by this test: apt-get update && apt-get install -y gnupg zstd filespooler strace (or run .ci/run, which installs them)", tool)
		}
	}
}

// writeFile writes content to dir/name and returns the path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// randomFile writes size deterministic pseudo-random bytes to dir/name and
// returns the path and the sha256 of the content.
func randomFile(t *testing.T, dir, name string, size int64, seed uint64) (string, string) {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	w := io.MultiWriter(f, h)
	buf := make([]byte, 1<<20)
	x := seed | 1
	for left := size; left > 0; {
		n := int64(len(buf))
		if left < n {
			n = left
		}
		for i := 0; i < int(n); i += 8 {
			// xorshift64*: fast, deterministic, incompressible enough.
			x ^= x >> 12
			x ^= x << 25
			x ^= x >> 27
			v := x * 2685821657736338717
			for j := 0; j < 8 && i+j < int(n); j++ {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		if _, err := w.Write(buf[:n]); err != nil {
			t.Fatal(err)
		}
		left -= n
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p, hex.EncodeToString(h.Sum(nil))
}

// fileSHA256 returns the hex sha256 of a file.
func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// processesWithMarker lists live processes whose command line contains
// marker: tests put a unique marker in the stages they start, then check
// that none is left.
func processesWithMarker(marker string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !bytes.Contains(cmdline, []byte(marker)) {
			continue
		}
		stat, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && len(stat) > i+2 && stat[i+2] == 'Z' {
			out = append(out, e.Name()+" (zombie) "+string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
			continue
		}
		out = append(out, e.Name()+" "+string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
	}
	return out
}

// processStates describes each process whose command line has marker, and
// pid's: its state (R, S, D, T for stopped, t for stopped by a tracer), the
// kernel function it sleeps in, its tracer if any, and its command line.
func processStates(pid int, marker string) string {
	var b strings.Builder
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !bytes.Contains(cmdline, []byte(marker)) && e.Name() != strconv.Itoa(pid) {
			continue
		}
		state := "?"
		if stat, _ := os.ReadFile("/proc/" + e.Name() + "/stat"); len(stat) > 0 {
			if i := bytes.LastIndexByte(stat, ')'); i > 0 && len(stat) > i+2 {
				state = string(stat[i+2])
			}
		}
		wchan, _ := os.ReadFile("/proc/" + e.Name() + "/wchan")
		tracer := ""
		if st, _ := os.ReadFile("/proc/" + e.Name() + "/status"); len(st) > 0 {
			for _, l := range strings.Split(string(st), "\n") {
				if v, ok := strings.CutPrefix(l, "TracerPid:"); ok && strings.TrimSpace(v) != "0" {
					tracer = " traced by " + strings.TrimSpace(v)
				}
			}
		}
		fmt.Fprintf(&b, "  %s %s %s%s: %s\n", e.Name(), state, wchan, tracer, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
	}
	return b.String()
}

// assertNoProcesses fails if a process with marker is still alive a moment
// after pipespool exited (a killed process may take a few ms to vanish).
func assertNoProcesses(t *testing.T, marker string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		left := processesWithMarker(marker)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left behind: %v", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// compactStacks shortens the goroutine dump a SIGABRT makes the Go runtime
// print: only the goroutines with a frame of pipespool's own code, each
// frame as its function and file:line (no arguments, offsets, frame
// pointers), without the registers. A failure report is read in a CI log
// that keeps a limited number of lines, and the runtime's own goroutines
// (GC workers, the finalizer, the signal loop) used to push pipespool's
// out of it. What is not a goroutine dump is kept as it is.
func compactStacks(s string) string {
	head, dump, ok := strings.Cut(s, "SIGABRT: abort\n")
	if !ok {
		return s
	}
	var b strings.Builder
	b.WriteString(head)
	b.WriteString("SIGABRT: abort (goroutines with pipespool's frames, compacted)\n")
	omitted := 0
	for _, block := range strings.Split(dump, "\n\n") {
		lines := strings.Split(strings.TrimSpace(block), "\n")
		if len(lines) == 0 || !strings.HasPrefix(lines[0], "goroutine ") {
			continue // PC= line, the registers
		}
		if !strings.Contains(block, "github.com/pipespool/pipespool/") {
			omitted++
			continue
		}
		// goroutine 1 gp=0x.. m=nil [select]: -> goroutine 1 [select]:
		hdr := lines[0]
		if f := strings.Fields(hdr); len(f) > 2 {
			if i := strings.Index(hdr, "["); i > 0 {
				hdr = f[0] + " " + f[1] + " " + hdr[i:]
			}
		}
		b.WriteString(hdr + "\n")
		for _, l := range lines[1:] {
			if strings.HasPrefix(l, "\t") {
				// \tfile.go:123 +0x55 fp=.. sp=.. pc=..
				if f := strings.Fields(l); len(f) > 0 {
					b.WriteString("\t" + f[0] + "\n")
				}
				continue
			}
			if i := strings.LastIndex(l, "("); i > 0 && !strings.HasPrefix(l, "created by") {
				l = l[:i] + "(...)"
			}
			b.WriteString(l + "\n")
		}
	}
	fmt.Fprintf(&b, "(%d goroutines of the runtime only left out)\n", omitted)
	return b.String()
}

// waitStarted waits for cmd, started, at most a minute (then kills it and
// fails the test, saying what was held), and returns Wait's error.
func waitStarted(t *testing.T, cmd *exec.Cmd, what string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s: still running after a minute", what)
		return nil
	}
}
