package pipeline

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	toml "github.com/pelletier/go-toml/v2"

	"github.com/pipespool/pipespool/filter"
	"github.com/pipespool/pipespool/fsutil"
	"github.com/pipespool/pipespool/pump"
	"github.com/pipespool/pipespool/stage"
	"github.com/pipespool/pipespool/units"
)

// Stall policies (on_stall).
const (
	OnStallWarn  = "warn"
	OnStallNudge = "nudge"
	OnStallKill  = "kill"
)

// DefaultStallTimeout is stall_timeout when the job file does not set it.
const DefaultStallTimeout = 5 * time.Minute

// Job is a validated job file.
type Job struct {
	File          string // path as given
	Dir           string // directory of the job file: base of its relative paths
	Name          string
	Timeout       time.Duration // 0: none
	StallTimeout  time.Duration // 0: stall detection off
	OnStall       string
	PipeSize      int // bytes requested for every pipe pipespool creates
	Input         string
	Output        string
	OutputMode    os.FileMode
	OutputModeSet bool
	Stages        []StageSpec
	// MayOutlive names the programs the stages may leave running after
	// the run (a gpg-agent): every other process a stage left behind is
	// stopped at the end of the run.
	MayOutlive []string
	// OpenPGPDecoder is the openpgp-decrypt filter made from the job's
	// [decoder.openpgp] table: what `-d openpgp` of the queue commands
	// decrypts job files with. nil when the table is absent.
	OpenPGPDecoder filter.Filter
	// OpenPGPRequireSigned: the table sets require_signed_by, so the
	// filter fails unsigned messages (at their end).
	OpenPGPRequireSigned bool
	// ExpectedSize is [input] expected_size: the size the stream entering
	// the pipeline is expected to have, for the progress display's
	// percentage and time left; 0 when not given.
	ExpectedSize int64
	// pos is the line of each key in the job file, for the errors found
	// when the run starts (the files a run writes, checked against its
	// stdout).
	pos map[string]int
}

// StageSpec is one [[stage]] of a job file, validated.
type StageSpec struct {
	Index            int // 1-based position in the file
	Line             int // line of its [[stage]] header
	Name             string
	Builtin          string         // built-in name, or ""
	With             map[string]any // the built-in's parameters
	Filter           filter.Filter  // the built-in's filter, made from With
	Command          []string       // argv, or nil
	Shell            string         // /bin/sh -c script, or ""
	Env              map[string]string
	Dir              string // absolute or relative to the job file's directory
	Stderr           stage.StderrMode
	StallTimeout     time.Duration
	OnStall          string
	AllowPartialRead bool
	// RateLimit is the limit of its input hop, bytes per second (0: none):
	// the pump that delivers into the stage moves no faster.
	RateLimit int64
	// Buffer is the size of the memory buffer on its input hop, bytes (0:
	// none): the pump that delivers into the stage goes on reading while
	// the stage pauses, up to this much. BufferStartAt and BufferResumeAt
	// are its levels in percent of the size (buffer_start_at,
	// buffer_resume_at): deliver once it is that full (0: at once), read
	// again once it is less full than that after filling up (100: at
	// once). HopBuffer turns them into bytes.
	Buffer                        int64
	BufferStartAt, BufferResumeAt float64
	// VerifiesInput: the stage checks its input's integrity (to its end)
	// and gets to finish when a stage after it fails (drain.go).
	VerifiesInput bool
	// From is the 1-based position of the stage it reads from when the job
	// file names one (from = "NAME"); 0: the stage before it (the first
	// stage reads the run's input). Job.producer resolves it.
	From int
	// Output is where its branch ends (output = "PATH"): "" when it does
	// not end a branch in an output of its own. OutputMode is the mode of
	// a file it creates (output_mode, else the job's [output] mode).
	Output        string
	OutputMode    os.FileMode
	OutputModeSet bool
	// Optional: the branch it starts may fail without failing the run
	// (optional = true); its outputs are then discarded.
	Optional bool
}

