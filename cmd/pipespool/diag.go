package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

const (
	// diagQueueMax bounds the bytes of messages held (queued or being
	// written) for a stderr slower than pipespool writes them.
	diagQueueMax = 1 << 20
	// diagWaitMax: a message waits for room as long as stderr takes bytes
	// within this time; a stderr that took nothing for it is stalled.
	diagWaitMax = time.Second
	// diagFlushIdle: at exit, the last messages are waited for as long as
	// stderr takes bytes within this time.
	diagFlushIdle = 5 * time.Second
	// diagWriteMax is the most one write to the file carries: messages
	// are joined up to it, at their boundaries, never split. A pipe takes
	// a write of at most PIPE_BUF (4096) bytes whole, unmixed with what
	// another process (a stage with stderr = "inherit", a queue's
	// command) writes to it at the same time, as each message was when
	// it was written alone.
	diagWriteMax = 4096
)

// diagWriter is pipespool's stderr for its own messages (the log, the
// stages' stderr lines, progress, the summary): a goroutine writes them
// to the file in order, each whole, and a write never waits for a stderr
// that stopped taking bytes. A slow reader slows the messages down as it
// did when they were written directly: a message waits for room in the
// queue as long as stderr takes bytes within diagWaitMax. When it takes
// nothing for that long (a terminal stopped with Ctrl-S, an ssh session
// whose connection hangs, a logger that stopped reading), messages are
// dropped until the queue has drained to half, and a line written where
// they would have been says how many bytes were lost. Without it, a stalled
// stderr held the whole run: a stage blocked writing its stderr, and the
// job's timeout never ended the run (its message could not be written
// either). When stderr is gone (EPIPE, or EIO from a hung-up terminal),
// every message is dropped; another error (ENOSPC) loses that write only.
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
	queue   []diagMsg
	held    int  // bytes queued or being written
	writing bool // the goroutine is writing to the file
	stalled bool // dropping messages until the queue drains to half
	// open counts the bytes dropped since the notice at the queue's end
	// was queued; nil when none is open (the next drop queues one).
	open   *int
	broken bool // stderr is gone
	// noticeTo, when set, takes the notices of dropped messages instead
	// of the file: a progress display on a terminal, which redraws its
	// frame over anything written under it (see setNoticeWriter).
	noticeTo io.Writer
	// notices counts the notices handed to noticeTo whose write has not
	// returned: flush waits for them as for the queue.
	notices int
}

// diagMsg is a queued message, or a notice of dropped messages (dropped
// counts them until the notice is written).
type diagMsg struct {
	b       []byte
	dropped *int
}

func newDiagWriter(f *os.File) *diagWriter {
	d := &diagWriter{f: f, work: make(chan struct{}, 1), wrote: make(chan struct{})}
	go d.drain()
	return d
}

// setNoticeWriter sends the notices of dropped messages to w (nil: to the
// file, in their place among the messages): w is the log of a progress
// display drawn on this stderr, which would draw over a line written
// beneath it. It writes to this writer itself, so it is called from a
// goroutine of its own, never from the one that drains the queue.
func (d *diagWriter) setNoticeWriter(w io.Writer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.noticeTo = w
}

// File is the stderr file itself, for a child process.
func (d *diagWriter) File() *os.File { return d.f }

// Write queues p whole, or drops it whole; it never fails.
func (d *diagWriter) Write(p []byte) (int, error) {
	var deadline time.Time
	d.mu.Lock()
	defer d.mu.Unlock()
	for {
		switch {
		case d.broken:
			return len(p), nil
		case d.held == 0 || !d.stalled && d.held+len(p) <= diagQueueMax:
			d.queue = append(d.queue, diagMsg{b: append([]byte(nil), p...)})
			d.held += len(p)
			notify(d.work)
			return len(p), nil
		case d.stalled:
			d.drop(len(p))
			return len(p), nil
		}
		// Full: wait while the file takes bytes.
		if deadline.IsZero() {
			deadline = time.Now().Add(diagWaitMax)
		}
		wrote := d.wrote
		d.mu.Unlock()
		if awaitWrite(wrote, deadline) {
			deadline = time.Now().Add(diagWaitMax)
		}
		d.mu.Lock()
		if !time.Now().Before(deadline) && d.held+len(p) > diagQueueMax {
			d.stalled = true
		}
	}
}

