package main

import (
	"bufio"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
)

// The harness's input data is pseudo-random but deterministic: the same
// seed gives the same bytes on every machine and every run, so two runs
// of the harness compress and encrypt the same streams.

// seedFor derives a ChaCha8 seed from a file's base name, so every file
// has its own stream, the same whatever the temporary directory.
func seedFor(name string) [32]byte {
	var seed [32]byte
	copy(seed[:], "pipespool-bench:"+name)
	return seed
}

// writeRandom writes size incompressible bytes to path.
func writeRandom(path string, size int64) error {
	r := rand.NewChaCha8(seedFor(filepath.Base(path)))
	buf := make([]byte, 1<<20)
	return writeFile(path, func(w *bufio.Writer) error {
		for left := size; left > 0; {
			n := int(min(left, int64(len(buf))))
			r.Read(buf[:n])
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			left -= int64(n)
		}
		return nil
	})
}

// mixBlock is the unit of the compressible stream: each block is one kind
// of content, so the stream alternates between them the way a tar or zfs
// send stream of a real system does.
const mixBlock = 64 << 10

// writeMix writes size bytes of a backup-like stream to path: about 55%
// of its blocks are log-like text lines (timestamps, host names, words
// from a Zipf-skewed vocabulary), 30% random bytes (already compressed or
// encrypted files), 15% fixed-size binary records that are mostly zeros
// (databases, sparse images). zstd -3 shrinks it to roughly 40%.
func writeMix(path string, size int64) error {
	r := rand.New(rand.NewChaCha8(seedFor(filepath.Base(path))))
	rnd := rand.NewChaCha8(seedFor(filepath.Base(path) + ":random"))
	vocab := make([][]byte, 4096)
	for i := range vocab {
		w := make([]byte, 2+r.IntN(9))
		for j := range w {
			w[j] = byte('a' + r.IntN(26))
		}
		vocab[i] = w
	}
	block := make([]byte, 0, mixBlock+256)
	var counter uint64
	return writeFile(path, func(w *bufio.Writer) error {
		for left := size; left > 0; {
			block = block[:0]
			switch k := r.IntN(100); {
			case k < 55:
				for len(block) < mixBlock {
					block = append(block, "2025-"...)
					block = appendPadded(block, 1+r.IntN(12))
					block = append(block, '-')
					block = appendPadded(block, 1+r.IntN(28))
					block = append(block, 'T')
					block = appendPadded(block, r.IntN(24))
					block = append(block, ':')
					block = appendPadded(block, r.IntN(60))
					block = append(block, ':')
					block = appendPadded(block, r.IntN(60))
					block = append(block, " host"...)
					block = strconv.AppendInt(block, int64(r.IntN(16)), 10)
					block = append(block, " svc["...)
					block = strconv.AppendInt(block, int64(1000+r.IntN(30000)), 10)
					block = append(block, "]:"...)
					for range 4 + r.IntN(12) {
						// Zipf-like: small indexes are much more frequent.
						i := r.IntN(64) * r.IntN(64)
						block = append(block, ' ')
						block = append(block, vocab[i]...)
					}
					block = append(block, '\n')
				}
			case k < 85:
				block = block[:mixBlock]
				rnd.Read(block)
			default:
				var rec [32]byte
				for len(block) < mixBlock {
					counter++
					clear(rec[:])
					binary.LittleEndian.PutUint64(rec[0:], counter)
					binary.LittleEndian.PutUint32(rec[8:], uint32(r.IntN(1000)))
					block = append(block, rec[:]...)
				}
			}
			n := int(min(left, int64(len(block))))
			if _, err := w.Write(block[:n]); err != nil {
				return err
			}
			left -= int64(n)
		}
		return nil
	})
}

func appendPadded(b []byte, n int) []byte {
	if n < 10 {
		b = append(b, '0')
	}
	return strconv.AppendInt(b, int64(n), 10)
}

// writeFile creates path through a temporary name, so an interrupted
// preparation never leaves a short file that a later run would reuse.
func writeFile(path string, fill func(w *bufio.Writer) error) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if err := fill(w); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// repeatFile writes n copies of src to path, copied by the kernel.
func repeatFile(path, src string, n int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := path + ".tmp"
	out, err := os.Create(tmp)
	if err != nil {
		return err
	}
	for range n {
		if _, err := in.Seek(0, io.SeekStart); err != nil {
			out.Close()
			return err
		}
		// (*os.File).ReadFrom uses copy_file_range between regular files.
		if _, err := out.ReadFrom(in); err != nil {
			out.Close()
			return err
		}
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
