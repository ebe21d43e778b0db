package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// A torture pipeline: a source, 1 to 6 stages drawn at random, a sink, and
// the oracle computed independently of pipespool: the expected output
// (as a stream, so that 256 MiB cost no memory), the expected exit status
// and the expected root-cause stage. About one pipeline in four is a tree:
// side branches fork from a stage of the line, each with its own file and
// its own oracle.

// tStage is one stage of a torture pipeline.
type tStage struct {
	name  string
	toml  string                    // the [[stage]] table, without its header
	xform func(io.Reader) io.Reader // what the stage does to its input
	fails int                       // exit status it fails with on its own, 0 if none
}

// tPipeline is one generated run.
type tPipeline struct {
	seed uint64
	// source: "gen" (the first stage produces; stdin is /dev/null),
	// "none" (the same with [input] path = "none": a producer job), "file"
	// (-i), "pipe" (stdin is a pipe).
	source   string
	size     int64  // bytes the source produces
	dataSeed uint64 // xorshift seed of the source bytes
	// sink: "file" (-o, atomic), "link" (-o names a symlink to the file),
	// "stdout" (a pipe), "fifo" (-o names a FIFO the test reads),
	// "devnull" (stdout is /dev/null: the cron line), "cut" (stdout is a
	// pipe whose reader goes away after cutAt bytes), "full" (-o names a
	// file on a tmpfs of fsSize bytes, which the stream overflows).
	sink     string
	cutAt    int64
	fsSize   int64
	pipeSize string
	stages   []tStage
	// branches, when any, make the pipeline a tree: each reads the output
	// of stages[fork] and writes a file of its own in out/, and the
	// stages after fork are the branch that writes the sink.
	branches []tBranch
	fork     int
	// signal, when not 0, is sent to pipespool sigDelay after its first
	// stage process appeared; the last stage then holds the run open
	// (torturer hold) until the test creates holdFile.
	signal   syscall.Signal
	sigDelay time.Duration
	holdFile string
	// fifoDelay: how long the FIFO's reader waits before it opens it.
	fifoDelay time.Duration
	// The oracle.
	wantCode   int
	wantResult string // the report's result: success, failed, interrupted
	wantRoot   string
}

// tBranch is a side branch of a tree.
type tBranch struct {
	stages   []tStage
	optional bool
	out      string // its output, relative to the job file: "out/bK.bin"
	// fails: a stage of the branch fails on its own (optional: its output
	// is discarded and the run succeeds).
	fails bool
}

// tEnv is what the generator needs to know about the run's directory.
type tEnv struct {
	relBin string // bin directory relative to the job file: "./bin-MARKER"
	absBin string // the same, absolute, for shell scripts
	marker string // in every stage's argv
	pass   string // symmetric passphrase file (absolute)
	absDir string // the run's directory (absolute)
	root   bool   // the test can mount a tmpfs
}

// tSizes draws a stream size: mostly small (where the edge cases are), up
// to a few MiB, and with big set now and then 64 to 256 MiB.
func tSizes(r *rand.Rand, big bool) int64 {
	switch x := r.IntN(100); {
	case x < 10:
		return 0
	case x < 20:
		return 1 + r.Int64N(100)
	case x < 55:
		return r.Int64N(64 << 10)
	case x < 85:
		return r.Int64N(1 << 20)
	case x < 98 || !big:
		return r.Int64N(4 << 20)
	default:
		return 64<<20 + r.Int64N(192<<20)
	}
}

var tPipeSizes = []string{"4KiB", "8KiB", "16KiB", "64KiB", "256KiB", "1MiB"}