// drop counts n bytes dropped in the open notice, queuing one if none is.
func (d *diagWriter) drop(n int) {
	if d.open == nil {
		d.open = new(int)
		d.queue = append(d.queue, diagMsg{dropped: d.open})
	}
	*d.open += n
}

// drain writes the queued messages to the file, for the process's life.
func (d *diagWriter) drain() {
	var buf []byte
	for range d.work {
		for {
			d.mu.Lock()
			var n int
			var ok bool
			buf, n, ok = d.next(buf[:0])
			if !ok {
				d.mu.Unlock()
				break
			}
			d.writing = true
			d.mu.Unlock()
			var err error
			if len(buf) > 0 {
				_, err = d.f.Write(buf)
			}
			d.mu.Lock()
			d.writing = false
			d.held -= n
			if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.EIO) || errors.Is(err, syscall.EBADF) {
				d.broken, d.queue, d.held, d.open = true, nil, 0, nil
			}
			if d.stalled && d.held <= diagQueueMax/2 {
				d.stalled = false
			}
			close(d.wrote)
			d.wrote = make(chan struct{})
			d.mu.Unlock()
		}
	}
}

// next takes the next write off the queue into buf: a notice alone, or
// messages up to diagWriteMax (one longer message alone). n is the bytes
// of messages taken; ok is false when the queue is empty.
func (d *diagWriter) next(buf []byte) (_ []byte, n int, ok bool) {
	if len(d.queue) == 0 {
		return buf, 0, false
	}
	if m := d.queue[0]; m.dropped != nil {
		if m.dropped == d.open {
			d.open = nil // later drops are told of after what follows
		}
		d.queue = d.queue[1:]
		notice := fmt.Appendf(buf, "pipespool: %d bytes of messages were dropped here: stderr took nothing for %s\n", *m.dropped, diagWaitMax)
		if w := d.noticeTo; w != nil {
			d.notices++
			go d.notice(w, bytes.Clone(notice))
			return buf[:0], 0, true // nothing to write here
		}
		return notice, 0, true
	}
	for len(d.queue) > 0 {
		m := d.queue[0]
		if m.dropped != nil || n > 0 && n+len(m.b) > diagWriteMax {
			break
		}
		buf = append(buf, m.b...)
		n += len(m.b)
		d.queue = d.queue[1:]
	}
	return buf, n, true
}

// notice writes a notice of dropped messages to w, from a goroutine of
// its own (w writes to this writer), then wakes flush.
func (d *diagWriter) notice(w io.Writer, b []byte) {
	w.Write(b)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.notices--
	close(d.wrote)
	d.wrote = make(chan struct{})
}

// flush waits until every queued message, and every notice handed to the
// progress display, is written, as long as stderr takes bytes within idle.
func (d *diagWriter) flush(idle time.Duration) {
	deadline := time.Now().Add(idle)
	for {
		d.mu.Lock()
		done := d.broken || len(d.queue) == 0 && !d.writing && d.notices == 0
		wrote := d.wrote
		d.mu.Unlock()
		if done || !time.Now().Before(deadline) {
			return
		}
		if awaitWrite(wrote, deadline) {
			deadline = time.Now().Add(idle)
		}
	}
}

// awaitWrite waits until wrote is closed (a write to the file ended) or
// deadline passes, and reports whether the write ended.
func awaitWrite(wrote <-chan struct{}, deadline time.Time) bool {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-wrote:
		return true
	case <-t.C:
		return false
	}
}

// notify signals c without blocking: one pending signal is enough.
func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
