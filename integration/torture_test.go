package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The torture harness: random pipelines under a storm of
// SIGSTOP/SIGCONT, strace attach/detach and SIGCHLD noise, several at once,
// each checked against an oracle computed independently of pipespool.
//
//	TORTURE_SEED=N       the seed (default: the clock; printed either way)
//	TORTURE_BUDGET=5m    wall time for the runs (default 2m, 30s with -short,
//	                     less when go test's -timeout would come first)
//	TORTURE_RUNS=N       stop after N runs (default: the budget decides)
//	TORTURE_RUN=N        replay run N of TORTURE_SEED alone
//	TORTURE_BIG=1        now and then a stream of 64 to 256 MiB
//	TORTURE_STORM=0      no storm
//
// Concurrency is go test's -parallel (default GOMAXPROCS): one worker per
// parallel slot, TORTURE_WORKERS of them (default 3).
//
// A failure prints the seed and the run number; TORTURE_SEED=S TORTURE_RUN=N
// replays the same pipeline, the same sizes and the same data (the storm's
// timing cannot be replayed).

type tortureConfig struct {
	seed   uint64
	budget time.Duration
	// budgetSet: TORTURE_BUDGET gave the budget, taken as asked (else it
	// fits go test's -timeout: see fitDeadline).
	budgetSet bool
	runs      int64 // 0: no limit
	only      int64 // >0: replay this run alone
	big       bool
	storm     bool
	workers   int
}

// tortureReserve is the time the default budget leaves before go test's
// -timeout: the runs in flight at the budget's end finish (a big stream
// under the storm takes seconds), and the storm and the workers stop.
const tortureReserve = 90 * time.Second

// fitDeadline lowers the default budget so that the whole test binary ends
// before go test's -timeout (10 minutes unless given): `go test -race
// ./...` runs every package at once, and on 2 cores the end-to-end tests
// before the torture take most of those 10 minutes. An explicit
// TORTURE_BUDGET is taken as asked.
func fitDeadline(t *testing.T, budget time.Duration) time.Duration {
	dl, ok := t.Deadline()
	if !ok {
		return budget
	}
	left := time.Until(dl) - tortureReserve
	if left >= budget {
		return budget
	}
	least := 10 * time.Second
	t.Logf("torture: budget lowered from %s to %s to end before go test's -timeout (give -timeout 40m for the full budget)", budget, max(left, least).Round(time.Second))
	return max(left, least)
}

func loadTortureConfig(t *testing.T) tortureConfig {
	c := tortureConfig{seed: uint64(time.Now().UnixNano()), budget: 2 * time.Minute, storm: true, workers: 3}
	if testing.Short() {
		c.budget = 30 * time.Second
	}
	env := func(name string, parse func(string) error) {
		if v := os.Getenv(name); v != "" {
			if err := parse(v); err != nil {
				t.Fatalf("%s=%q: %v", name, v, err)
			}
		}
	}
	env("TORTURE_SEED", func(v string) (err error) { c.seed, err = strconv.ParseUint(v, 10, 64); return })
	env("TORTURE_BUDGET", func(v string) (err error) { c.budget, err = time.ParseDuration(v); c.budgetSet = true; return })
	env("TORTURE_RUNS", func(v string) (err error) { c.runs, err = strconv.ParseInt(v, 10, 64); return })
	env("TORTURE_RUN", func(v string) (err error) { c.only, err = strconv.ParseInt(v, 10, 64); return })
	env("TORTURE_WORKERS", func(v string) (err error) { c.workers, err = strconv.Atoi(v); return })
	c.big = os.Getenv("TORTURE_BIG") == "1"
	c.storm = os.Getenv("TORTURE_STORM") != "0"
	if c.only > 0 {
		c.workers, c.runs = 1, 1
	}
	return c
}

var (
	torturerOnce sync.Once
	torturerBin  string
	torturerErr  error
)

// buildTorturer builds testdata/fixtures/torturer once, beside pipespool's
// binary (TestMain removes that directory).
func buildTorturer(t *testing.T) string {
	t.Helper()
	torturerOnce.Do(func() {
		torturerBin = filepath.Join(filepath.Dir(pipespoolBin), "torturer")
		out, err := exec.Command("go", "build", "-o", torturerBin, "../testdata/fixtures/torturer").CombinedOutput()
		if err != nil {
			torturerErr = fmt.Errorf("building the torturer fixture: %v\n%s", err, out)
		}
	})
	if torturerErr != nil {
		t.Fatal(torturerErr)
	}
	return torturerBin
}

