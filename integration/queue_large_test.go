package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestQueueOneGiBInterop moves a 1 GiB payload both ways with the
// real fspl: fspl prepare -> pipespool queue-process into sha256sum, and
// pipespool prepare -> fspl queue-process into sha256sum. It moves about
// 6 GiB through the disk and takes longer than CI's share of 2 shared
// cores allows, so it runs only with PIPESPOOL_LARGE=1 (see docs/queue.md
// for the time measured).
func TestQueueOneGiBInterop(t *testing.T) {
	if os.Getenv("PIPESPOOL_LARGE") != "1" || testing.Short() {
		t.Skip("set PIPESPOOL_LARGE=1 to run the 1 GiB interop test (about 6 GiB of disk traffic)")
	}
	fspl := needFspl(t)
	dir := t.TempDir()
	start := time.Now()
	// /dev/urandom through head: fast, and the race detector does not
	// slow it down as it would a Go loop.
	must(t, dir, nil, nil, "sh", "-c", "head -c 1073741824 /dev/urandom > big")
	want := strings.Fields(must(t, dir, nil, nil, "sha256sum", "big"))[0]
	t.Logf("1 GiB file made and hashed in %s", time.Since(start).Round(time.Millisecond))

	step := func(name string, f func()) {
		t0 := time.Now()
		f()
		t.Logf("%s: %s", name, time.Since(t0).Round(time.Millisecond))
	}
	check := func(who, out string) {
		if !strings.HasPrefix(out, want) {
			t.Errorf("%s: payload hash %q, want %s", who, out, want)
		}
	}
	// fspl -> pipespool.
	must(t, dir, nil, nil, fspl, "queue-init", "-q", "q1")
	step("fspl prepare | fspl queue-write", func() {
		must(t, dir, nil, nil, "sh", "-c", fspl+" prepare -s seq1 -i big | "+fspl+" queue-write -q q1")
	})
	step("pipespool queue-process | sha256sum", func() {
		check("pipespool queue-process", must(t, dir, nil, nil, pipespoolBin, "queue-process", "q1", "sha256sum"))
	})
	if n := len(listJobs(t, filepath.Join(dir, "q1"))); n != 0 || readFile(t, filepath.Join(dir, "q1/nextseq")) != "2\n" {
		t.Errorf("fspl -> pipespool: %d jobs left, nextseq %q", n, readFile(t, filepath.Join(dir, "q1/nextseq")))
	}
	// pipespool -> fspl.
	must(t, dir, nil, nil, pipespoolBin, "queue-init", "q2")
	step("pipespool prepare | pipespool queue-write", func() {
		must(t, dir, nil, nil, "sh", "-c", pipespoolBin+" prepare -s seq2 -i big | "+pipespoolBin+" queue-write q2")
	})
	step("fspl queue-process | sha256sum", func() {
		check("fspl queue-process", must(t, dir, nil, nil, fspl, "queue-process", "-q", "q2", "sha256sum"))
	})
	if n := len(listJobs(t, filepath.Join(dir, "q2"))); n != 0 || readFile(t, filepath.Join(dir, "q2/nextseq")) != "2\n" {
		t.Errorf("pipespool -> fspl: %d jobs left, nextseq %q", n, readFile(t, filepath.Join(dir, "q2/nextseq")))
	}
	t.Logf("total %s", time.Since(start).Round(time.Millisecond))
}
