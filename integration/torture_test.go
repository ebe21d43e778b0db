package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The torture harness (issue 8): random pipelines under a storm of
// SIGSTOP/SIGCONT, strace attach/detach and SIGCHLD noise, several at once,
// each checked against an oracle computed independently of pipespool.
//
//	TORTURE_SEED=N       the seed (default: the clock; printed either way)
//	TORTURE_BUDGET=5m    wall time for the runs (default 2m, 30s with -short)
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
	seed    uint64
	budget  time.Duration
	runs    int64 // 0: no limit
	only    int64 // >0: replay this run alone
	big     bool
	storm   bool
	workers int
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
	env("TORTURE_BUDGET", func(v string) (err error) { c.budget, err = time.ParseDuration(v); return })
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
	prefix := fmt.Sprintf("ttm%dp", os.Getpid())
	t.Logf("torture: TORTURE_SEED=%d budget %s workers %d storm %v big %v", c.seed, c.budget, c.workers, c.storm, c.big)
	var st *storm
	if c.storm {
		st = startStorm(c.seed, prefix)
		defer st.Stop()
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
					ok, code, n := tortureRun(t, c, i, prefix, torturer, pass)
					done.Add(1)
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
	t.Logf("torture: TORTURE_SEED=%d: %d pipelines in %s (%d succeeded, %d failed as the oracle said), %d did not match the oracle; %.1f MiB out",
		c.seed, done.Load(), time.Since(start).Round(time.Second), okRuns.Load(), failRuns.Load(), failed.Load(), float64(bytesOut.Load())/(1<<20))
}

// tortureRun runs pipeline i and checks it against its oracle. It reports
// whether everything matched, pipespool's exit status and the output size.
func tortureRun(t *testing.T, c tortureConfig, i int64, prefix, torturer, pass string) (ok bool, code int, outBytes int64) {
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
	p := genPipeline(seed, c.big, tEnv{relBin: "./bin-" + marker, absBin: bin, marker: marker, pass: pass})
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf("run %d (replay: TORTURE_SEED=%d TORTURE_RUN=%d go test -run 'TestTorture$' ./integration/): %s\n  %s",
			i, c.seed, i, fmt.Sprintf(format, args...), p.describe())
		ok = false
	}
	ok = true
	job := writeFile(t, dir, "job.toml", p.jobFile(marker))
	report := filepath.Join(dir, "report.json")
	outDir := filepath.Join(dir, "out")
	if err := os.Mkdir(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Run from another directory than the job file's: the relative
	// ./bin-MARKER/... commands must resolve against the job file.
	args := []string{"exec", job, "--report", report, "--log-level", "error"}
	o := runOpts{Dir: "/", Timeout: 90 * time.Second}
	if p.size > 16<<20 {
		o.Timeout = 10 * time.Minute
	}
	switch p.source {
	case "file", "pipe":
		in, _ := randomFile(t, dir, "in.bin", p.size, p.dataSeed)
		if p.source == "file" {
			args = append(args, "-i", in)
		} else {
			f, err := os.Open(in)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			o.Stdin = struct{ io.Reader }{f} // not an *os.File: exec makes a pipe
		}
	}
	out := filepath.Join(outDir, "out.bin")
	var h hash.Hash
	var n countWriter
	if p.sink == "file" {
		args = append(args, "-o", out)
	} else {
		h = sha256.New()
		o.Stdout = io.MultiWriter(h, &n)
	}
	wantSum, wantLen := p.want()
	res := runPipespool(t, o, args...)
	code = res.Code
	if res.Code != p.wantCode {
		fail("exit %d, want %d\nstderr:\n%s", res.Code, p.wantCode, res.Stderr)
	}
	var rep struct {
		Result    string `json:"result"`
		RootCause string `json:"root_cause"`
		Message   string `json:"message"`
	}
	if b, err := os.ReadFile(report); err != nil {
		fail("no report: %v", err)
	} else if err := json.Unmarshal(b, &rep); err != nil {
		fail("report: %v", err)
	} else {
		wantResult := "success"
		if p.wantCode != 0 {
			wantResult = "failed"
		}
		if rep.Result != wantResult || rep.RootCause != p.wantRoot {
			fail("report: result %q root cause %q (%s), want %q %q\nreport: %s", rep.Result, rep.RootCause, rep.Message, wantResult, p.wantRoot, b)
		}
	}
	if p.wantCode == 0 && res.Code == 0 {
		var got string
		if p.sink == "file" {
			got = fileSHA256(t, out)
			if st, err := os.Stat(out); err == nil {
				outBytes = st.Size()
			}
		} else {
			got, outBytes = hex.EncodeToString(h.Sum(nil)), int64(n)
		}
		if got != wantSum || outBytes != wantLen {
			fail("output: %d bytes sha256 %s, want %d bytes %s", outBytes, got, wantLen, wantSum)
		}
	}
	if res.Code != 0 && p.sink == "file" {
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			fail("a failed run left its output file: %v", err)
		}
	}
	// Nothing but the committed output: no temporary file left behind.
	ents, _ := os.ReadDir(outDir)
	for _, e := range ents {
		if !(e.Name() == "out.bin" && p.sink == "file" && res.Code == 0) {
			fail("file left in the output directory: %s", e.Name())
		}
	}
	assertNoProcesses(t, marker)
	return ok, code, outBytes
}

type countWriter int64

func (c *countWriter) Write(b []byte) (int, error) { *c += countWriter(len(b)); return len(b), nil }
