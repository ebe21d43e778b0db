package pipeline

import (
	"time"
)

// Results of a run (Report.Result).
const (
	ResultSuccess     = "success"
	ResultFailed      = "failed"
	ResultTimeout     = "timeout"
	ResultInterrupted = "interrupted"
)

// OutputRootCause is Report.RootCause when the run's output is the root
// cause: it stopped taking bytes (its reader went away, a full disk), or
// could not be committed. No stage may have this name.
const OutputRootCause = "output"

// Report is what a run did: the JSON of --report (schema in
// docs/report.md) and the source of the failure summary and metrics.
type Report struct {
	Job       string    `json:"job"`
	JobFile   string    `json:"job_file"`
	Start     time.Time `json:"start"`
	End       time.Time `json:"end"`
	Duration  float64   `json:"duration_seconds"`
	Result    string    `json:"result"`
	RootCause string    `json:"root_cause,omitempty"` // stage name, or OutputRootCause
	Message   string    `json:"message,omitempty"`
	// RootBranch is the branch of the root cause in a job that fans out
	// ("" for the trunk, or a job that is a line).
	RootBranch string        `json:"root_branch,omitempty"`
	Input      string        `json:"input"`
	Output     string        `json:"output"`
	Stages     []StageReport `json:"stages"`
	// Outputs and Branches are set for a job that fans out: every output
	// with what became of it, every branch with its own result.
	Outputs  []OutputReport `json:"outputs,omitempty"`
	Branches []BranchReport `json:"branches,omitempty"`
	// Warnings are what a run that succeeded wants said: an optional
	// branch that failed, and why.
	Warnings []string `json:"warnings,omitempty"`
}

// StageReport is one stage in a Report.
type StageReport struct {
	Name string `json:"name"`
	// Branch is the branch the stage is in, named by its first stage ("" in
	// the trunk or a job that is a line); From the stage it reads from (set
	// in a job that fans out; "" for the first stage).
	Branch   string   `json:"branch,omitempty"`
	From     string   `json:"from,omitempty"`
	Kind     string   `json:"kind"` // command | builtin
	Argv     []string `json:"argv"`
	Pid      int      `json:"pid,omitempty"`
	ExitCode *int     `json:"exit_code,omitempty"` // nil when killed by a signal or not started
	Signal   string   `json:"signal,omitempty"`
	Error    string   `json:"error,omitempty"`
	// Status is "ok", "failed" (root cause or failed on its own),
	// "consequence" (failed because another stage failed first),
	// "partial-read" (exited 0 without reading all its input), "stopped"
	// (stopped by pipespool), or "not-started".
	Status   string `json:"status"`
	BytesIn  int64  `json:"bytes_in"`
	BytesOut int64  `json:"bytes_out"`
	// RateLimit is the limit of its input hop in bytes per second (its
	// rate_limit, or exec --rate-limit for the first stage); 0: none.
	RateLimit int64 `json:"rate_limit_bytes_per_second,omitempty"`
	// Buffer is the size of the memory buffer on its input hop (its
	// buffer, or exec --buffer for the first stage), 0: none; BufferPeak
	// the most it held, nil when there is none.
	Buffer     int64    `json:"buffer_bytes,omitempty"`
	BufferPeak *int64   `json:"buffer_peak_bytes,omitempty"`
	Duration   float64  `json:"duration_seconds"`
	Stalls     int      `json:"stalls"`
	Nudges     int      `json:"nudges"`
	Diagnoses  []string `json:"stall_diagnoses,omitempty"`
	StderrTail string   `json:"stderr_tail,omitempty"`
	Note       string   `json:"note,omitempty"`
}
