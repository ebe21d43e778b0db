package pipeline

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pipespool/pipespool/fsutil"
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
			path = fsutil.JoinAsKernel(job.Dir, path)
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

// resolvedStage is what validation found for one stage: the program and
// argv of an external stage (empty for a built-in).
type resolvedStage struct {
	path string
	argv []string
}

// validateStages is the validation that check, --dry-run and exec share
// beyond the job file's own syntax (Load): every program is found and
// executable, every dir is an existing directory. Its errors are
// *JobError, exit 2, found before anything runs or is created.
func validateStages(job *Job) ([]resolvedStage, error) {
	out := make([]resolvedStage, len(job.Stages))
	found := map[string]string{} // program name -> its path in PATH: looked up once
	for i := range job.Stages {
		s := &job.Stages[i]
		if s.Builtin != "" {
			continue
		}
		var path string
		var argv []string
		var err error
		if name := s.Command; name != nil && !strings.Contains(name[0], "/") && found[name[0]] != "" {
			path, argv = found[name[0]], append([]string(nil), s.Command...)
		} else if path, argv, err = resolveProgram(job, s); err == nil && s.Command != nil {
			found[s.Command[0]] = path
		}
		if err != nil {
			return nil, &JobError{File: job.File, Line: s.Line, Key: stageKey(s.Index, ""), Msg: fmt.Sprintf("stage %q: %v", s.Name, err)}
		}
		if s.Dir != "" {
			if err := checkDir(s.Dir); err != nil {
				return nil, &JobError{File: job.File, Line: s.Line, Key: stageKey(s.Index, "dir"), Msg: fmt.Sprintf("stage %q: %v", s.Name, err)}
			}
		}
		out[i] = resolvedStage{path: path, argv: argv}
	}
	return out, nil
}

// checkDir says why dir cannot be a stage's working directory, or nil.
func checkDir(dir string) error {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("dir %s: no such directory", dir)
	case err != nil:
		return fmt.Errorf("dir %s: %v", dir, unwrapPath(err))
	case !st.IsDir():
		return fmt.Errorf("dir %s: not a directory", dir)
	}
	return nil
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
