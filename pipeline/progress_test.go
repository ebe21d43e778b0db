package pipeline

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLinkBytesFollowsADirectFileAndKeepsItOnceGone: a stage handed a file
// directly has its input counted from its fd's offset in
// /proc/PID/fdinfo (as pv -d does); once the process is gone (fdinfo
// reads nothing), the last value stands instead of falling back to 0 (it
// did: the display showed 0 B for a first stage that had exited, until
// the end).
func TestLinkBytesFollowsADirectFileAndKeepsItOnceGone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(path, make([]byte, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The shell's stdin is the file: dd reads 10 bytes of it (the offset
	// is shared), then the shell waits on its own stdin-less sleep.
	cmd := exec.Command("sh", "-c", "dd bs=10 count=1 of=/dev/null 2>/dev/null; exec sleep 30")
	cmd.Stdin = f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m := &monitorState{r: &running{links: []link{{direct: f}, {}}}, w: make([]watch, 1)}
	deadline := time.Now().Add(10 * time.Second)
	for {
		in, _ := m.linkBytes(0)
		m.w[0].in = in
		if in == 10 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("the stage's input offset read %d, want 10", in)
		}
		time.Sleep(10 * time.Millisecond) // polling /proc: there is no event to wait for
	}
	cmd.Process.Kill()
	cmd.Wait()
	if in, _ := m.linkBytes(0); in != 10 {
		t.Errorf("after the stage is gone: in = %d, want 10", in)
	}

	// A stage that read its whole file and exited before the first
	// sample: its count is all of it, not nothing.
	g, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	quick := exec.Command("sh", "-c", "cat >/dev/null")
	quick.Stdin = g
	if err := quick.Run(); err != nil {
		t.Fatal(err)
	}
	m = &monitorState{r: &running{links: []link{{direct: g}, {}}}, w: make([]watch, 1)}
	if in, _ := m.linkBytes(0); in != 1000 {
		t.Errorf("a stage that read its whole file and exited before any sample: in = %d, want 1000", in)
	}
}

// TestExpectedSizeKey: [input] expected_size takes a size as every size
// key does, and a bad one is a job error naming its line and key.
func TestExpectedSizeKey(t *testing.T) {
	job, err := Parse("job.toml", []byte("[input]\nexpected_size = \"1.5GiB\"\n[[stage]]\ncommand=[\"cat\"]\n"))
	if err != nil || job.ExpectedSize != 3<<29 {
		t.Fatalf("expected_size: %v, %v", job, err)
	}
	_, err = Parse("job.toml", []byte("[input]\nexpected_size = \"huge\"\n[[stage]]\ncommand=[\"cat\"]\n"))
	var je *JobError
	if !errors.As(err, &je) || je.Line != 2 || je.Key != "input.expected_size" || !strings.Contains(je.Msg, "not a size") {
		t.Fatalf("bad expected_size: %v", err)
	}
}

// TestProgressSizeOrder: --size wins over expected_size, which wins over
// the input file's size (from where the run starts reading it); with no
// input, the size is of the first stage's output.
func TestProgressSizeOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(path, make([]byte, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, tc := range []struct {
		opt, job int64
		desc     string
		size     int64
		out      bool
	}{
		{0, 0, path, 900, false},
		{0, 50, path, 50, false},
		{70, 50, path, 70, false},
		{0, 0, "none", 0, true},
		{0, 50, "none", 50, true},
	} {
		r := &running{opts: Options{ExpectedSize: tc.opt}, job: &Job{ExpectedSize: tc.job},
			src: &source{desc: tc.desc, file: f, direct: true, start: 100}}
		if size, out := r.progressSize(); size != tc.size || out != tc.out {
			t.Errorf("%+v: size %d, sized out %v", tc, size, out)
		}
	}
}

// TestDescribeShowsTheExpectedSize: check and --dry-run show the size the
// progress will go by, --size over expected_size.
func TestDescribeShowsTheExpectedSize(t *testing.T) {
	job, err := Parse("job.toml", []byte("[input]\npath = \"none\"\nexpected_size = \"2GiB\"\n[[stage]]\ncommand=[\"cat\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		size int64
		want string
	}{{0, ", expected size 2.0 GiB\n"}, {3 << 30, ", expected size 3.0 GiB\n"}} {
		d, err := Describe(job, Options{ExpectedSize: tc.size})
		if err != nil || !strings.Contains(d, "input:  none (the first stage reads nothing)"+tc.want) {
			t.Errorf("--size %d: %v\n%s", tc.size, err, d)
		}
	}
}
