package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"sync"
	"time"
)

// A group is a set of variants measured together: every round runs each
// variant once, in an order rotated from round to round, so a case and its
// baseline see the same machine (the same neighbours, the same page cache)
// and neither always goes first. Its pairs are the table's rows.
type group struct {
	id      string // what -cases matches
	section string
	needs   []string // peers without which the group cannot run
	amount  int64    // work per run: bytes of the stream, or packets
	unit    string   // "bytes", "packets", or "" (no rate)
	// runs: how many rounds, unless -runs says; 0: the default of the mode.
	// Cheap groups get more (their noise is relatively larger), groups of
	// several seconds a run fewer, to keep the full run within 10 minutes.
	runs int
	// together: start every variant of a round at once (the idle case,
	// where nothing competes for the CPU and 30 s per variant would be
	// wasted).
	together bool
	// build prepares the data and adds the variants and pairs; it runs
	// only when the group is selected and its peers are present.
	build func(g *group) error

	variants []*variant
	pairs    []pair
	err      error
	// warm are input files read (untimed) before each run, see warmFiles.
	warm []string
	// notes are paragraphs (markdown) the report prints after the
	// section's table: what a row cannot show, such as output sizes.
	notes []string
}

// variant is one way of doing the group's work.
type variant struct {
	name    string
	setup   func() error // before each run, not timed
	run     func(ctx context.Context) (sample, error)
	check   func() error // after each run, not timed: did it do the work?
	samples []sample
}

// target is what a case must reach against its baseline; zero fields are
// not checked.
type target struct {
	desc     string
	maxRatio float64       // case time / baseline time
	maxRSS   int64         // the case's peak RSS, bytes
	maxCPU   time.Duration // the case's CPU time
	// minWall, maxWall bound the case's own time, when the work sets it
	// (a rate-limited stream); 0: not checked.
	minWall, maxWall time.Duration
	// maxCPURatio bounds the case's CPU over the baseline's.
	maxCPURatio float64
	// sizeRatio is the case's output size over the baseline's, measured
	// before the rounds; maxSizeRatio bounds it (0: not checked).
	sizeRatio, maxSizeRatio float64
}

// pair is a table row: a case against a baseline, both variants of the
// group, named.
type pair struct {
	caseName, baseName string
	target             target
}

func (g *group) add(v *variant) { g.variants = append(g.variants, v) }

// compare adds the row caseName against baseName if both variants exist
// (a variant whose peer is missing is never added).
func (g *group) compare(caseName, baseName string, t target) {
	if g.variant(caseName) != nil && g.variant(baseName) != nil {
		g.pairs = append(g.pairs, pair{caseName, baseName, t})
	}
}

func (g *group) variant(name string) *variant {
	for _, v := range g.variants {
		if v.name == name {
			return v
		}
	}
	return nil
}

// measure runs the group's rounds.
func (g *group) measure(ctx context.Context, runs int, log func(string, ...any)) error {
	n := len(g.variants)
	for round := range runs {
		order := make([]*variant, n)
		for i := range n {
			order[i] = g.variants[(i+round)%n]
		}
		if g.together {
			if err := runTogether(ctx, order); err != nil {
				return err
			}
			continue
		}
		for _, v := range order {
			if err := warmFiles(g.warm); err != nil {
				return err
			}
			if err := runVariant(ctx, v); err != nil {
				return err
			}
		}
		log("%s: round %d/%d done", g.id, round+1, runs)
	}
	// Every run's time, in the order run, so that a median that moved
	// between two reports can be told from a bimodal case.
	for _, v := range g.variants {
		ts := make([]string, len(v.samples))
		for i, s := range v.samples {
			ts[i] = fmt.Sprintf("%.3f", s.wall.Seconds())
		}
		log("%s: %s: %s s", g.id, v.name, strings.Join(ts, " "))
	}
	return nil
}

// warmMax is the largest input warmFiles reads. The development VMs run
// DAMON's pageout scheme (memory idle for 60 s is written out, page cache
// included) and their page cache was seen holding no more than 1-2.2 GB:
// a larger file, with the output a case writes next to it, would be read
// partly from disk whatever we do.
const warmMax = 1 << 30

// warmFiles reads each file of at most warmMax bytes, so that a run finds
// it in the page cache even where the cache is small and the run before
// evicted it (a 2 GiB queue payload, the output of a prepare). Without
// this the first variant after another group's data read its input from
// disk and the others did not.
func warmFiles(paths []string) error {
	buf := make([]byte, 1<<20)
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		st, err := f.Stat()
		if err == nil && st.Size() <= warmMax {
			_, err = io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("warming %s: %w", p, err)
		}
	}
	return nil
}

