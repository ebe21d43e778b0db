package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"strings"
)

// A torture pipeline: a source, 1 to 6 stages drawn at random, a sink, and
// the oracle computed independently of pipespool: the expected output
// (as a stream, so that 256 MiB cost no memory), the expected exit status
// and the expected root-cause stage.

// tStage is one stage of a torture pipeline.
type tStage struct {
	name  string
	toml  string                    // the [[stage]] table, without its header
	xform func(io.Reader) io.Reader // what the stage does to its input
	fails int                       // exit status it fails with on its own, 0 if none
}

// tPipeline is one generated run.
type tPipeline struct {
	seed     uint64
	source   string // "gen" (first stage produces), "file" (-i), "pipe" (stdin is a pipe)
	size     int64  // bytes the source produces
	dataSeed uint64 // xorshift seed of the source bytes
	sink     string // "file" (-o, atomic) or "stdout" (a pipe)
	pipeSize string
	stages   []tStage
	// The oracle.
	wantCode int
	wantRoot string
}

// tEnv is what the generator needs to know about the run's directory.
type tEnv struct {
	relBin string // bin directory relative to the job file: "./bin-MARKER"
	absBin string // the same, absolute, for shell scripts
	marker string // in every stage's argv
	pass   string // symmetric passphrase file (absolute)
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
	p.source = []string{"gen", "file", "pipe"}[r.IntN(3)]
	p.sink = []string{"file", "stdout"}[r.IntN(2)]
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
	if p.source == "gen" {
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
		switch k := r.IntN(15); k {
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
		default:
			// The digest file is not checked: a consumer downstream may
			// stop reading before the end, and then none is written.
			add("sha256", fmt.Sprintf("builtin = \"sha256\"\n[stage.with]\nwrite_to = \"digest-%d\"\n", len(p.stages)+1), ident)
		}
	}
	for _, s := range p.stages {
		if s.fails != 0 {
			p.wantCode, p.wantRoot = 1, s.name
		}
	}
	return p
}

// jobFile is the pipeline's job file.
func (p *tPipeline) jobFile(marker string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s seed %d\nname = %q\npipe_size = %q\n", marker, p.seed, marker, p.pipeSize)
	for _, s := range p.stages {
		fmt.Fprintf(&b, "\n[[stage]]\nname = %q\n%s", s.name, s.toml)
	}
	return b.String()
}

// describe is a one-line summary for failure messages.
func (p *tPipeline) describe() string {
	names := make([]string, len(p.stages))
	for i, s := range p.stages {
		names[i] = s.name
	}
	return fmt.Sprintf("source %s (%d bytes), %s, pipe_size %s, sink %s", p.source, p.size,
		strings.Join(names, " | "), p.pipeSize, p.sink)
}

// want returns the expected sha256 and length of the output.
func (p *tPipeline) want() (string, int64) {
	var r io.Reader = io.LimitReader(&xorshiftReader{x: p.dataSeed | 1}, p.size)
	for _, s := range p.stages {
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
