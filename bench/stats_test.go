package main

import (
	"strings"
	"testing"
	"time"
)

// The harness itself is too slow for go test; these test its pieces.

func TestMedianOddEvenEmpty(t *testing.T) {
	for _, tc := range []struct {
		in   []time.Duration
		want time.Duration
	}{
		{nil, 0},
		{[]time.Duration{7}, 7},
		{[]time.Duration{9, 1, 5}, 5},
		{[]time.Duration{4, 1, 3, 2}, 2}, // mean of 2 and 3, truncated
		{[]time.Duration{10, 40, 20, 30}, 25},
	} {
		in := append([]time.Duration(nil), tc.in...)
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
		for i := range in {
			if in[i] != tc.in[i] {
				t.Fatalf("median reordered its input: %v", tc.in)
			}
		}
	}
}

func TestRatioAndItsFormat(t *testing.T) {
	if r := ratio(105*time.Millisecond, 100*time.Millisecond); fmtRatio(r) != "1.05x" {
		t.Errorf("105ms/100ms = %s, want 1.05x", fmtRatio(r))
	}
	if r := ratio(time.Second, 0); r != 0 || fmtRatio(r) != "-" {
		t.Errorf("ratio over no baseline = %v (%s), want 0 (-)", r, fmtRatio(r))
	}
}

func TestSummarizeTakesMediansAndWorstRSS(t *testing.T) {
	s := summarize([]sample{
		{wall: 3 * time.Second, cpu: 2 * time.Second, rss: 10 << 20},
		{wall: 1 * time.Second, cpu: 1 * time.Second, rss: 30 << 20},
		{wall: 2 * time.Second, cpu: 5 * time.Second, rss: 20 << 20},
	})
	if s.n != 3 || s.wall != 2*time.Second || s.cpu != 2*time.Second || s.rss != 30<<20 {
		t.Errorf("summarize = %+v, want n 3, wall 2s, cpu 2s, rss 30 MiB", s)
	}
}

func TestRates(t *testing.T) {
	for _, tc := range []struct {
		amount int64
		unit   string
		d      time.Duration
		want   string
	}{
		{2e9, "bytes", time.Second, "2.00 GB/s"},
		{1 << 30, "bytes", 500 * time.Millisecond, "2.15 GB/s"},
		{2000, "packets", 2 * time.Second, "1000 packets/s"},
		{0, "", time.Second, "-"},
		{100, "bytes", 0, "-"},
	} {
		if got := fmtRate(tc.amount, tc.unit, tc.d); got != tc.want {
			t.Errorf("fmtRate(%d, %q, %v) = %q, want %q", tc.amount, tc.unit, tc.d, got, tc.want)
		}
	}
	if got := fmtMiB(32 << 20); got != "32.0 MiB" {
		t.Errorf("fmtMiB(32 MiB) = %q", got)
	}
	if got := fmtSize(4 << 30); got != "4 GiB" {
		t.Errorf("fmtSize(4 GiB) = %q", got)
	}
	if got := fmtSize(100 << 20); got != "100 MiB" {
		t.Errorf("fmtSize(100 MiB) = %q", got)
	}
}

func TestMarkdownTablePadsColumns(t *testing.T) {
	got := markdownTable([]string{"case", "ratio"}, [][]string{
		{"pipespool exec", "1.02x"},
		{"a|b", "0.9x"},
		{"short"},
	})
	want := "" +
		"| case           | ratio |\n" +
		"| -------------- | ----- |\n" +
		"| pipespool exec | 1.02x |\n" +
		"| a\\|b           | 0.9x  |\n" +
		"| short          |       |\n"
	if got != want {
		t.Errorf("markdownTable:\n%s\nwant:\n%s", got, want)
	}
	for i, l := range strings.Split(strings.TrimSpace(got), "\n") {
		if len(l) != len(strings.Split(want, "\n")[0]) {
			t.Errorf("line %d has width %d: %q", i, len(l), l)
		}
	}
}