type rawJob struct {
	Name         *string     `toml:"name"`
	Timeout      *string     `toml:"timeout"`
	StallTimeout *string     `toml:"stall_timeout"`
	OnStall      *string     `toml:"on_stall"`
	PipeSize     any         `toml:"pipe_size"`
	Input        *rawInput   `toml:"input"`
	Output       *rawOutput  `toml:"output"`
	Stage        []rawStage  `toml:"stage"`
	MayOutlive   any         `toml:"may_outlive"`
	Decoder      *rawDecoder `toml:"decoder"`
}

// rawDecoder is [decoder]: the keys of the queue commands' built-in
// decoders. [decoder.openpgp] takes openpgp-decrypt's [stage.with] keys.
type rawDecoder struct {
	OpenPGP *map[string]any `toml:"openpgp"` // a pointer: an empty table is set too
}

type rawInput struct {
	Path         *string `toml:"path"`
	ExpectedSize any     `toml:"expected_size"`
}

type rawOutput struct {
	Path *string `toml:"path"`
	Mode *string `toml:"mode"`
}

type rawStage struct {
	Name             *string           `toml:"name"`
	Builtin          *string           `toml:"builtin"`
	With             map[string]any    `toml:"with"`
	Command          any               `toml:"command"` // an array of strings; checked by validator.stage
	Shell            *string           `toml:"shell"`
	Env              map[string]string `toml:"env"`
	Dir              *string           `toml:"dir"`
	Stderr           *string           `toml:"stderr"`
	StallTimeout     *string           `toml:"stall_timeout"`
	OnStall          *string           `toml:"on_stall"`
	AllowPartialRead *bool             `toml:"allow_partial_read"`
	VerifiesInput    *bool             `toml:"verifies_input"`
	RateLimit        any               `toml:"rate_limit"`
	Buffer           any               `toml:"buffer"`
	BufferStartAt    any               `toml:"buffer_start_at"`
	BufferResumeAt   any               `toml:"buffer_resume_at"`
	From             *string           `toml:"from"`
	Output           *string           `toml:"output"`
	OutputMode       *string           `toml:"output_mode"`
	Optional         *bool             `toml:"optional"`
}

// Load reads and validates the job file at path. Every error is a *JobError
// naming the file, the line and the key.
func Load(path string) (*Job, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &JobError{File: path, Msg: fmt.Sprintf("cannot read job file: %v", unwrapPath(err))}
	}
	return Parse(path, data)
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Parse validates job file data; path names it in errors and its directory
// is the base of relative paths.
func Parse(path string, data []byte) (*Job, error) {
	return parse(path, data, true)
}

// LoadDecoderConfig reads the job file at path for its [decoder] table:
// it is validated like Load does, but [[stage]] may be absent, so that a
// file holding only [decoder.openpgp] can give queue-ls or a command-mode
// queue-process its key.
func LoadDecoderConfig(path string) (*Job, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &JobError{File: path, Msg: fmt.Sprintf("cannot read job file: %v", unwrapPath(err))}
	}
	return parse(path, data, false)
}

