package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
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
	read("bytes of messages were dropped: stderr took nothing for 1s")
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
