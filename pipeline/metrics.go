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
	return WriteMetricsSeries(path, []MetricSeries{{Report: rep, Extra: extra}})
}

// MetricSeries is one run among those of a metrics file: queue-process
// over several queues writes one series per queue, told apart by a
// queue label.
type MetricSeries struct {
	Report *Report
	// Labels follow job="NAME" on every sample of the series.
	Labels []Label
	Extra  []Metric
	// Keep takes the series' samples from the file being replaced
	// instead: a run that did not happen (its lock was held) leaves its
	// last metrics as they were. Only Labels is used, and the first of
	// them must tell the series apart.
	Keep bool
}

// Label is a label of a MetricSeries.
type Label struct{ Name, Value string }

// WriteMetricsSeries writes the metrics of several runs to one file, as
// WriteMetrics does for one: each metric's HELP and TYPE once, then its
// samples of every series in order.
func WriteMetricsSeries(path string, series []MetricSeries) error {
	var fams families
	var old *families
	for _, sr := range series {
		if sr.Keep {
			if old == nil {
				old = readFamilies(path)
			}
			fams.keep(old, sr.Labels)
			continue
		}
		rep := sr.Report
		labels := "job=" + quoteLabel(rep.Job)
		for _, l := range sr.Labels {
			labels += "," + l.Name + "=" + quoteLabel(l.Value)
		}
		lastSuccess := 0.0
		if rep.Result == ResultSuccess {
			lastSuccess = unixSeconds(rep.End)
		} else if v, ok := previousMetric(path, "pipespool_last_success_timestamp_seconds", labels); ok {
			lastSuccess = v
		}
		gauge := func(name, help string, v float64) {
			fams.add(name, help, "gauge", fmt.Sprintf("%s{%s} %s\n", name, labels, formatFloat(v)))
		}
		success := 0.0
		if rep.Result == ResultSuccess {
			success = 1
		}
		gauge("pipespool_last_run_timestamp_seconds", "When the last run ended, in seconds since the epoch.", unixSeconds(rep.End))
		gauge("pipespool_last_success_timestamp_seconds", "When the last successful run ended, in seconds since the epoch (0: none known).", lastSuccess)
		gauge("pipespool_run_duration_seconds", "How long the last run took.", rep.Duration)
		gauge("pipespool_run_success", "1 if the last run succeeded, else 0.", success)

		// Bytes and stalls count within one run: the file is replaced by
		// each run, which Prometheus sees as a counter reset.
		const bytesName, stallsName, nudgesName = "pipespool_stage_bytes_total", "pipespool_stage_stalls_total", "pipespool_stage_nudges_total"
		fams.add(bytesName, "Bytes a stage read (in) and wrote (out) in the last run.", "counter", "")
		for _, s := range rep.Stages {
			st := quoteLabel(s.Name)
			fams.add(bytesName, "", "", fmt.Sprintf("%s{%s,stage=%s,direction=\"in\"} %d\n", bytesName, labels, st, max(s.BytesIn, 0)))
			fams.add(bytesName, "", "", fmt.Sprintf("%s{%s,stage=%s,direction=\"out\"} %d\n", bytesName, labels, st, max(s.BytesOut, 0)))
		}
		fams.add(stallsName, "Stalls detected per stage in the last run.", "counter", "")
		for _, s := range rep.Stages {
			fams.add(stallsName, "", "", fmt.Sprintf("%s{%s,stage=%s} %d\n", stallsName, labels, quoteLabel(s.Name), s.Stalls))
		}
		fams.add(nudgesName, "Nudges (SIGSTOP+SIGCONT) sent per stage in the last run.", "counter", "")
		for _, s := range rep.Stages {
			fams.add(nudgesName, "", "", fmt.Sprintf("%s{%s,stage=%s} %d\n", nudgesName, labels, quoteLabel(s.Name), s.Nudges))
		}
		// Buffers, for the stages that have one: its size, and the most
		// it held (a buffer that reached its size held the producer back).
		const bufSizeName, bufPeakName = "pipespool_stage_buffer_size_bytes", "pipespool_stage_buffer_peak_bytes"
		for _, s := range rep.Stages {
			if s.Buffer == 0 || s.BufferPeak == nil {
				continue
			}
			st := quoteLabel(s.Name)
			fams.add(bufSizeName, "Size of the memory buffer on a stage's input hop.", "gauge", fmt.Sprintf("%s{%s,stage=%s} %d\n", bufSizeName, labels, st, s.Buffer))
			fams.add(bufPeakName, "The most the buffer on a stage's input hop held in the last run.", "gauge", fmt.Sprintf("%s{%s,stage=%s} %d\n", bufPeakName, labels, st, *s.BufferPeak))
		}
		// A job that fans out: each output and each branch. An optional
		// branch that failed leaves pipespool_run_success at 1: its own
		// gauge is what an alert watches.
		const outBytesName, outCommittedName, branchName = "pipespool_output_bytes_total", "pipespool_output_committed", "pipespool_branch_success"
		for _, o := range rep.Outputs {
			ol := fmt.Sprintf("%s,output=%s,branch=%s", labels, quoteLabel(o.Path), quoteLabel(o.Branch))
			committed := 0
			if o.Status == "committed" {
				committed = 1
			}
			fams.add(outBytesName, "Bytes an output of the last run took (a job that fans out).", "counter", fmt.Sprintf("%s{%s} %d\n", outBytesName, ol, max(o.Bytes, 0)))
			fams.add(outCommittedName, "1 if the last run committed this output, else 0 (a job that fans out).", "gauge", fmt.Sprintf("%s{%s} %d\n", outCommittedName, ol, committed))
		}
		for _, br := range rep.Branches {
			ok := 0
			if br.Result == ResultSuccess {
				ok = 1
			}
			fams.add(branchName, "1 if the branch succeeded in the last run, else 0 (an optional branch may fail in a run that succeeds).", "gauge",
				fmt.Sprintf("%s{%s,branch=%s} %d\n", branchName, labels, quoteLabel(br.Name), ok))
		}
		for _, m := range sr.Extra {
			typ := m.Type
			if typ == "" {
				typ = "gauge"
			}
			fams.add(m.Name, m.Help, typ, fmt.Sprintf("%s{%s} %s\n", m.Name, labels, formatFloat(m.Value)))
		}
	}
	return fsutil.WriteFileAtomic(path, fams.bytes(), 0o644)
}

