package pipeline

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pipespool/pipespool/filter"
	"github.com/pipespool/pipespool/fsutil"
	"github.com/pipespool/pipespool/pump"
	"github.com/pipespool/pipespool/stage"
	"github.com/pipespool/pipespool/units"
)

// The validation of a job file's values, key by key, for parse (job.go):
// each error names the file, the line and the key.

func stageKey(i int, key string) string {
	if key == "" {
		return fmt.Sprintf("stage[%d]", i)
	}
	return fmt.Sprintf("stage[%d].%s", i, key)
}

type validator struct {
	file string
	pos  map[string]int
}

// filter makes a built-in's filter from its parameters (none is an empty
// table), relative paths taken from dir; a bad parameter is named by its
// key in the job file: key.PARAM, or key itself.
func (v *validator) filter(key string, factory filter.Factory, with map[string]any, dir string) (filter.Filter, error) {
	if with == nil {
		with = map[string]any{}
	}
	f, err := factory(with, dir)
	if err != nil {
		var pe *filter.ParamError
		if errors.As(err, &pe) && pe.Key != "" {
			return nil, v.errf(key+"."+pe.Key, "%s", pe.Msg)
		}
		return nil, v.errf(key, "%v", err)
	}
	return f, nil
}

// errf is an error at key (its line when known, else the line of its
// nearest table).
func (v *validator) errf(key, format string, args ...any) *JobError {
	return &JobError{File: v.file, Line: keyLine(v.pos, key), Key: key, Msg: fmt.Sprintf(format, args...)}
}

// keyLine is the line of key in the job file (pos from indexPositions),
// else of its nearest table; 0 when unknown.
func keyLine(pos map[string]int, key string) int {
	line := pos[key]
	for k := key; line == 0 && k != ""; {
		i := strings.LastIndexByte(k, '.')
		if i < 0 {
			break
		}
		k = k[:i]
		line = pos[k]
	}
	return line
}

// command checks a stage's command: an array of strings, the program
// first. A string is the usual mistake (command = "zstd -d"): the error
// says what to write instead.
func (v *validator) command(key string, raw any) ([]string, error) {
	switch c := raw.(type) {
	case string:
		fields := strings.Fields(c)
		if len(fields) == 0 {
			fields = []string{"zstd", "-d"}
		}
		return nil, v.errf(key, "is a string; it must be an array: the program and its arguments, one string each, as in command = %s (or write shell = %q to have /bin/sh run it)",
			tomlArray(fields), c)
	case []any:
		argv := make([]string, len(c))
		for j, a := range c {
			s, ok := a.(string)
			if !ok {
				return nil, v.errf(key, "element %d is %v, not a string: quote it, as in command = [\"head\", \"-c\", \"100\"]", j+1, a)
			}
			argv[j] = s
		}
		if len(argv) == 0 || argv[0] == "" {
			return nil, v.errf(key, "is empty: give the program and its arguments, e.g. [\"zstd\", \"-d\"]")
		}
		return argv, nil
	}
	return nil, v.errf(key, "must be an array of strings: the program and its arguments, e.g. [\"zstd\", \"-d\"]")
}

// programNames checks a list of program names such as may_outlive's: names
// as ps shows them, not paths.
func (v *validator) programNames(key string, raw any) ([]string, error) {
	if raw == nil {
		return nil, nil
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, v.errf(key, "must be an array of program names, as in %s = [\"gpg-agent\"]", key)
	}
	names := make([]string, len(list))
	for j, a := range list {
		s, ok := a.(string)
		switch {
		case !ok:
			return nil, v.errf(key, "element %d is %v, not a string: quote it, as in %s = [\"gpg-agent\"]", j+1, a, key)
		case s == "" || strings.ContainsAny(s, "/\x00"):
			return nil, v.errf(key, "element %d (%q) is not a program name: give the name as ps shows it, without a directory, as in %s = [\"gpg-agent\"]", j+1, s, key)
		}
		names[j] = s
	}
	return names, nil
}

