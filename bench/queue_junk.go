package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/pipespool/pipespool/queue"
)

// junkPerKind is how many files of each hostile kind the queue-junk case
// holds beside its one job.
const junkPerKind = 100

// queueJunkGroup is the cost of hostile files in a queue: queue-process of
// one job in a queue that also holds junkPerKind files of every kind the
// hostile-input tests use (FIFOs, links to a FIFO and to /dev/zero,
// directories, headers that lie about their length or their params,
// truncated headers, names with control characters, garbage, and headers
// of many params), against the same job alone. Junk must cost what it is:
// a stat for what is not a regular file, the bytes of its header for the
// rest, once per run.
func (h *harness) queueJunkGroup() *group {
	return &group{id: "queue-junk", section: "4. queue", amount: 1, unit: "",
		build: func(g *group) error {
			packet, err := h.file("junk-good.fspl", func(p string) error {
				hd := &queue.Header{Seq: 1, CTimeSecs: 1700000000}
				return os.WriteFile(p, append(queue.Encode(hd), bytes.Repeat([]byte("payload\n"), 1<<17)...), 0o644)
			})
			if err != nil {
				return err
			}
			for _, junk := range []bool{false, true} {
				name := "clean"
				if junk {
					name = "junk"
				}
				q := filepath.Join(h.dir, "queue-junk-"+name)
				if err := h.queueInit(h.pp, q); err != nil {
					return err
				}
				if err := os.Link(packet, filepath.Join(q, "jobs", "fspl-good.fspl")); err != nil {
					return err
				}
				desc := "pipespool queue-process, 1 job (1 MiB payload)"
				if junk {
					if err := makeJunk(filepath.Join(q, "jobs")); err != nil {
						return err
					}
					desc += fmt.Sprintf(" + %d junk files of each of %d kinds", junkPerKind, len(junkKinds))
				}
				v := h.chainVariant(desc, 0, "",
					proc{argv: []string{h.pp, "queue-process", "-q", q, "--never-delete", "--log-level", "error", "sh", "--", "-c", "cat >/dev/null"}})
				v.setup = func() error { return os.WriteFile(filepath.Join(q, "nextseq"), []byte("1\n"), 0o644) }
				v.check = func() error { return expectNextseq(q, 2) }
				g.add(v)
			}
			g.compare(g.variants[1].name, g.variants[0].name, target{desc: "<= 2x the clean queue, RSS < 64 MiB", maxRatio: 2, maxRSS: 64 << 20})
			return nil
		}}
}

// junkKinds make the hostile file number i of their kind at path.
var junkKinds = []struct {
	name string
	make func(path string, i int) error
}{
	{"FIFO", func(p string, _ int) error { return syscall.Mkfifo(p, 0o644) }},
	{"link to a FIFO", func(p string, _ int) error { return os.Symlink("fspl-FIFO-0.fspl", p) }},
	{"link to /dev/zero", func(p string, _ int) error { return os.Symlink("/dev/zero", p) }},
	{"directory", func(p string, _ int) error { return os.Mkdir(p, 0o755) }},
	{"header claiming 16 MiB, truncated", func(p string, _ int) error {
		return os.WriteFile(p, queue.Frame(queue.MaxHeaderLen, bytes.Repeat([]byte{0x90}, 100)), 0o644)
	}},
	{"header length 2^63", func(p string, _ int) error { return os.WriteFile(p, queue.Frame(1<<63, nil), 0o644) }},
	{"params count that lies", func(p string, _ int) error {
		b := []byte("\x83\xa3seq\x01\xa5ctime\x92\x01\x02\xa8cmd_type\x81\xa7Command\x82\xa6params\xdd\xff\xff\xff\xff")
		return os.WriteFile(p, queue.Frame(uint64(len(b)), b), 0o644)
	}},
	{"control characters in the name", func(p string, _ int) error {
		return os.WriteFile(filepath.Join(filepath.Dir(p), fmt.Sprintf("fspl-\x1b[2J\n%s.fspl", filepath.Base(p))), []byte("junk"), 0o644)
	}},
	{"4 KiB of garbage", func(p string, i int) error {
		return os.WriteFile(p, bytes.Repeat([]byte{byte(i), 0xa5, 0x5a, 0xff}, 1024), 0o644)
	}},
	{"header of 10 000 params, later number", func(p string, i int) error {
		hd := &queue.Header{Seq: uint64(1000 + i), CTimeSecs: 1700000000, Params: make([][]byte, 10000)}
		return os.WriteFile(p, queue.Encode(hd), 0o644)
	}},
}

func makeJunk(jobs string) error {
	for k, kind := range junkKinds {
		for i := range junkPerKind {
			if err := kind.make(filepath.Join(jobs, fmt.Sprintf("fspl-%s-%d.fspl", junkName(k), i)), i); err != nil {
				return fmt.Errorf("junk %q: %w", kind.name, err)
			}
		}
	}
	return nil
}

// junkName names kind k's files; the first kind is the FIFO the links
// point to.
func junkName(k int) string {
	if k == 0 {
		return "FIFO"
	}
	return fmt.Sprintf("kind%d", k)
}
