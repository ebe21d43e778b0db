package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// parseLogfmt splits a key=value line (slog's text format: values with
// blanks or quotes are quoted Go-style).
func parseLogfmt(t *testing.T, line string) map[string]string {
	t.Helper()
	kv := map[string]string{}
	for rest := line; rest != ""; {
		rest = strings.TrimLeft(rest, " ")
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			t.Fatalf("not key=value: %q in %q", rest, line)
		}
		if strings.HasPrefix(v, `"`) {
			q, err := strconv.QuotedPrefix(v)
			if err != nil {
				t.Fatalf("bad quoting in %q: %v", line, err)
			}
			kv[k], _ = strconv.Unquote(q)
			rest = v[len(q):]
		} else {
			val, after, _ := strings.Cut(v, " ")
			kv[k], rest = val, after
		}
	}
	return kv
}

func num(t *testing.T, kv map[string]string, key string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(kv[key], 64)
	if err != nil {
		t.Fatalf("%s=%q: %v", key, kv[key], err)
	}
	return v
}

// TestExecProgressLog: --progress log writes, into a file, plain key=value
// lines (no escape codes): one per interval with the bytes, the size of
// the input file, the percentage, the ETA and every stage's bytes and
// rate, then a final one with the exact totals. The first stage reads its
// file directly (no pump): its bytes come from its fd's offset.
func TestExecProgressLog(t *testing.T) {
	dir := t.TempDir()
	const size = 3 << 20
	writeFile(t, dir, "in.bin", strings.Repeat("0123456789abcdef", size/16))
	job := writeFile(t, dir, "job.toml", `
name = "logged"
[input]
path = "in.bin"
[output]
path = "none"
[[stage]]
name = "first"
command = ["cat"]
[[stage]]
name = "limited"
command = ["cat"]
rate_limit = "1MiB/s"
`)
	res := runPipespool(t, runOpts{}, "exec", job, "--progress", "log", "--progress-interval", "1s")
	if res.Code != 0 {
		t.Fatalf("exit %d\nstderr: %s", res.Code, res.Stderr)
	}
	if bytes.ContainsRune(res.Stderr, '\x1b') {
		t.Errorf("escape codes in the log: %q", res.Stderr)
	}
	lines := strings.Split(strings.TrimSuffix(string(res.Stderr), "\n"), "\n")
	if len(lines) < 3 {
		t.Fatalf("%d lines for a 3 s run at 1 s intervals:\n%s", len(lines), res.Stderr)
	}
	var last float64
	for i, l := range lines {
		kv := parseLogfmt(t, l)
		if kv["msg"] != "progress" || kv["job"] != "logged" || kv["s1.name"] != "first" || kv["s2.name"] != "limited" {
			t.Fatalf("line %d: %q", i, l)
		}
		if num(t, kv, "size") != size {
			t.Errorf("line %d: size %s, want the input file's %d", i, kv["size"], size)
		}
		b := num(t, kv, "bytes")
		if b < last || b > size || num(t, kv, "percent") > 100 {
			t.Errorf("line %d: bytes %v after %v, percent %s", i, b, last, kv["percent"])
		}
		last = b
		final := i == len(lines)-1
		if final != (kv["final"] == "true") {
			t.Errorf("line %d: final=%q", i, kv["final"])
		}
		if !final {
			if _, ok := kv["eta"]; !ok && b > 0 {
				t.Errorf("line %d: no eta with %v bytes moved: %q", i, b, l)
			}
			continue
		}
		if kv["result"] != "done" || num(t, kv, "bytes") != size || num(t, kv, "percent") != 100 ||
			num(t, kv, "s1.in") != size || num(t, kv, "s1.out") != size || num(t, kv, "s2.in") != size ||
			kv["s1.state"] != "done" || kv["s2.state"] != "done" {
			t.Errorf("final line: %q", l)
		}
		// The average rate of the limited stage is about its limit.
		if r := num(t, kv, "s2.rate"); r < 0.7*(1<<20) || r > 1.3*(1<<20) {
			t.Errorf("final s2.rate %v, want about 1 MiB/s", r)
		}
	}
	// A line mid-run saw the first stage's file offset move, from fdinfo.
	mid := parseLogfmt(t, lines[0])
	if num(t, mid, "s1.in") <= 0 {
		t.Errorf("first line: s1.in %s: the direct file's offset was not followed", mid["s1.in"])
	}
}