func TestVerdict(t *testing.T) {
	base := summary{n: 3, wall: time.Second}
	for _, tc := range []struct {
		name string
		c    summary
		t    target
		want string
	}{
		{"no target", summary{wall: 2 * time.Second}, target{}, "-"},
		{"met", summary{wall: 1040 * time.Millisecond, rss: 10 << 20}, target{maxRatio: 1.05, maxRSS: 32 << 20}, "met"},
		{"slow", summary{wall: 1100 * time.Millisecond}, target{maxRatio: 1.05}, "MISSED: time 1.10x > 1.05x"},
		{"tie as shown", summary{wall: 1004 * time.Millisecond}, target{maxRatio: 1.0}, "met"},
		{"1/0.85", summary{wall: 1176 * time.Millisecond}, target{maxRatio: 1 / 0.85}, "met"},
		{"slow and big", summary{wall: 2 * time.Second, rss: 40 << 20}, target{maxRatio: 1.05, maxRSS: 32 << 20},
			"MISSED: time 2.00x > 1.05x; RSS 40.0 MiB > 32.0 MiB"},
		{"busy idle", summary{wall: time.Second, cpu: 300 * time.Millisecond}, target{maxCPU: 100 * time.Millisecond},
			"MISSED: CPU 0.300 s > 0.100 s"},
		{"limited on time", summary{wall: 10300 * time.Millisecond}, target{minWall: 10035 * time.Millisecond, maxWall: 10445 * time.Millisecond}, "met"},
		{"limit not held", summary{wall: 3 * time.Second}, target{minWall: 10035 * time.Millisecond, maxWall: 10445 * time.Millisecond},
			"MISSED: time 3.000 s outside 10.035-10.445 s"},
		{"limited too slow", summary{wall: 11 * time.Second}, target{minWall: 10035 * time.Millisecond, maxWall: 10445 * time.Millisecond},
			"MISSED: time 11.000 s outside 10.035-10.445 s"},
	} {
		r := row{c: tc.c, b: base, target: tc.t}
		if got := r.verdict(); got != tc.want {
			t.Errorf("%s: verdict %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestJobBodyQuotesPaths(t *testing.T) {
	got := jobBody("relay", `/tmp/a "b"`, tomlArgv("cat"), tomlArgv("sleep", "5"))
	for _, want := range []string{
		`name = "relay"`,
		`path = "/tmp/a \"b\""`,
		`path = "none"`,
		"[[stage]]\ncommand = [\"cat\"]",
		`command = ["sleep", "5"]`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("job file lacks %q:\n%s", want, got)
		}
	}
}

func TestScalingSummaryJudgesLinearAndFlat(t *testing.T) {
	mk := func(size int64, c, b time.Duration, rss int64) row {
		return row{amount: size, c: summary{wall: c, rss: rss}, b: summary{wall: b}}
	}
	// 100 MiB with 8 ms of start-up, then 0.48 s/GiB against the pipe's
	// 0.46 s/GiB: linear (1.04x) and flat.
	good := scalingSummary([]row{
		mk(100<<20, 55*time.Millisecond, 47*time.Millisecond, 9<<20),
		mk(1<<30, 487*time.Millisecond, 460*time.Millisecond, 9<<20),
		mk(4<<30, 1927*time.Millisecond, 1840*time.Millisecond, 9<<20+100<<10),
	})
	for _, want := range []string{"Time grows linearly (the marginal time per GiB at most 1.05x the direct pipe's): met.",
		"RSS stays flat (at most 2.0 MiB apart, each under 32.0 MiB): met."} {
		if !strings.Contains(good, want) {
			t.Errorf("summary lacks %q:\n%s", want, good)
		}
	}
	// Slower per GiB at scale, and memory growing with the stream.
	bad := scalingSummary([]row{
		mk(100<<20, 50*time.Millisecond, 47*time.Millisecond, 9<<20),
		mk(4<<30, 2500*time.Millisecond, 1840*time.Millisecond, 40<<20),
	})
	for _, want := range []string{"linearly (the marginal time per GiB at most 1.05x the direct pipe's): MISSED: 1.37x > 1.05x.",
		"RSS stays flat (at most 2.0 MiB apart, each under 32.0 MiB): MISSED: 31.0 MiB apart."} {
		if !strings.Contains(bad, want) {
			t.Errorf("summary lacks %q:\n%s", want, bad)
		}
	}
}