// families are the metric families of a file in the order they first
// appear, each with its HELP and TYPE lines and its samples.
type families struct {
	names []string
	fam   map[string]*family
}

type family struct {
	head    string // "# HELP ...\n# TYPE ...\n"
	samples []string
}

// add adds sample (may be "") to the family name, made with help and typ
// when it is new.
func (f *families) add(name, help, typ, sample string) {
	f.addHead(name, fmt.Sprintf("# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ))
	if sample != "" {
		f.fam[name].samples = append(f.fam[name].samples, sample)
	}
}

func (f *families) addHead(name, head string) {
	if f.fam == nil {
		f.fam = map[string]*family{}
	}
	if f.fam[name] == nil {
		f.fam[name] = &family{head: head}
		f.names = append(f.names, name)
	}
}

// keep adds the samples of old whose labels include the first of labels.
func (f *families) keep(old *families, labels []Label) {
	if old == nil || len(labels) == 0 {
		return
	}
	l := labels[0].Name + "=" + quoteLabel(labels[0].Value)
	for _, name := range old.names {
		of := old.fam[name]
		for _, s := range of.samples {
			if strings.Contains(s, ","+l+",") || strings.Contains(s, ","+l+"}") || strings.Contains(s, "{"+l+",") || strings.Contains(s, "{"+l+"}") {
				f.addHead(name, of.head)
				f.fam[name].samples = append(f.fam[name].samples, s)
			}
		}
	}
}

func (f *families) bytes() []byte {
	var b bytes.Buffer
	for _, name := range f.names {
		b.WriteString(f.fam[name].head)
		for _, s := range f.fam[name].samples {
			b.WriteString(s)
		}
	}
	return b.Bytes()
}

// readFamilies reads back a file WriteMetricsSeries wrote (nil when there
// is none): HELP and TYPE lines, then one sample per line.
func readFamilies(path string) *families {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	f := &families{}
	var help string
	for line := range strings.Lines(string(b)) {
		switch {
		case strings.HasPrefix(line, "# HELP "):
			help = line
		case strings.HasPrefix(line, "# TYPE "):
			if fields := strings.Fields(line); len(fields) >= 3 {
				f.addHead(fields[2], help+line)
			}
		case line != "" && line[0] != '#':
			name, _, _ := strings.Cut(line, "{")
			if fam := f.fam[name]; fam != nil {
				if !strings.HasSuffix(line, "\n") {
					line += "\n"
				}
				fam.samples = append(fam.samples, line)
			}
		}
	}
	return f
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

// previousMetric finds name{LABELS} VALUE in an existing metrics file,
// labels being exactly the series' labels as WriteMetricsSeries writes
// them. It reads only what WriteMetrics writes: one sample per line.
func previousMetric(path, name, labels string) (float64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	prefix := name + "{" + labels
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		rest, ok := strings.CutPrefix(line[len(prefix):], "} ")
		if !ok {
			continue // another series, with more labels
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(fields[0], 64); err == nil {
			return v, true
		}
	}
	return 0, false
}