// TestExecProgressAlwaysIntoAFileIsLog: --progress always on a stderr that
// is not a terminal writes the plain lines of log, not frames with cursor
// movements: a run shorter than the interval writes its final line.
func TestExecProgressAlwaysIntoAFileIsLog(t *testing.T) {
	dir := t.TempDir()
	job := writeFile(t, dir, "job.toml", `
[[stage]]
name = "first"
command = ["cat"]
[[stage]]
name = "late"
shell = "sleep 0.5; cat"
`)
	res := runPipespool(t, runOpts{Stdin: strings.NewReader("hello\n")}, "exec", job, "--progress", "always", "--size", "6")
	if res.Code != 0 || string(res.Stdout) != "hello\n" {
		t.Fatalf("exit %d stdout %q\nstderr: %q", res.Code, res.Stdout, res.Stderr)
	}
	if bytes.ContainsRune(res.Stderr, '\x1b') {
		t.Errorf("escape codes into a file: %q", res.Stderr)
	}
	kv := parseLogfmt(t, strings.TrimSuffix(string(res.Stderr), "\n"))
	if kv["final"] != "true" || kv["size"] != "6" || kv["percent"] != "100" || kv["s2.name"] != "late" || kv["s2.in"] != "6" {
		t.Errorf("want one final line with --size 6: %q", res.Stderr)
	}
}

// openPTY opens a pseudo-terminal of the given width: the master, and the
// slave to give a process as its terminal.
func openPTY(t *testing.T, cols int) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v (a pty is needed: mount devpts)", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: uint16(cols)}); err != nil {
		t.Fatal(err)
	}
	return m, s
}

// screen replays what a terminal got: text, "\r", "\n" and the two
// sequences the display uses (cursor up, clear line), onto lines. A line
// longer than cols wraps, as on a terminal.
func screen(t *testing.T, out []byte, cols int) []string {
	t.Helper()
	lines := []string{""}
	row, col := 0, 0
	put := func(c byte) {
		for len(lines[row]) < col {
			lines[row] += " "
		}
		l := lines[row]
		if col < len(l) {
			lines[row] = l[:col] + string(c) + l[col+1:]
		} else {
			lines[row] = l + string(c)
		}
		col++
	}
	for i := 0; i < len(out); i++ {
		switch c := out[i]; {
		case bytes.HasPrefix(out[i:], []byte("\x1b[1A")):
			row = max(row-1, 0)
			i += 3
		case bytes.HasPrefix(out[i:], []byte("\x1b[2K")):
			lines[row] = ""
			i += 3
		case c == '\x1b':
			t.Fatalf("an escape sequence the display does not use: %q", out[i:min(i+8, len(out))])
		case c == '\r':
			col = 0
		case c == '\n':
			row++
			col = 0
			if row == len(lines) {
				lines = append(lines, "")
			}
		default:
			if col == cols {
				// Autowrap: the line was too wide.
				row, col = row+1, 0
				if row == len(lines) {
					lines = append(lines, "")
				}
			}
			put(c)
		}
	}
	return lines
}

// TestExecProgressFinalLinesOnATerminal: with stderr on a terminal
// (--progress auto), a run shorter than the first redraw leaves its final
// lines on the screen: the header saying it is done with its elapsed time
// and 100% of the input's size, and one line per stage with its bytes and
// state, none wider than the terminal. Before, the display was cleared at
// the end and such a run showed nothing.
func TestExecProgressFinalLinesOnATerminal(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "in.txt", "hello, terminal\n")
	job := writeFile(t, dir, "job.toml", `
name = "tty"
[input]
path = "in.txt"
[output]
path = "out.txt"
[[stage]]
name = "upper"
command = ["tr", "a-z", "A-Z"]
[[stage]]
name = "a-stage-with-a-rather-long-name"
command = ["cat"]
`)
	const cols = 60
	raw := runOnPTY(t, cols, "exec", job, "--progress", "auto")
	got, err := os.ReadFile(filepath.Join(dir, "out.txt"))
	if err != nil || string(got) != "HELLO, TERMINAL\n" {
		t.Fatalf("output %q, %v", got, err)
	}
	lines := screen(t, raw, cols)
	text := strings.Join(lines, "\n")
	if len(lines) < 4 {
		t.Fatalf("screen:\n%s\nraw: %q", text, raw)
	}
	head, s1, s2 := lines[len(lines)-4], lines[len(lines)-3], lines[len(lines)-2]
	if !strings.HasPrefix(head, "tty  done  0:00:0") || !strings.HasSuffix(head, "16 B  100.0%") {
		t.Errorf("header %q\nscreen:\n%s", head, text)
	}
	if !strings.HasPrefix(s1, "upper ") || !strings.Contains(s1, "out       16 B") || !strings.HasSuffix(s1, "done") {
		t.Errorf("first stage %q\nscreen:\n%s", s1, text)
	}
	if !strings.HasPrefix(s2, "a-stage-with-a-~ ") || !strings.HasSuffix(s2, "done") {
		t.Errorf("second stage %q\nscreen:\n%s", s2, text)
	}
	for _, l := range lines {
		if len(l) >= cols {
			t.Errorf("a line of %d columns on a terminal of %d: %q", len(l), cols, l)
		}
	}
}

