package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"
)

// pipeSize is the pipe size of every "direct" baseline and of pipespool's
// own pipes (its default pipe_size): the pipe-max-size of a stock kernel,
// so the baseline is the fastest two processes can talk through a pipe.
const pipeSize = 1 << 20

const (
	relayRSS   = 32 << 20 // pipespool's peak RSS for a relay
	builtinRSS = 96 << 20 // ... and with built-ins
	// idleCPU is what "near zero" means for a run whose stages all sleep:
	// pipespool's start-up (Go runtime, job file) plus its monitor.
	idleCPU = 100 * time.Millisecond
)

// Variant names shared by several groups.
const (
	direct1M = "cat | cat, 1 MiB pipe (direct)"
	ppRelay  = "pipespool exec cat -> cat"
)

// groups lists every case of the harness, in the order of the report.
func (h *harness) groups() []*group {
	var gs []*group
	gs = append(gs, h.relayGroup("relay", "1. relay", h.cfg.relaySize, true))
	gs = append(gs, h.stages4Group())
	gs = append(gs, h.zstdGroups()...)
	gs = append(gs, h.pgpGroups()...)
	gs = append(gs, h.restoreGroup())
	gs = append(gs, h.queueGroups()...)
	gs = append(gs, h.queueJunkGroup())
	gs = append(gs, h.multiQueueGroup())
	for _, size := range h.cfg.scaleSizes {
		gs = append(gs, h.relayGroup("scale-"+sizeName(size), "5. scaling", size, false))
	}
	gs = append(gs, h.startupGroup())
	gs = append(gs, h.idleGroup())
	gs = append(gs, h.rateLimitGroup())
	gs = append(gs, h.progressGroup())
	gs = append(gs, h.nncpGroup())
	gs = append(gs, h.backupGroups()...)
	gs = append(gs, h.bufferGroup())
	gs = append(gs, h.fanoutGroup())
	return gs
}

// chainVariant runs procs joined by pipes of size pipe (0: 64 KiB).
func (h *harness) chainVariant(name string, pipe int, in string, procs ...proc) *variant {
	return &variant{name: name, run: func(ctx context.Context) (sample, error) {
		return h.rn.chain(ctx, procs, pipe, stdio{in: in})
	}}
}

// shellVariant runs a bash pipeline, as a user types it.
func (h *harness) shellVariant(name, script string, env ...string) *variant {
	return h.chainVariant(name, 0, "", proc{argv: []string{"bash", "-c", script}, env: env})
}

// jobVariant runs pipespool exec on a job file it writes.
func (h *harness) jobVariant(name, job, input string, stages ...string) (*variant, error) {
	return h.jobVariantWith(name, job, "", input, stages...)
}

// jobVariantWith is jobVariant with top-level keys (TOML lines) added.
func (h *harness) jobVariantWith(name, job, keys, input string, stages ...string) (*variant, error) {
	p, err := h.job(job, keys+jobBody(job, input, stages...))
	if err != nil {
		return nil, err
	}
	return h.chainVariant(name, 0, "", p), nil
}