// genPipeline draws the pipeline of run seed.
func genPipeline(seed uint64, big bool, e tEnv) *tPipeline {
	r := rand.New(rand.NewPCG(seed, 0x70727475))
	p := &tPipeline{seed: seed, size: tSizes(r, big), dataSeed: r.Uint64() >> 1, // torturer parses an int64
		pipeSize: tPipeSizes[r.IntN(len(tPipeSizes))]}
	p.source = []string{"gen", "file", "pipe", "none"}[r.IntN(4)]
	p.sink = []string{"file", "stdout", "file", "stdout", "link", "fifo", "devnull", "cut", "full"}[r.IntN(9)]
	p.fifoDelay = time.Duration(r.IntN(30)) * time.Millisecond
	n := 1 + r.IntN(6)
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	argv := func(args ...string) string {
		for i := range args {
			args[i] = q(args[i])
		}
		return "command = [" + strings.Join(args, ", ") + "]\n"
	}
	bin := func(prog string) string { return e.relBin + "/" + prog }
	abs := func(prog string) string { return e.absBin + "/" + prog }
	add := func(kind, toml string, xf func(io.Reader) io.Reader) *tStage {
		p.stages = append(p.stages, tStage{name: fmt.Sprintf("s%d-%s", len(p.stages)+1, kind), toml: toml, xform: xf})
		return &p.stages[len(p.stages)-1]
	}
	if p.source == "gen" || p.source == "none" {
		add("gen", argv(bin("torturer"), "gen", fmt.Sprint(p.size), fmt.Sprint(p.dataSeed)), ident)
	}
	failing := false
	// cutPlaced: a stage that writes and then fails is in the pipeline. A
	// consumer after it that may stop reading (head, closein) could kill
	// it with SIGPIPE before it fails: which of the two comes first is
	// not for the oracle to know, so none follows it.
	cutPlaced := false
	// middle puts a stage between the two halves of a round trip, when
	// there is room: a cat, or (the run's one failure) a stage that passes
	// some bytes on and exits K, so that the decoder after it fails on a
	// truncated stream and must not be blamed.
	middle := func() {
		if len(p.stages)+2 > n || r.IntN(3) != 0 {
			return
		}
		if failing || r.IntN(2) == 0 {
			add("cat", argv(bin("cat")), ident)
			return
		}
		failing, cutPlaced = true, true
		k := 1 + r.IntN(99)
		cut := r.Int64N(max(p.size, 1) + 1)
		s := add("cut", argv(bin("torturer"), "passafter", fmt.Sprint(cut), fmt.Sprint(k)), empty)
		s.fails = k
	}
	for len(p.stages) < n {
		switch k := r.IntN(17); k {
		case 0:
			add("cat", argv(bin("cat")), ident)
		case 1:
			add("tr", argv(bin("tr"), "a-z", "A-Z")+"env = { LC_ALL = \"C\" }\n", upper)
		case 2:
			if cutPlaced {
				continue
			}
			m := r.Int64N(max(p.size, 1) + 1)
			if r.IntN(3) == 0 {
				m = r.Int64N(100)
			}
			add("head", argv(bin("head"), "-c", fmt.Sprint(m))+"allow_partial_read = true\n",
				func(in io.Reader) io.Reader { return io.LimitReader(in, m) })
		case 3:
			add("burst", argv(bin("torturer"), "burst", fmt.Sprint(r.Uint64()>>1)), ident)
		case 4:
			add("slow", argv(bin("torturer"), "slow", fmt.Sprint(r.Uint64()>>1)), ident)
		case 5:
			if cutPlaced {
				continue
			}
			text := "closed stdin\n"
			add("closein", argv(bin("torturer"), "closein", fmt.Sprint(r.IntN(30)), text)+"allow_partial_read = true\n",
				func(io.Reader) io.Reader { return strings.NewReader(text) })
		case 6:
			if failing {
				continue // one failure of its own per run: its root cause is then certain
			}
			failing = true
			k := 1 + r.IntN(99)
			s := add("exit", argv(bin("torturer"), "exitafter", fmt.Sprint(r.Int64N(max(p.size, 1)+1)), fmt.Sprint(k)), empty)
			s.fails = k
		case 7:
			// A grandchild that inherits stdout and writes after the
			// stage's main process has exited.
			script := fmt.Sprintf("%s || exit; (%s 0.0%d; printf 'grandchild\\n') &", abs("cat"), abs("sleep"), r.IntN(5))
			add("fork", "shell = "+q(script)+"\n", func(in io.Reader) io.Reader {
				return io.MultiReader(in, strings.NewReader("grandchild\n"))
			})
		case 8:
			// The main process exits at once; a background cat does the
			// work (through fd 3: sh gives an asynchronous list /dev/null
			// as stdin, and `<&0` would dup that).
			add("bgcat", "shell = "+q("exec 3<&0; "+abs("cat")+" <&3 3<&- &")+"\n", ident)
		case 9:
			script := fmt.Sprintf("%s | %s a-z A-Z | %s", abs("cat"), abs("tr"), abs("cat"))
			add("shpipe", argv(bin("sh"), "-c", script)+"env = { LC_ALL = \"C\" }\n", upper)
		case 10, 11:
			if len(p.stages)+2 > n {
				continue
			}
			add("zstd-c", fmt.Sprintf("builtin = \"zstd-compress\"\n[stage.with]\nlevel = %d\n", 1+r.IntN(5)), ident)
			middle()
			add("zstd-d", "builtin = \"zstd-decompress\"\n", ident)
		case 12, 13:
			if len(p.stages)+2 > n {
				continue
			}
			add("pgp-e", fmt.Sprintf("builtin = \"openpgp-encrypt\"\n[stage.with]\npassphrase_file = %q\n", e.pass), ident)
			middle()
			add("pgp-d", fmt.Sprintf("builtin = \"openpgp-decrypt\"\n[stage.with]\npassphrase_file = %q\n", e.pass), ident)
		case 15:
			// The main process exits once its input is copied, and a
			// background process keeps its stdout: a stall of its own
			// kind, killed after a second, and the root cause.
			if failing {
				continue
			}
			failing, cutPlaced = true, true
			script := fmt.Sprintf("%s; %s 30 &", abs("cat"), abs("sleep"))
			s := add("holdpipe", "shell = "+q(script)+"\nstall_timeout = \"1s\"\non_stall = \"kill\"\n", ident)
			s.fails = -1 // stalled: exit 1 with this stage named, no exit status of its own
		case 16:
			// A descendant escapes into a session of its own, holding no
			// pipe: the run succeeds, and the escapee is stopped at the
			// end of the run like any other leftover.
			script := fmt.Sprintf("setsid -f %s 30 </dev/null >/dev/null 2>&1; exec %s", abs("sleep"), abs("cat"))
			add("setsid", "shell = "+q(script)+"\n", ident)
		default:
			// The digest file is not checked: a consumer downstream may
			// stop reading before the end, and then none is written.
			add("sha256", fmt.Sprintf("builtin = \"sha256\"\n[stage.with]\nwrite_to = \"digest-%d\"\n", len(p.stages)+1), ident)
		}
	}
	// Now and then a tree: one to three side branches fork from a stage
	// of the line (not the last: the stages after the fork are the branch
	// that writes the sink), each with one to three simple stages and a
	// file of its own; an optional branch may fail, and so may one that is
	// not when nothing else does.
	// A fork reads a stage's output as the oracle knows it: not between
	// an encoder and its decoder (ciphertext, a compressed frame).
	var forks []int
	depth := 0
	for j, st := range p.stages[:max(len(p.stages)-1, 0)] {
		switch {
		case strings.HasSuffix(st.name, "-zstd-c"), strings.HasSuffix(st.name, "-pgp-e"):
			depth++
		case strings.HasSuffix(st.name, "-zstd-d"), strings.HasSuffix(st.name, "-pgp-d"):
			depth--
		}
		if depth == 0 {
			forks = append(forks, j)
		}
	}
	if len(forks) > 0 && r.IntN(3) == 0 {
		p.fork = forks[r.IntN(len(forks))]
		for b := range 1 + r.IntN(3) {
			br := tBranch{optional: r.IntN(3) == 0, out: fmt.Sprintf("out/b%d.bin", b+1)}
			bAdd := func(kind, toml string, xf func(io.Reader) io.Reader) *tStage {
				br.stages = append(br.stages, tStage{name: fmt.Sprintf("b%d-%d-%s", b+1, len(br.stages)+1, kind), toml: toml, xform: xf})
				return &br.stages[len(br.stages)-1]
			}
			for range 1 + r.IntN(3) {
				switch r.IntN(7) {
				case 0:
					bAdd("cat", argv(bin("cat")), ident)
				case 1:
					bAdd("tr", argv(bin("tr"), "a-z", "A-Z")+"env = { LC_ALL = \"C\" }\n", upper)
				case 2:
					bAdd("burst", argv(bin("torturer"), "burst", fmt.Sprint(r.Uint64()>>1)), ident)
				case 3:
					bAdd("slow", argv(bin("torturer"), "slow", fmt.Sprint(r.Uint64()>>1)), ident)
				case 4:
					bAdd("zstd", fmt.Sprintf("builtin = \"zstd-compress\"\n[stage.with]\nlevel = %d\n", 1+r.IntN(3)), ident)
					bAdd("unzstd", "builtin = \"zstd-decompress\"\n", ident)
				case 5:
					bAdd("sha256", fmt.Sprintf("builtin = \"sha256\"\n[stage.with]\nwrite_to = \"digest-b%d-%d\"\n", b+1, len(br.stages)+1), ident)
				default:
					if br.fails || !br.optional && failing {
						continue
					}
					k := 1 + r.IntN(99)
					st := bAdd("exit", argv(bin("torturer"), "exitafter", fmt.Sprint(r.Int64N(max(p.size, 1)+1)), fmt.Sprint(k)), empty)
					st.fails = k
					br.fails = true
					if !br.optional {
						failing = true
					}
				}
			}
			if len(br.stages) == 0 {
				bAdd("cat", argv(bin("cat")), ident)
			}
			p.branches = append(p.branches, br)
		}
	}
	// The sink may cut the stream only where nothing else fails first: which
	// of two failures comes first is not for the oracle to know.
	if (p.sink == "cut" || p.sink == "full") && failing {
		p.sink = "stdout"
	}
	if p.sink == "cut" {
		p.cutAt = r.Int64N(max(p.size, 1) + 64)
	}
	if p.sink == "full" {
		// A tmpfs the stream overflows by at least 64 KiB (its block
		// accounting is not byte-exact): the output fills at a random
		// point. Streams too small for that go to a plain file.
		if _, n := p.want(); n < 192<<10 || !e.root {
			p.sink = "file"
		} else {
			p.fsSize = (64<<10 + r.Int64N(n-128<<10)) &^ 4095
		}
	}
	// A signal to pipespool, in a run that nothing else ends before it: no
	// failure, no cut sink, and a last stage that holds the run open.
	if !failing && p.sink != "cut" && p.sink != "full" && r.IntN(5) == 0 {
		sigs := []syscall.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGKILL}
		p.signal = sigs[r.IntN(len(sigs))]
		p.sigDelay = time.Duration(r.IntN(150)) * time.Millisecond
		p.holdFile = "hold-" + e.marker
		add("hold", argv(bin("torturer"), "hold", e.absDir+"/"+p.holdFile), ident)
	}
	p.wantResult = "success"
	for _, s := range p.stages {
		if s.fails != 0 {
			p.wantCode, p.wantRoot, p.wantResult = 1, s.name, "failed"
		}
	}
	for _, b := range p.branches {
		for _, s := range b.stages {
			if s.fails != 0 && !b.optional {
				p.wantCode, p.wantRoot, p.wantResult = 1, s.name, "failed"
			}
		}
	}
	if p.sink == "cut" {
		if _, n := p.want(); p.cutAt < n {
			p.wantCode, p.wantRoot, p.wantResult = 1, "output", "failed"
		}
	}
	if p.sink == "full" {
		p.wantCode, p.wantRoot, p.wantResult = 1, "output", "failed"
	}
	switch p.signal {
	case 0:
	case syscall.SIGKILL:
		p.wantCode, p.wantResult = -1, ""
	default:
		p.wantCode, p.wantResult = 128+int(p.signal), "interrupted"
	}
	return p
}

