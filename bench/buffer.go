package main

import (
	"fmt"
)

const (
	// bufferSize is the buffer of the buffer group: 256 MiB, as a user
	// gives mbuffer -m 256M in front of a tape or an ssh link.
	bufferSize = 256 << 20
	// bufferRSSSlack is what pipespool may use beyond its buffer: its own
	// runtime and a chunk of the buffer's memory.
	bufferRSSSlack = 16 << 20
	// diskRate is the paced producer's rate: a disk or a zfs send,
	// slower than the consumer reads while it reads.
	diskRate = 256 << 20
)

// bufferGroup feeds a consumer that alternates 100 ms of reading with 100
// ms of pause (bench/pauser) through a 256 MiB buffer: pipespool's
// (`buffer = "256MiB"` on the consumer's input) against `mbuffer -q -m
// 256M` in the same place, which it must match within 5%, with a peak RSS
// of at most the buffer + 16 MiB; and pipespool without a buffer, beside.
//
// Two producers. `cat` of a file in the page cache, at full speed: it is
// as fast as the consumer reads, so a buffer cannot make the stream
// faster, only cost its two copies (on a busy machine the unbuffered rows
// are the faster ones). And a producer that cannot go faster than 256
// MiB/s and does not make up for time it spent blocked (`pauser
// -produce`, a disk or a zfs send), slower than the consumer reads:
// without a buffer it runs only while the consumer reads, about half the
// time, and the run takes about twice as long; with one it never stops.
// That is the slowdown a buffer is for. (pv -L is no such producer: it
// makes up for a pause with a burst.)
func (h *harness) bufferGroup() *group {
	size := int64(1 << 30)
	if h.cfg.short {
		size = 512 << 20
	}
	return &group{id: "buffer", section: "10. buffer", needs: []string{"mbuffer"}, amount: size, unit: "bytes", runs: 5,
		build: func(g *group) error {
			in, err := h.randomFile(size)
			if err != nil {
				return err
			}
			g.warm = append(g.warm, in)
			pauser := proc{argv: []string{h.pauser}}
			mbuffer := proc{argv: []string{"mbuffer", "-q", "-m", "256M"}}
			rss := target{desc: fmt.Sprintf("<= 1.05x, RSS <= %d MiB (buffer + 16 MiB)", (bufferSize+bufferRSSSlack)>>20),
				maxRatio: 1.05, maxRSS: bufferSize + bufferRSSSlack}
			for _, src := range []struct {
				job, what string
				argv      []string
			}{
				{"buffer-cat", "cat", []string{"cat", in}},
				{"buffer-disk", "disk at 256 MiB/s", []string{h.pauser, "-produce", fmt.Sprint(size), "-rate", fmt.Sprint(diskRate)}},
			} {
				mb := fmt.Sprintf("%s | mbuffer -q -m 256M | pauser, 1 MiB pipes", src.what)
				g.add(h.chainVariant(mb, pipeSize, "", proc{argv: src.argv}, mbuffer, pauser))
				stage := tomlArgv(src.argv...)
				pp, err := h.jobVariant(fmt.Sprintf("pipespool exec %s -> pauser, buffer 256MiB", src.what), src.job, "/dev/null",
					stage, tomlArgv(h.pauser)+"\nbuffer = \"256MiB\"")
				if err != nil {
					return err
				}
				g.add(pp)
				plain, err := h.jobVariant(fmt.Sprintf("pipespool exec %s -> pauser (no buffer)", src.what), src.job+"-none", "/dev/null",
					stage, tomlArgv(h.pauser))
				if err != nil {
					return err
				}
				g.add(plain)
				g.compare(pp.name, mb, rss)
				g.compare(plain.name, pp.name, target{desc: "without a buffer (no target)"})
			}
			return nil
		}}
}
