package pipeline

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// parseMetrics parses a metrics file with Prometheus's own text parser.
func parseMetrics(t *testing.T, path string) map[string]*dto.MetricFamily {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(f)
	if err != nil {
		t.Fatalf("%s does not parse: %v", path, err)
	}
	return fams
}

// sample returns the value of name with the given labels, failing if absent.
func sample(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	fam, ok := fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range fam.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		}
	}
	t.Fatalf("no sample %s%v", name, labels)
	return 0
}

func TestMetricsParseAndKeepLastSuccess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pipespool.prom")
	end := time.Unix(1700000000, 500e6)
	ok := &Report{Job: `back"up`, End: end, Duration: 12.5, Result: ResultSuccess, Stages: []StageReport{
		{Name: "decrypt", BytesIn: 100, BytesOut: 90},
		{Name: "receive", BytesIn: 90, Stalls: 2, Nudges: 1},
	}}
	if err := WriteMetrics(path, ok); err != nil {
		t.Fatal(err)
	}
	fams := parseMetrics(t, path)
	job := map[string]string{"job": `back"up`}
	if v := sample(t, fams, "pipespool_last_success_timestamp_seconds", job); v != 1700000000.5 {
		t.Errorf("last success %v", v)
	}
	if v := sample(t, fams, "pipespool_run_success", job); v != 1 {
		t.Errorf("run_success %v", v)
	}
	if v := sample(t, fams, "pipespool_run_duration_seconds", job); v != 12.5 {
		t.Errorf("duration %v", v)
	}
	if v := sample(t, fams, "pipespool_stage_bytes_total", map[string]string{"job": `back"up`, "stage": "decrypt", "direction": "out"}); v != 90 {
		t.Errorf("bytes out %v", v)
	}
	if v := sample(t, fams, "pipespool_stage_stalls_total", map[string]string{"stage": "receive"}); v != 2 {
		t.Errorf("stalls %v", v)
	}

	// A failure an hour later keeps the last success of the file it replaces.
	bad := &Report{Job: `back"up`, End: end.Add(time.Hour), Duration: 3, Result: ResultFailed}
	if err := WriteMetrics(path, bad); err != nil {
		t.Fatal(err)
	}
	fams = parseMetrics(t, path)
	if v := sample(t, fams, "pipespool_last_success_timestamp_seconds", job); v != 1700000000.5 {
		t.Errorf("after a failure: last success %v, want the previous one", v)
	}
	if v := sample(t, fams, "pipespool_last_run_timestamp_seconds", job); v != 1700003600.5 {
		t.Errorf("last run %v", v)
	}
	if v := sample(t, fams, "pipespool_run_success", job); v != 0 {
		t.Errorf("run_success %v", v)
	}

	// A first run that fails: no success known.
	other := filepath.Join(t.TempDir(), "new.prom")
	if err := WriteMetrics(other, bad); err != nil {
		t.Fatal(err)
	}
	if v := sample(t, parseMetrics(t, other), "pipespool_last_success_timestamp_seconds", job); v != 0 {
		t.Errorf("never succeeded: last success %v, want 0", v)
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
}