// runSeed derives the seed of run i (splitmix64), so that any run can be
// replayed alone.
func runSeed(seed uint64, i int64) uint64 {
	z := seed + uint64(i)*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

func TestTorture(t *testing.T) {
	needTools(t, "strace")
	c := loadTortureConfig(t)
	torturer := buildTorturer(t)
	pass, err := filepath.Abs("../testdata/keys/symmetric.pass")
	if err != nil {
		t.Fatal(err)
	}
	// A signal this test was started ignoring (HUP under nohup; INT and
	// QUIT in a shell's background job) would be ignored by every
	// pipespool it starts, as pipespool promises: caught here instead,
	// and dropped, its children get the default again.
	var ignored []os.Signal
	for _, sig := range []os.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT} {
		if signal.Ignored(sig) {
			ignored = append(ignored, sig)
		}
	}
	if len(ignored) > 0 {
		drop := make(chan os.Signal, 1)
		signal.Notify(drop, ignored...)
		defer signal.Stop(drop)
		t.Logf("torture: %v were ignored by this test: caught and dropped, so that pipespool gets them", ignored)
	}
	prefix := fmt.Sprintf("ttm%dp", os.Getpid())
	t.Logf("torture: TORTURE_SEED=%d budget %s (before fitting go test's -timeout) workers %d storm %v big %v", c.seed, c.budget, c.workers, c.storm, c.big)
	var st *storm
	if c.storm {
		st = startStorm(c.seed, prefix)
		defer st.Stop()
	}
	if !c.budgetSet {
		// Measured from here: building the fixtures above takes a while.
		c.budget = fitDeadline(t, c.budget)
	}
	deadline := time.Now().Add(c.budget)
	var next, done, failed, okRuns, failRuns atomic.Int64
	var bytesOut atomic.Int64
	start := time.Now()
	t.Run("workers", func(t *testing.T) {
		for w := 0; w < c.workers; w++ {
			t.Run(strconv.Itoa(w), func(t *testing.T) {
				t.Parallel()
				for time.Now().Before(deadline) {
					i := next.Add(1)
					if c.runs > 0 && i > c.runs {
						return
					}
					if c.only > 0 {
						i = c.only
					}
					ok, code, n := tortureRun(t, c, st, i, prefix, torturer, pass)
					if d := done.Add(1); d%1000 == 0 {
						// A long run stopped by hand still says how far
						// it got (the summary comes only at its end).
						t.Logf("torture: %d runs in %s, %d did not match the oracle", d, time.Since(start).Round(time.Second), failed.Load())
					}
					bytesOut.Add(n)
					switch {
					case !ok:
						failed.Add(1)
					case code == 0:
						okRuns.Add(1)
					default:
						failRuns.Add(1)
					}
					if failed.Load() >= 5 {
						t.Fatalf("stopping after 5 failed runs")
					}
				}
			})
		}
	})
	if st != nil {
		st.Stop()
		t.Logf("storm: %d SIGSTOP/SIGCONT, %d strace attach/detach, %d SIGCHLD", st.stops.Load(), st.straces.Load(), st.chlds.Load())
		if st.leftover > 0 {
			t.Errorf("storm: %d strace processes outlived the storm", st.leftover)
		}
	}
	t.Logf("torture: TORTURE_SEED=%d: %d pipelines (%d of them trees) in %s (%d succeeded, %d failed as the oracle said), %d did not match the oracle; %.1f MiB out",
		c.seed, done.Load(), tortureTrees.Load(), time.Since(start).Round(time.Second), okRuns.Load(), failRuns.Load(), failed.Load(), float64(bytesOut.Load())/(1<<20))
}

// tortureTrees counts the runs whose pipeline is a tree (fans out).
var tortureTrees atomic.Int64

