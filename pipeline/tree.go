package pipeline

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/pipespool/pipespool/fsutil"
	"github.com/pipespool/pipespool/proc"
)

// A job is a tree of stages: each stage reads from one producer (the stage
// before it, or the one its from names), and a stage read by several
// stages fans its output out to all of them. The tree is run as a tree of
// lines (see fanout.go): a line starts at the run's input or at a stage
// fed by a fan-out, goes on while each stage has exactly one consumer, and
// ends in an output or in a fan-out.

// line is one line of a job's tree.
type line struct {
	// Stages are indexes in Job.Stages, in the order the stream flows.
	Stages []int
	// Parent is the line whose fan-out feeds this one (-1 for the trunk,
	// which reads the run's input); Branch its place among that fan-out's
	// branches.
	Parent, Branch int
	// Children are the lines its fan-out feeds (none when it ends in an
	// output).
	Children []int
	// Name names a branch in messages: its first stage's name ("" for
	// the trunk).
	Name string
	// Optional: the branch may fail without failing the run (its first
	// stage says optional = true).
	Optional bool
}

// FansOut reports whether the job is a tree rather than a line: some
// stage's output is read by more than one stage.
func (job *Job) FansOut() bool {
	read := make([]bool, len(job.Stages))
	for i := range job.Stages {
		if p := job.producer(i); p >= 0 {
			if read[p] {
				return true
			}
			read[p] = true
		}
	}
	return false
}

// producer returns the index of the stage stage i reads from, -1 for the
// run's input.
func (job *Job) producer(i int) int {
	if f := job.Stages[i].From; f > 0 {
		return f - 1
	}
	return i - 1
}

// consumers returns, for every stage, the stages that read its output, in
// file order. It is computed in one pass over the stages: asking it of
// each stage in turn would make every job's validation quadratic in its
// number of stages.
func (job *Job) consumers() [][]int {
	c := make([][]int, len(job.Stages))
	for j := range job.Stages {
		if p := job.producer(j); p >= 0 {
			c[p] = append(c[p], j)
		}
	}
	return c
}

// lines splits the job into its lines, the trunk first and every line
// after the line that feeds it.
func (job *Job) lines() []line {
	cons := job.consumers()
	var ls []line
	var walk func(first, parent, branch int)
	walk = func(first, parent, branch int) {
		l := line{Parent: parent, Branch: branch}
		if parent >= 0 {
			l.Name = job.Stages[first].Name
			l.Optional = job.Stages[first].Optional
		}
		i := first
		for {
			l.Stages = append(l.Stages, i)
			c := cons[i]
			if len(c) != 1 {
				break
			}
			i = c[0]
		}
		me := len(ls)
		ls = append(ls, l)
		if parent >= 0 {
			ls[parent].Children = append(ls[parent].Children, me)
		}
		if len(cons[i]) > 1 {
			for b, c := range cons[i] {
				walk(c, me, b)
			}
		}
	}
	if len(job.Stages) > 0 {
		walk(0, -1, 0)
	}
	return ls
}

