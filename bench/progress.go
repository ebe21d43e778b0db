package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"
)

// progressRate is the rate of the progress group's stream: steady, set by
// a rate limit, so that the time left is known at every moment.
const progressRate = 10 << 20

// progressGroup is a steady rate-limited stream (20 s; 5 s with -short)
// run with --progress log at 1 s intervals against the same run with
// --progress never: the progress must cost no time (the limit sets it)
// and little CPU (the CPU columns are the relay's own, as in the ratelimit
// group), and the ETA it logged halfway through must be within 10% of the
// time that was in fact left (the check of every run).
func (h *harness) progressGroup() *group {
	size := int64(200 << 20)
	if h.cfg.short {
		size = 50 << 20
	}
	want := time.Duration(float64(size) / progressRate * float64(time.Second))
	// The time is set by the limit: 3% leaves room for the noise of a
	// shared machine on a 5 s run, and would still show a display that
	// held the stream up.
	tg := target{desc: fmt.Sprintf("time ≤ 1.03x --progress never; ETA logged at %.1f s within 10%% of the time left", want.Seconds()/2),
		maxRatio: 1.03}
	return &group{id: "progress", section: "7. rate limit", needs: []string{"time"}, amount: size, unit: "bytes", runs: 2,
		build: func(g *group) error {
			in, err := h.randomFile(size)
			if err != nil {
				return err
			}
			g.warm = append(g.warm, in)
			cpuDir := filepath.Join(h.dir, "progress-cpu")
			if err := os.MkdirAll(cpuDir, 0o755); err != nil {
				return err
			}
			timed := func(name string, argv ...string) ([]string, string) {
				f := filepath.Join(cpuDir, name)
				return append([]string{h.tools["time"], "-f", "%U %S", "-o", f}, argv...), f
			}
			feed, feedCPU := timed("feed", "cat")
			slow, slowCPU := timed("slow", "cat")
			p, err := h.job("progress", jobBody("progress", in,
				"name = \"feed\"\n"+tomlArgv(feed...),
				"name = \"slow\"\n"+tomlArgv(slow...)+fmt.Sprintf("\nrate_limit = %d", progressRate)))
			if err != nil {
				return err
			}
			never := "pipespool exec cat -> cat, rate_limit 10MiB/s, --progress never (pipespool's CPU)"
			g.add(h.ownCPUVariant(never, func(ctx context.Context) (sample, error) {
				return h.rn.chain(ctx, []proc{{argv: append(p.argv, "--progress", "never")}}, 0, stdio{})
			}, feedCPU, slowCPU))
			logFile := filepath.Join(cpuDir, "progress.log")
			logged := "the same, --progress log every 1s (pipespool's CPU)"
			v := h.ownCPUVariant(logged, func(ctx context.Context) (sample, error) {
				argv := append([]string{"sh", "-c", `exec "$@" 2>"$PROGRESS_LOG"`, "sh"}, p.argv...)
				argv = append(argv, "--progress", "log", "--progress-interval", "1s")
				return h.rn.chain(ctx, []proc{{argv: argv, env: []string{"PROGRESS_LOG=" + logFile}}}, 0, stdio{})
			}, feedCPU, slowCPU)
			v.check = func() error { return checkHalfwayETA(logFile) }
			g.add(v)
			g.compare(logged, never, tg)
			return nil
		}}
}

var (
	progressLine = regexp.MustCompile(`\belapsed=([0-9.]+) .*\beta=([0-9.]+)`)
	finalLine    = regexp.MustCompile(`\bfinal=true .*\belapsed=([0-9.]+)`)
)

// checkHalfwayETA reads the progress lines of a run and checks the ETA of
// the line nearest to half the run against the time that was left.
func checkHalfwayETA(file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	m := finalLine.FindSubmatch(b)
	if m == nil {
		return fmt.Errorf("no final progress line in %q", b)
	}
	total, _ := strconv.ParseFloat(string(m[1]), 64)
	best, bestETA := math.Inf(1), 0.0
	for _, l := range progressLine.FindAllSubmatch(b, -1) {
		e, _ := strconv.ParseFloat(string(l[1]), 64)
		if math.Abs(e-total/2) < math.Abs(best-total/2) {
			eta, _ := strconv.ParseFloat(string(l[2]), 64)
			best, bestETA = e, eta
		}
	}
	if math.IsInf(best, 1) {
		return fmt.Errorf("no progress line with an ETA in %q", b)
	}
	left := total - best
	if math.Abs(bestETA-left) > 0.1*left {
		return fmt.Errorf("ETA %.1f s at %.1f s of a %.1f s run: %.1f s were left (more than 10%% off)", bestETA, best, total, left)
	}
	return nil
}