// relayGroup is `src | X | dst` for X = pipespool's pump and its peers,
// against src and dst joined directly. With all, every peer and the
// default-pipe shell pipeline are measured too; the scaling groups only
// measure pipespool against the direct pipe.
func (h *harness) relayGroup(id, section string, size int64, all bool) *group {
	// A small stream's run is short and its time noisy: more rounds for
	// the same steadiness, at little cost.
	runs := 7
	if size <= 256<<20 {
		runs = 21
	}
	return &group{id: id, section: section, amount: size, unit: "bytes", runs: runs,
		build: func(g *group) error {
			in, err := h.randomFile(size)
			if err != nil {
				return err
			}
			g.warm = append(g.warm, in)
			cat := proc{argv: []string{"cat"}}
			src := proc{argv: []string{"cat", in}}
			g.add(h.chainVariant(direct1M, pipeSize, "", src, cat))
			pp, err := h.jobVariant(ppRelay, id, in, tomlArgv("cat"), tomlArgv("cat"))
			if err != nil {
				return err
			}
			g.add(pp)
			rss := target{desc: "RSS < 32 MiB", maxRSS: relayRSS}
			g.compare(ppRelay, direct1M, target{desc: "<= 1.05x, RSS < 32 MiB", maxRatio: 1.05, maxRSS: relayRSS})
			if !all {
				return nil
			}
			relays := []struct {
				name, tool string
				argv       []string
			}{
				{"cat | pv -q | cat, 1 MiB pipes", "pv", []string{"pv", "-q"}},
				{"cat | mbuffer -q -m 64M | cat, 1 MiB pipes", "mbuffer", []string{"mbuffer", "-q", "-m", "64M"}},
				{"cat | io.Copy | cat, 1 MiB pipes", "", []string{h.iocopy}},
			}
			for _, r := range relays {
				if r.tool != "" && !h.has(r.tool) {
					h.skip(id+" "+r.tool, "not installed")
					continue
				}
				g.add(h.chainVariant(r.name, pipeSize, "", src, proc{argv: r.argv}, cat))
			}
			shell := "cat | cat, 64 KiB pipe (bash)"
			if h.has("bash") {
				g.add(h.shellVariant(shell, "cat "+shQuote(in)+" | cat >/dev/null"))
			}
			// pipespool at the shell's pipe size, for the comparison at
			// equal pipe sizes with the shell pipeline.
			pp64, err := h.jobVariantWith("pipespool exec cat -> cat, pipe_size 64KiB", id+"-64k",
				"pipe_size = \"64KiB\"\n", in, tomlArgv("cat"), tomlArgv("cat"))
			if err != nil {
				return err
			}
			g.add(pp64)
			for _, r := range relays {
				g.compare(r.name, direct1M, target{})
			}
			g.compare(shell, direct1M, target{})
			for _, r := range relays {
				g.compare(ppRelay, r.name, target{desc: "faster (< 1.00x)", maxRatio: 1.0})
			}
			g.compare(ppRelay, shell, rss)
			g.compare(pp64.name, shell, rss)
			return nil
		}}
}

// stages4Group is cat x4 through pipespool (three pumps) against the four
// cats joined directly by 1 MiB pipes, and by bash's 64 KiB pipes.
func (h *harness) stages4Group() *group {
	size := h.cfg.relaySize
	return &group{id: "stages4", section: "2. four stages", amount: size, unit: "bytes", runs: 7,
		build: func(g *group) error {
			in, err := h.randomFile(size)
			if err != nil {
				return err
			}
			g.warm = append(g.warm, in)
			cat := proc{argv: []string{"cat"}}
			direct := "cat x4, 1 MiB pipes (direct)"
			g.add(h.chainVariant(direct, pipeSize, "", proc{argv: []string{"cat", in}}, cat, cat, cat))
			pp, err := h.jobVariant("pipespool exec cat x4", "cat4", in,
				tomlArgv("cat"), tomlArgv("cat"), tomlArgv("cat"), tomlArgv("cat"))
			if err != nil {
				return err
			}
			g.add(pp)
			shell := "cat x4, 64 KiB pipes (bash)"
			if h.has("bash") {
				g.add(h.shellVariant(shell, "cat "+shQuote(in)+" | cat | cat | cat >/dev/null"))
			}
			g.compare(pp.name, direct, target{desc: "RSS < 32 MiB", maxRSS: relayRSS})
			if h.has("bash") {
				// bash's pipes are 64 KiB: pipespool with pipes of that
				// size too is the comparison at equal pipe size.
				pp64, err := h.jobVariantWith("pipespool exec cat x4, pipe_size 64KiB", "cat4-64k",
					"pipe_size = \"64KiB\"\n", in, tomlArgv("cat"), tomlArgv("cat"), tomlArgv("cat"), tomlArgv("cat"))
				if err != nil {
					return err
				}
				g.add(pp64)
				g.compare(shell, direct, target{})
				g.compare(pp.name, shell, target{})
				g.compare(pp64.name, shell, target{desc: "RSS < 32 MiB", maxRSS: relayRSS})
			}
			return nil
		}}
}

