package pipeline

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/pipespool/pipespool/fsutil"
)

// WriteMetrics writes the metrics of a run to path in the Prometheus text
// format, for node_exporter's textfile collector: to a temporary file in
// the same directory (a name the collector ignores, as it does not end in
// .prom), fsynced, then renamed over path, so a scrape never reads half a
// file. Every sample carries job="NAME".
//
// pipespool_last_success_timestamp_seconds is the end of this run when it
// succeeded; otherwise it is kept from the file being replaced (for the
// same job), or 0 when there is none, so that "time() - last success"
// alerts keep counting from the last good run.
//
// extra samples follow the run's own (queue-process adds its job counts).
func WriteMetrics(path string, rep *Report, extra ...Metric) error {
	lastSuccess := 0.0
	if rep.Result == ResultSuccess {
		lastSuccess = unixSeconds(rep.End)
	} else if v, ok := previousMetric(path, "pipespool_last_success_timestamp_seconds", rep.Job); ok {
		lastSuccess = v
	}
	var b bytes.Buffer
	job := "job=" + quoteLabel(rep.Job)
	gauge := func(name, help string, v float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s{%s} %s\n", name, help, name, name, job, formatFloat(v))
	}
	success := 0.0
	if rep.Result == ResultSuccess {
		success = 1
	}
	gauge("pipespool_last_run_timestamp_seconds", "When the last run ended, in seconds since the epoch.", unixSeconds(rep.End))
	gauge("pipespool_last_success_timestamp_seconds", "When the last successful run ended, in seconds since the epoch (0: none known).", lastSuccess)
	gauge("pipespool_run_duration_seconds", "How long the last run took.", rep.Duration)
	gauge("pipespool_run_success", "1 if the last run succeeded, else 0.", success)

	// Bytes and stalls count within one run: the file is replaced by each
	// run, which Prometheus sees as a counter reset.
	fmt.Fprintf(&b, "# HELP pipespool_stage_bytes_total Bytes a stage read (in) and wrote (out) in the last run.\n# TYPE pipespool_stage_bytes_total counter\n")
	for _, s := range rep.Stages {
		st := quoteLabel(s.Name)
		fmt.Fprintf(&b, "pipespool_stage_bytes_total{%s,stage=%s,direction=\"in\"} %d\n", job, st, max(s.BytesIn, 0))
		fmt.Fprintf(&b, "pipespool_stage_bytes_total{%s,stage=%s,direction=\"out\"} %d\n", job, st, max(s.BytesOut, 0))
	}
	fmt.Fprintf(&b, "# HELP pipespool_stage_stalls_total Stalls detected per stage in the last run.\n# TYPE pipespool_stage_stalls_total counter\n")
	for _, s := range rep.Stages {
		fmt.Fprintf(&b, "pipespool_stage_stalls_total{%s,stage=%s} %d\n", job, quoteLabel(s.Name), s.Stalls)
	}
	fmt.Fprintf(&b, "# HELP pipespool_stage_nudges_total Nudges (SIGSTOP+SIGCONT) sent per stage in the last run.\n# TYPE pipespool_stage_nudges_total counter\n")
	for _, s := range rep.Stages {
		fmt.Fprintf(&b, "pipespool_stage_nudges_total{%s,stage=%s} %d\n", job, quoteLabel(s.Name), s.Nudges)
	}
	// Buffers, for the stages that have one: its size, and the most it
	// held (a buffer that reached its size held the producer back).
	for _, mt := range []struct {
		name, help string
		v          func(StageReport) int64
	}{
		{"pipespool_stage_buffer_size_bytes", "Size of the memory buffer on a stage's input hop.", func(s StageReport) int64 { return s.Buffer }},
		{"pipespool_stage_buffer_peak_bytes", "The most the buffer on a stage's input hop held in the last run.", func(s StageReport) int64 { return *s.BufferPeak }},
	} {
		head := false
		for _, s := range rep.Stages {
			if s.Buffer == 0 || s.BufferPeak == nil {
				continue
			}
			if !head {
				fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n", mt.name, mt.help, mt.name)
				head = true
			}
			fmt.Fprintf(&b, "%s{%s,stage=%s} %d\n", mt.name, job, quoteLabel(s.Name), mt.v(s))
		}
	}
	for _, m := range extra {
		typ := m.Type
		if typ == "" {
			typ = "gauge"
		}
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n%s{%s} %s\n", m.Name, m.Help, m.Name, typ, m.Name, job, formatFloat(m.Value))
	}
	return fsutil.WriteFileAtomic(path, b.Bytes(), 0o644)
}

// Metric is one more sample for WriteMetrics, labelled with the job like
// the others.
type Metric struct {
	Name, Help string
	Type       string // gauge (default) or counter
	Value      float64
}

func unixSeconds(t interface{ UnixMilli() int64 }) float64 {
	return float64(t.UnixMilli()) / 1000
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// quoteLabel quotes a label value as the text format wants: backslash,
// double quote and newline escaped.
func quoteLabel(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

// previousMetric finds name{job="JOB"} VALUE in an existing metrics file.
// It reads only what WriteMetrics writes: one sample per line, job the
// first label.
func previousMetric(path, name, job string) (float64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	prefix := name + "{job=" + quoteLabel(job)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		rest := line[len(prefix):]
		end := strings.Index(rest, "} ")
		if end < 0 {
			continue
		}
		fields := strings.Fields(rest[end+2:])
		if len(fields) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(fields[0], 64); err == nil {
			return v, true
		}
	}
	return 0, false
}
