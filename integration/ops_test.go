package integration

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// validateReport checks a --report file against testdata/report.schema.json.
func validateReport(t *testing.T, path string) {
	t.Helper()
	schemaPath, err := filepath.Abs("../testdata/report.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	sch, err := c.Compile(schemaPath)
	if err != nil {
		t.Fatalf("compiling the report schema: %v", err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	inst, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if err := sch.Validate(inst); err != nil {
		b, _ := os.ReadFile(path)
		t.Errorf("report does not match the schema: %v\n%s", err, b)
	}
}

// parseMetricsFile parses a --metrics-file with Prometheus's text parser and
// returns the samples by "name{label=value,...}", labels sorted by name.
func parseMetricsFile(t *testing.T, path string) map[string]float64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(f)
	if err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
	out := map[string]float64{}
	for name, fam := range fams {
		for _, m := range fam.Metric {
			var labels []string
			for _, l := range m.Label {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(labels)
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			out[name+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	return out
}

// TestOpsCronSuccessIsSilent: stderr not a terminal, default log level: a
// successful run writes nothing to stderr, and leaves a report that
// matches the schema and metrics that Prometheus parses.
func TestOpsCronSuccessIsSilent(t *testing.T) {
	dir := t.TempDir()
	in, _ := randomFile(t, dir, "in.bin", 3<<20, 11)
	job := writeFile(t, dir, "nightly.toml", `
[[stage]]
name = "copy"
command = ["cat"]
[[stage]]
name = "sum"
command = ["sha256sum"]
`)
	rp, mp := filepath.Join(dir, "report.json"), filepath.Join(dir, "nightly.prom")
	res := runPipespool(t, runOpts{}, "exec", job, "-i", in, "--report", rp, "--metrics-file", mp, "--progress", "auto")
	if res.Code != 0 {
		t.Fatalf("exit %d\nstderr: %s", res.Code, res.Stderr)
	}
	if len(res.Stderr) != 0 {
		t.Errorf("a successful cron run wrote to stderr: %q", res.Stderr)
	}
	validateReport(t, rp)
	m := parseMetricsFile(t, mp)
	for key, want := range map[string]float64{
		"pipespool_run_success{job=nightly}":                                1,
		"pipespool_stage_bytes_total{direction=in,job=nightly,stage=copy}":  3 << 20,
		"pipespool_stage_bytes_total{direction=out,job=nightly,stage=copy}": 3 << 20,
		"pipespool_stage_stalls_total{job=nightly,stage=sum}":               0,
	} {
		if got, ok := m[key]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", key, got, ok, want)
		}
	}
	last := m["pipespool_last_success_timestamp_seconds{job=nightly}"]
	if d := time.Since(time.UnixMilli(int64(last * 1000))); d < 0 || d > time.Minute {
		t.Errorf("last success %v is not now", last)
	}

	// A failing run of the same job keeps the last success, and prints the
	// summary: the failing stage, its exit status, its stderr, bytes.
	bad := writeFile(t, dir, "nightly.toml", `
[[stage]]
name = "copy"
command = ["cat"]
[[stage]]
name = "check"
shell = 'cat >/dev/null; echo "checksum mismatch in block 7" >&2; exit 3'
`)
	res = runPipespool(t, runOpts{}, "exec", bad, "-i", in, "--report", rp, "--metrics-file", mp)
	if res.Code != 1 {
		t.Fatalf("exit %d, want 1\nstderr: %s", res.Code, res.Stderr)
	}
	for _, want := range []string{`job "nightly" failed`, "* 2 check", "failed (exit 3)", "checksum mismatch in block 7", "out 3.0 MiB"} {
		if !strings.Contains(string(res.Stderr), want) {
			t.Errorf("failure summary lacks %q:\n%s", want, res.Stderr)
		}
	}
	validateReport(t, rp)
	m2 := parseMetricsFile(t, mp)
	if got := m2["pipespool_last_success_timestamp_seconds{job=nightly}"]; got != last {
		t.Errorf("last success after a failure: %v, want %v kept", got, last)
	}
	if got := m2["pipespool_run_success{job=nightly}"]; got != 0 {
		t.Errorf("run_success after a failure: %v", got)
	}
}

// TestOpsReportOfStallMatchesSchema: a report with diagnoses, signals and
// a nudge validates too.
func TestOpsReportOfStallMatchesSchema(t *testing.T) {
	dir := t.TempDir()
	job := writeFile(t, dir, "job.toml", `
stall_timeout = "1s"
on_stall = "nudge"
[[stage]]
command = ["cat", "/dev/zero"]
[[stage]]
command = ["sleep", "30.0704"]
`)
	rp, mp := filepath.Join(dir, "report.json"), filepath.Join(dir, "job.prom")
	res := runPipespool(t, runOpts{}, "exec", job, "--report", rp, "--metrics-file", mp, "-o", "none")
	if res.Code != 1 {
		t.Fatalf("exit %d, want 1\nstderr: %s", res.Code, res.Stderr)
	}
	validateReport(t, rp)
	m := parseMetricsFile(t, mp)
	if got := m["pipespool_stage_stalls_total{job=job,stage=sleep}"]; got != 2 {
		t.Errorf("stalls of sleep: %v, want 2 (stalled, nudged, stalled again)", got)
	}
	assertNoProcesses(t, "30.0704")
}

// holdLock runs flock(1) holding path until the test ends, and returns
// once it holds it (it prints a line then).
func holdLock(t *testing.T, path string) {
	t.Helper()
	needTools(t, "flock")
	cmd := exec.Command("flock", path, "sh", "-c", "echo locked; exec sleep 30.0705")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("flock did not take the lock: %q %v", line, err)
	}
}

// TestOpsLockHeldExits75: --lock exits 75 at once while another process
// (flock(1)) holds the lock, after --lock-wait with it, and runs when the
// lock is free.
func TestOpsLockHeldExits75(t *testing.T) {
	dir := t.TempDir()
	lock := filepath.Join(dir, "job.lock")
	job := writeFile(t, dir, "job.toml", `
[[stage]]
command = ["cat"]
`)
	res := runPipespool(t, runOpts{Stdin: strings.NewReader("free\n")}, "exec", job, "--lock", lock)
	if res.Code != 0 || string(res.Stdout) != "free\n" {
		t.Fatalf("free lock: exit %d stdout %q\nstderr: %s", res.Code, res.Stdout, res.Stderr)
	}
	holdLock(t, lock)
	res = runPipespool(t, runOpts{}, "exec", job, "--lock", lock)
	if res.Code != 75 {
		t.Fatalf("held lock: exit %d, want 75\nstderr: %s", res.Code, res.Stderr)
	}
	if res.Elapsed > time.Second {
		t.Errorf("exit 75 took %s, want at once", res.Elapsed)
	}
	if !bytes.Contains(res.Stderr, []byte("is held by another process")) {
		t.Errorf("stderr: %s", res.Stderr)
	}
	res = runPipespool(t, runOpts{}, "exec", job, "--lock", lock, "--lock-wait", "400ms")
	if res.Code != 75 || res.Elapsed < 400*time.Millisecond {
		t.Errorf("--lock-wait 400ms: exit %d after %s, want 75 after at least 400ms", res.Code, res.Elapsed)
	}
}