func (h *harness) zstdGroups() []*group {
	return []*group{
		h.zstdGroup("zstd-compress", 3, "zstd -3 (CLI)", []string{"zstd", "-q", "-c", "-3"}, h.mixFile,
			target{desc: "RSS < 96 MiB", maxRSS: builtinRSS}),
		h.zstdGroup("zstd-decompress", 0, "zstd -d (zstdcat)", []string{"zstd", "-q", "-d", "-c"}, h.zstFile,
			target{desc: "speed >= 0.85x (<= 1.18x), RSS < 96 MiB", maxRatio: 1 / 0.85, maxRSS: builtinRSS}),
	}
}

// zstdGroup compares the built-in id with the zstd CLI (base, argv) on the
// input file made by input, runs times (0: the harness's default).
func (h *harness) zstdGroup(id string, runs int, base string, argv []string, input func(int64) (string, error), tg target) *group {
	size := h.cfg.mixSize
	return &group{id: id, section: "3. built-ins", needs: []string{"zstd"}, amount: size, unit: "bytes", runs: runs,
		build: func(g *group) error {
			in, err := input(size)
			if err != nil {
				return err
			}
			g.warm = append(g.warm, in)
			g.add(h.chainVariant(base, 0, in, proc{argv: argv}))
			v, err := h.jobVariant(id+" built-in", id, in, `builtin = "`+id+`"`)
			if err != nil {
				return err
			}
			g.add(v)
			g.compare(v.name, base, tg)
			return nil
		}}
}

// pgpWith is the [stage.with] of an OpenPGP built-in for mode "pub"
// (recipient key) or "sym" (passphrase).
func (h *harness) pgpWith(builtin, mode string) string {
	s := fmt.Sprintf("builtin = %q\n[stage.with]\n", builtin)
	switch {
	case mode == "sym":
		return s + "passphrase_file = " + strconv.Quote(h.key("symmetric.pass"))
	case builtin == "openpgp-encrypt":
		return s + "recipients = [" + strconv.Quote(h.key("recipient.pub.asc")) + "]"
	default:
		return s + "secret_key = " + strconv.Quote(h.key("recipient.sec.asc")) +
			"\npassphrase_file = " + strconv.Quote(h.key("recipient.pass"))
	}
}

func (h *harness) pgpGroups() []*group {
	size := h.cfg.pgpSize
	var gs []*group
	for _, mode := range []string{"pub", "sym"} {
		how := map[string]string{"pub": "public key", "sym": "passphrase"}[mode]
		gs = append(gs, &group{id: "openpgp-encrypt-" + mode, section: "3. built-ins", needs: []string{"gpg"},
			amount: size, unit: "bytes", runs: 3,
			build: func(g *group) error {
				in, err := h.randomFile(size)
				if err != nil {
					return err
				}
				g.warm = append(g.warm, in)
				if err := h.gpgSetup(); err != nil {
					return err
				}
				base := "gpg --encrypt (" + how + ")"
				if mode == "sym" {
					base = "gpg --symmetric"
				}
				g.add(h.chainVariant(base, 0, in, h.gpgEncrypt(mode)))
				v, err := h.jobVariant("openpgp-encrypt built-in ("+how+")", "encrypt-"+mode, in, h.pgpWith("openpgp-encrypt", mode))
				if err != nil {
					return err
				}
				g.add(v)
				g.compare(v.name, base, target{desc: "RSS < 96 MiB", maxRSS: builtinRSS})
				return nil
			}})
		gs = append(gs, &group{id: "openpgp-decrypt-" + mode, section: "3. built-ins", needs: []string{"gpg"},
			amount: size, unit: "bytes",
			build: func(g *group) error {
				plain, err := h.randomFile(size)
				if err != nil {
					return err
				}
				in, err := h.gpgFile(plain, mode)
				if err != nil {
					return err
				}
				g.warm = append(g.warm, in)
				base := "gpg --decrypt (" + how + ")"
				g.add(h.chainVariant(base, 0, in, h.gpgDecrypt(mode)))
				v, err := h.jobVariant("openpgp-decrypt built-in ("+how+")", "decrypt-"+mode, in, h.pgpWith("openpgp-decrypt", mode))
				if err != nil {
					return err
				}
				g.add(v)
				g.compare(v.name, base, target{desc: "speed >= 0.8x (<= 1.25x), RSS < 96 MiB", maxRatio: 1.25, maxRSS: builtinRSS})
				return nil
			}})
	}
	return gs
}