// TestExecProgressRedrawsOnResize: narrowing the terminal (SIGWINCH) makes
// the display redraw at the new width: after the resize no line of a frame
// reaches the new width, and the final lines fit it too.
func TestExecProgressRedrawsOnResize(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "in.bin", strings.Repeat("x", 3<<19))
	job := writeFile(t, dir, "job.toml", `
name = "resize"
[input]
path = "in.bin"
[output]
path = "none"
[[stage]]
name = "first-stage-name"
command = ["cat"]
[[stage]]
name = "limited"
command = ["cat"]
rate_limit = "1MiB/s"
`)
	master, slave := openPTY(t, 120)
	defer master.Close()
	cmd := exec.Command(pipespoolBin, "exec", job)
	cmd.Stdin, cmd.Stderr = slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	// Wait for the first frame at 120 columns, then narrow the terminal.
	var out []byte
	buf := make([]byte, 4096)
	deadline := time.Now().Add(30 * time.Second)
	for !bytes.Contains(out, []byte("waiting on the rate limit")) && !bytes.Contains(out, []byte("  running")) {
		if time.Now().After(deadline) {
			t.Fatalf("no frame: %q", out)
		}
		n, err := master.Read(buf)
		if err != nil {
			t.Fatalf("read the terminal: %v; so far %q", err, out)
		}
		out = append(out, buf[:n]...)
	}
	if !bytes.Contains(out, []byte("  in ")) {
		t.Fatalf("at 120 columns the frame has no in column: %q", out)
	}
	const cols = 36
	if err := unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: cols}); err != nil {
		t.Fatal(err)
	}
	mark := len(out)
	rest, err := readAll(master)
	if err != nil && !errors.Is(err, syscall.EIO) {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exec: %v", err)
	}
	after := bytes.ReplaceAll(append(out[mark:], rest...), []byte("\r\n"), []byte("\n"))
	// Every line written after the resize, frames and final lines: the
	// redraw right at SIGWINCH cuts the frame on screen, the next ones
	// are laid out for the width.
	lines := 0
	for _, l := range strings.Split(string(after), "\n") {
		if i := strings.LastIndex(l, "\x1b[2K"); i >= 0 {
			l = l[i+len("\x1b[2K"):]
		}
		if l == "" {
			continue
		}
		lines++
		if len(l) >= cols {
			t.Errorf("a line of %d columns after the terminal narrowed to %d: %q", len(l), cols, l)
		}
	}
	if lines < 3 || !bytes.Contains(after, []byte("resize  done")) {
		t.Errorf("after the resize: %q", after)
	}
}

// readAll reads r to its end (EIO for a pty master whose slave is closed).
func readAll(r *os.File) ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(r)
	return b.Bytes(), err
}

// runOnPTY runs pipespool with args, its stdin and stderr on a new
// terminal cols wide, and returns what the terminal got once it exited.
func runOnPTY(t *testing.T, cols int, args ...string) []byte {
	t.Helper()
	master, slave := openPTY(t, cols)
	defer master.Close()
	cmd := exec.Command(pipespoolBin, args...)
	cmd.Stdin, cmd.Stderr = slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	read := make(chan []byte, 1)
	go func() {
		b, _ := readAll(master) // to EIO: every holder of the slave is gone
		read <- b
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exec: %v", err)
		}
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatal("exec did not finish")
	}
	select {
	case b := <-read:
		return bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	case <-time.After(10 * time.Second):
		t.Fatal("the terminal was not released after the run")
	}
	return nil
}

// TestExecProgressLogLinesScrollAbove: a stage's stderr line logged while
// the display is drawn ends up above it, whole, and the screen at the end
// is that line, then the final lines, with nothing left of the frames.
func TestExecProgressLogLinesScrollAbove(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "in.bin", strings.Repeat("y", 1<<20))
	job := writeFile(t, dir, "job.toml", `
name = "scroll"
[input]
path = "in.bin"
[output]
path = "none"
[[stage]]
name = "talker"
shell = "sleep 0.7; echo hello from the stage >&2; cat"
`)
	const cols = 100
	out := runOnPTY(t, cols, "exec", job)
	lines := screen(t, out, cols)
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) != 3 {
		t.Fatalf("screen %q, want the log line and two final lines\nraw: %q", lines, out)
	}
	if !strings.Contains(lines[0], "hello from the stage") || !strings.HasPrefix(lines[1], "scroll  done  ") ||
		!strings.HasPrefix(lines[2], "talker ") || !strings.HasSuffix(lines[2], "done") {
		t.Errorf("screen:\n%s", strings.Join(lines, "\n"))
	}
	if !bytes.Contains(out[:bytes.Index(out, []byte("hello from the stage"))], []byte("scroll  0:00:0")) {
		t.Errorf("no frame was drawn before the log line: %q", out)
	}
}