// tree checks what makes the stages a tree: every from names a stage
// above it (so there can be no cycle: a stage reads only from one that
// comes first in the file), a stage that ends its branch in an output has
// no consumer, optional is on a branch's first stage, at most one branch
// has no output of its own (it writes the job's [output]), and no two
// branches write the same file.
func (v *validator) tree(job *Job, raw rawJob) error {
	index := map[string]int{}
	for i := range job.Stages {
		index[job.Stages[i].Name] = i
	}
	for i := range job.Stages {
		s := &job.Stages[i]
		rs := &raw.Stage[i]
		if rs.From != nil {
			key := stageKey(s.Index, "from")
			j, ok := index[*rs.From]
			switch {
			case i == 0:
				return v.errf(key, "the first stage reads the run's input: it cannot read from another stage")
			case !ok:
				return v.errf(key, "no stage is called %q: name a stage above this one", *rs.From)
			case j == i:
				return v.errf(key, "stage %q cannot read from itself", *rs.From)
			case j > i:
				return v.errf(key, "stage %q comes after this one: a stage reads from a stage above it in the file (so a job can have no cycle); move this stage below it", *rs.From)
			}
			s.From = j + 1
		}
		if pi := job.producer(i); pi >= 0 && job.Stages[pi].Output != "" {
			p := &job.Stages[pi]
			if rs.From != nil {
				return v.errf(stageKey(s.Index, "from"), "stage %q ends its branch in output = %q: nothing can read from it; read from the stage before it, or move its output to a stage at the end of the branch", p.Name, p.Output)
			}
			return v.errf(stageKey(s.Index, ""), "the stage above it (%q) ends its branch in output = %q: say which stage this one reads from, as in from = %q", p.Name, p.Output, job.stageName(job.producer(pi), "NAME"))
		}
		if rs.Output != nil {
			if *rs.Output == "" {
				return v.errf(stageKey(s.Index, "output"), `must not be empty: use "-" for stdout or "none"`)
			}
			s.Output = *rs.Output
			s.OutputMode, s.OutputModeSet = job.OutputMode, job.OutputModeSet
		}
		if rs.OutputMode != nil {
			if rs.Output == nil {
				return v.errf(stageKey(s.Index, "output_mode"), "needs output on the same stage (the job's [output] takes mode)")
			}
			m, err := v.mode(stageKey(s.Index, "output_mode"), *rs.OutputMode)
			if err != nil {
				return err
			}
			s.OutputMode, s.OutputModeSet = m, true
		}
		if rs.Optional != nil {
			s.Optional = *rs.Optional
		}
	}
	cons := job.consumers()
	for i := range job.Stages {
		s := &job.Stages[i]
		if s.Optional && (job.producer(i) < 0 || len(cons[job.producer(i)]) < 2) {
			return v.errf(stageKey(s.Index, "optional"), "only the first stage of a branch (a stage that reads from a stage other stages read from too) can be optional: the run cannot succeed without the others")
		}
	}
	// The branches without an output of their own: at most one, which
	// writes [output].
	bare := -1
	for i := range job.Stages {
		s := &job.Stages[i]
		if s.Output != "" || len(cons[i]) > 0 {
			continue
		}
		if bare >= 0 {
			return v.errf(stageKey(s.Index, ""), "two branches end without an output of their own: stage %q and stage %q; only one branch can write the job's [output]: give the other output = \"PATH\" (or \"none\")", job.Stages[bare].Name, s.Name)
		}
		bare = i
	}
	outputSet := raw.Output != nil && raw.Output.Path != nil
	if len(job.Stages) > 0 && !job.FansOut() {
		// A line whose last stage names its output: that is the line's
		// output, as [output] would be, so the job cannot say both.
		last := &job.Stages[len(job.Stages)-1]
		if last.Output != "" {
			if outputSet {
				return v.errf(stageKey(last.Index, "output"), "stage %q ends the job in output = %q, and [output] says path = %q (line %d): a job that is a line has one output; remove one of them", last.Name, last.Output, job.Output, v.errf("output.path", "").Line)
			}
			if raw.Output != nil && raw.Output.Mode != nil {
				return v.errf(stageKey(last.Index, "output"), "stage %q ends the job in output = %q, and [output] says mode = %q (line %d): give the stage output_mode instead", last.Name, last.Output, *raw.Output.Mode, v.errf("output.mode", "").Line)
			}
			job.Output, job.OutputMode, job.OutputModeSet = last.Output, last.OutputMode, last.OutputModeSet
		}
	}
	if bare < 0 && outputSet {
		return v.errf("output.path", "every branch ends in an output of its own, so [output] belongs to none: remove it")
	}
	if bare < 0 && raw.Output != nil && raw.Output.Mode != nil {
		return v.errf("output.mode", "every branch ends in an output of its own, so [output] belongs to none: give each stage its output_mode, or remove [output]")
	}
	if err := v.optionalOutputs(job); err != nil {
		return err
	}
	if a, b, ok := sameOutput(job.writtenFiles(""), job.Dir, nil); ok {
		return v.errf(b.Key, "%s writes the same file as %s (%s): no two outputs, nor a built-in's file beside them, can be one file", b.What, a.What, a.Path)
	}
	return nil
}

