package pipeline

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// ShellPath is the shell that runs a stage's `shell` script.
const ShellPath = "/bin/sh"

// resolveProgram finds the program of an external stage. The rule
// (docs/job-file.md): a name without a slash is looked up in PATH; a path
// with a slash that is relative is relative to the job file's directory,
// not to the current directory, so a job behaves the same from cron (whose
// current directory is $HOME) as from a shell in the job's directory.
func resolveProgram(job *Job, s *StageSpec) (path string, argv []string, err error) {
	if s.Shell != "" {
		return ShellPath, []string{"sh", "-c", s.Shell}, nil
	}
	name := s.Command[0]
	argv = append([]string(nil), s.Command...)
	if strings.Contains(name, "/") {
		path = name
		if !filepath.IsAbs(path) {
			path = filepath.Join(job.Dir, path)
		}
		st, err := os.Stat(path)
		if err != nil {
			return "", nil, fmt.Errorf("program %s: %w (a relative path is relative to the job file's directory %s)", name, unwrapPath(err), job.Dir)
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return "", nil, fmt.Errorf("program %s is not executable: chmod +x it or fix the path", path)
		}
		return path, argv, nil
	}
	path, err = exec.LookPath(name)
	if err != nil {
		return "", nil, fmt.Errorf("program %q not found in PATH (%s): install it or give its full path", name, os.Getenv("PATH"))
	}
	if !filepath.IsAbs(path) {
		// LookPath found it through a relative PATH entry; pin it now.
		if abs, err := filepath.Abs(path); err == nil {
			path = abs
		}
	}
	return path, argv, nil
}

// mergeEnv returns base with the NAME=value entries of each overlay
// replacing or adding to it, in order; the result has each name once.
func mergeEnv(base []string, overlays ...[]string) []string {
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

func envList(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+m[k])
	}
	return out
}
