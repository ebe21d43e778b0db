package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestDiagWriterDeliversInOrder: a reader that reads delivers every
// message, whole and in order, including what a late reader finds queued.
func TestDiagWriterDeliversInOrder(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	d := newDiagWriter(w)
	var want bytes.Buffer
	for i := range 5000 { // about 200 KB: more than a pipe holds
		m := fmt.Sprintf("message %d of the run\n", i)
		want.WriteString(m)
		d.Write([]byte(m))
	}
	got := make(chan []byte)
	go func() {
		time.Sleep(200 * time.Millisecond) // a reader that starts late
		b, _ := io.ReadAll(r)
		got <- b
	}()
	d.flush(time.Minute)
	w.Close()
	if b := <-got; !bytes.Equal(b, want.Bytes()) {
		t.Errorf("read %d bytes, want the %d written in order", len(b), want.Len())
	}
}

// TestDiagWriterNeverHoldsTheWriter: a reader that stopped reading holds
// no write for long: messages are dropped once the queue is full, and the
// reader, reading again, is told how much was lost.
func TestDiagWriterNeverHoldsTheWriter(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	d := newDiagWriter(w)
	msg := []byte(strings.Repeat("x", 1023) + "\n")
	done := make(chan struct{})
	go func() {
		defer close(done)
		// 4 MiB: the pipe and the queue hold about 1 MiB.
		for range 4096 {
			d.Write(msg)
		}
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("writes blocked by a stderr nobody reads")
	}
	// The reader reads again: what was queued comes, then the notice.
	var mu sync.Mutex
	var b []byte
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := r.Read(buf)
			mu.Lock()
			b = append(b, buf[:n]...)
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	read := func(want string) []byte {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			mu.Lock()
			got := bytes.Clone(b)
			mu.Unlock()
			if bytes.Contains(got, []byte(want)) {
				return got
			}
		}
		t.Fatalf("%q never came", want)
		return nil
	}
	read("bytes of messages were dropped here: stderr took nothing for 1s")
	d.Write([]byte("the last message\n"))
	got := read("the last message\n")
	if n := bytes.Count(got, msg); n >= 4096 || n < 100 {
		t.Errorf("%d whole messages of 4096 came through, want the queue's worth", n)
	}
}

// TestDiagWriterBrokenStderr: a stderr without a reader takes every write
// at once, and flush returns.
func TestDiagWriterBrokenStderr(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	defer w.Close()
	d := newDiagWriter(w)
	for range 1000 {
		if n, err := d.Write([]byte("message\n")); n != 8 || err != nil {
			t.Fatalf("Write: %d, %v", n, err)
		}
	}
	d.flush(time.Minute)
}

// TestDiagWriterLinesStayWhole: messages reach a pipe that another
// process writes to at the same time (a stage with stderr = "inherit", a
// queue's command) whole, never mixed with its writes: each write to the
// file carries whole messages, at most what a pipe takes whole (found by
// review: batches of tens of KB were cut by the other writer's lines).
func TestDiagWriterLinesStayWhole(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	d := newDiagWriter(w)
	const n = 20000
	var other sync.WaitGroup
	other.Add(1)
	// The other writer has a file description of its own, as another
	// process has (one *os.File would serialise the two writers' calls).
	fd, err := syscall.Dup(int(w.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	ow := os.NewFile(uintptr(fd), "the other writer")
	go func() {
		defer other.Done()
		defer ow.Close()
		for i := range n {
			fmt.Fprintf(ow, "BBBB the other writer's line %d BBBBBBBBBBBBBBBBBBBB\n", i)
		}
	}()
	go func() {
		for i := range n {
			fmt.Fprintf(d, "AAAA pipespool's message %d AAAAAAAAAAAAAAAAAAAAAAAA\n", i)
		}
		d.flush(time.Minute)
		other.Wait()
		w.Close()
	}()
	// A reader slower than the writers, so that the pipe fills.
	var all []byte
	buf := make([]byte, 16<<10)
	for {
		k, err := r.Read(buf)
		all = append(all, buf[:k]...)
		if err != nil {
			break
		}
		time.Sleep(200 * time.Microsecond)
	}
	var a, b, broken int
	for _, l := range strings.Split(strings.TrimSuffix(string(all), "\n"), "\n") {
		switch {
		case strings.HasPrefix(l, "AAAA") && strings.HasSuffix(l, "AAAA") && !strings.Contains(l, "B"):
			a++
		case strings.HasPrefix(l, "BBBB") && strings.HasSuffix(l, "BBBB") && !strings.Contains(l, "A"):
			b++
		default:
			broken++
		}
	}
	if a != n || b != n || broken != 0 {
		t.Errorf("%d of pipespool's messages and %d of the other's whole, %d lines mixed; want %d, %d, 0", a, b, broken, n, n)
	}
}

// TestDiagWriterSlowReaderLosesNothing: a reader slower than pipespool
// writes, but reading, gets every message: writers wait while it takes
// bytes (found by review: a reader at 600 KB/s lost two thirds of a
// stage's lines, the queue's progress being seen only per 1 MiB write).
func TestDiagWriterSlowReaderLosesNothing(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	d := newDiagWriter(w)
	msg := strings.Repeat("m", 99) + "\n"
	const n = 30000 // 3 MB: more than the queue and the pipe hold
	go func() {
		for range n {
			d.Write([]byte(msg))
		}
		d.flush(time.Minute)
		w.Close()
	}()
	var got int
	buf := make([]byte, 4096)
	for {
		k, err := r.Read(buf)
		got += k
		if err != nil {
			break
		}
		time.Sleep(5 * time.Millisecond) // about 800 KB/s
	}
	if got != n*len(msg) {
		t.Errorf("read %d bytes, want all %d", got, n*len(msg))
	}
}

// TestDiagWriterNoticeToProgress: with a progress display on the terminal,
// the notice of dropped messages goes through the display's log (which
// clears its frame, writes, redraws), not under the frame, where the next
// redraw would erase it (found by review).
func TestDiagWriterNoticeToProgress(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	d := newDiagWriter(w)
	var mu sync.Mutex
	var display bytes.Buffer
	d.setNoticeWriter(writerFunc(func(p []byte) (int, error) {
		time.Sleep(200 * time.Millisecond) // a display slow to take it
		mu.Lock()
		defer mu.Unlock()
		return display.Write(p)
	}))
	msg := []byte(strings.Repeat("x", 1023) + "\n")
	for range 4096 { // more than the pipe and the queue hold: some dropped
		d.Write(msg)
	}
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(r)
		got <- b
	}()
	// flush returns only once the notice handed to the display is written.
	d.flush(time.Minute)
	mu.Lock()
	n := bytes.Count(display.Bytes(), []byte("bytes of messages were dropped here"))
	mu.Unlock()
	if n != 1 {
		t.Errorf("flush returned with %d notices through the display, want 1", n)
	}
	w.Close()
	if b := <-got; bytes.Contains(b, []byte("dropped")) {
		t.Errorf("the notice was also written under the display")
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