// tomlArray writes a TOML array of strings.
func tomlArray(items []string) string {
	q := make([]string, len(items))
	for i, it := range items {
		q[i] = strconv.Quote(it)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func (v *validator) duration(key string, s *string, def time.Duration) (time.Duration, error) {
	if s == nil {
		return def, nil
	}
	if *s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(*s)
	if err != nil || d < 0 {
		return 0, v.errf(key, "%q is not a duration: use Go syntax such as \"90s\", \"5m\", \"2h\", or \"0\" for none", *s)
	}
	return d, nil
}

func (v *validator) onStall(key string, s *string, def string) (string, error) {
	if s == nil {
		return def, nil
	}
	switch *s {
	case OnStallWarn, OnStallNudge, OnStallKill:
		return *s, nil
	}
	return "", v.errf(key, "%q is not a stall policy: use warn, nudge or kill", *s)
}

var stageNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func (v *validator) stage(i int, rs rawStage, job *Job) (StageSpec, error) {
	s := StageSpec{Index: i, Line: v.pos[stageKey(i, "")], With: rs.With, Env: rs.Env,
		Stderr: stage.StderrCapture, StallTimeout: job.StallTimeout, OnStall: job.OnStall}
	kinds := 0
	if rs.Builtin != nil {
		kinds++
	}
	if rs.Command != nil {
		kinds++
	}
	if rs.Shell != nil {
		kinds++
	}
	if kinds != 1 {
		return s, v.errf(stageKey(i, ""), "a stage needs exactly one of command, shell or builtin (it has %d)", kinds)
	}
	switch {
	case rs.Builtin != nil:
		s.Builtin = *rs.Builtin
		s.Name = s.Builtin
		factory, ok := filter.Lookup(s.Builtin)
		if !ok {
			return s, v.errf(stageKey(i, "builtin"), "unknown built-in %q: use one of %s", s.Builtin, strings.Join(filter.Names(), ", "))
		}
		for _, k := range []struct {
			set  bool
			name string
		}{{rs.Env != nil, "env"}, {rs.Dir != nil, "dir"}, {rs.Stderr != nil, "stderr"}} {
			if k.set {
				return s, v.errf(stageKey(i, k.name), "only external stages (command or shell) take %s", k.name)
			}
		}
		f, err := v.filter(stageKey(i, "with"), factory, rs.With, job.Dir)
		if err != nil {
			return s, err
		}
		s.Filter = f
	case rs.Command != nil:
		argv, err := v.command(stageKey(i, "command"), rs.Command)
		if err != nil {
			return s, err
		}
		s.Command = argv
		s.Name = filepath.Base(argv[0])
	default:
		if strings.TrimSpace(*rs.Shell) == "" {
			return s, v.errf(stageKey(i, "shell"), "is empty")
		}
		s.Shell = *rs.Shell
		s.Name = "sh"
	}
	if rs.With != nil && s.Builtin == "" {
		return s, v.errf(stageKey(i, "with"), "only built-in stages take [stage.with] parameters")
	}
	if rs.Name != nil {
		s.Name = *rs.Name
		if !stageNameRE.MatchString(s.Name) {
			return s, v.errf(stageKey(i, "name"), "%q is not a valid stage name: use letters, digits, '.', '_' and '-'", s.Name)
		}
	} else {
		// A default name must be unique too; number repeats: cat, cat-2.
		s.Name = sanitizeName(s.Name)
	}
	if rs.Dir != nil {
		if *rs.Dir == "" {
			return s, v.errf(stageKey(i, "dir"), "must not be empty")
		}
		s.Dir = *rs.Dir
		if !filepath.IsAbs(s.Dir) {
			s.Dir = fsutil.JoinAsKernel(job.Dir, s.Dir)
		}
	}
	if rs.Stderr != nil {
		switch m := stage.StderrMode(*rs.Stderr); m {
		case stage.StderrCapture, stage.StderrInherit, stage.StderrDiscard:
			s.Stderr = m
		default:
			return s, v.errf(stageKey(i, "stderr"), "%q: use capture, inherit or discard", *rs.Stderr)
		}
	}
	for k := range rs.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return s, v.errf(stageKey(i, "env"), "%q is not a valid environment variable name", k)
		}
	}
	var err error
	if s.StallTimeout, err = v.duration(stageKey(i, "stall_timeout"), rs.StallTimeout, job.StallTimeout); err != nil {
		return s, err
	}
	if s.OnStall, err = v.onStall(stageKey(i, "on_stall"), rs.OnStall, job.OnStall); err != nil {
		return s, err
	}
	if rs.AllowPartialRead != nil {
		s.AllowPartialRead = *rs.AllowPartialRead
	}
	if rs.RateLimit != nil {
		if s.RateLimit, err = units.ParseRate(rs.RateLimit); err != nil {
			return s, v.errf(stageKey(i, "rate_limit"), "%v", err)
		}
	}
	if err := v.buffer(i, rs, job, &s); err != nil {
		return s, err
	}
	s.VerifiesInput = verifiesByDefault(&s)
	if rs.VerifiesInput != nil {
		s.VerifiesInput = *rs.VerifiesInput
	}
	return s, nil
}

