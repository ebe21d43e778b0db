package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The multiqueue group: a backup host with one queue per sender.
const (
	multiQueues      = 200 // queues
	multiQueuesShort = 50  // with -short
	multiJobs        = 10  // tiny jobs in each
	multiWorkers     = 4   // --parallel, and xargs -P
)

// multiQueueGroup is queue-process over many queues of a few tiny jobs
// each: pipespool's own --parallel 1 and 4, against one fspl
// queue-process per queue run by xargs -P 4 (what a backup host does
// without pipespool), and one pipespool per queue by xargs -P 4 (to show
// what a process per queue costs). The jobs run /bin/true, so the time is
// the queues' own: process starts, scans, locks and commits.
func (h *harness) multiQueueGroup() *group {
	queues := multiQueues
	if h.cfg.short {
		queues = multiQueuesShort
	}
	return &group{id: "multiqueue", section: "4. queue", needs: []string{"fspl"}, amount: int64(queues * multiJobs), unit: "packets", runs: 3,
		build: func(g *group) error {
			src, err := h.tinyPackets(multiJobs)
			if err != nil {
				return err
			}
			packets, err := os.ReadDir(src)
			if err != nil {
				return err
			}
			root := filepath.Join(h.dir, "multiqueue")
			var qs []string
			for i := range queues {
				q := filepath.Join(root, fmt.Sprintf("q%03d", i))
				if err := os.MkdirAll(root, 0o755); err != nil {
					return err
				}
				if err := h.queueInit(h.pp, q); err != nil {
					return err
				}
				qs = append(qs, q)
			}
			list := filepath.Join(h.dir, "multiqueue.list")
			if err := os.WriteFile(list, []byte(strings.Join(qs, "\n")+"\n"), 0o644); err != nil {
				return err
			}
			// Before each run: every queue holds the packets again (hard
			// links) and starts at 1.
			refill := func() error {
				for _, q := range qs {
					for _, p := range packets {
						dst := filepath.Join(q, "jobs", p.Name())
						if err := removeIfExists(dst); err != nil {
							return err
						}
						if err := os.Link(filepath.Join(src, p.Name()), dst); err != nil {
							return err
						}
					}
					if err := os.WriteFile(filepath.Join(q, "nextseq"), []byte("1\n"), 0o644); err != nil {
						return err
					}
				}
				return nil
			}
			check := func() error {
				for _, q := range qs {
					if err := expectNextseq(q, multiJobs+1); err != nil {
						return err
					}
				}
				return nil
			}
			pp := func(parallel int) *variant {
				argv := []string{h.pp, "queue-process", "--parallel", fmt.Sprint(parallel)}
				for _, q := range qs {
					argv = append(argv, "-q", q)
				}
				v := h.chainVariant(fmt.Sprintf("pipespool queue-process --parallel %d, %d queues x %d jobs", parallel, queues, multiJobs), 0, "",
					proc{argv: append(argv, "/bin/true")})
				v.setup, v.check = refill, check
				return v
			}
			perQueue := func(tool string) *variant {
				v := h.chainVariant(fmt.Sprintf("xargs -P %d %s queue-process, one per queue", multiWorkers, filepath.Base(tool)), 0, "",
					proc{argv: []string{"xargs", "-P", fmt.Sprint(multiWorkers), "-a", list, "-I{}", tool, "queue-process", "-q", "{}", "/bin/true"}})
				v.setup, v.check = refill, check
				return v
			}
			one, four, fspl, ppx := pp(1), pp(multiWorkers), perQueue("fspl"), perQueue(h.pp)
			for _, v := range []*variant{one, four, fspl, ppx} {
				g.add(v)
			}
			g.compare(four.name, fspl.name, target{desc: "<= xargs + fspl (<= 1.00x)", maxRatio: 1.0})
			g.compare(one.name, fspl.name, target{})
			g.compare(four.name, one.name, target{})
			g.compare(four.name, ppx.name, target{})
			return nil
		}}
}
