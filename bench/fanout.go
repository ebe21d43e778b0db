package main

import "fmt"

// Variant names of the fan-out group, which the pipeline's own fan-out
// rows are compared with too.
const (
	pumpRelay1 = "cat | pump relay | cat, 1 MiB pipes"
	teeRelay2  = "cat | tee relay -> {cat, cat}, 1 MiB pipes"
	bashTee    = "cat | tee >(cat) | cat, 1 MiB pipes (bash)"
	pipexecTee = "pipexec cat -> ptee -> {cat, cat}"
	// threeCopies is the fan-out's work without the fan-out: the floor.
	threeCopies = "cat | cat, 1 MiB pipe, beside cat f > /dev/null"
	// ppFanout is pipespool's own fan-out, a job that fans out, against
	// its own line (ppRelay).
	ppFanout = "pipespool exec cat -> {cat, cat}"
)

// fanoutGroup copies one stream to two consumers, `cat -> {cat > /dev/null,
// cat > /dev/null}`: the pump's tee (bench/teerelay, a pump.Tee from its
// stdin to its stdout and to a `cat` it starts) against the same program's
// single-branch relay (one pump.Pump), which it must stay within 1.2x of,
// and against the fan-outs users write today: bash's tee with a process
// substitution and pipexec's ptee, which it must beat. The bash and
// pipexec pipes it does not create keep the kernel's 64 KiB: the chain's
// own pipes (cat to tee, tee to cat) are 1 MiB, as pipespool's.
//
// The fan-out makes three copies of the stream (into the source pipe, and
// out to each consumer) where the relay makes two: the row against the
// same three copies made without a fan-out (the second consumer reads the
// file itself) shows the hop's own cost.
func (h *harness) fanoutGroup() *group {
	size := h.cfg.relaySize
	return &group{id: "fanout", section: "11. fan-out", amount: size, unit: "bytes", runs: 7,
		build: func(g *group) error {
			in, err := h.randomFile(size)
			if err != nil {
				return err
			}
			g.warm = append(g.warm, in)
			src := proc{argv: []string{"cat", in}}
			cat := proc{argv: []string{"cat"}}
			g.add(h.chainVariant(direct1M, pipeSize, "", src, cat))
			g.add(h.chainVariant(pumpRelay1, pipeSize, "", src, proc{argv: []string{h.teerelay, "-pump"}}, cat))
			g.add(h.chainVariant(teeRelay2, pipeSize, "", src, proc{argv: []string{h.teerelay, "-extra", "1"}}, cat))
			g.compare(teeRelay2, pumpRelay1, target{desc: "<= 1.2x the single-branch relay", maxRatio: 1.2})
			g.compare(pumpRelay1, direct1M, target{})
			// The fan-out's floor: the same three copies of the stream
			// (file to pipe, pipe to each consumer) with no fan-out hop,
			// the second consumer reading the file itself.
			if h.has("bash") {
				g.add(h.chainVariant(threeCopies, pipeSize, "", src, proc{argv: []string{"bash", "-c",
					"cat " + shQuote(in) + " >/dev/null & cat; wait"}}))
				g.compare(teeRelay2, threeCopies, target{desc: "the cost of the hop (no target)"})
			}
			if h.has("bash") {
				g.add(h.chainVariant(bashTee, pipeSize, "", src, proc{argv: []string{"bash", "-c", "tee >(cat >/dev/null)"}}, cat))
				g.compare(teeRelay2, bashTee, target{desc: "faster than bash's tee", maxRatio: 1})
			} else {
				h.skip("fanout bash", "not installed")
			}
			if h.has("pipexec") {
				g.add(h.chainVariant(pipexecTee, 0, "", proc{argv: []string{"pipexec", "--",
					"[", "A", "/bin/cat", in, "]", "[", "T", h.tools["ptee"], "3", "4", "]",
					"[", "B", "/bin/cat", "]", "[", "C", "/bin/cat", "]",
					"{A:1>T:0}", "{T:3>B:0}", "{T:4>C:0}"}}))
				g.compare(teeRelay2, pipexecTee, target{desc: "faster than pipexec", maxRatio: 1})
			} else {
				h.skip("fanout pipexec", "not installed (apt-get install pipexec)")
			}
			// pipespool's fan-out as a user writes it: a job whose first
			// stage is read by two, each writing /dev/null itself
			// (output none), against the same job as a line.
			pp, err := h.jobVariant(ppRelay, "fanout-line", in, tomlArgv("cat"), tomlArgv("cat"))
			if err != nil {
				return err
			}
			ppTree, err := h.jobVariant(ppFanout, "fanout-tree", in, "name = \"src\"\n"+tomlArgv("cat"), "name = \"a\"\n"+tomlArgv("cat"),
				"name = \"b\"\nfrom = \"src\"\noutput = \"none\"\n"+tomlArgv("cat"))
			if err != nil {
				return err
			}
			g.add(pp)
			g.add(ppTree)
			g.compare(ppFanout, ppRelay, target{desc: "<= 1.2x pipespool's own line", maxRatio: 1.2})
			if h.has("bash") {
				g.compare(ppFanout, bashTee, target{desc: "faster than bash's tee", maxRatio: 1})
			}
			if h.has("pipexec") {
				g.compare(ppFanout, pipexecTee, target{desc: "faster than pipexec", maxRatio: 1})
			}
			g.notes = append(g.notes, fmt.Sprintf("Every consumer reads all %s; the relays write to /dev/null.", fmtSize(size)))
			return nil
		}}
}