func sanitizeName(n string) string {
	b := []byte(n)
	for i, c := range b {
		if !(c == '.' || c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "stage"
	}
	return string(b)
}

// buffer checks a stage's buffer keys: the size (at least one pipe, at
// most pump.MaxBuffer) and its levels, which need it; a hop has a buffer
// or a rate limit, not both.
func (v *validator) buffer(i int, rs rawStage, job *Job, s *StageSpec) error {
	s.BufferResumeAt = 100
	if rs.Buffer == nil {
		for _, k := range []struct {
			key string
			raw any
		}{{"buffer_start_at", rs.BufferStartAt}, {"buffer_resume_at", rs.BufferResumeAt}} {
			if k.raw != nil {
				return v.errf(stageKey(i, k.key), "needs a buffer on the same stage: add buffer = \"256MiB\" (or the size you want)")
			}
		}
		return nil
	}
	key := stageKey(i, "buffer")
	n, err := units.ParseSize(rs.Buffer)
	if err != nil {
		return v.errf(key, "%v", err)
	}
	least := max(int64(pump.MinBuffer), int64(job.PipeSize))
	switch {
	case n < least:
		return v.errf(key, "%s is less than one pipe (%s): a larger pipe_size would do as much; use %s to %s",
			units.FormatSize(n), units.FormatSize(least), units.FormatSize(least), units.FormatSize(pump.MaxBuffer))
	case n > pump.MaxBuffer:
		return v.errf(key, "%s is more than %s, the largest buffer pipespool takes", units.FormatSize(n), units.FormatSize(pump.MaxBuffer))
	case s.RateLimit > 0:
		return v.errf(key, "a stage's input hop takes a buffer or a rate_limit, not both: put the rate_limit on the next stage's input, or add a cat stage between them")
	}
	s.Buffer = n
	if rs.BufferStartAt != nil {
		if s.BufferStartAt, err = percent(rs.BufferStartAt, 0); err != nil {
			return v.errf(stageKey(i, "buffer_start_at"), "%v", err)
		}
	}
	if rs.BufferResumeAt != nil {
		if s.BufferResumeAt, err = percent(rs.BufferResumeAt, 1e-9); err != nil {
			return v.errf(stageKey(i, "buffer_resume_at"), "%v", err)
		}
	}
	return nil
}

// percent parses a level such as "80%" or "12.5%": least to 100.
func percent(raw any, least float64) (float64, error) {
	s, ok := raw.(string)
	t := strings.TrimSpace(s)
	if !ok || !strings.HasSuffix(t, "%") {
		return 0, fmt.Errorf("must be a percentage of the buffer such as \"80%%\", not %v", tomlValue(raw))
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(t, "%")), 64)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%q is not a percentage such as \"80%%\"", s)
	case least > 0 && f <= 0:
		return 0, fmt.Errorf("%q: reading would never resume; use more than 0%% (100%%: as soon as there is room)", s)
	case f < 0 || f > 100:
		return 0, fmt.Errorf("%q is not within 0%% and 100%%", s)
	}
	return f, nil
}

// tomlValue shows a value as the job file had it: strings quoted.
func tomlValue(raw any) string {
	if s, ok := raw.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(raw)
}
