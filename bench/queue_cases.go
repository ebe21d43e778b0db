package main

// The queue groups: pipespool's queue commands against fspl's on the
// same packets, and the packets and queues they use.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// queueGroups compare pipespool's queue commands with fspl's on the same
// packets: both process packets made by fspl prepare.
func (h *harness) queueGroups() []*group {
	tools := func() []string { return []string{"fspl", h.pp} }
	name := func(tool string) string { return filepath.Base(tool) }
	payload := h.cfg.payloadSize
	return []*group{
		{id: "queue-payload", section: "4. queue", needs: []string{"fspl"}, amount: payload, unit: "bytes",
			build: func(g *group) error {
				packet, err := h.payloadPacket(payload)
				if err != nil {
					return err
				}
				for _, tool := range tools() {
					q := filepath.Join(h.dir, "queue-payload-"+name(tool))
					if err := h.queueInit(tool, q); err != nil {
						return err
					}
					// One packet, hard-linked into both queues: --never-delete
					// keeps it, and nextseq is reset before every run.
					if err := os.Link(packet, filepath.Join(q, "jobs", "fspl-payload.fspl")); err != nil {
						return err
					}
					v := h.chainVariant(fmt.Sprintf("%s queue-process, %s payload into cat", name(tool), fmtSize(payload)), 0, "",
						proc{argv: []string{tool, "queue-process", "-q", q, "--never-delete", "sh", "--", "-c", "cat >/dev/null"}})
					v.setup = func() error { return os.WriteFile(filepath.Join(q, "nextseq"), []byte("1\n"), 0o644) }
					v.check = func() error { return expectNextseq(q, 2) }
					g.add(v)
				}
				g.compare(g.variants[1].name, g.variants[0].name, target{desc: "<= 1.00x", maxRatio: 1.0})
				return nil
			}},
		{id: "queue-tiny", section: "4. queue", needs: []string{"fspl"}, amount: int64(h.cfg.packets), unit: "packets", runs: 3,
			build: func(g *group) error {
				src, err := h.tinyPackets(h.cfg.packets)
				if err != nil {
					return err
				}
				for _, tool := range tools() {
					q := filepath.Join(h.dir, "queue-tiny-"+name(tool))
					v := h.chainVariant(fmt.Sprintf("%s queue-process, %d packets, /bin/true", name(tool), h.cfg.packets), 0, "",
						proc{argv: []string{tool, "queue-process", "-q", q, "/bin/true"}})
					v.setup = func() error { return h.fillQueue(tool, q, src) }
					v.check = func() error { return expectNextseq(q, h.cfg.packets+1) }
					g.add(v)
				}
				g.compare(g.variants[1].name, g.variants[0].name, target{desc: "rate >= fspl (<= 1.00x)", maxRatio: 1.0})
				return nil
			}},
		{id: "queue-prepare", section: "4. queue", needs: []string{"fspl"}, unit: "bytes", runs: 5,
			build: func(g *group) error {
				// The input is the packet made for queue-payload: any file
				// of that size will do, and it is in the page cache already.
				in, err := h.payloadPacket(payload)
				if err != nil {
					return err
				}
				g.warm = append(g.warm, in)
				st, err := os.Stat(in)
				if err != nil {
					return err
				}
				g.amount = st.Size()
				out := filepath.Join(h.dir, "prepare.out")
				for _, tool := range tools() {
					v := &variant{name: fmt.Sprintf("%s prepare -i (%s) > file", name(tool), fmtSize(payload)),
						run: func(ctx context.Context) (sample, error) {
							return h.rn.one(ctx, proc{argv: []string{tool, "prepare", "-s", "-", "-i", in}}, stdio{out: out})
						},
						// The run before left 2 GiB of dirty pages (removed,
						// but the input may still be under writeback): start
						// each run with nothing being written back, or the
						// disk decides the time.
						setup: func() error {
							if err := removeIfExists(out); err != nil {
								return err
							}
							unix.Sync()
							return nil
						},
						check: func() error {
							st, err := os.Stat(out)
							if err != nil {
								return err
							}
							if st.Size() <= g.amount {
								return fmt.Errorf("packet of %d bytes for a %d-byte payload", st.Size(), g.amount)
							}
							return os.Remove(out)
						}}
					g.add(v)
				}
				// The other way a packet leaves prepare: into a pipe (to
				// ssh, to queue-write), here read by cat into /dev/null.
				for _, tool := range tools() {
					v := &variant{name: fmt.Sprintf("%s prepare -i (%s) | cat", name(tool), fmtSize(payload)),
						run: func(ctx context.Context) (sample, error) {
							return h.rn.chain(ctx, []proc{{argv: []string{tool, "prepare", "-s", "-", "-i", in}}, {argv: []string{"cat"}}}, 0, stdio{out: os.DevNull})
						}}
					g.add(v)
				}
				// The floor for a file: cat, which copies a file into a
				// file with copy_file_range, the kernel's own copy, and
				// writes no header.
				floor := &variant{name: fmt.Sprintf("cat (%s) > file (the kernel's copy)", fmtSize(payload)),
					run: func(ctx context.Context) (sample, error) {
						return h.rn.one(ctx, proc{argv: []string{"cat", in}}, stdio{out: out})
					},
					setup: g.variants[0].setup,
					check: func() error { return os.Remove(out) }}
				g.add(floor)
				g.compare(g.variants[1].name, g.variants[0].name, target{desc: ">= 2x fspl (<= 0.50x)", maxRatio: 0.5})
				g.compare(g.variants[3].name, g.variants[2].name, target{desc: ">= 2x fspl (<= 0.50x)", maxRatio: 0.5})
				g.compare(g.variants[0].name, floor.name, target{})
				g.compare(g.variants[1].name, floor.name, target{})
				return nil
			}},
	}
}

