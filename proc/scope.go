package proc

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Scope is one run: the groups started for it and whatever they leave
// behind. Close stops what is left.
//
// A process a group left behind in the group is stopped by the group's
// Cleanup. One that left the group (setsid, a daemon's double fork) and
// whose parent has exited is an orphan that pipespool, as a subreaper,
// adopted: Close stops it if its process group is one of the scope's
// groups, or if it belongs to no open scope's group and this scope is the
// only one open (with several runs at once in one pipespool, such
// processes wait for the last of them to end). A process whose name is on
// a keep list of a scope open since then is left running, and so is
// everything below it.
type Scope struct {
	keep map[string]bool

	mu     sync.Mutex // guards groups, pgids
	groups []*Group
	pgids  map[int]*Group
}

// NewScope opens a scope. keep names the programs that may outlive it
// (matched against the process's command name, and the base name of its
// executable and of its argv[0]).
func NewScope(keep []string) *Scope {
	s := &Scope{keep: map[string]bool{}, pgids: map[int]*Group{}}
	reg.mu.Lock()
	defer reg.mu.Unlock()
	reg.scopes[s] = true
	for _, k := range keep {
		s.keep[k] = true
		reg.keep[k] = true
	}
	return s
}

func (s *Scope) add(g *Group) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.groups = append(s.groups, g)
	s.pgids[g.pid] = g
}

func (s *Scope) ownsGroup(pgid int) bool { return s.groupOf(pgid) != nil }

// groupOf returns the scope's group whose process group is pgid, or nil.
func (s *Scope) groupOf(pgid int) *Group {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pgids[pgid]
}

// closeKillRounds bounds the rounds of Close's sweep: each round stops the
// orphans found, whose own children are adopted when they exit and are
// found by the next round.
const closeKillRounds = 64

// Close stops what the scope's processes left behind: every group is
// stopped if its leader still runs (which a caller that waits for its
// groups never sees) and cleaned up; then the orphans that belong to the
// scope get SIGTERM, SIGKILL after grace. It returns the processes it
// stopped and those it left running because a keep list names them, for
// the log. A scope must be closed once.
func (s *Scope) Close(grace time.Duration) (stopped, kept []Stat) {
	s.mu.Lock()
	groups := append([]*Group(nil), s.groups...)
	s.mu.Unlock()
	for _, g := range groups {
		select {
		case <-g.done:
		default:
			g.Stop(grace)
		}
	}
	for _, g := range groups {
		g.Cleanup(grace)
	}
	stopped, kept = s.sweep(grace)
	reg.mu.Lock()
	delete(reg.scopes, s)
	if len(reg.scopes) == 0 {
		clear(reg.keep)
	}
	reg.mu.Unlock()
	return stopped, kept
}

// procKey names one process across pid reuse.
type procKey struct {
	pid   int
	start uint64
}

// sweep stops the scope's orphans: SIGTERM and SIGCONT to each as it is
// found, until grace is over, then SIGKILL.
func (s *Scope) sweep(grace time.Duration) (stopped, kept []Stat) {
	if !IsSubreaper() {
		return nil, nil
	}
	deadline := time.Now().Add(grace)
	signalled := map[procKey]bool{}
	killing := false
	for round := 0; round < closeKillRounds; round++ {
		cands, k, kids, gone := s.orphans()
		kept = k
		if len(kids) == 0 && !gone {
			// No adopted child listed at all, live or exited: nothing
			// of the scope is left, and nothing can be adopted later
			// (its processes would be below an adopted child).
			if round == 0 {
				return nil, nil
			}
			break
		}
		if len(cands) == 0 {
			// A child that exited while the round looked was reaped,
			// and what it left may have been adopted after the list
			// was read; and one below a child that lives (kept, or
			// another scope's) is adopted as soon as its parent
			// exits: the round ends the sweep only if the children
			// are the same after it.
			now := children()
			slices.Sort(now)
			slices.Sort(kids)
			if slices.Equal(kids, now) {
				break
			}
			continue
		}
		if !killing && !time.Now().Before(deadline) {
			killing = true
		}
		for _, st := range cands {
			key := procKey{st.Pid, st.StartTime}
			switch {
			case killing:
				signalProcess(st, syscall.SIGKILL)
			case !signalled[key]:
				signalProcess(st, syscall.SIGTERM)
				signalProcess(st, syscall.SIGCONT)
			}
			if !signalled[key] {
				signalled[key] = true
				stopped = append(stopped, st)
			}
		}
		wait := deadline
		if killing {
			wait = time.Now().Add(cleanupKillWait)
		}
		if left := waitExit(cands, wait); killing && len(left) == len(cands) {
			break // not even SIGKILL ends them (state D): give up
		}
	}
	children() // reaps the ones that exited
	return stopped, kept
}

// orphans returns pipespool's adopted children that belong to the scope,
// and those of them a keep list lets live, and every adopted child it
// looked at; gone reports that one it listed had exited (see
// listChildren).
func (s *Scope) orphans() (stop, keep []Stat, kids []int, gone bool) {
	kids, gone = listChildren()
	if len(kids) == 0 {
		return nil, nil, nil, gone
	}
	reg.mu.Lock()
	sole := len(reg.scopes) == 1 && reg.scopes[s]
	keepAny := make(map[string]bool, len(reg.keep))
	for k := range reg.keep {
		keepAny[k] = true
	}
	var others []*Scope
	for sc := range reg.scopes {
		if sc != s {
			others = append(others, sc)
		}
	}
	reg.mu.Unlock()
	var r Reader
	for _, pid := range kids {
		st, ok := r.Stat(pid)
		if !ok || !st.Live() {
			continue
		}
		names := s.keep
		if !s.ownsGroup(st.Pgrp) {
			if !sole || ownedByAny(others, st.Pgrp) {
				continue
			}
			names = keepAny
		}
		if len(names) > 0 && matchesName(st, names) {
			keep = append(keep, st)
			continue
		}
		stop = append(stop, st)
	}
	return stop, keep, kids, gone
}

func ownedByAny(scopes []*Scope, pgid int) bool {
	for _, sc := range scopes {
		if sc.ownsGroup(pgid) {
			return true
		}
	}
	return false
}

// matchesName reports whether the process's command name, the base name
// of its executable or that of its argv[0] is in names.
func matchesName(st Stat, names map[string]bool) bool {
	if names[st.Comm] {
		return true
	}
	dir := "/proc/" + strconv.Itoa(st.Pid)
	if exe, err := os.Readlink(dir + "/exe"); err == nil && names[filepath.Base(strings.TrimSuffix(exe, " (deleted)"))] {
		return true
	}
	if b, err := os.ReadFile(dir + "/cmdline"); err == nil {
		argv0, _, _ := strings.Cut(string(b), "\x00")
		if argv0 != "" && names[filepath.Base(argv0)] {
			return true
		}
	}
	return false
}

// Describe renders processes for a log line: "gpg-agent (pid 4242), sleep
// (pid 4250)".
func Describe(procs []Stat) string {
	parts := make([]string, len(procs))
	for i, st := range procs {
		parts[i] = st.Comm + " (pid " + strconv.Itoa(st.Pid) + ")"
	}
	return strings.Join(parts, ", ")
}

// QuotedNames renders the command names of procs, each once and quoted,
// as the items of a TOML list ("gpg-agent", "sleep"): what a job file's
// may_outlive would name to let them live.
func QuotedNames(procs []Stat) string {
	var names []string
	for _, st := range procs {
		if q := strconv.Quote(st.Comm); !slices.Contains(names, q) {
			names = append(names, q)
		}
	}
	return strings.Join(names, ", ")
}