// tortureRun runs pipeline i and checks it against its oracle. It reports
// whether everything matched, pipespool's exit status and the output size.
func tortureRun(t *testing.T, c tortureConfig, st *storm, i int64, prefix, torturer, pass string) (ok bool, code int, outBytes int64) {
	t.Helper()
	seed := runSeed(c.seed, i)
	marker := fmt.Sprintf("%s%dx", prefix, i) // "x" ends it: run 1 is no prefix of run 10
	dir, err := os.MkdirTemp("", "torture-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "bin-"+marker)
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range binLinks(torturer) {
		if err := os.Symlink(target, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	p := genPipeline(seed, c.big, tEnv{relBin: "./bin-" + marker, absBin: bin, marker: marker, pass: pass, absDir: dir, root: os.Geteuid() == 0})
	if len(p.branches) > 0 {
		tortureTrees.Add(1)
	}
	ok = true
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf("run %d (replay: TORTURE_SEED=%d TORTURE_RUN=%d go test -run 'TestTorture$' ./integration/): %s\n  %s",
			i, c.seed, i, fmt.Sprintf(format, args...), p.describe())
		ok = false
	}
	job := writeFile(t, dir, "job.toml", p.jobFile(marker))
	outDir := filepath.Join(dir, "out")
	if err := os.Mkdir(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if p.sink == "link" {
		if err := os.Symlink("target.bin", filepath.Join(outDir, "out.bin")); err != nil {
			t.Fatal(err)
		}
	}
	if p.sink == "fifo" {
		if err := syscall.Mkfifo(filepath.Join(outDir, "out.fifo"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if p.sink == "full" {
		full := filepath.Join(outDir, "full")
		os.Mkdir(full, 0o755)
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", p.fsSize), "tmpfs", full).CombinedOutput(); err != nil {
			t.Fatalf("mount a tmpfs for a full output: %v: %s", err, out)
		}
		defer exec.Command("umount", full).Run()
	}
	if p.source == "file" || p.source == "pipe" {
		randomFile(t, dir, "in.bin", p.size, p.dataSeed)
	}
	var stages []int // with SIGKILL: the stages' main processes when it was sent
	replay := fmt.Sprintf("run %d (replay: TORTURE_SEED=%d TORTURE_RUN=%d go test -run 'TestTorture$' ./integration/): %s", i, c.seed, i, p.describe())
	code, outBytes = tortureExec(t, st, p, dir, job, marker, replay, p.signal, &stages, fail)
	if p.signal == syscall.SIGKILL {
		// Killed: its stages die with it (parent-death signal), and the
		// next run of the same output removes what it left. A process
		// a stage moved out of its group and session (setsid) is out of
		// reach once pipespool is gone (docs/exec.md): the test ends it.
		deadline := time.Now().Add(time.Second)
		for len(aliveOf(stages)) > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if left := aliveOf(stages); len(left) > 0 {
			fail("a second after pipespool was killed, stages live on: %v (of %v)", left, stages)
		}
		if left := killMarked(marker); len(left) > 0 {
			fail("processes of the killed run outlive SIGKILL: %v", left)
		}
		writeFile(t, dir, p.holdFile, "")
		p.wantCode, p.wantResult = 0, "success"
		code, outBytes = tortureExec(t, st, p, dir, job, marker, replay, 0, nil, fail)
	}
	return ok, code, outBytes
}

// tortureExec runs the job of p once (sending sig mid-run unless 0) and
// checks the result against the oracle: exit status, report, output,
// files left, processes left.
//
// A run that outlives its timeout fails the test with replay (which run,
// and how to replay it) and the state of its processes.
func tortureExec(t *testing.T, st *storm, p *tPipeline, dir, job, marker, replay string, sig syscall.Signal, stages *[]int, fail func(string, ...any)) (code int, outBytes int64) {
	t.Helper()
	report := filepath.Join(dir, "report.json")
	os.Remove(report)
	outDir := filepath.Join(dir, "out")
	// Run from another directory than the job file's: the relative
	// ./bin-MARKER/... commands must resolve against the job file.
	args := []string{"exec", job, "--report", report, "--log-level", "error"}
	o := runOpts{Dir: "/", Timeout: 90 * time.Second}
	var pidOf atomic.Int64 // pipespool's
	o.OnHang = func() string {
		return replay + "\nprocesses (pid state wchan):\n" + processStates(int(pidOf.Load()), marker)
	}
	if p.size > 16<<20 {
		o.Timeout = 10 * time.Minute
	}
	in := filepath.Join(dir, "in.bin")
	switch p.source {
	case "file":
		args = append(args, "-i", in)
	case "pipe":
		f, err := os.Open(in)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		o.Stdin = struct{ io.Reader }{f} // not an *os.File: exec makes a pipe
	}
	h := sha256.New()
	var n countWriter
	var readerDone chan struct{}
	var afterStart []func()
	switch p.sink {
	case "file", "link":
		args = append(args, "-o", filepath.Join(outDir, "out.bin"))
	case "full":
		args = append(args, "-o", filepath.Join(outDir, "full", "out.bin"))
	case "stdout":
		o.Stdout = io.MultiWriter(h, &n)
	case "devnull":
		f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		o.Stdout = f
	case "cut":
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		o.Stdout = pw
		readerDone = make(chan struct{})
		go func() {
			defer close(readerDone)
			io.CopyN(io.MultiWriter(h, &n), pr, p.cutAt)
			pr.Close() // the reader goes away
		}()
		afterStart = append(afterStart, func() { pw.Close() })
		defer pw.Close()
	case "fifo":
		fifo := filepath.Join(outDir, "out.fifo")
		args = append(args, "-o", fifo)
		readerDone = make(chan struct{})
		go func() {
			defer close(readerDone)
			time.Sleep(p.fifoDelay) // pipespool's open must wait for it
			f, err := os.Open(fifo)
			if err != nil {
				return
			}
			io.Copy(io.MultiWriter(h, &n), f)
			f.Close()
		}()
		defer func() {
			// A run that never opened the FIFO leaves the reader in
			// open(2): a writer that comes and goes frees it.
			if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				w.Close()
			}
		}()
	}
	var unspare func()
	res := runPipespoolWith(t, o, func(pid int) {
		pidOf.Store(int64(pid))
		for _, f := range afterStart {
			f()
		}
		if sig == 0 {
			return
		}
		// Once a stage runs, pipespool handles signals; then a moment
		// into the run, whatever it is doing.
		deadline := time.Now().Add(30 * time.Second)
		for len(processesWithMarker(marker)) == 0 && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
		time.Sleep(p.sigDelay)
		if stages != nil {
			*stages = stageLeaders(marker)
		}
		if st != nil {
			// A storm's strace detaching from pipespool could swallow
			// the signal (storm.spare): none traces it from here on.
			unspare = st.spare(pid)
		}
		syscall.Kill(pid, sig)
	}, args...)
	if unspare != nil {
		unspare()
	}
	if readerDone != nil {
		if p.sink == "fifo" {
			if w, err := os.OpenFile(filepath.Join(outDir, "out.fifo"), os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				w.Close()
			}
		}
		<-readerDone
	}
	code = res.Code
	if res.Code != p.wantCode {
		fail("exit %d, want %d\nstderr:\n%s", res.Code, p.wantCode, res.Stderr)
	}
	if sig == syscall.SIGQUIT && bytes.Contains(res.Stderr, []byte("goroutine ")) {
		fail("SIGQUIT printed a Go dump:\n%s", res.Stderr)
	}
	var rep struct {
		Result    string `json:"result"`
		RootCause string `json:"root_cause"`
		Message   string `json:"message"`
		Stages    []struct {
			BytesOut int64 `json:"bytes_out"`
		} `json:"stages"`
	}
	if sig != syscall.SIGKILL {
		if b, err := os.ReadFile(report); err != nil {
			fail("no report: %v", err)
		} else if err := json.Unmarshal(b, &rep); err != nil {
			fail("report: %v", err)
		} else if rep.Result != p.wantResult || (p.wantResult != "interrupted" && rep.RootCause != p.wantRoot) {
			fail("report: result %q root cause %q (%s), want %q %q\nreport: %s", rep.Result, rep.RootCause, rep.Message, p.wantResult, p.wantRoot, b)
		}
	}
	wantSum, wantLen := p.want()
	if p.wantCode == 0 && res.Code == 0 {
		var got string
		switch p.sink {
		case "file", "link":
			target := filepath.Join(outDir, "out.bin")
			if p.sink == "link" {
				if fi, err := os.Lstat(target); err != nil || fi.Mode()&os.ModeSymlink == 0 {
					fail("the output link was replaced: %v", err)
				}
				target = filepath.Join(outDir, "target.bin")
			}
			got = fileSHA256(t, target)
			if st, err := os.Stat(target); err == nil {
				outBytes = st.Size()
			}
		case "devnull":
			got = wantSum // nothing to hash: the report's count is the check
			if len(rep.Stages) >= len(p.stages) && len(p.stages) > 0 {
				// The line's last stage (a tree's side branches follow).
				outBytes = rep.Stages[len(p.stages)-1].BytesOut
			}
		default:
			got, outBytes = hex.EncodeToString(h.Sum(nil)), int64(n)
		}
		if got != wantSum || outBytes != wantLen {
			fail("output: %d bytes sha256 %s, want %d bytes %s", outBytes, got, wantLen, wantSum)
		}
		// A tree: each side branch's file, but an optional one that
		// failed, whose output is discarded.
		for b, br := range p.branches {
			path := filepath.Join(dir, br.out)
			if br.fails {
				if _, err := os.Stat(path); !os.IsNotExist(err) {
					fail("branch %d failed (optional) but its output %s exists: %v", b+1, br.out, err)
				}
				continue
			}
			ws, wl := p.wantBranch(b)
			if st, err := os.Stat(path); err != nil {
				fail("branch %d: no output %s: %v", b+1, br.out, err)
			} else if gs := fileSHA256(t, path); gs != ws || st.Size() != wl {
				fail("branch %d output %s: %d bytes sha256 %s, want %d bytes %s", b+1, br.out, st.Size(), gs, wl, ws)
			}
		}
	}
	// Nothing but the committed output: no temporary file left behind
	// (after SIGKILL, the next run has to clean up).
	if sig != syscall.SIGKILL {
		ents, _ := os.ReadDir(outDir)
		for _, e := range ents {
			committed := res.Code == 0 && (p.sink == "file" && e.Name() == "out.bin" || p.sink == "link" && e.Name() == "target.bin" || p.branchOutput(e.Name()))
			kept := p.sink == "link" && e.Name() == "out.bin" || p.sink == "fifo" && e.Name() == "out.fifo" || p.sink == "full" && e.Name() == "full"
			if !committed && !kept {
				fail("file left in the output directory: %s (open in: %v)\nstderr:\n%s", e.Name(), holdersOfPath(filepath.Join(outDir, e.Name())), res.Stderr)
			}
		}
		if p.sink == "full" {
			if ents, _ := os.ReadDir(filepath.Join(outDir, "full")); len(ents) > 0 {
				fail("file left on the full file system: %s", ents[0].Name())
			}
		}
		assertNoProcesses(t, marker)
	}
	return code, outBytes
}

// stageLeaders lists the live processes of the run marked marker that lead
// a process group of their own in another session: the stages' main
// processes (a process that called setsid leads its own session).
func stageLeaders(marker string) []int {
	var pids []int
	for _, line := range processesWithMarker(marker) {
		pid, err := strconv.Atoi(strings.Fields(line)[0])
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 3 && f[2] == strconv.Itoa(pid) && f[3] != strconv.Itoa(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// aliveOf returns the pids of pids that are alive (not zombies).
func aliveOf(pids []int) []int {
	var out []int
	for _, pid := range pids {
		if processExists(pid) {
			out = append(out, pid)
		}
	}
	return out
}

type countWriter int64

func (c *countWriter) Write(b []byte) (int, error) { *c += countWriter(len(b)); return len(b), nil }

// holdersOfPath lists the processes with an fd open on path, for a failure
// message: "1234 sleep 30".
func holdersOfPath(path string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		dir := "/proc/" + e.Name() + "/fd/"
		fds, _ := os.ReadDir(dir)
		for _, fd := range fds {
			if l, _ := os.Readlink(dir + fd.Name()); l == path {
				cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
				out = append(out, e.Name()+" "+strings.TrimSpace(string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))))
				break
			}
		}
	}
	return out
}

// branchOutput reports whether name (in out/) is the output of a side
// branch that commits it (not an optional branch that failed).
func (p *tPipeline) branchOutput(name string) bool {
	for _, br := range p.branches {
		if "out/"+name == br.out && !br.fails {
			return true
		}
	}
	return false
}
