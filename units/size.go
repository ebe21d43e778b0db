// Package units parses and formats the quantities users write in job files
// and flags: byte sizes ("64KiB", "1.5GiB", "64M") and byte rates
// ("50MiB/s").
//
// One rule for every size in pipespool, GNU coreutils' (dd, head -c, sort
// -S), which pv and mbuffer users also expect of "64M": a bare K, M, G, T
// or KiB, MiB, GiB, TiB is a power of 1024; kB, KB, MB, GB, TB are powers of
// 1000; B or no suffix is bytes. The bare letters may be lower case too
// (k, m, g, t), as pv and mbuffer write them ("pv -L 50m"). A fraction of a
// unit is allowed ("1.5GiB") and rounds down to whole bytes.
//
// A rate is a size per second: "50MiB/s", or the size alone ("50M"), which
// is how pv -L and mbuffer -r take it; a rate can only be per second, so
// the bare size is not ambiguous.
package units

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

var sizeUnits = []struct {
	suffix string
	mult   float64
}{
	// Longest suffixes first, so that "KiB" is not read as "B".
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1 << 10}, {"k", 1 << 10}, {"M", 1 << 20}, {"m", 1 << 20},
	{"G", 1 << 30}, {"g", 1 << 30}, {"T", 1 << 40}, {"t", 1 << 40},
	{"B", 1},
}

// ParseSize parses a size: a non-negative integer number of bytes (as a TOML
// integer arrives), or a string with an optional unit (see the package
// documentation).
func ParseSize(v any) (int64, error) {
	switch n := v.(type) {
	case int64:
		if n < 0 {
			return 0, fmt.Errorf("size %d is negative", n)
		}
		return n, nil
	case int:
		return ParseSize(int64(n))
	case string:
		return ParseSizeString(n)
	}
	return 0, fmt.Errorf("must be a size such as \"64MiB\" or an integer number of bytes, not %T", v)
}

// ParseSizeString parses a size written as a string.
func ParseSizeString(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := 1.0
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			mult = u.mult
			t = strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			break
		}
	}
	bad := fmt.Errorf("%q is not a size: use e.g. \"64KiB\", \"1.5GiB\", \"64M\" or a number of bytes", s)
	if t == "" || t[0] == '+' || t[0] == '-' {
		return 0, bad
	}
	if !strings.ContainsAny(t, ".eE") {
		n, err := strconv.ParseInt(t, 10, 64)
		if err != nil {
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				return 0, fmt.Errorf("%q is too large", s)
			}
			return 0, bad
		}
		if mult != 1 && float64(n) > float64(math.MaxInt64)/mult {
			return 0, fmt.Errorf("%q is too large", s)
		}
		return n * int64(mult), nil
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, bad
	}
	b := f * mult
	if b >= math.MaxInt64/2 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return int64(b), nil
}

// MaxRate bounds a rate (1 TiB/s): far above what any pipe moves, and low
// enough that a rate times a second in nanoseconds cannot overflow.
const MaxRate = 1 << 40

// ParseRate parses a rate in bytes per second: a size followed by "/s", or
// a size alone (see the package documentation), or an integer number of
// bytes per second (as a TOML integer arrives). It must be at least 1 B/s
// and at most MaxRate.
func ParseRate(v any) (int64, error) {
	if s, ok := v.(string); ok {
		t := strings.TrimSpace(s)
		t = strings.TrimSpace(strings.TrimSuffix(t, "/s"))
		n, err := ParseSizeString(t)
		if err != nil {
			return 0, fmt.Errorf("%q is not a rate: use e.g. \"50MiB/s\", \"50M\" (per second, as pv -L and mbuffer -r) or a number of bytes per second", s)
		}
		return checkRate(s, n)
	}
	n, err := ParseSize(v)
	if err != nil {
		return 0, fmt.Errorf("must be a rate such as \"50MiB/s\" or an integer number of bytes per second, not %v", v)
	}
	return checkRate(fmt.Sprint(v), n)
}

func checkRate(s string, n int64) (int64, error) {
	switch {
	case n < 1:
		return 0, fmt.Errorf("rate %q is less than 1 byte per second: remove the limit instead of setting it to 0", s)
	case n > MaxRate:
		return 0, fmt.Errorf("rate %q is more than 1TiB/s: remove the limit instead", s)
	}
	return n, nil
}

// FormatRate writes a rate for people: "50.0 MiB/s".
func FormatRate(n int64) string { return FormatSize(n) + "/s" }

// FormatSize writes n bytes for people: "512 B", "1.5 KiB", "3.0 GiB".
func FormatSize(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return strconv.FormatFloat(float64(n)/float64(div), 'f', 1, 64) + " " + string("KMGTPE"[exp]) + "iB"
}
