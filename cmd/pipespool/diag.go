package main

import (
	"fmt"
	"os"
	"sync"
	"time"
)

const (
	// diagQueueMax bounds the messages held for a stderr that is slower
	// than pipespool writes them.
	diagQueueMax = 1 << 20
	// diagWaitMax is how long a message waits for room when the queue is
	// full before it is dropped: a slow reader still slows pipespool's
	// messages down, a reader that stopped does not hold the run.
	diagWaitMax = time.Second
	// diagFlushIdle: at exit, the last messages are waited for as long as
	// the file takes some within this time.
	diagFlushIdle = 5 * time.Second
)

// diagWriter is pipespool's stderr for its own messages (the log, the
// stages' stderr lines, progress, the summary): a write never blocks for
// longer than diagWaitMax, whatever the reader of stderr does. A goroutine
// writes the queued messages to the file, in order; when the file takes
// nothing for diagWaitMax (a terminal stopped with Ctrl-S, an ssh session
// whose connection hangs, a logger that stopped reading), messages are
// dropped until the queue has drained to half, and a line then says how
// much was lost. Without it, a stalled stderr held the whole run: a stage
// blocked writing its stderr, and the job's timeout never ended the run
// (its message could not be written either). When stderr is gone (EPIPE),
// every message is dropped.
//
// Child processes that write to stderr themselves (a queue's command) get
// the file (File), not this writer: what they write is theirs to block on.
type diagWriter struct {
	f    *os.File
	work chan struct{} // a message was queued

	mu sync.Mutex
	// wrote is closed (and replaced) when a write to the file ends: every
	// writer waiting for room, and flush, look again.
	wrote   chan struct{}
	queue   []byte
	writing bool
	stalled bool // dropping messages until the queue drains to half
	dropped int  // bytes dropped since the last notice
	broken  bool // the file refused a write: stderr is gone
}

func newDiagWriter(f *os.File) *diagWriter {
	d := &diagWriter{f: f, work: make(chan struct{}, 1), wrote: make(chan struct{})}
	go d.drain()
	return d
}

// File is the stderr file itself, for a child process.
func (d *diagWriter) File() *os.File { return d.f }

// Write queues p whole, or drops it whole; it never fails.
func (d *diagWriter) Write(p []byte) (int, error) {
	waited := false
	var deadline time.Time
	d.mu.Lock()
	for {
		switch {
		case d.broken:
		case len(d.queue) == 0 || len(d.queue)+len(p) <= diagQueueMax && !d.stalled:
			d.queue = append(d.queue, p...)
			d.mu.Unlock()
			notify(d.work)
			return len(p), nil
		case d.stalled || waited:
			d.stalled = true
			d.dropped += len(p)
		default:
			// Full: wait for a write to the file, at most diagWaitMax
			// in all.
			wrote := d.wrote
			d.mu.Unlock()
			if deadline.IsZero() {
				deadline = time.Now().Add(diagWaitMax)
			}
			t := time.NewTimer(time.Until(deadline))
			select {
			case <-wrote:
			case <-t.C:
				waited = true
			}
			t.Stop()
			d.mu.Lock()
			continue
		}
		d.mu.Unlock()
		return len(p), nil
	}
}

// drain writes the queued messages to the file, for the process's life.
func (d *diagWriter) drain() {
	var buf []byte
	for range d.work {
		for {
			d.mu.Lock()
			if len(d.queue) == 0 {
				d.mu.Unlock()
				break
			}
			buf, d.queue = d.queue, buf[:0]
			d.writing = true
			d.mu.Unlock()
			_, err := d.f.Write(buf)
			d.mu.Lock()
			d.writing = false
			if err != nil {
				d.broken, d.queue = true, nil
			}
			if d.stalled && len(d.queue) <= diagQueueMax/2 {
				d.stalled = false
				if d.dropped > 0 && !d.broken {
					notice := fmt.Sprintf("pipespool: %d bytes of messages were dropped: stderr took nothing for %s\n", d.dropped, diagWaitMax)
					d.queue = append([]byte(notice), d.queue...)
				}
				d.dropped = 0
			}
			close(d.wrote)
			d.wrote = make(chan struct{})
			d.mu.Unlock()
		}
	}
}

// flush waits until every queued message is written, or until the file
// took nothing for idle.
func (d *diagWriter) flush(idle time.Duration) {
	deadline := time.Now().Add(idle)
	for {
		d.mu.Lock()
		done := d.broken || len(d.queue) == 0 && !d.writing
		wrote := d.wrote
		d.mu.Unlock()
		if done || !time.Now().Before(deadline) {
			return
		}
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-wrote:
			deadline = time.Now().Add(idle)
		case <-t.C:
		}
		t.Stop()
	}
}

// notify signals c without blocking: one pending signal is enough.
func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
