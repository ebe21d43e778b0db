// Command idle measures what stall detection costs:
//
//  1. throughput of a 1 GiB cat -> cat run with stall detection on (the
//     default stall_timeout, 5m) and off (stall_timeout = "0"), and, for
//     reference, with a 1s timeout (the monitor then samples every 250 ms),
//     in alternating runs so that drift of a shared machine hits all alike;
//  2. pipespool's own CPU time while every stage waits (sleep stages) for
//     30 s with stall detection on: rusage of the pipespool process, and
//     the /proc/PID/stat CPU ticks spent between 1 s and 29 s.
//
// Usage:
//
//	go build -o /tmp/pipespool ./cmd/pipespool
//	go run ./bench/idle -bin /tmp/pipespool [-runs 5] [-idle 30s]
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pipespool/pipespool/proc"
)

func main() {
	bin := flag.String("bin", "", "pipespool binary to measure (required)")
	runs := flag.Int("runs", 5, "runs of each throughput variant")
	size := flag.Int64("size", 1<<30, "bytes through cat -> cat")
	idle := flag.Duration("idle", 30*time.Second, "how long the stages wait in the idle measurement")
	flag.Parse()
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "usage: idle -bin PIPESPOOL [-runs N] [-size BYTES] [-idle DURATION]")
		os.Exit(2)
	}
	dir, err := os.MkdirTemp("", "pipespool-bench-idle-")
	check(err)
	defer os.RemoveAll(dir)
	check(throughput(*bin, dir, *size, *runs))
	check(idleCPU(*bin, dir, *idle))
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "idle:", err)
		os.Exit(1)
	}
}

// throughput runs cat -> cat over a file of size bytes (in the page cache
// after the first read) to /dev/null, alternating the variants.
func throughput(bin, dir string, size int64, runs int) error {
	in := filepath.Join(dir, "in.bin")
	f, err := os.Create(in)
	if err != nil {
		return err
	}
	zero, err := os.Open("/dev/zero")
	if err != nil {
		return err
	}
	_, err = io.CopyN(f, zero, size)
	zero.Close()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	variants := []struct{ name, timeout string }{
		{"stall detection on (default 5m)", "5m"},
		{"stall detection off (\"0\")", "0"},
		{"stall detection on, 1s timeout", "1s"},
	}
	jobs := make([]string, len(variants))
	for i, v := range variants {
		jobs[i] = filepath.Join(dir, fmt.Sprintf("cat%d.toml", i))
		job := fmt.Sprintf("stall_timeout = %q\n[output]\npath = \"none\"\n[[stage]]\ncommand = [\"cat\"]\n[[stage]]\ncommand = [\"cat\"]\n", v.timeout)
		if err := os.WriteFile(jobs[i], []byte(job), 0o644); err != nil {
			return err
		}
	}
	// One warm-up run puts the file in the page cache.
	if _, _, err := runOnce(bin, jobs[0], "-i", in); err != nil {
		return err
	}
	rates := make([][]float64, len(variants))
	for r := 0; r < runs; r++ {
		for i := range variants {
			el, _, err := runOnce(bin, jobs[i], "-i", in)
			if err != nil {
				return err
			}
			rates[i] = append(rates[i], float64(size)/el.Seconds()/(1<<20))
		}
	}
	fmt.Printf("throughput, %d MiB cat -> cat, %d alternating runs each (MiB/s):\n", size>>20, runs)
	base := median(rates[0])
	for i, v := range variants {
		fmt.Printf("  %-34s median %7.0f  min %7.0f  max %7.0f  runs %s  (%+.1f%% vs default)\n", v.name,
			median(rates[i]), slices.Min(rates[i]), slices.Max(rates[i]), fmtRates(rates[i]), 100*(median(rates[i])-base)/base)
	}
	return nil
}

// idleCPU runs three sleep stages for d and reports pipespool's CPU time.
func idleCPU(bin, dir string, d time.Duration) error {
	secs := strconv.FormatFloat(d.Seconds(), 'f', 3, 64)
	job := filepath.Join(dir, "idle.toml")
	// The default stall_timeout (5m): the monitor samples every second.
	content := "[output]\npath = \"none\"\n"
	for i := 0; i < 3; i++ {
		content += fmt.Sprintf("[[stage]]\nname = \"wait%d\"\ncommand = [\"sleep\", %q]\n", i, secs)
	}
	if err := os.WriteFile(job, []byte(content), 0o644); err != nil {
		return err
	}
	cmd := exec.Command(bin, "exec", job)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	// Sample pipespool's own CPU ticks inside the idle window, away from
	// start-up and teardown.
	time.Sleep(time.Second)
	t0 := cpuTicks(pid)
	time.Sleep(d - 2*time.Second)
	t1 := cpuTicks(pid)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("idle run: %v\n%s", err, stderr.String())
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	total := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	fmt.Printf("idle: 3 stages sleeping %s, stall detection on (default), wall %s:\n", d, time.Since(start).Round(time.Millisecond))
	fmt.Printf("  pipespool CPU, whole run (rusage, incl. start-up, teardown and the sleep processes): %s (user %s, sys %s)\n",
		total, time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano()))
	hz := 100.0 // USER_HZ on Linux
	fmt.Printf("  pipespool CPU between 1s and %s (/proc/PID/stat): %d ticks = %.2fs\n", d-time.Second, t1-t0, float64(t1-t0)/hz)
	return nil
}

// runOnce runs pipespool exec job and returns the wall time.
func runOnce(bin, job string, args ...string) (time.Duration, []byte, error) {
	cmd := exec.Command(bin, append([]string{"exec", job}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	el := time.Since(start)
	if err != nil {
		return el, nil, fmt.Errorf("%s: %v\n%s", job, err, stderr.String())
	}
	return el, stderr.Bytes(), nil
}

// cpuTicks returns utime+stime of pid from /proc/PID/stat.
func cpuTicks(pid int) int64 {
	var r proc.Reader
	st, ok := r.Stat(pid)
	if !ok {
		return 0
	}
	return int64(st.UTime + st.STime)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func fmtRates(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = strconv.FormatFloat(x, 'f', 0, 64)
	}
	return strings.Join(parts, " ")
}
