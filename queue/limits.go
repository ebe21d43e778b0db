package queue

import (
	"fmt"
	"os"
	"strconv"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// What exec(2) takes, as Linux counts it (fs/exec.c): every argument and
// environment string with its NUL, plus a pointer to each, within a quarter
// of the stack limit (at least 128 KiB, at most three quarters of 8 MiB);
// and no one string over MAX_ARG_STRLEN, NUL included. A packet's params
// and environment become the command's (FSPL_PARAM_n, FSPL_SET_<NAME>, and
// with --allow-job-params argv), so a header over these limits cannot be
// run: it is refused before anything of it is built or started.
const (
	maxArgStrlen   = 32 * 4096       // MAX_ARG_STRLEN
	maxArgSpace    = 8 << 20 / 4 * 3 // _STK_LIM / 4 * 3
	argPointerSize = 8               // a char * on the 64-bit platforms pipespool is built for
)

// argSpace is the space exec(2) gives arguments and environment together
// under the current stack limit (ulimit -s), which the command inherits.
func argSpace() int {
	limit := maxArgSpace
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_STACK, &rl) == nil && rl.Cur != unix.RLIM_INFINITY && rl.Cur/4 < uint64(limit) {
		limit = int(rl.Cur / 4)
	}
	return max(limit, maxArgStrlen)
}

// ExecLimitError is a packet whose params and environment a command cannot
// be given: exec(2) would fail with E2BIG.
type ExecLimitError struct {
	What  string // what is too large
	Need  int    // bytes it needs
	Limit int    // bytes allowed
	Why   string // which limit, and how to raise it if it can be
}

func (e *ExecLimitError) Error() string {
	return fmt.Sprintf("%s would take %d bytes, more than the %d %s; not run (argument list too long)", e.What, e.Need, e.Limit, e.Why)
}

// checkExecSpace checks that a command started with argv and the
// environment os.Environ() + env + the params and environment of a header
// of size s (and the params in argv when withParams) fits exec(2)'s
// limits. It allocates nothing for the header's params and environment.
func checkExecSpace(s HeaderSize, argv, env []string, withParams bool) error {
	const perString = "the kernel allows one argument or environment variable (MAX_ARG_STRLEN)"
	if s.LongestParamVar+1 > maxArgStrlen {
		return &ExecLimitError{What: "a param, as the command's variable FSPL_PARAM_<n>,", Need: s.LongestParamVar + 1, Limit: maxArgStrlen, Why: perString}
	}
	if withParams && s.LongestParam+1 > maxArgStrlen {
		return &ExecLimitError{What: "a param, as an argument of the command,", Need: s.LongestParam + 1, Limit: maxArgStrlen, Why: perString}
	}
	if s.LongestEnvVar+1 > maxArgStrlen {
		return &ExecLimitError{What: "an environment entry, as the command's variable FSPL_SET_<NAME>,", Need: s.LongestEnvVar + 1, Limit: maxArgStrlen, Why: perString}
	}
	strs, bytes := 0, 0
	for _, set := range [][]string{argv, os.Environ(), env} {
		for _, str := range set {
			strs++
			bytes += len(str) + 1
		}
	}
	// FSPL_PARAM_<n>=<param> and FSPL_SET_<name>=<value>, NULs included.
	bytes += s.ParamBytes + s.Params*(paramVarFixed+1) + decimalLens(s.Params)
	bytes += s.EnvBytes + s.Env*(envVarFixed+1)
	strs += s.Params + s.Env
	if withParams {
		bytes += s.ParamBytes + s.Params
		strs += s.Params
	}
	need := bytes + strs*argPointerSize
	if limit := argSpace(); need > limit {
		return &ExecLimitError{What: fmt.Sprintf("the command's arguments and environment, with the packet's %d params and %d environment entries,", s.Params, s.Env),
			Need: need, Limit: limit, Why: "the kernel allows them together (a quarter of the stack limit: raise it with ulimit -s, up to 6 MiB)"}
	}
	return nil
}

// decimalLens is the number of digits of 1, 2, ... n together.
func decimalLens(n int) int {
	total := 0
	for lo, digits := 1, 1; lo <= n; lo, digits = lo*10, digits+1 {
		hi := min(n, lo*10-1)
		total += (hi - lo + 1) * digits
	}
	return total
}

// QuoteName returns a file name as it is safe to print on a terminal or in
// a line-oriented listing: unchanged when it is printable UTF-8, else
// quoted and escaped as a Go string ("fspl-\x1b[2J.fspl"), so that a name
// can neither forge a line nor send escape sequences.
func QuoteName(s string) string {
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) && r != ' ' {
			return strconv.Quote(s)
		}
	}
	return s
}