// TestExecProgressProducerExpectedSize: with no input (a producer as the
// first stage), [input] expected_size is the size of what the first stage
// writes: the final line has all of it, at 100%.
func TestExecProgressProducerExpectedSize(t *testing.T) {
	dir := t.TempDir()
	job := writeFile(t, dir, "job.toml", `
name = "producer"
[input]
path = "none"
expected_size = "1MiB"
[output]
path = "none"
[[stage]]
name = "make"
command = ["head", "-c", "1048576", "/dev/zero"]
[[stage]]
name = "pass"
command = ["cat"]
`)
	res := runPipespool(t, runOpts{}, "exec", job, "--progress", "log")
	if res.Code != 0 {
		t.Fatalf("exit %d\nstderr: %s", res.Code, res.Stderr)
	}
	kv := parseLogfmt(t, strings.TrimSuffix(string(res.Stderr), "\n"))
	if kv["final"] != "true" || kv["size"] != "1048576" || kv["bytes"] != "1048576" || kv["percent"] != "100" ||
		kv["s1.out"] != "1048576" || kv["s2.in"] != "1048576" {
		t.Errorf("final line %q", res.Stderr)
	}
}

// TestExecProgressLogShowsBufferFill: a stage whose input hop has a memory
// buffer shows how full it is in the log lines (sN.buffer, in percent),
// and the first stage, which read its whole file into the buffer at once
// and exited, shows all of it.
func TestExecProgressLogShowsBufferFill(t *testing.T) {
	dir := t.TempDir()
	const size = 8 << 20
	writeFile(t, dir, "in.bin", strings.Repeat("0123456789abcdef", size/16))
	job := writeFile(t, dir, "job.toml", `
name = "buffered"
[input]
path = "in.bin"
[output]
path = "none"
[[stage]]
name = "first"
command = ["cat"]
[[stage]]
name = "slow"
command = ["cat"]
buffer = "16MiB"
[[stage]]
name = "last"
command = ["cat"]
rate_limit = "2MiB/s"
`)
	res := runPipespool(t, runOpts{}, "exec", job, "--progress", "log", "--progress-interval", "1s")
	if res.Code != 0 {
		t.Fatalf("exit %d\nstderr: %s", res.Code, res.Stderr)
	}
	lines := strings.Split(strings.TrimSuffix(string(res.Stderr), "\n"), "\n")
	filled := false
	var lastIn float64
	for i, l := range lines {
		kv := parseLogfmt(t, l)
		lastIn = num(t, kv, "s1.in")
		if kv["final"] == "true" {
			if _, ok := kv["s2.buffer"]; ok {
				t.Errorf("final line %d shows a fill: %q", i, l)
			}
			continue
		}
		if kv["s2.buffer"] == "" {
			t.Fatalf("line %d has no s2.buffer: %q", i, l)
		}
		if f := num(t, kv, "s2.buffer"); f < 0 || f > 100 {
			t.Errorf("line %d: s2.buffer %v", i, f)
		} else if f > 0 {
			filled = true
		}
		if _, ok := kv["s1.buffer"]; ok {
			t.Errorf("line %d: s1 has no buffer but shows one: %q", i, l)
		}
	}
	if !filled {
		t.Errorf("no line shows the buffer holding anything, though its consumer is held to 2 MiB/s:\n%s", res.Stderr)
	}
	if len(lines) < 3 {
		t.Fatalf("%d lines for a 4 s run at 1 s intervals:\n%s", len(lines), res.Stderr)
	}
	// The line before the final one comes seconds after the first stage
	// read its whole file into the buffer and exited.
	if kv := parseLogfmt(t, lines[len(lines)-2]); num(t, kv, "s1.in") != size || (kv["s1.state"] != "exited" && kv["s1.state"] != "done") {
		t.Errorf("s1.in %s, s1.state %q seconds after the first stage read all %d bytes and exited", kv["s1.in"], kv["s1.state"], size)
	}
	if lastIn != size {
		t.Errorf("final s1.in %v, want %d", lastIn, size)
	}
}