func runVariant(ctx context.Context, v *variant) error {
	if v.setup != nil {
		if err := v.setup(); err != nil {
			return fmt.Errorf("%s: setup: %w", v.name, err)
		}
	}
	s, err := v.run(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", v.name, err)
	}
	if v.check != nil {
		if err := v.check(); err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
	}
	v.samples = append(v.samples, s)
	return nil
}

func runTogether(ctx context.Context, vs []*variant) error {
	errs := make([]error, len(vs))
	var wg sync.WaitGroup
	for i, v := range vs {
		wg.Go(func() { errs[i] = runVariant(ctx, v) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// row is a pair's line of the results table.
type row struct {
	section            string
	caseName, baseName string
	c, b               summary
	amount             int64
	unit               string
	target             target
}

// verdict says whether the row meets its target, and by how much it
// misses.
func (r row) verdict() string {
	t := r.target
	if t.maxRatio == 0 && t.maxRSS == 0 && t.maxCPU == 0 && t.maxWall == 0 && t.maxCPURatio == 0 && t.maxSizeRatio == 0 {
		return "-"
	}
	var miss []string
	// Judge the ratio as the table shows it (two decimals): a case that
	// ties with its baseline in the table meets a "no slower" target.
	if q := math.Round(100*ratio(r.c.wall, r.b.wall)) / 100; t.maxRatio > 0 && q > math.Round(100*t.maxRatio)/100 {
		miss = append(miss, fmt.Sprintf("time %.2fx > %.2fx", q, t.maxRatio))
	}
	if t.maxWall > 0 && (r.c.wall < t.minWall || r.c.wall > t.maxWall) {
		miss = append(miss, fmt.Sprintf("time %.3f s outside %.3f-%.3f s", r.c.wall.Seconds(), t.minWall.Seconds(), t.maxWall.Seconds()))
	}
	if t.maxRSS > 0 && r.c.rss > t.maxRSS {
		miss = append(miss, fmt.Sprintf("RSS %s > %s", fmtMiB(r.c.rss), fmtMiB(t.maxRSS)))
	}
	if q := math.Round(100*ratio(r.c.cpu, r.b.cpu)) / 100; t.maxCPURatio > 0 && q > t.maxCPURatio {
		miss = append(miss, fmt.Sprintf("CPU %.2fx > %.2fx", q, t.maxCPURatio))
	}
	if t.maxSizeRatio > 0 && t.sizeRatio > t.maxSizeRatio {
		miss = append(miss, fmt.Sprintf("size %.3fx > %.2fx", t.sizeRatio, t.maxSizeRatio))
	}
	if t.maxCPU > 0 && r.c.cpu > t.maxCPU {
		miss = append(miss, fmt.Sprintf("CPU %.3f s > %.3f s", r.c.cpu.Seconds(), t.maxCPU.Seconds()))
	}
	if len(miss) == 0 {
		return "met"
	}
	s := "MISSED:"
	for i, m := range miss {
		if i > 0 {
			s += ";"
		}
		s += " " + m
	}
	return s
}

func (g *group) rows() []row {
	var rs []row
	for _, p := range g.pairs {
		c, b := g.variant(p.caseName), g.variant(p.baseName)
		rs = append(rs, row{
			section: g.section, caseName: p.caseName, baseName: p.baseName,
			c: summarize(c.samples), b: summarize(b.samples),
			amount: g.amount, unit: g.unit, target: p.target,
		})
	}
	return rs
}

var tableHeader = []string{"case", "baseline", "time", "base time", "ratio",
	"rate", "base rate", "peak RSS", "base RSS", "CPU", "base CPU", "runs", "target", "verdict"}

func (r row) cells() []string {
	return []string{
		r.caseName, r.baseName,
		fmtSeconds(r.c.wall), fmtSeconds(r.b.wall), fmtRatio(ratio(r.c.wall, r.b.wall)),
		fmtRate(r.amount, r.unit, r.c.wall), fmtRate(r.amount, r.unit, r.b.wall),
		fmtMiB(r.c.rss), fmtMiB(r.b.rss),
		fmt.Sprintf("%.2f s", r.c.cpu.Seconds()), fmt.Sprintf("%.2f s", r.b.cpu.Seconds()),
		fmt.Sprint(r.c.n), r.target.desc, r.verdict(),
	}
}