// jobFile is the pipeline's job file.
func (p *tPipeline) jobFile(marker string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s seed %d\nname = %q\npipe_size = %q\n", marker, p.seed, marker, p.pipeSize)
	if p.source == "none" {
		b.WriteString("[input]\npath = \"none\"\n")
	}
	for _, s := range p.stages {
		fmt.Fprintf(&b, "\n[[stage]]\nname = %q\n%s", s.name, s.toml)
	}
	for _, br := range p.branches {
		for k, s := range br.stages {
			fmt.Fprintf(&b, "\n[[stage]]\nname = %q\n", s.name)
			if k == 0 {
				fmt.Fprintf(&b, "from = %q\noptional = %v\n", p.stages[p.fork].name, br.optional)
			}
			if k == len(br.stages)-1 {
				fmt.Fprintf(&b, "output = %q\n", br.out)
			}
			b.WriteString(s.toml)
		}
	}
	return b.String()
}

// describe is a one-line summary for failure messages.
func (p *tPipeline) describe() string {
	names := make([]string, len(p.stages))
	for i, s := range p.stages {
		names[i] = s.name
	}
	d := fmt.Sprintf("source %s (%d bytes), %s, pipe_size %s, sink %s", p.source, p.size,
		strings.Join(names, " | "), p.pipeSize, p.sink)
	for _, br := range p.branches {
		bn := make([]string, len(br.stages))
		for i, s := range br.stages {
			bn[i] = s.name
		}
		opt := ""
		if br.optional {
			opt = " (optional)"
		}
		d += fmt.Sprintf("; branch%s from %s: %s > %s", opt, p.stages[p.fork].name, strings.Join(bn, " | "), br.out)
	}
	if p.sink == "cut" {
		d += fmt.Sprintf(" (reader gone after %d bytes)", p.cutAt)
	}
	if p.sink == "full" {
		d += fmt.Sprintf(" (a %d-byte tmpfs)", p.fsSize)
	}
	if p.signal != 0 {
		d += fmt.Sprintf(", %s after %s", p.signal, p.sigDelay)
	}
	return d
}

