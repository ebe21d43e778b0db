package proc

import "strings"

// MergeEnv returns base with the NAME=value entries of each overlay
// replacing or adding to it, in order; the result has each name once.
// Spec.Env is handed to the kernel as it is, and a C program's getenv
// finds the first of two entries with one name: a variable set for a
// process must replace the one it inherits, not follow it.
func MergeEnv(base []string, overlays ...[]string) []string {
	idx := map[string]int{}
	out := make([]string, 0, len(base)+8)
	add := func(kv string) {
		name, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[name]; ok {
			out[i] = kv
			return
		}
		idx[name] = len(out)
		out = append(out, kv)
	}
	for _, kv := range base {
		add(kv)
	}
	for _, o := range overlays {
		for _, kv := range o {
			add(kv)
		}
	}
	return out
}
