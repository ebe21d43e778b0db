package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// validateQueueReport checks a queue-process --report file against
// testdata/queue-report.schema.json (which refers to report.schema.json
// for the pipeline of each job) and returns it decoded.
func validateQueueReport(t *testing.T, path string) map[string]any {
	t.Helper()
	return validateReportSchema(t, path, "queue-report.schema.json")
}

// validateReportSchema checks a report file against testdata/schema (which
// may refer to the other report schemas) and returns it decoded.
func validateReportSchema(t *testing.T, path, schema string) map[string]any {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	for _, s := range []string{"report.schema.json", "queue-report.schema.json", "queue-multi-report.schema.json"} {
		p, err := filepath.Abs(filepath.Join("../testdata", s))
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if err := c.AddResource("https://github.com/pipespool/pipespool/testdata/"+s, doc); err != nil {
			t.Fatal(err)
		}
	}
	sch, err := c.Compile("https://github.com/pipespool/pipespool/testdata/" + schema)
	if err != nil {
		t.Fatalf("compiling %s: %v", schema, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if err := sch.Validate(inst); err != nil {
		t.Errorf("report does not match %s: %v\n%s", schema, err, b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestQueueOpsCommandModeReportAndMetrics: command mode under Delete, with
// a Fail packet: exit 0 as fspl, but the report and metrics say a job
// failed; then an empty queue is a success that moves the last-success
// timestamp.
func TestQueueOpsCommandModeReportAndMetrics(t *testing.T) {
	dir := t.TempDir()
	specs := interopPackets(t)
	writeQueue(t, pipespoolBin, dir, prepare(t, pipespoolBin, dir, specs))
	rep, prom := filepath.Join(dir, "report.json"), filepath.Join(dir, "q.prom")
	r := run(t, dir, nil, nil, pipespoolBin, "queue-process", "q", "--on-error", "Delete", "--report", rep, "--metrics-file", prom, "sh", "--", "-c", "cat >/dev/null")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.err)
	}
	m := validateQueueReport(t, rep)
	if m["result"] != "failed" || m["jobs_processed"] != float64(len(specs)) || m["jobs_failed"] != 1.0 ||
		m["nextseq_before"] != 1.0 || m["nextseq_after"] != float64(len(specs)+1) || m["job"] != "q" {
		t.Errorf("report: %v", m)
	}
	jobs := m["jobs"].([]any)
	for i, j := range jobs {
		j := j.(map[string]any)
		wantType, wantResult := "Command", "success"
		switch specs[i].kind {
		case "nop":
			wantType = "NOP"
		case "fail":
			wantType, wantResult = "Fail", "failed"
		}
		if j["seq"] != float64(i+1) || j["type"] != wantType || j["result"] != wantResult || j["disposition"] != "deleted" ||
			!strings.HasPrefix(j["file"].(string), "q/jobs/fspl-") {
			t.Errorf("job %d: %v", i+1, j)
		}
	}
	got := parseMetricsFile(t, prom)
	for k, v := range map[string]float64{
		`pipespool_run_success{job=q}`:                    0,
		`pipespool_last_success_timestamp_seconds{job=q}`: 0,
		`pipespool_queue_jobs_processed_total{job=q}`:     float64(len(specs)),
		`pipespool_queue_jobs_failed_total{job=q}`:        1,
		`pipespool_queue_nextseq{job=q}`:                  float64(len(specs) + 1),
	} {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v\n%v", k, g, ok, v, got)
		}
	}
	if got[`pipespool_last_run_timestamp_seconds{job=q}`] < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last run timestamp: %v", got)
	}
	// The queue is empty now: a successful run of no jobs.
	r = run(t, dir, nil, nil, pipespoolBin, "queue-process", "q", "--report", rep, "--metrics-file", prom, "cat")
	m = validateQueueReport(t, rep)
	got = parseMetricsFile(t, prom)
	if r.code != 0 || m["result"] != "success" || m["jobs_processed"] != 0.0 || got[`pipespool_run_success{job=q}`] != 1 ||
		got[`pipespool_last_success_timestamp_seconds{job=q}`] == 0 {
		t.Errorf("empty queue: exit %d, report %v, metrics %v", r.code, m, got)
	}
}

// TestQueueOpsPipelineModeReportAndMetrics: each job's pipeline report is
// in the run's, and the stage byte counters sum over the jobs; a failing
// job under Retry makes the run "failed", its entry "retry".
func TestQueueOpsPipelineModeReportAndMetrics(t *testing.T) {
	dir := t.TempDir()
	specs := []packetSpec{{kind: "cmd", payload: randomBytes(t, 100000)}, {kind: "cmd", payload: randomBytes(t, 23456)}, {kind: "cmd", payload: []byte("x")}}
	writeQueue(t, pipespoolBin, dir, prepare(t, pipespoolBin, dir, specs))
	job := writeFile(t, dir, "restore.toml", `name = "restore"
[output]
path = "none"
[[stage]]
name = "count"
shell = "cat; test $FSPL_SEQ != 3"
`)
	rep, prom := filepath.Join(dir, "report.json"), filepath.Join(dir, "restore.prom")
	r := run(t, dir, nil, nil, pipespoolBin, "queue-process", "q", "--job", job, "--report", rep, "--metrics-file", prom)
	if r.code != 1 {
		t.Fatalf("job 3 fails under Retry: exit %d, stderr %s", r.code, r.err)
	}
	m := validateQueueReport(t, rep)
	jobs := m["jobs"].([]any)
	if m["result"] != "failed" || len(jobs) != 3 || m["job"] != "restore" || m["nextseq_after"] != 3.0 || !strings.Contains(m["message"].(string), "fspl-") {
		t.Fatalf("report: %v", m)
	}
	last := jobs[2].(map[string]any)
	if last["disposition"] != "retry" || last["result"] != "failed" || last["pipeline"].(map[string]any)["result"] != "failed" {
		t.Errorf("job 3: %v", last)
	}
	first := jobs[0].(map[string]any)["pipeline"].(map[string]any)
	if st := first["stages"].([]any)[0].(map[string]any); st["bytes_in"] != 100000.0 {
		t.Errorf("job 1 pipeline: %v", first)
	}
	got := parseMetricsFile(t, prom)
	want := 100000 + 23456 + 1
	if g := got[`pipespool_stage_bytes_total{direction=in,job=restore,stage=count}`]; g != float64(want) {
		t.Errorf("stage bytes in: %v, want %d\n%v", g, want, got)
	}
	if got[`pipespool_run_success{job=restore}`] != 0 || got[`pipespool_queue_jobs_failed_total{job=restore}`] != 1 {
		t.Errorf("metrics: %v", got)
	}
}

// TestQueueOpsLock: --lock exits 75 at once while another process holds
// it, and after --lock-wait; the queue's own lock held (by fspl or another
// pipespool) is 75 too and leaves the previous report and metrics alone.
func TestQueueOpsLock(t *testing.T) {
	dir := t.TempDir()
	writeQueue(t, pipespoolBin, dir, prepare(t, pipespoolBin, dir, []packetSpec{{kind: "cmd", payload: []byte("a")}}))
	lock := filepath.Join(dir, "restore.lock")
	holdLock(t, lock)
	r := runPipespool(t, runOpts{Dir: dir}, "queue-process", "q", "--lock", lock, "cat")
	if r.Code != 75 || r.Elapsed > time.Second || !strings.Contains(string(r.Stderr), "is held by another process") {
		t.Errorf("--lock held: exit %d after %s, stderr %s", r.Code, r.Elapsed, r.Stderr)
	}
	r = runPipespool(t, runOpts{Dir: dir}, "queue-process", "q", "--lock", lock, "--lock-wait", "300ms", "cat")
	if r.Code != 75 || r.Elapsed < 300*time.Millisecond {
		t.Errorf("--lock-wait 300ms: exit %d after %s", r.Code, r.Elapsed)
	}
	if n := readFile(t, filepath.Join(dir, "q/nextseq")); n != "1\n" {
		t.Errorf("nextseq moved while the lock was held: %q", n)
	}

	prom := filepath.Join(dir, "q.prom")
	before := "# previous run\n"
	os.WriteFile(prom, []byte(before), 0o644)
	holdLock(t, filepath.Join(dir, "q/nextseq.lock"))
	r = runPipespool(t, runOpts{Dir: dir}, "queue-process", "q", "--metrics-file", prom, "--report", filepath.Join(dir, "r.json"), "cat")
	if r.Code != 75 {
		t.Errorf("queue lock held: exit %d, stderr %s", r.Code, r.Stderr)
	}
	if readFile(t, prom) != before {
		t.Errorf("metrics file replaced although the run did not happen")
	}
	if _, err := os.Stat(filepath.Join(dir, "r.json")); err == nil {
		t.Errorf("report written although the run did not happen")
	}
}
