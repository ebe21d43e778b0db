package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// proc is one process of a timed run.
type proc struct {
	argv []string
	env  []string // added to the harness's environment
}

// stdio names what a chain reads and writes: a file path, "" for /dev/null.
type stdio struct {
	in, out string
}

// runner starts the processes of a timed run.
type runner struct {
	dir string // for the stderr and RSS files of each run
	// gnuTime, when set, is GNU time(1), which every process is started
	// under to learn its peak RSS. The wait4 rusage of a process the
	// harness starts directly is no good for that: Go starts children with
	// CLONE_VM|CLONE_VFORK, and execve records the parent's (the harness's)
	// peak RSS in the child's ru_maxrss, a floor of 10 MiB or more under
	// every number. GNU time forks (no CLONE_VM) from a 1 MiB process.
	gnuTime string
}

// chain starts procs joined by pipes of pipeSize bytes (0: the kernel's
// default, 64 KiB), the first reading io.in and the last writing io.out,
// the way a shell runs `a | b | c`, but with pipes the harness sized. It
// returns when every process has exited; any failure is an error carrying
// the stderr of the process that failed.
func (rn runner) chain(ctx context.Context, procs []proc, pipeSize int, io stdio) (sample, error) {
	in, err := openOr(io.in, os.O_RDONLY)
	if err != nil {
		return sample{}, err
	}
	defer in.Close()
	out, err := openOr(io.out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return sample{}, err
	}
	defer out.Close()

	// ends[i] is what procs[i] reads; ends[i+1] what it writes. The parent
	// closes its copies of the pipe ends right after every process started,
	// so that EOF and EPIPE reach the processes as in a shell pipeline.
	var pipes []*os.File
	closePipes := func() {
		for _, p := range pipes {
			p.Close()
		}
		pipes = nil
	}
	defer closePipes()
	reads := []*os.File{in}
	var writes []*os.File
	for range len(procs) - 1 {
		r, w, err := os.Pipe()
		if err != nil {
			return sample{}, err
		}
		pipes = append(pipes, r, w)
		if pipeSize > 0 {
			if _, err := unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, pipeSize); err != nil {
				return sample{}, fmt.Errorf("F_SETPIPE_SZ %d: %w (is /proc/sys/fs/pipe-max-size lower?)", pipeSize, err)
			}
		}
		writes = append(writes, w)
		reads = append(reads, r)
	}
	writes = append(writes, out)

	cmds := make([]*exec.Cmd, len(procs))
	errFiles := make([]*os.File, len(procs))
	rssFiles := make([]string, len(procs))
	defer func() {
		for i, f := range errFiles {
			if f != nil {
				f.Close()
				os.Remove(f.Name())
			}
			if rssFiles[i] != "" {
				os.Remove(rssFiles[i])
			}
		}
	}()
	start := time.Now()
	for i, p := range procs {
		ef, err := os.CreateTemp(rn.dir, "stderr-*")
		if err != nil {
			return sample{}, err
		}
		errFiles[i] = ef
		if rn.gnuTime != "" {
			rssFiles[i] = ef.Name() + ".rss"
			p.argv = append([]string{rn.gnuTime, "-f", "%M", "-o", rssFiles[i]}, p.argv...)
		}
		c := command(ctx, p)
		c.Stdin, c.Stdout, c.Stderr = reads[i], writes[i], ef
		if err := c.Start(); err != nil {
			closePipes()
			for _, started := range cmds[:i] {
				started.Wait()
			}
			return sample{}, fmt.Errorf("start %s: %w", p.argv[0], err)
		}
		cmds[i] = c
	}
	closePipes()

	var s sample
	var errs []error
	for i, c := range cmds {
		werr := c.Wait()
		if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok {
			s.cpu += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			if rssFiles[i] == "" {
				s.rss = max(s.rss, ru.Maxrss*1024) // Linux: ru_maxrss is in KiB
			}
		}
		if rssFiles[i] != "" {
			kib, err := readTimeRSS(rssFiles[i])
			if err != nil && werr == nil {
				werr = err
			}
			s.rss = max(s.rss, kib*1024)
		}
		if werr != nil {
			msg, _ := os.ReadFile(errFiles[i].Name())
			errs = append(errs, fmt.Errorf("%s: %w: %s", strings.Join(procs[i].argv, " "), werr, tail(string(msg), 600)))
		}
	}
	s.wall = time.Since(start)
	return s, errors.Join(errs...)
}

// one runs a single process, stdin and stdout as io says.
func (rn runner) one(ctx context.Context, p proc, io stdio) (sample, error) {
	return rn.chain(ctx, []proc{p}, 0, io)
}

// readTimeRSS reads the "%M" (KiB) GNU time wrote last in file; lines
// before it say how the command ended when that was not exit 0.
func readTimeRSS(file string) (int64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, fmt.Errorf("time(1) output: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	kib, err := strconv.ParseInt(lines[len(lines)-1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("time(1) output %q: %w", b, err)
	}
	return kib, nil
}

// command makes p's Cmd: its own process group, so that an interrupted
// harness can kill everything a run started, its environment added to ours.
func command(ctx context.Context, p proc) *exec.Cmd {
	c := exec.CommandContext(ctx, p.argv[0], p.argv[1:]...)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	if len(p.env) > 0 {
		c.Env = append(os.Environ(), p.env...)
	}
	return c
}

func openOr(path string, flag int) (*os.File, error) {
	if path == "" {
		path = os.DevNull
	}
	return os.OpenFile(path, flag|syscall.O_CLOEXEC, 0o644)
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