// optionalOutputs checks that every output of an optional branch (and of
// the branches it feeds) can be discarded if the branch fails: a regular
// file, written under a temporary name and renamed only on success, or
// none. Stdout, a FIFO, a device or any path written in place has had its
// bytes read as they were written: a cut stream there cannot be undone,
// so the run could not succeed without it, and the job is refused. The
// job's [output] (which exec -o may replace), and a path known for what
// it is only when it is opened, are checked then (treeRun.build).
func (v *validator) optionalOutputs(job *Job) error {
	ls := job.lines()
	for l := range ls {
		o := optionalRoot(ls, l)
		if o < 0 || len(ls[l].Children) > 0 {
			continue
		}
		last := &job.Stages[ls[l].Stages[len(ls[l].Stages)-1]]
		if last.Output == "" {
			continue // [output], which exec -o may replace: checked when opened
		}
		if why := writtenInPlace(last.Output, job.Dir); why != "" {
			return v.errf(stageKey(last.Index, "output"), "%s", optionalInPlaceMsg(ls, o, last.Output, why))
		}
	}
	return nil
}

// optionalInPlaceMsg says why optional branch o cannot write path.
func optionalInPlaceMsg(ls []line, o int, path, why string) string {
	return fmt.Sprintf("%s is optional, but its output %s is %s, written as the stream goes: if the branch failed, what it wrote could not be discarded and the reader would have a cut stream; write the branch to a regular file (committed only if the run succeeds) or none, or make it not optional", branchLabel(ls, o), strconv.Quote(path), why)
}

// writtenInPlace says what path is when an output there is written in
// place rather than committed atomically ("" for a regular file, a path
// still to be created, none and the null device).
func writtenInPlace(path, dir string) string {
	switch path {
	case "none":
		return ""
	case "-":
		return "stdout"
	}
	if !filepath.IsAbs(path) {
		path = dir + "/" + path
	}
	t, err := fsutil.ResolveForWrite(path)
	switch {
	case err != nil:
		return "" // the run's opening reports it
	case t.FD == 1:
		return "stdout"
	case t.FD >= 0:
		return fmt.Sprintf("pipespool's descriptor %d", t.FD)
	case t.Info == nil || t.Info.Mode().IsRegular():
		return ""
	}
	if st, ok := t.Info.Sys().(*syscall.Stat_t); ok && statIdentity(uint64(st.Dev), st.Ino, t.Info.Mode()&os.ModeCharDevice != 0, uint64(st.Rdev)) == "" {
		return "" // the null device
	}
	return "a " + fsutil.TypeName(t.Info.Mode())
}

// stageName returns the name of stage i, or def when there is none.
func (job *Job) stageName(i int, def string) string {
	if i < 0 {
		return def
	}
	return job.Stages[i].Name
}

// mode parses an octal file mode such as "0600".
func (v *validator) mode(key, s string) (os.FileMode, error) {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o7777 {
		return 0, v.errf(key, "%q is not an octal file mode such as \"0600\"", s)
	}
	return os.FileMode(m), nil
}

// namedOutput is one file a run writes: a branch's output, a built-in's
// file beside it (sha256's write_to), or pipespool's own stdout or stdin.
type namedOutput struct {
	Path string // as given
	Key  string // the job file's key, or the flag
	What string // who writes it, for the message
}

// writtenFiles lists the files a run of job writes: the output of each
// branch (the branch without one writes [output], or outPath when it is
// set), then each built-in's file beside the outputs. [output] comes
// first: a clash is then reported at the other's key, which has a line
// even when [output] is the default (stdout).
func (job *Job) writtenFiles(outPath string) []namedOutput {
	cons := job.consumers()
	var outs []namedOutput
	for i := range job.Stages {
		if job.Stages[i].Output == "" && len(cons[i]) == 0 {
			o := namedOutput{Path: job.Output, Key: "output.path", What: "[output]"}
			if outPath != "" {
				o = namedOutput{Path: outPath, Key: "-o", What: "-o"}
			}
			if job.FansOut() {
				o.What += " (the branch of stage " + strconv.Quote(job.Stages[i].Name) + ")"
			}
			outs = append(outs, o)
		}
	}
	for i := range job.Stages {
		s := &job.Stages[i]
		if s.Output != "" {
			outs = append(outs, namedOutput{Path: s.Output, Key: stageKey(s.Index, "output"), What: fmt.Sprintf("stage %q", s.Name)})
		}
	}
	for i := range job.Stages {
		s := &job.Stages[i]
		if sp, ok := s.Filter.(sidecarPather); ok && sp.SidecarPath() != "" {
			outs = append(outs, namedOutput{Path: sp.SidecarPath(), Key: stageKey(s.Index, "with.write_to"), What: fmt.Sprintf("stage %q's write_to", s.Name)})
		}
	}
	return outs
}

