package units

import (
	"strings"
	"testing"
)

// The two parsers pipespool once had disagreed on "1MB", "1.5MiB" and
// "64M"; these rows are the one rule.
func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want int64
	}{
		{"64KiB", 64 << 10}, {"1MiB", 1 << 20}, {"2GiB", 2 << 30}, {"1TiB", 1 << 40},
		{"512", 512}, {"512B", 512}, {" 7 MiB ", 7 << 20}, {int64(4096), 4096}, {4096, 4096},
		{"64M", 64 << 20}, {"1M", 1 << 20}, {"4k", 4 << 10}, {"4K", 4 << 10}, {"1G", 1 << 30},
		{"1MB", 1000000}, {"500kB", 500000}, {"10KB", 10000}, {"1GB", 1e9}, {"1TB", 1e12},
		{"1.5MiB", 3 << 19}, {"0.5KiB", 512}, {"1.5", 1}, {"0", 0},
	} {
		if got, err := ParseSize(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseSize(%#v) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []any{"", "MiB", "-1", "+1", int64(-5), 1.5, "1.5.2MiB", "1XB", "NaN", "Inf", "1e400",
		"99999999999999999999", "9999999999999TiB", "1 MiB/s", true} {
		if n, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%#v) = %d, want an error", in, n)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB",
		3 << 30: "3.0 GiB", 1 << 62: "4.0 EiB"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

// A rate is a size per second, "/s" optional (pv -L 50m, mbuffer -r 50M).
func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want int64
	}{
		{"50MiB/s", 50 << 20}, {"50M", 50 << 20}, {"50m", 50 << 20}, {"100m/s", 100 << 20},
		{" 1.5 MiB/s ", 3 << 19}, {"1B/s", 1}, {"1", 1}, {"10MB/s", 10e6}, {int64(4096), 4096},
		{"1TiB/s", 1 << 40}, {"2g", 2 << 30},
	} {
		if got, err := ParseRate(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseRate(%#v) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []any{"", "/s", "0", "0/s", "0.5B/s", "-1M/s", "50MiB/h", "50MiB/s/s", "fast",
		"2TiB/s", int64(0), int64(-1), 1.5, true} {
		if n, err := ParseRate(in); err == nil {
			t.Errorf("ParseRate(%#v) = %d, want an error", in, n)
		}
	}
}

// FuzzParseRate: any input is a rate in range or an error, never a panic,
// and "/s" changes nothing.
func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"50MiB/s", "50m", "1.5 GiB/s", "1B/s", "0", "1TiB/s", "9e18", "/s", "1e-9M"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseRate(s)
		if err == nil && (n < 1 || n > MaxRate) {
			t.Fatalf("ParseRate(%q) = %d: out of range", s, n)
		}
		if m, err2 := ParseRate(s + "/s"); !strings.HasSuffix(strings.TrimSpace(s), "/s") && (m != n || (err == nil) != (err2 == nil)) {
			t.Fatalf("ParseRate(%q) = %d, %v but with /s %d, %v", s, n, err, m, err2)
		}
	})
}
