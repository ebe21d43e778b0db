package filter

import (
	"io"
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// benchBackupInput is the input of the backup-chain benchmarks: the first
// 256 MiB of the file PIPESPOOL_BENCH_INPUT names (a tar of /usr is what
// a backup looks like), or 64 MiB of backupLike data.
func benchBackupInput(b *testing.B) []byte {
	b.Helper()
	path := os.Getenv("PIPESPOOL_BENCH_INPUT")
	if path == "" {
		return backupLike(64<<20, 8)
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	data := make([]byte, 256<<20)
	n, err := io.ReadFull(f, data)
	if err != nil && err != io.ErrUnexpectedEOF {
		b.Fatal(err)
	}
	return data[:n]
}

// BenchmarkBackupChain runs zstd-compress into openpgp-encrypt through a
// non-blocking kernel pipe of 1 MiB, as a pipeline joins two adjacent
// built-ins, and discards the output.
func BenchmarkBackupChain(b *testing.B) {
	keys := testKeys(b)
	input := benchBackupInput(b)
	comp := newFilter(b, "zstd-compress", map[string]any{"level": int64(3)}, "")
	enc := newFilter(b, "openpgp-encrypt", map[string]any{"recipients": []any{"recipient.pub.asc"}}, keys)
	b.SetBytes(int64(len(input)))
	for b.Loop() {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
			b.Fatal(err)
		}
		unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, 1<<20)
		r, w := os.NewFile(uintptr(p[0]), "r"), os.NewFile(uintptr(p[1]), "w")
		var wg sync.WaitGroup
		var cerr error
		wg.Go(func() {
			cerr = comp.Run(b.Context(), &onlyReader{input: input}, w)
			w.Close()
		})
		eerr := enc.Run(b.Context(), r, discard{})
		r.Close()
		wg.Wait()
		if cerr != nil || eerr != nil {
			b.Fatal(cerr, eerr)
		}
	}
}

// onlyReader hands out input in reads of at most 256 KiB, as a file does.
type onlyReader struct{ input []byte }

func (o *onlyReader) Read(p []byte) (int, error) {
	if len(o.input) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 256<<10)], o.input)
	o.input = o.input[n:]
	return n, nil
}