// payloadPacket is a packet made by fspl prepare whose payload is size
// random bytes: the random file of the relay, repeated as needed, so that
// no extra data file fills the page cache.
func (h *harness) payloadPacket(size int64) (string, error) {
	return h.file("packet-"+sizeName(size)+".fspl", func(p string) error {
		src, err := h.randomFile(min(size, 1<<30))
		if err != nil {
			return err
		}
		// size bytes: the random file repeated as often as needed.
		reps := (size + (1 << 30) - 1) / (1 << 30)
		files := make([]string, reps)
		for i := range files {
			files[i] = shQuote(src)
		}
		script := "cat " + strings.Join(files, " ") + " | head -c " + strconv.FormatInt(size, 10) + " | fspl prepare -s - -i -"
		_, err = h.rn.one(h.ctx, proc{argv: []string{"sh", "-c", script}}, stdio{out: p})
		return err
	})
}

// tinyPackets makes n packets with fspl prepare (no payload), sequence
// numbers 1..n, in a directory of their own. Each packet gets a seqfile of
// its own, so that a few can be made at once: on a busy machine, 2000
// fspl processes one after the other take half a minute.
func (h *harness) tinyPackets(n int) (string, error) {
	return h.file(fmt.Sprintf("tiny-%d", n), func(dir string) error {
		seqs := filepath.Join(h.dir, "tiny-seq")
		for _, d := range []string{dir, seqs} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		plain := runner{dir: h.dir} // no time(1): nothing is measured here
		next := make(chan int)
		errs := make([]error, 4)
		var wg sync.WaitGroup
		for w := range errs {
			wg.Go(func() {
				for i := range next {
					if errs[w] != nil {
						continue // drain
					}
					seq := filepath.Join(seqs, strconv.Itoa(i))
					if errs[w] = os.WriteFile(seq, []byte(strconv.Itoa(i)+"\n"), 0o644); errs[w] != nil {
						continue
					}
					out := filepath.Join(dir, fmt.Sprintf("fspl-%06d.fspl", i))
					_, errs[w] = plain.one(h.ctx, proc{argv: []string{"fspl", "prepare", "-s", seq}}, stdio{out: out})
				}
			})
		}
		for i := 1; i <= n; i++ {
			next <- i
		}
		close(next)
		wg.Wait()
		return errors.Join(errs...)
	})
}

// fillQueue makes a fresh queue q with tool and hard-links the packets of
// src into it (processing unlinks them from q only).
func (h *harness) fillQueue(tool, q, src string) error {
	if err := os.RemoveAll(q); err != nil {
		return err
	}
	if err := h.queueInit(tool, q); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.Link(filepath.Join(src, e.Name()), filepath.Join(q, "jobs", e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func (h *harness) queueInit(tool, q string) error {
	_, err := h.rn.one(h.ctx, proc{argv: []string{tool, "queue-init", "-q", q}}, stdio{})
	return err
}

// expectNextseq checks that processing got the queue to nextseq want.
func expectNextseq(q string, want int) error {
	b, err := os.ReadFile(filepath.Join(q, "nextseq"))
	if err != nil {
		return err
	}
	if got := strings.TrimSpace(string(b)); got != strconv.Itoa(want) {
		return fmt.Errorf("%s: nextseq is %s after the run, want %d", q, got, want)
	}
	return nil
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}