// sidecarPather is a built-in that writes a file of its own beside the
// outputs (sha256's write_to): that file takes part in the check that no
// two writers share a file.
type sidecarPather interface {
	SidecarPath() string
}

// stdFiles are pipespool's standard streams as a run has them: its stdout,
// and its stdin when the run reads it (nil otherwise). A job checked on
// its own has none: "-" and /dev/stdout are then known as descriptor 1
// only.
type stdFiles struct{ In, Out *os.File }

// sameOutput finds two outputs that write the same file: the same path,
// or the same file under two spellings or through a link. An existing
// file is known by its device and inode; one still to be created by its
// directory as the kernel resolves it (opened, so that "sub/.." is the
// parent of where the link sub leads, not the directory sub is in) and
// its name; one of pipespool's descriptors by the file it is open on when
// std says. "none" and the null device may be shared.
func sameOutput(outs []namedOutput, dir string, std *stdFiles) (a, b namedOutput, found bool) {
	seen := map[string]namedOutput{}
	for _, o := range outs {
		id := outputIdentity(o.Path, dir, std)
		if id == "" {
			continue
		}
		if prev, ok := seen[id]; ok {
			return prev, o, true
		}
		seen[id] = o
	}
	return a, b, false
}

// outputIdentity names the file an output path writes ("" for one that
// any number of writers may share: none, the null device). Relative paths
// are taken from dir, and never cleaned: the kernel resolves "..", after
// the links before it.
func outputIdentity(path, dir string, std *stdFiles) string {
	switch path {
	case "none":
		return ""
	case "-":
		return fdIdentity(1, std)
	}
	if !filepath.IsAbs(path) {
		path = dir + "/" + path
	}
	t, err := fsutil.ResolveForWrite(path)
	if err != nil {
		return "path:" + path
	}
	if t.FD >= 0 {
		return fdIdentity(t.FD, std)
	}
	if t.Info != nil {
		if st, ok := t.Info.Sys().(*syscall.Stat_t); ok {
			return statIdentity(uint64(st.Dev), st.Ino, t.Info.Mode()&os.ModeCharDevice != 0, uint64(st.Rdev))
		}
	}
	d, base := kernelDir(t.Path)
	if d == nil {
		return "path:" + t.Path
	}
	return fmt.Sprintf("dir:%d:%d/%s", d.Dev, d.Ino, base)
}

// kernelDir stats the directory of path as the kernel resolves it (it
// opens it), and returns it with path's final name; nil when it cannot be
// opened.
func kernelDir(path string) (*unix.Stat_t, string) {
	d, base := filepath.Split(path)
	if d == "" {
		d = "."
	}
	fd, err := unix.Open(d, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, base
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return nil, base
	}
	return &st, base
}

// fdIdentity names the file pipespool's descriptor fd is open on (stdout
// and stdin as std has them), or the descriptor alone when std is nil.
func fdIdentity(fd int, std *stdFiles) string {
	if std == nil {
		return "fd:" + strconv.Itoa(fd)
	}
	switch {
	case fd == 1 && std.Out != nil:
		fd = rawFD(std.Out)
	case fd == 0 && std.In != nil:
		fd = rawFD(std.In)
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return "fd:" + strconv.Itoa(fd)
	}
	return statIdentity(st.Dev, st.Ino, st.Mode&unix.S_IFMT == unix.S_IFCHR, st.Rdev)
}