// Stages with a buffer get its size and peak; the others none.
func TestMetricsBuffer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pipespool.prom")
	peak := int64(3 << 20)
	rep := &Report{Job: "tape", End: time.Unix(1700000000, 0), Result: ResultSuccess, Stages: []StageReport{
		{Name: "tar"},
		{Name: "mt", Buffer: 256 << 20, BufferPeak: &peak},
	}}
	if err := WriteMetrics(path, rep); err != nil {
		t.Fatal(err)
	}
	fams := parseMetrics(t, path)
	mt := map[string]string{"job": "tape", "stage": "mt"}
	if v := sample(t, fams, "pipespool_stage_buffer_size_bytes", mt); v != 256<<20 {
		t.Errorf("size %v", v)
	}
	if v := sample(t, fams, "pipespool_stage_buffer_peak_bytes", mt); v != 3<<20 {
		t.Errorf("peak %v", v)
	}
	for _, name := range []string{"pipespool_stage_buffer_size_bytes", "pipespool_stage_buffer_peak_bytes"} {
		if n := len(fams[name].Metric); n != 1 {
			t.Errorf("%s: %d samples, want the buffered stage's only", name, n)
		}
	}
	if err := WriteMetrics(path, &Report{Job: "plain", Result: ResultSuccess, Stages: []StageReport{{Name: "cat"}}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := parseMetrics(t, path)["pipespool_stage_buffer_size_bytes"]; ok {
		t.Error("buffer metrics for a job without a buffer")
	}
}

// TestMetricsSeriesKeepAndLabels: several series in one file, told apart
// by a queue label; a failed one keeps its own last success, and a kept
// one (a run that did not happen) keeps its samples from the old file.
func TestMetricsSeriesKeepAndLabels(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.prom")
	t1, t2 := time.Unix(1700000000, 0), time.Unix(1700000100, 0)
	series := func(a, b string, end time.Time, keepB bool) []MetricSeries {
		return []MetricSeries{
			{Report: &Report{Job: "j", End: end, Result: a}, Labels: []Label{{"queue", "/q/a"}},
				Extra: []Metric{{Name: "pipespool_queue_jobs_processed_total", Help: "h", Type: "counter", Value: 3}}},
			{Report: &Report{Job: "j", End: end, Result: b}, Labels: []Label{{"queue", "/q/b"}}, Keep: keepB,
				Extra: []Metric{{Name: "pipespool_queue_jobs_processed_total", Help: "h", Type: "counter", Value: 4}}},
		}
	}
	if err := WriteMetricsSeries(path, series(ResultSuccess, ResultSuccess, t1, false)); err != nil {
		t.Fatal(err)
	}
	if err := WriteMetricsSeries(path, series(ResultFailed, "", t2, true)); err != nil {
		t.Fatal(err)
	}
	fams := parseMetrics(t, path)
	a, b := map[string]string{"job": "j", "queue": "/q/a"}, map[string]string{"job": "j", "queue": "/q/b"}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"pipespool_run_success", a, 0},
		{"pipespool_last_run_timestamp_seconds", a, 1700000100},
		{"pipespool_last_success_timestamp_seconds", a, 1700000000},
		{"pipespool_run_success", b, 1},
		{"pipespool_last_run_timestamp_seconds", b, 1700000000}, // kept from the first file
		{"pipespool_queue_jobs_processed_total", b, 4},
	} {
		if v := sample(t, fams, tc.name, tc.labels); v != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, v, tc.want)
		}
	}
}

// TestMetricsOfATree: a job that fans out has a sample per output (its
// bytes, whether it was committed) and per branch (whether it succeeded:
// an optional branch may fail in a run that succeeds).
func TestMetricsOfATree(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pipespool.prom")
	rep := &Report{Job: "backup", Result: ResultSuccess, End: time.Unix(1700000000, 0),
		Stages: []StageReport{{Name: "send"}, {Name: "local", Branch: "local"}, {Name: "remote", Branch: "remote"}},
		Outputs: []OutputReport{{Branch: "local", Path: "/b/local.zst", Bytes: 1234, Status: "committed"},
			{Branch: "remote", Path: "/b/remote.zst", Bytes: 99, Status: "discarded"}},
		Branches: []BranchReport{{Name: "local", From: "send", Result: ResultSuccess},
			{Name: "remote", From: "send", Optional: true, Result: "discarded"}}}
	if err := WriteMetrics(path, rep); err != nil {
		t.Fatal(err)
	}
	fams := parseMetrics(t, path)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"pipespool_run_success", map[string]string{"job": "backup"}, 1},
		{"pipespool_output_bytes_total", map[string]string{"output": "/b/local.zst", "branch": "local"}, 1234},
		{"pipespool_output_committed", map[string]string{"output": "/b/local.zst"}, 1},
		{"pipespool_output_committed", map[string]string{"output": "/b/remote.zst"}, 0},
		{"pipespool_branch_success", map[string]string{"branch": "local"}, 1},
		{"pipespool_branch_success", map[string]string{"branch": "remote"}, 0},
	} {
		if got := sample(t, fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}
