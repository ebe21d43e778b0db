package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// bufRep is the part of a --report the buffer tests check.
type bufRep struct {
	Result string `json:"result"`
	Stages []struct {
		Name       string `json:"name"`
		Stalls     int    `json:"stalls"`
		BytesIn    int64  `json:"bytes_in"`
		BytesOut   int64  `json:"bytes_out"`
		Buffer     int64  `json:"buffer_bytes"`
		BufferPeak *int64 `json:"buffer_peak_bytes"`
	} `json:"stages"`
}

func readBufReport(t *testing.T, path string) bufRep {
	t.Helper()
	validateReport(t, path)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r bufRep
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// awaitFile waits until path exists, at most d. When it does not
// appear, it kills the run (pid; its stages die with it) and marks the
// test failed, so that the run's wait returns.
func awaitFile(t *testing.T, pid int, path string, d time.Duration, what string) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(path); err == nil {
			return true
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: %s did not appear within %v", what, path, d)
			syscall.Kill(pid, syscall.SIGKILL)
			return false
		}
		time.Sleep(10 * time.Millisecond) // a poll tick, bounded by the deadline
	}
}

// release opens the FIFO the paused consumer waits on and says "go".
func release(t *testing.T, fifo string) {
	t.Helper()
	f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "go")
	f.Close()
}

// pausedConsumer is a shell stage that reads nothing until the test writes
// to fifo, then copies its input.
func pausedConsumer(fifo string) string {
	return fmt.Sprintf("read x < '%s'; exec cat", fifo)
}

// TestBufferProducerFinishesWhileConsumerPauses: with buffer on the
// consumer's input, the producer writes its whole stream and exits while
// the consumer has not read a byte (it waits on a FIFO); on two 64 KiB
// pipes without the buffer it could not. Then the consumer gets every
// byte, in order; the report gives the buffer and how full it got, and
// the bytes on both sides of the buffered hop exactly.
func TestBufferProducerFinishesWhileConsumerPauses(t *testing.T) {
	dir := t.TempDir()
	const size = 24 << 20
	in, sum := randomFile(t, dir, "in.bin", size, 21)
	fifo := mkfifo(t, dir, "go.fifo")
	produced := filepath.Join(dir, "produced")
	out := filepath.Join(dir, "out.bin")
	rp := filepath.Join(dir, "report.json")
	job := writeFile(t, dir, "job.toml", fmt.Sprintf(`
pipe_size = "64KiB"
stall_timeout = "0"
[[stage]]
name = "producer"
shell = "cat && touch '%s'"
[[stage]]
name = "consumer"
shell = "%s"
buffer = "32MiB"
`, produced, pausedConsumer(fifo)))
	res := runPipespoolWith(t, runOpts{}, func(pid int) {
		if awaitFile(t, pid, produced, time.Minute, "the producer's end while its consumer reads nothing") {
			release(t, fifo)
		}
	}, "exec", job, "-i", in, "-o", out, "--report", rp)
	if res.Code != 0 {
		t.Fatalf("exit %d\nstderr: %s", res.Code, res.Stderr)
	}
	if fileSHA256(t, out) != sum {
		t.Fatal("output differs from input")
	}
	rep := readBufReport(t, rp)
	p, c := rep.Stages[0], rep.Stages[1]
	if p.BytesOut != size || c.BytesIn != size || c.BytesOut != size {
		t.Errorf("bytes: producer out %d, consumer in %d out %d; want %d", p.BytesOut, c.BytesIn, c.BytesOut, size)
	}
	if c.Buffer != 32<<20 || c.BufferPeak == nil || *c.BufferPeak < size-(256<<10) || *c.BufferPeak > size {
		t.Errorf("report: buffer %d, peak %v; want 32 MiB, holding nearly all of %d", c.Buffer, c.BufferPeak, size)
	}
	if p.Buffer != 0 || p.BufferPeak != nil {
		t.Errorf("the producer's input has no buffer: %+v", p)
	}
}

// TestBufferFlag: --buffer puts a buffer on the run's input (here stdin,
// fed by a producer that finishes while the only stage reads nothing);
// --dry-run shows it; a bad size, one below a pipe, or one with
// --rate-limit is a usage error.
func TestBufferFlag(t *testing.T) {
	dir := t.TempDir()
	const size = 12 << 20
	in, sum := randomFile(t, dir, "in.bin", size, 22)
	fifo := mkfifo(t, dir, "go.fifo")
	produced := filepath.Join(dir, "produced")
	out := filepath.Join(dir, "out.bin")
	rp := filepath.Join(dir, "report.json")
	job := writeFile(t, dir, "job.toml", fmt.Sprintf(`
pipe_size = "64KiB"
[[stage]]
name = "consumer"
shell = "%s"
`, pausedConsumer(fifo)))
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	producer := exec.Command("sh", "-c", `cat "$1" && touch "$2"`, "sh", in, produced)
	producer.Stdout = w
	if err := producer.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { producer.Process.Kill(); producer.Wait() })
	res := runPipespoolWith(t, runOpts{Stdin: r}, func(pid int) {
		r.Close()
		if awaitFile(t, pid, produced, time.Minute, "the producer's end while the stage reads nothing") {
			release(t, fifo)
		}
	}, "exec", job, "-i", "-", "-o", out, "--buffer", "16MiB", "--report", rp)
	if res.Code != 0 {
		t.Fatalf("exit %d\nstderr: %s", res.Code, res.Stderr)
	}
	if err := producer.Wait(); err != nil {
		t.Fatalf("producer: %v", err)
	}
	if fileSHA256(t, out) != sum {
		t.Fatal("output differs from input")
	}
	if s := readBufReport(t, rp).Stages[0]; s.Buffer != 16<<20 || s.BufferPeak == nil || *s.BufferPeak < size-(256<<10) || s.BytesIn != size {
		t.Errorf("report: %+v", s)
	}

	res = runPipespool(t, runOpts{}, "exec", job, "--dry-run", "--buffer", "1GiB")
	if res.Code != 0 || !strings.Contains(string(res.Stderr), "input buffered in 1.0 GiB") {
		t.Errorf("--dry-run: exit %d, stderr %s; want the buffer in the stage graph", res.Code, res.Stderr)
	}
	for _, bad := range [][]string{{"--buffer", "lots"}, {"--buffer", "4KiB"}, {"--buffer", "1TiB"}, {"--buffer", "64MiB", "--rate-limit", "1MiB/s"}} {
		res = runPipespool(t, runOpts{}, append([]string{"exec", job, "-i", in, "-o", out}, bad...)...)
		if res.Code != 2 || !strings.Contains(string(res.Stderr), "--buffer") {
			t.Errorf("%v: exit %d, stderr %s; want 2 and a message naming the flag", bad, res.Code, res.Stderr)
		}
	}
}