func parse(path string, data []byte, needStages bool) (*Job, error) {
	pos, perr := indexPositions(data)
	if perr != nil {
		return nil, tomlError(path, perr, data, nil)
	}
	var raw rawJob
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, tomlError(path, err, data, pos)
	}
	// The directory the kernel read the job from ("a/../job.toml" with a
	// a link is beside where a leads): relative paths in the job are
	// relative to it.
	dir := fsutil.DirAsKernelAbs(path)
	var err error
	v := &validator{file: path, pos: pos}
	job := &Job{File: path, Dir: dir, StallTimeout: DefaultStallTimeout, OnStall: OnStallWarn,
		PipeSize: pump.DefaultPipeSize, Input: "-", Output: "-", OutputMode: 0o666, pos: pos}

	job.Name = strings.TrimSuffix(filepath.Base(path), ".toml")
	if raw.Name != nil {
		if *raw.Name == "" {
			return nil, v.errf("name", "must not be empty")
		}
		job.Name = *raw.Name
	}
	if job.Timeout, err = v.duration("timeout", raw.Timeout, 0); err != nil {
		return nil, err
	}
	if job.StallTimeout, err = v.duration("stall_timeout", raw.StallTimeout, DefaultStallTimeout); err != nil {
		return nil, err
	}
	if job.OnStall, err = v.onStall("on_stall", raw.OnStall, OnStallWarn); err != nil {
		return nil, err
	}
	if raw.PipeSize != nil {
		n, err := units.ParseSize(raw.PipeSize)
		if err != nil {
			return nil, v.errf("pipe_size", "%v", err)
		}
		if n < 4096 || n > 1<<30 {
			return nil, v.errf("pipe_size", "%d bytes is out of range: use 4KiB to 1GiB (the kernel caps it at /proc/sys/fs/pipe-max-size)", n)
		}
		job.PipeSize = int(n)
	}
	if raw.Input != nil && raw.Input.Path != nil {
		if *raw.Input.Path == "" {
			return nil, v.errf("input.path", `must not be empty: use "-" for stdin`)
		}
		job.Input = *raw.Input.Path
	}
	if raw.Input != nil && raw.Input.ExpectedSize != nil {
		n, err := units.ParseSize(raw.Input.ExpectedSize)
		if err != nil {
			return nil, v.errf("input.expected_size", "%v", err)
		}
		job.ExpectedSize = n
	}
	if raw.Output != nil {
		if raw.Output.Path != nil {
			if *raw.Output.Path == "" {
				return nil, v.errf("output.path", `must not be empty: use "-" for stdout or "none"`)
			}
			job.Output = *raw.Output.Path
		}
		if raw.Output.Mode != nil {
			m, err := strconv.ParseUint(*raw.Output.Mode, 8, 32)
			if err != nil || m > 0o7777 {
				return nil, v.errf("output.mode", "%q is not an octal file mode such as \"0600\"", *raw.Output.Mode)
			}
			job.OutputMode, job.OutputModeSet = os.FileMode(m), true
		}
	}
	if raw.Decoder != nil && raw.Decoder.OpenPGP != nil {
		factory, ok := filter.Lookup("openpgp-decrypt")
		if !ok {
			return nil, v.errf("decoder.openpgp", "this pipespool has no openpgp-decrypt built-in")
		}
		with := *raw.Decoder.OpenPGP
		f, err := v.filter("decoder.openpgp", factory, with, job.Dir)
		if err != nil {
			return nil, err
		}
		job.OpenPGPDecoder = f
		_, job.OpenPGPRequireSigned = with["require_signed_by"]
	}
	if job.MayOutlive, err = v.programNames("may_outlive", raw.MayOutlive); err != nil {
		return nil, err
	}
	if len(raw.Stage) == 0 && needStages {
		return nil, &JobError{File: path, Key: "stage", Msg: "no stages: add at least one [[stage]] with command, shell or builtin"}
	}
	// The report names the run's output "output" when it is the root
	// cause: no stage may be called that (a default name is numbered).
	names := map[string]int{OutputRootCause: 0}
	next := map[string]int{} // a repeated default name's next number to try
	for i, rs := range raw.Stage {
		s, err := v.stage(i+1, rs, job)
		if err != nil {
			return nil, err
		}
		if prev, dup := names[s.Name]; dup {
			if raw.Stage[i].Name != nil && prev == 0 {
				return nil, v.errf(stageKey(s.Index, "name"), "stage name %q is reserved for the run's output (the report's root_cause): give the stage another name", s.Name)
			}
			if raw.Stage[i].Name != nil {
				return nil, v.errf(stageKey(s.Index, "name"), "stage name %q is already used by stage %d: give each stage a unique name", s.Name, prev)
			}
			// A default name (argv[0], builtin) that repeats gets a
			// number: cat, cat-2, cat-3. next remembers where each
			// base's search stopped, so that 10 000 cats take linear
			// time.
			base := s.Name
			for n := max(next[base], 2); ; n++ {
				s.Name = fmt.Sprintf("%s-%d", base, n)
				if _, taken := names[s.Name]; !taken {
					next[base] = n + 1
					break
				}
			}
		}
		names[s.Name] = s.Index
		job.Stages = append(job.Stages, s)
	}
	if err := v.tree(job, raw); err != nil {
		return nil, err
	}
	return job, nil
}
