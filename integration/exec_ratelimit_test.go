package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rateRep is the part of a --report the rate limit tests check.
type rateRep struct {
	Result string `json:"result"`
	Stages []struct {
		Name      string `json:"name"`
		Stalls    int    `json:"stalls"`
		BytesIn   int64  `json:"bytes_in"`
		RateLimit int64  `json:"rate_limit_bytes_per_second"`
	} `json:"stages"`
}

func readRateReport(t *testing.T, path string) rateRep {
	t.Helper()
	validateReport(t, path)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r rateRep
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// checkRate fails the test unless size bytes through a hop limited to rate
// took as long as the limit says: (size - burst) / rate, within [0.85,
// 1.1] of the rate (loose: process start-up is in the time, and the
// machine may be loaded; a run that ignored the limit takes a fraction of
// it). burst is the hop's: the smaller of 1 MiB and 0.2 s of the rate.
func checkRate(t *testing.T, size, rate int64, took time.Duration) {
	t.Helper()
	burst := min(1<<20, rate/5)
	got := float64(size-burst) / took.Seconds()
	t.Logf("%d bytes in %v: %.2f MiB/s, limit %.2f MiB/s", size, took, got/(1<<20), float64(rate)/(1<<20))
	// The limit is a ceiling, and exceeding it is what this checks: a run
	// can only be slowed by a loaded machine, never sped up. The floor is
	// loose (half the limit) because the elapsed time includes starting the
	// processes, which on a shared machine can take a good part of a second;
	// it still catches a limiter that holds the stream far below its rate.
	// The precision (within 2% over 10 s) is measured by the bench harness.
	if got < 0.5*float64(rate) || got > 1.1*float64(rate) {
		t.Fatalf("%.0f B/s through a hop limited to %d B/s", got, rate)
	}
}

// TestRateLimitInJobFile: rate_limit on a stage holds its input hop to the
// limit, between two processes and between two built-ins (which otherwise
// share a pipe with no pump); the bytes arrive intact, the report says the
// limit, and a stall_timeout shorter than the run calls nothing stalled.
func TestRateLimitInJobFile(t *testing.T) {
	dir := t.TempDir()
	const size, rate = 10 << 20, 4 << 20
	in, sum := randomFile(t, dir, "in.bin", size, 11)
	for _, tc := range []struct {
		name, stages string
		limited      int // index of the limited stage
	}{
		{"processes", `
[[stage]]
name = "feed"
command = ["cat"]
[[stage]]
name = "slow"
command = ["cat"]
rate_limit = "4MiB/s"
`, 1},
		{"built-ins", `
[[stage]]
name = "pack"
builtin = "zstd-compress"
[stage.with]
level = 1
[[stage]]
name = "slow"
builtin = "zstd-decompress"
rate_limit = "4m"
`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, tc.name+".out")
			rp := filepath.Join(dir, tc.name+".json")
			job := writeFile(t, dir, tc.name+".toml", "stall_timeout = \"1s\"\non_stall = \"kill\"\n"+tc.stages)
			res := runPipespool(t, runOpts{}, "exec", job, "-i", in, "-o", out, "--report", rp)
			if res.Code != 0 {
				t.Fatalf("exit %d\nstderr: %s", res.Code, res.Stderr)
			}
			if fileSHA256(t, out) != sum {
				t.Fatal("output differs from input")
			}
			rep := readRateReport(t, rp)
			for i, s := range rep.Stages {
				if s.Stalls != 0 {
					t.Errorf("stage %s: %d stalls", s.Name, s.Stalls)
				}
				if want := map[bool]int64{true: rate}[i == tc.limited]; s.RateLimit != want {
					t.Errorf("stage %s: report rate_limit %d, want %d", s.Name, s.RateLimit, want)
				}
			}
			// Random bytes do not compress: the limited hop carries about
			// size bytes in both cases (zstd's frame adds a little).
			checkRate(t, rep.Stages[tc.limited].BytesIn, rate, res.Elapsed)
		})
	}
}

// TestRateLimitFlag: --rate-limit limits the run's input, also when the
// input is a regular file that would otherwise be handed to the first
// stage directly (a limited hop always goes through the pump); it replaces
// the first stage's rate_limit; check shows it; a bad rate is a usage error.
func TestRateLimitFlag(t *testing.T) {
	dir := t.TempDir()
	const size, rate = 8 << 20, 4 << 20
	in, sum := randomFile(t, dir, "in.bin", size, 12)
	out := filepath.Join(dir, "out.bin")
	rp := filepath.Join(dir, "report.json")
	job := writeFile(t, dir, "job.toml", `
stall_timeout = "1s"
[[stage]]
name = "first"
command = ["cat"]
rate_limit = "1GiB/s"
`)
	res := runPipespool(t, runOpts{}, "exec", job, "-i", in, "-o", out, "--rate-limit", "4MiB/s", "--report", rp)
	if res.Code != 0 {
		t.Fatalf("exit %d\nstderr: %s", res.Code, res.Stderr)
	}
	if fileSHA256(t, out) != sum {
		t.Fatal("output differs from input")
	}
	rep := readRateReport(t, rp)
	if s := rep.Stages[0]; s.RateLimit != rate || s.Stalls != 0 || s.BytesIn != size {
		t.Errorf("report: %+v; want rate_limit %d, no stalls, %d bytes in", s, rate, size)
	}
	checkRate(t, size, rate, res.Elapsed)

	// Through stdin, a pipe: the same limit.
	f, err := os.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res = runPipespool(t, runOpts{Stdin: f}, "exec", job, "-i", "-", "-o", out, "--rate-limit", "4m")
	if res.Code != 0 {
		t.Fatalf("stdin: exit %d\nstderr: %s", res.Code, res.Stderr)
	}
	if fileSHA256(t, out) != sum {
		t.Fatal("stdin: output differs from input")
	}
	checkRate(t, size, rate, res.Elapsed)

	res = runPipespool(t, runOpts{}, "exec", job, "--dry-run", "--rate-limit", "50M")
	if res.Code != 0 || !strings.Contains(string(res.Stderr), "input limited to 50.0 MiB/s") {
		t.Errorf("--dry-run: exit %d, stderr %s; want the limit in the stage graph", res.Code, res.Stderr)
	}
	res = runPipespool(t, runOpts{}, "check", job)
	if res.Code != 0 || !strings.Contains(string(res.Stdout)+string(res.Stderr), "input limited to 1.0 GiB/s") {
		t.Errorf("check: exit %d, output %s%s; want the job file's limit in the stage graph", res.Code, res.Stdout, res.Stderr)
	}
	for _, bad := range []string{"fast", "0", "50MiB/h"} {
		res = runPipespool(t, runOpts{}, "exec", job, "-i", in, "-o", out, "--rate-limit", bad)
		if res.Code != 2 || !strings.Contains(string(res.Stderr), "--rate-limit") {
			t.Errorf("--rate-limit %s: exit %d, stderr %s; want 2 and a message naming the flag", bad, res.Code, res.Stderr)
		}
	}
}