// statIdentity names a file by its device and inode ("" for the null
// device, which any number of writers may share).
func statIdentity(dev, ino uint64, charDev bool, rdev uint64) string {
	if charDev {
		var null unix.Stat_t
		if unix.Stat(os.DevNull, &null) == nil && rdev == null.Rdev {
			return ""
		}
	}
	return fmt.Sprintf("ino:%d:%d", dev, ino)
}

// checkWrittenFiles checks, as a run starts, that no two of the files it
// writes are one: the outputs (-o in place of [output]) and the built-ins'
// files, and pipespool's stdout and stdin as they are now. A stdout that
// is a regular file (`> a.out`) must not be replaced by an output's
// rename, nor a regular stdin the run reads: what is written there, or
// read, would be the unlinked inode. The job file was checked for the
// same without them.
func checkWrittenFiles(job *Job, opts Options) error {
	std := &stdFiles{Out: cmp.Or(opts.Stdout, os.Stdout)}
	in := cmp.Or(opts.InputPath, job.Input)
	if opts.Input == nil && (in == "-" || in == "/dev/stdin") {
		std.In = cmp.Or(opts.Stdin, os.Stdin)
	}
	outPath := opts.OutputPath
	if outPath != "" && outPath != "-" && outPath != "none" {
		// Not filepath.Abs, which cleans: "a/../digest" is where the
		// kernel puts it when a is a link (fsutil.JoinAsKernel).
		outPath = fsutil.AbsAsKernel(outPath)
	}
	outs := job.writtenFiles(outPath)
	writesStdout := false
	for _, o := range outs {
		writesStdout = writesStdout || o.Path == "-" || ownFD(o.Path, job.Dir) == 1
	}
	if !writesStdout && regularFile(std.Out) {
		outs = append(outs, namedOutput{Path: "-", What: "pipespool's stdout"})
	}
	if std.In != nil && regularFile(std.In) {
		outs = append(outs, namedOutput{Path: "/dev/stdin", What: "pipespool's stdin (the run's input)"})
	}
	a, b, ok := sameOutput(outs, job.Dir, std)
	if !ok {
		return nil
	}
	if a.Key == "-o" || b.Key == "-o" {
		other := a
		if a.Key == "-o" {
			other = b
		}
		return &HopFlagError{Msg: fmt.Sprintf("-o %s: %s writes that file already (%s): two writers cannot share one file", opts.OutputPath, other.What, other.Path)}
	}
	if b.Key == "" {
		a, b = b, a
	}
	where := a.Path
	if where == "-" {
		where = "stdout"
		if f, ok := std.Out.Stat(); ok == nil && f.Mode().IsRegular() {
			where = "stdout, the file " + proc.FileLinkOf(std.Out)
		}
	}
	return &JobError{File: job.File, Line: keyLine(job.pos, b.Key), Key: b.Key,
		Msg: fmt.Sprintf("%s writes the same file as %s (%s): no two outputs, nor a built-in's file beside them, can be one file, and an output cannot replace the file pipespool's stdout or stdin is", b.What, a.What, where)}
}

// ownFD is the descriptor of pipespool's that path names (/dev/stdout, or
// a link to it), or -1.
func ownFD(path, dir string) int {
	if path == "-" || path == "none" {
		return -1
	}
	if !filepath.IsAbs(path) {
		path = dir + "/" + path
	}
	if t, err := fsutil.ResolveForWrite(path); err == nil {
		return t.FD
	}
	return -1
}

// regularFile reports whether f is open on a regular file.
func regularFile(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode().IsRegular()
}

// outputOf is the output of the line's last stage: its own, or the job's
// (as opts may override it).
func (job *Job) outputOf(s *StageSpec, opts Options) (path string, mode os.FileMode, modeSet bool) {
	if s.Output != "" {
		return s.Output, s.OutputMode, s.OutputModeSet
	}
	path = job.Output
	if opts.OutputPath != "" {
		return opts.OutputPath, job.OutputMode, job.OutputModeSet
	}
	return path, job.OutputMode, job.OutputModeSet
}

// branchLabel is how messages name line l: `branch "NAME"`, or "the trunk".
func branchLabel(ls []line, l int) string {
	if ls[l].Parent < 0 {
		return "the trunk"
	}
	return "branch " + strconv.Quote(ls[l].Name)
}
