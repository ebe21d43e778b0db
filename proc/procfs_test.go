package proc

import (
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A children file longer than one read buffer (about 700 orphans with
// 5-digit pids) is read whole: no orphan is missed for want of room.
func TestChildrenListsMoreThanOneBufferOfOrphans(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal("sh not found")
	}
	n := bufSize/5 + 50 // pids of 4+ digits and a space: more than bufSize bytes
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// The shell starts n sleeps and exits: they are orphans, adopted by
	// the test process (a subreaper), all in one thread's children file.
	script := `i=0; while [ $i -lt ` + strconv.Itoa(n) + ` ]; do sleep 60 </dev/null >/dev/null 2>&1 & echo $!; i=$((i+1)); done`
	p, err := os.StartProcess(sh, []string{"sh", "-c", script}, &os.ProcAttr{Files: []*os.File{nil, w, os.Stderr}})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("shell printed %q", f)
		}
		pids = append(pids, pid)
	}
	defer func() {
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		waitGoneFor(t, pids, 30*time.Second)
	}()
	waitGoneFor(t, []int{p.Pid}, 30*time.Second) // the shell exited: every sleep is an orphan now
	if len(pids) != n {
		t.Fatalf("the shell started %d sleeps, want %d", len(pids), n)
	}
	listed := map[int]bool{}
	for _, pid := range children() {
		listed[pid] = true
	}
	for _, pid := range pids {
		if !listed[pid] {
			t.Fatalf("orphan %d not listed (%d of %d listed)", pid, len(listed), n)
		}
	}
}