// want returns the expected sha256 and length of the output.
func (p *tPipeline) want() (string, int64) {
	return p.oracle(p.stages)
}

// wantBranch returns the expected sha256 and length of side branch b's
// output: the line up to the fork, then the branch.
func (p *tPipeline) wantBranch(b int) (string, int64) {
	return p.oracle(append(append([]tStage(nil), p.stages[:p.fork+1]...), p.branches[b].stages...))
}

// oracle runs the source through stages' transforms.
func (p *tPipeline) oracle(stages []tStage) (string, int64) {
	var r io.Reader = io.LimitReader(&xorshiftReader{x: p.dataSeed | 1}, p.size)
	for _, s := range stages {
		r = s.xform(r)
	}
	h := sha256.New()
	n, _ := io.Copy(h, r)
	return hex.EncodeToString(h.Sum(nil)), n
}

func ident(r io.Reader) io.Reader { return r }
func empty(io.Reader) io.Reader   { return strings.NewReader("") }

// upper is `LC_ALL=C tr a-z A-Z`.
func upper(r io.Reader) io.Reader { return &upperReader{r} }

type upperReader struct{ r io.Reader }

func (u *upperReader) Read(b []byte) (int, error) {
	n, err := u.r.Read(b)
	for i, c := range b[:n] {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return n, err
}

// xorshiftReader is the stream of randomFile and of `torturer gen`: 8-byte
// little-endian words of xorshift64*.
type xorshiftReader struct {
	x    uint64
	word [8]byte
	left int // bytes of word not yet returned
}

func (g *xorshiftReader) Read(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		if g.left == 0 {
			g.x ^= g.x >> 12
			g.x ^= g.x << 25
			g.x ^= g.x >> 27
			v := g.x * 2685821657736338717
			for j := range 8 {
				g.word[j] = byte(v >> (8 * j))
			}
			g.left = 8
		}
		c := copy(b[n:], g.word[8-g.left:])
		g.left -= c
		n += c
	}
	return n, nil
}

// binLinks are the programs a run's bin directory links to: reached through
// a path holding the run's marker, every process of the run shows the
// marker in its argv[0].
func binLinks(torturer string) map[string]string {
	m := map[string]string{"torturer": torturer}
	for _, p := range []string{"cat", "tr", "head", "sleep", "sh"} {
		if path, err := exec.LookPath(p); err == nil {
			m[p] = path
		}
	}
	return m
}
