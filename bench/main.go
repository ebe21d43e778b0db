// Command bench is pipespool's benchmark harness: it measures pipespool
// side by side with the kernel's limit (processes joined directly by a
// pipe) and with its peers (pv, mbuffer, an io.Copy relay, zstd, gpg,
// fspl), and writes the table of docs/benchmarks.md.
//
//	go run ./bench                          # full run, 7-10 minutes on 2 cores
//	go run ./bench -short                   # about 1-2 minutes
//	go run ./bench -out docs/benchmarks.md  # also write the report
//	go run ./bench -cases 'relay|zstd'      # only the matching groups
//
// It builds pipespool once, prepares deterministic data under a temporary
// directory, and runs every case several times, alternating with its
// baseline in the same rounds; it reports medians and their ratio.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(run())
}

func run() int {
	short := flag.Bool("short", false, "smaller data and fewer runs: about 1-2 minutes")
	runs := flag.Int("runs", 0, "runs of every case and baseline (default: 3 to 7 by cost of the case, 21 for relays of 256 MiB or less, 3 with -short)")
	out := flag.String("out", "", "write the report (markdown) to this file, e.g. docs/benchmarks.md")
	cases := flag.String("cases", "", "run only the groups whose id matches this regexp (ids: relay, stages4, zstd-compress, zstd-decompress, openpgp-{en,de}crypt-{pub,sym}, restore, queue-payload, queue-tiny, queue-prepare, queue-junk, multiqueue, scale-SIZE, idle, ratelimit, progress, nncp, backup-{pub,sym,encrypt,compress}, buffer, fanout)")
	keep := flag.Bool("keep", false, "keep the work directory (data, jobs, binaries) and print its path")
	noInstall := flag.Bool("no-install", false, "do not apt-get install missing peers, skip their cases")
	backupSize := flag.Int64("backup-size", 0, "bytes of the tar of /usr the backup groups compress and encrypt (default 1 GiB, 256 MiB with -short)")
	tmp := flag.String("tmpdir", "", "where to make the work directory (default $TMPDIR or /tmp); needs about 8 GiB free, 2 GiB with -short")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "bench: no arguments expected; see go run ./bench -h")
		return 2
	}

	cfg := newConfig(*short)
	cfg.runsFlag = *runs
	if *backupSize > 0 {
		cfg.backupSize = *backupSize
	}
	cfg.out, cfg.keep, cfg.noInstall, cfg.tmpDir = *out, *keep, *noInstall, *tmp
	if *cases != "" {
		re, err := regexp.Compile(*cases)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: -cases:", err)
			return 2
		}
		cfg.cases = re
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	h := &harness{cfg: cfg, ctx: ctx, files: map[string]string{},
		log: func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
		}}
	if err := h.setup(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer h.cleanup()

	env := probeEnv()
	failed := 0
	var done []*group
	for _, g := range h.groups() {
		if !h.selected(g.id) {
			continue
		}
		if m := h.missing(g.needs...); m != "" {
			h.skip(g.id, m+" not installed")
			continue
		}
		if ctx.Err() != nil {
			break
		}
		h.log("%s: preparing", g.id)
		if err := g.build(g); err != nil {
			g.err = err
		} else {
			g.err = g.measure(ctx, h.runsFor(g), h.log)
		}
		if g.err != nil {
			failed++
			h.log("%s FAILED: %v", g.id, g.err)
		}
		done = append(done, g)
		for _, r := range g.rows() {
			if g.err == nil {
				h.log("%s: %s vs %s: %s", g.id, r.caseName, r.baseName, fmtRatio(ratio(r.c.wall, r.b.wall)))
			}
		}
	}
	env.finish(h)
	report := h.report(done, env, time.Since(start))
	fmt.Print(report)
	if cfg.out != "" && ctx.Err() == nil {
		if err := os.WriteFile(cfg.out, []byte(report), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		h.log("wrote %s", cfg.out)
	}
	if ctx.Err() != nil {
		return 130
	}
	if failed > 0 {
		return 1
	}
	return 0
}

// setup makes the work directory, finds the peers and builds the binaries.
func (h *harness) setup() error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	h.root = root
	h.dir, err = os.MkdirTemp(h.cfg.tmpDir, "pipespool-bench-")
	if err != nil {
		return err
	}
	h.findPeers()
	h.rn = runner{dir: h.dir, gnuTime: h.gnuTime()}
	if h.rn.gnuTime == "" {
		h.log("GNU time(1) not found: peak RSS will include the harness's own (see runner in bench/proc.go)")
	}
	h.log("work directory %s; building pipespool", h.dir)
	if err := h.build(); err != nil {
		os.RemoveAll(h.dir)
		return err
	}
	return nil
}

func (h *harness) cleanup() {
	h.gpgStop()
	if h.cfg.keep {
		h.log("kept %s", h.dir)
		return
	}
	os.RemoveAll(h.dir)
}

// commandLine is how the harness was invoked, for the report.
func commandLine() string {
	return strings.TrimSpace("go run ./bench " + strings.Join(os.Args[1:], " "))
}
