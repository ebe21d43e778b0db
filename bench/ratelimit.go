package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const (
	// limitRate is the rate limit of the ratelimit group: 100 MiB/s, a
	// rate a user sets to spare a disk or a link, far below a pipe's.
	limitRate = 100 << 20
	// limitTolerance is how far the stream's time may be from what the
	// limit makes it (size / rate): 2%.
	limitTolerance = 0.02
	// limitCPUShare bounds the CPU the limited relay itself may use while
	// the stream runs: 5% of one core.
	limitCPUShare = 0.05
)

// rateLimitGroup is a stream through a hop limited to 100 MiB/s, in
// pipespool (`cat -> cat` with rate_limit on the second stage's input) and
// in the shell with pv (`cat | pv -q -L 100m | cat`). The stream must take
// size / rate within 2%, and the relay (pipespool or pv) use under 5% of a
// core meanwhile. The CPU column of this group is the relay's own: each
// cat runs under GNU time, which writes its CPU to a file, and that is
// taken off the run's total (the cats' work is the same on both sides and
// is not the relay's).
func (h *harness) rateLimitGroup() *group {
	size := int64(1 << 30)
	if h.cfg.short {
		size = 256 << 20
	}
	want := time.Duration(float64(size) / limitRate * float64(time.Second))
	desc := fmt.Sprintf("%.2f s ± 2%%, own CPU < 5%% of a core (%.2f s)", want.Seconds(), limitCPUShare*want.Seconds())
	tg := target{desc: desc,
		minWall: time.Duration(float64(want) * (1 - limitTolerance)),
		maxWall: time.Duration(float64(want) * (1 + limitTolerance)),
		maxCPU:  time.Duration(float64(want) * limitCPUShare)}
	return &group{id: "ratelimit", section: "7. rate limit", needs: []string{"pv", "time"}, amount: size, unit: "bytes", runs: 3,
		build: func(g *group) error {
			in, err := h.randomFile(size)
			if err != nil {
				return err
			}
			g.warm = append(g.warm, in)
			cpuDir := filepath.Join(h.dir, "ratelimit-cpu")
			if err := os.MkdirAll(cpuDir, 0o755); err != nil {
				return err
			}
			timed := func(name string, argv ...string) ([]string, string) {
				f := filepath.Join(cpuDir, name)
				return append([]string{h.tools["time"], "-f", "%U %S", "-o", f}, argv...), f
			}

			src, srcCPU := timed("pv-src", "cat", in)
			dst, dstCPU := timed("pv-dst", "cat")
			pv := "cat | pv -q -L 100m | cat, 1 MiB pipes (pv's CPU)"
			g.add(h.ownCPUVariant(pv, func(ctx context.Context) (sample, error) {
				return h.rn.chain(ctx, []proc{{argv: src}, {argv: []string{"pv", "-q", "-L", "100m"}}, {argv: dst}}, pipeSize, stdio{})
			}, srcCPU, dstCPU))

			feed, feedCPU := timed("pp-feed", "cat")
			slow, slowCPU := timed("pp-slow", "cat")
			p, err := h.job("ratelimit", jobBody("ratelimit", in,
				"name = \"feed\"\n"+tomlArgv(feed...),
				"name = \"slow\"\n"+tomlArgv(slow...)+"\nrate_limit = \"100MiB/s\""))
			if err != nil {
				return err
			}
			pp := "pipespool exec cat -> cat, rate_limit 100MiB/s (pipespool's CPU)"
			g.add(h.ownCPUVariant(pp, func(ctx context.Context) (sample, error) {
				return h.rn.chain(ctx, []proc{p}, 0, stdio{})
			}, feedCPU, slowCPU))
			g.compare(pp, pv, tg)
			return nil
		}}
}

// ownCPUVariant runs run and takes off its CPU what the processes that
// wrote their "%U %S" (GNU time) to the files used: what is left is the
// CPU of the rest (the relay), with that of the time processes, a few ms.
func (h *harness) ownCPUVariant(name string, run func(ctx context.Context) (sample, error), cpuFiles ...string) *variant {
	return &variant{name: name, run: func(ctx context.Context) (sample, error) {
		for _, f := range cpuFiles {
			os.Remove(f)
		}
		s, err := run(ctx)
		if err != nil {
			return s, err
		}
		for _, f := range cpuFiles {
			d, err := readTimeCPU(f)
			if err != nil {
				return s, err
			}
			s.cpu -= d
		}
		return s, nil
	}}
}

// readTimeCPU reads the "%U %S" GNU time wrote last in file.
func readTimeCPU(file string) (time.Duration, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, fmt.Errorf("time(1) output: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	f := strings.Fields(lines[len(lines)-1])
	if len(f) != 2 {
		return 0, fmt.Errorf("time(1) output %q: want user and system seconds", b)
	}
	var total time.Duration
	for _, s := range f {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, fmt.Errorf("time(1) output %q: %w", b, err)
		}
		total += time.Duration(v * float64(time.Second))
	}
	return total, nil
}
