package queue

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCopyFileEveryKindOfEnd copies from a given offset of src to a given
// offset of dst for each pair of file kinds, and checks that exactly the
// rest of src arrives after what dst already held.
func TestCopyFileEveryKindOfEnd(t *testing.T) {
	payload := make([]byte, 3<<20+12345)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	const skip = 777 // src offset: a payload that starts after a header
	head := []byte("header before the payload")

	type end struct {
		name string
		// open returns the file and a function that gives everything
		// written to it once the copy is over (and closes what it must).
		src func(t *testing.T) *os.File
		dst func(t *testing.T) (*os.File, func() []byte)
	}
	regular := end{name: "file",
		src: func(t *testing.T) *os.File {
			p := filepath.Join(t.TempDir(), "src")
			if err := os.WriteFile(p, payload, 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			return f
		},
		dst: fileDst(os.O_CREATE | os.O_WRONLY | os.O_TRUNC)}
	appendOnly := end{name: "O_APPEND file (no copy_file_range)", dst: fileDst(os.O_CREATE | os.O_WRONLY | os.O_APPEND)}
	pipe := func(nonblock bool, slow bool) end {
		return end{name: map[bool]string{false: "pipe", true: "non-blocking pipe, slow reader"}[nonblock && slow],
			src: func(t *testing.T) *os.File {
				r, w, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { r.Close() })
				go func() {
					w.Write(payload)
					w.Close()
				}()
				return r
			},
			dst: func(t *testing.T) (*os.File, func() []byte) {
				var fds [2]int
				flags := unix.O_CLOEXEC
				if nonblock {
					flags |= unix.O_NONBLOCK
				}
				if err := unix.Pipe2(fds[:], flags); err != nil {
					t.Fatal(err)
				}
				r, w := os.NewFile(uintptr(fds[0]), "r"), os.NewFile(uintptr(fds[1]), "w")
				got := make(chan []byte, 1)
				go func() {
					var b bytes.Buffer
					buf := make([]byte, 50000)
					for {
						n, err := r.Read(buf)
						b.Write(buf[:n])
						if err != nil {
							break
						}
						if slow {
							time.Sleep(time.Millisecond)
						}
					}
					r.Close()
					got <- b.Bytes()
				}()
				return w, func() []byte {
					w.Close()
					select {
					case b := <-got:
						return b
					case <-time.After(time.Minute):
						t.Fatal("reader did not see EOF")
						return nil
					}
				}
			}}
	}
	socket := end{name: "socket",
		dst: func(t *testing.T) (*os.File, func() []byte) {
			sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			r, w := os.NewFile(uintptr(sp[0]), "r"), os.NewFile(uintptr(sp[1]), "w")
			got := make(chan []byte, 1)
			go func() { b, _ := io.ReadAll(r); r.Close(); got <- b }()
			return w, func() []byte {
				unix.Shutdown(sp[1], unix.SHUT_WR)
				w.Close()
				return <-got
			}
		}}

	for _, s := range []end{regular, pipe(false, false)} {
		for _, d := range []end{regular, appendOnly, pipe(false, false), pipe(true, true), socket} {
			t.Run(s.name+" to "+d.name, func(t *testing.T) {
				src := s.src(t)
				want := payload
				if s.name == "file" {
					if _, err := src.Seek(skip, io.SeekStart); err != nil {
						t.Fatal(err)
					}
					want = payload[skip:]
				}
				dst, written := d.dst(t)
				if _, err := dst.Write(head); err != nil {
					t.Fatal(err)
				}
				n, err := CopyFile(dst, src)
				if err != nil || n != int64(len(want)) {
					t.Fatalf("CopyFile = %d, %v; want %d, nil", n, err, len(want))
				}
				got := written()
				if !bytes.Equal(got, append(append([]byte{}, head...), want...)) {
					t.Fatalf("%d bytes arrived, want %d: header and payload not intact", len(got), len(head)+len(want))
				}
			})
		}
	}
}

// TestCopyFileBrokenPipeIsAnError: a destination pipe whose reader has gone
// fails the copy (the plain write reports EPIPE; on stdout Go turns it into
// SIGPIPE, as for any Go program).
func TestCopyFileBrokenPipeIsAnError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	defer w.Close()
	if _, err := CopyFile(w, src); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("CopyFile into a pipe with no reader: %v, want EPIPE", err)
	}
}

// TestCopyFileGrowsADestinationPipe: a packet written into the kernel's
// default 64 KiB pipe gets the 1 MiB pipe pipespool uses everywhere (growPipe
// only ever grows a pipe).
func TestCopyFileGrowsADestinationPipe(t *testing.T) {
	for _, tc := range []struct{ before, after int }{{64 << 10, 1 << 20}, {1 << 20, 1 << 20}} {
		p := filepath.Join(t.TempDir(), "src")
		if err := os.WriteFile(p, []byte("payload"), 0o600); err != nil {
			t.Fatal(err)
		}
		src, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, tc.before); err != nil {
			t.Fatalf("F_SETPIPE_SZ %d: %v", tc.before, err)
		}
		if _, err := CopyFile(w, src); err != nil {
			t.Fatal(err)
		}
		got, err := unix.FcntlInt(w.Fd(), unix.F_GETPIPE_SZ, 0)
		if err != nil || got != tc.after {
			t.Errorf("pipe of %d after CopyFile: %d (%v), want %d", tc.before, got, err, tc.after)
		}
		src.Close()
		r.Close()
		w.Close()
	}
}

// fileDst is a destination that is a new file opened with flags, and
// reads back what was written to it.
func fileDst(flags int) func(t *testing.T) (*os.File, func() []byte) {
	return func(t *testing.T) (*os.File, func() []byte) {
		p := filepath.Join(t.TempDir(), "dst")
		f, err := os.OpenFile(p, flags, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f, func() []byte {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}