// restoreGroup is the restore chain `gpg -d | zstd -d` of a gpg-encrypted
// zstd stream, against pipespool with the two built-ins and pipespool
// running the same two programs.
func (h *harness) restoreGroup() *group {
	size := h.cfg.mixSize
	return &group{id: "restore", section: "3. built-ins", needs: []string{"gpg", "zstd", "bash"}, amount: size, unit: "bytes",
		build: func(g *group) error {
			zst, err := h.zstFile(size)
			if err != nil {
				return err
			}
			in, err := h.gpgFile(zst, "pub")
			if err != nil {
				return err
			}
			g.warm = append(g.warm, in)
			dec := h.gpgDecrypt("pub")
			zstd := []string{"zstd", "-q", "-d", "-c"}
			base := "gpg -d | zstd -d (bash)"
			g.add(h.shellVariant(base, shJoin(dec.argv)+" <"+shQuote(in)+" | "+shJoin(zstd)+" >/dev/null", dec.env...))
			bi, err := h.jobVariant("pipespool: openpgp-decrypt + zstd-decompress built-ins", "restore-builtin", in,
				h.pgpWith("openpgp-decrypt", "pub"), `builtin = "zstd-decompress"`)
			if err != nil {
				return err
			}
			g.add(bi)
			ext, err := h.jobVariant("pipespool exec gpg -d -> zstd -d", "restore-external", in,
				tomlArgv(dec.argv...)+"\nenv = { GNUPGHOME = "+strconv.Quote(h.gnupg)+" }", tomlArgv(zstd...))
			if err != nil {
				return err
			}
			g.add(ext)
			g.compare(bi.name, base, target{desc: "<= 1.00x, RSS < 96 MiB", maxRatio: 1.0, maxRSS: builtinRSS})
			g.compare(ext.name, base, target{desc: "RSS < 32 MiB", maxRSS: relayRSS})
			return nil
		}}
}

// startupGroup is the fixed cost of a run: pipespool exec of one `true`
// stage on empty input against `true` alone. It explains most of the
// ratio of the small relays.
func (h *harness) startupGroup() *group {
	return &group{id: "startup", section: "5. scaling", runs: 7,
		build: func(g *group) error {
			base := "true"
			g.add(h.chainVariant(base, 0, "", proc{argv: []string{"true"}}))
			v, err := h.jobVariant("pipespool exec true (start-up cost)", "startup", os.DevNull, tomlArgv("true"))
			if err != nil {
				return err
			}
			g.add(v)
			g.compare(v.name, base, target{})
			return nil
		}}
}

// idleGroup is a pipeline whose stages all sleep: pipespool should cost
// nothing while it waits. Both variants run at the same time, once.
func (h *harness) idleGroup() *group {
	secs := strconv.Itoa(int(h.cfg.idle.Seconds()))
	return &group{id: "idle", section: "6. idle", needs: []string{"bash"}, runs: 1, together: true,
		build: func(g *group) error {
			base := "sleep " + secs + " | sleep " + secs + " (bash)"
			g.add(h.shellVariant(base, "sleep "+secs+" | sleep "+secs))
			v, err := h.jobVariant("pipespool exec sleep "+secs+" -> sleep "+secs, "idle", os.DevNull,
				tomlArgv("sleep", secs), tomlArgv("sleep", secs))
			if err != nil {
				return err
			}
			g.add(v)
			g.compare(v.name, base, target{desc: "CPU <= 0.1 s", maxCPU: idleCPU})
			return nil
		}}
}
