package filter

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// zstdCLI runs zstd with args on input and returns its standard output.
func zstdCLI(t testing.TB, input []byte, args ...string) []byte {
	t.Helper()
	needTools(t, "zstd")
	cmd := exec.Command("zstd", args...)
	cmd.Stdin = bytes.NewReader(input)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("zstd %q: %v: %s", args, err, errb.String())
	}
	return out.Bytes()
}

// skippableFrame is a zstd skippable frame (magic 0x184D2A5?) carrying data:
// what pzstd and seekable-format writers put between frames.
func skippableFrame(data []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 0x184D2A53)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func TestZstdCompressReadByZstdCLI(t *testing.T) {
	input := backupLike(12<<20, 1)
	for _, with := range []map[string]any{
		{},
		{"level": int64(1), "concurrency": int64(1)},
		{"level": int64(19), "concurrency": int64(2)},
		{"level": "better"},
	} {
		f := newFilter(t, "zstd-compress", with, "")
		compressed, err := runFilter(t, f, bytes.NewReader(input))
		if err != nil {
			t.Fatalf("zstd-compress %v: %v", with, err)
		}
		if len(compressed) >= len(input) {
			t.Errorf("zstd-compress %v: %d bytes in, %d out: no compression", with, len(input), len(compressed))
		}
		if got := zstdCLI(t, compressed, "-d", "-c"); sum(got) != sum(input) {
			t.Fatalf("zstd -d of zstd-compress %v output: sha256 %s, want %s", with, sum(got), sum(input))
		}
	}
}

func TestZstdCompressMultiFrameReadByZstdCLI(t *testing.T) {
	// Two runs of the built-in, concatenated, as a resumed or appended
	// backup is: zstd -d reads frame after frame.
	a, b := backupLike(3<<20, 2), backupLike(5<<20, 3)
	f := newFilter(t, "zstd-compress", map[string]any{"concurrency": int64(2)}, "")
	ca, err := runFilter(t, f, bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	cb, err := runFilter(t, f, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	got := zstdCLI(t, append(ca, cb...), "-d", "-c")
	if want := append(append([]byte(nil), a...), b...); sum(got) != sum(want) {
		t.Fatalf("zstd -d of two frames: sha256 %s, want %s", sum(got), sum(want))
	}
}

func TestZstdDecompressReadsZstdCLI(t *testing.T) {
	input := backupLike(16<<20, 4)
	t0 := zstdCLI(t, input, "-T0", "-3", "-c")
	// --long=27 through a pipe keeps its 128 MiB window: the default
	// max_memory must accept it.
	long := zstdCLI(t, input, "-T0", "--long=27", "-c")
	partA, partB := zstdCLI(t, input[:7<<20], "-c", "-1"), zstdCLI(t, input[7<<20:], "-c", "-19", "-T2")
	var concat []byte
	concat = append(concat, skippableFrame([]byte("pipespool test"))...)
	concat = append(concat, partA...)
	concat = append(concat, skippableFrame(make([]byte, 1000))...)
	concat = append(concat, partB...)
	concat = append(concat, skippableFrame(nil)...)
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"zstd -T0", t0},
		{"zstd --long=27", long},
		{"concatenated frames with skippable frames", concat},
	} {
		f := newFilter(t, "zstd-decompress", nil, "")
		got, err := runFilter(t, f, bytes.NewReader(tc.data))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if sum(got) != sum(input) {
			t.Fatalf("%s: sha256 %s, want %s", tc.name, sum(got), sum(input))
		}
	}
}

func TestZstdDecompressErrors(t *testing.T) {
	input := backupLike(4<<20, 5)
	good := zstdCLI(t, input, "-3", "-c")
	longWindow := zstdCLI(t, input, "--long=26", "-c")
	for _, tc := range []struct {
		name string
		with map[string]any
		data []byte
		want []string
	}{
		{"truncated", nil, good[:len(good)-1000], []string{"unexpected end of stream", "truncated"}},
		{"truncated header", nil, good[:3], []string{"unexpected end of stream"}},
		{"not zstd", nil, []byte("this is plain text, not a zstd stream\n"), []string{"not a zstd frame"}},
		{"garbage after frame", nil, append(append([]byte(nil), good...), "garbage"...), []string{"not a zstd frame"}},
		{"empty", nil, nil, []string{"empty input", "not a zstd frame"}},
		{"window over max_memory", map[string]any{"max_memory": "16MiB"}, longWindow, []string{"max_memory", "16777216"}},
		{"corrupt", nil, corruptMiddle(good), []string{"zstd:"}},
	} {
		f := newFilter(t, "zstd-decompress", tc.with, "")
		_, err := runFilter(t, f, bytes.NewReader(tc.data))
		if err == nil {
			t.Fatalf("%s: no error", tc.name)
		}
		wantErr(t, err, tc.want...)
	}
}

func corruptMiddle(b []byte) []byte {
	c := append([]byte(nil), b...)
	for i := len(c) / 2; i < len(c)/2+64; i++ {
		c[i] ^= 0x5a
	}
	return c
}

func TestZstdParams(t *testing.T) {
	for _, tc := range []struct {
		name, key, msg string
		with           map[string]any
	}{
		{"zstd-compress", "level", "out of range", map[string]any{"level": int64(0)}},
		{"zstd-compress", "level", "out of range", map[string]any{"level": int64(23)}},
		{"zstd-compress", "level", "not a level", map[string]any{"level": "warp"}},
		{"zstd-compress", "level", "must be an integer 1-22 or a name", map[string]any{"level": true}},
		{"zstd-compress", "concurrency", "must be an integer", map[string]any{"concurrency": "2"}},
		{"zstd-compress", "concurrency", "out of range", map[string]any{"concurrency": int64(0)}},
		{"zstd-decompress", "max_memory", "not a size", map[string]any{"max_memory": "12 parsecs"}},
		{"zstd-decompress", "max_memory", "too small", map[string]any{"max_memory": int64(4096)}},
	} {
		_, err := buildFilter(tc.name, tc.with, "")
		wantParamError(t, err, tc.key, tc.msg)
	}
	for _, with := range []map[string]any{
		{"level": "fastest"}, {"level": "DEFAULT"}, {"level": "best"}, {"level": int64(22)},
	} {
		if _, err := buildFilter("zstd-compress", with, ""); err != nil {
			t.Errorf("zstd-compress %v: %v", with, err)
		}
	}
	if _, err := buildFilter("zstd-decompress", map[string]any{"max_memory": "1GiB"}, ""); err != nil {
		t.Errorf("max_memory 1GiB: %v", err)
	}
}

// TestZstdRoundTripOnFiles checks the stage as it runs in a pipeline whose
// ends are regular files.
func TestZstdRoundTripOnFiles(t *testing.T) {
	dir := t.TempDir()
	input := backupLike(2<<20, 6)
	src := filepath.Join(dir, "in")
	os.WriteFile(src, input, 0o600)
	in, _ := os.Open(src)
	defer in.Close()
	var compressed bytes.Buffer
	if err := newFilter(t, "zstd-compress", nil, "").Run(t.Context(), in, &compressed); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := newFilter(t, "zstd-decompress", nil, "").Run(t.Context(), &compressed, &out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), input) {
		t.Fatal("round trip changed the bytes")
	}
}

// TestZstdDecompressGarbageNeverPanics feeds mutated and truncated streams.
func TestZstdDecompressGarbageNeverPanics(t *testing.T) {
	good := zstdCLI(t, backupLike(256<<10, 7), "-c")
	for i := range 200 {
		data := append([]byte(nil), good...)
		rng := randomBytes(16, uint64(i))
		switch i % 3 {
		case 0:
			data = data[:int(rng[0])*len(data)/256]
		case 1:
			for k := 0; k < 8; k++ {
				data[(int(rng[k])<<8|int(rng[k+8]))%len(data)] ^= rng[k] | 1
			}
		case 2:
			data = randomBytes(int(rng[0])*64, uint64(i))
		}
		runFilter(t, newFilter(t, "zstd-decompress", nil, ""), bytes.NewReader(data))
	}
}

func FuzzZstdDecompress(f *testing.F) {
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0x58, 0x1, 0, 0})
	f.Add(skippableFrame([]byte("x")))
	f.Fuzz(func(t *testing.T, data []byte) {
		dec := newFilter(t, "zstd-decompress", nil, "")
		dec.Run(t.Context(), bytes.NewReader(data), io.Discard)
	})
}

func BenchmarkZstdDecompress(b *testing.B) {
	input := backupLike(64<<20, 8)
	compressed := zstdCLI(b, input, "-3", "-T0", "-c")
	f := newFilter(b, "zstd-decompress", nil, "")
	b.SetBytes(int64(len(input)))
	for b.Loop() {
		if err := f.Run(b.Context(), bytes.NewReader(compressed), io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkZstdCompress(b *testing.B) {
	input := backupLike(64<<20, 8)
	f := newFilter(b, "zstd-compress", nil, "")
	b.SetBytes(int64(len(input)))
	for b.Loop() {
		if err := f.Run(b.Context(), bytes.NewReader(input), io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

// A compressor whose input fails mid-stream must not leave a stream that
// decodes as complete, wherever the input stops (on a block boundary of
// the encoder, 128 KiB, on one of a frame, 8 MiB, or not): zstd -d and
// zstd-decompress must fail on it. With a concurrency above 1 the frames
// before the failure are whole; the output ends with a truncated frame.
func TestZstdCompressFailedStreamNeverDecodes(t *testing.T) {
	const mib = 1 << 20
	input := backupLike(8*mib+12345, 4)
	for _, conc := range []int64{1, 2, 4} {
		for _, cut := range []int{128 << 10, 8 * mib, 8*mib + 12345} {
			f := newFilter(t, "zstd-compress", map[string]any{"concurrency": conc}, "")
			var out bytes.Buffer
			err := f.Run(t.Context(), &pieceReader{data: input[:cut], err: errors.New("disk on fire")}, &out)
			if err == nil || !strings.Contains(err.Error(), "disk on fire") {
				t.Fatalf("concurrency %d, cut at %d: error %v, want the input's", conc, cut, err)
			}
			needTools(t, "zstd")
			cmd := exec.Command("zstd", "-d", "-c")
			cmd.Stdin = bytes.NewReader(out.Bytes())
			var got bytes.Buffer
			cmd.Stdout = &got
			if cmd.Run() == nil {
				t.Fatalf("concurrency %d, cut at %d: zstd -d read the %d bytes of a failed stream as complete (%d bytes out)", conc, cut, out.Len(), got.Len())
			}
			if dec, err := runFilter(t, newFilter(t, "zstd-decompress", nil, ""), bytes.NewReader(out.Bytes())); err == nil {
				t.Fatalf("concurrency %d, cut at %d: zstd-decompress read the %d bytes of a failed stream as complete (%d bytes out)", conc, cut, out.Len(), len(dec))
			}
		}
	}
}

// zstdFrames counts the frames of a zstd stream as `zstd -lv` sees them.
func zstdFrames(t *testing.T, data []byte) int {
	t.Helper()
	path := filepath.Join(t.TempDir(), "out.zst")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("zstd", "-lv", path).CombinedOutput()
	if err != nil {
		t.Fatalf("zstd -lv: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if n, ok := strings.CutPrefix(line, "# Zstandard Frames: "); ok {
			frames, err := strconv.Atoi(strings.TrimSpace(n))
			if err != nil {
				t.Fatalf("zstd -lv: %q: %v", line, err)
			}
			return frames
		}
	}
	t.Fatalf("zstd -lv printed no frame count: %s", out)
	return 0
}

// TestZstdCompressFramesDecode: with a concurrency above 1 the output is
// independent frames, one per frameSize bytes of input; real zstd -d and
// zstd-decompress give back the input byte for byte, whatever the number
// of workers and however the input ends against the frames.
func TestZstdCompressFramesDecode(t *testing.T) {
	needTools(t, "zstd")
	const mib = 1 << 20
	for _, tc := range []struct {
		conc      int64
		frameSize int // 0: the default
		size      int
	}{
		{2, 0, 3*zstdFrameSize + 12345},
		{3, mib, 9 * mib},
		{4, mib, 10*mib + 1},
		{2, mib, mib - 1},
		{2, mib, 0},
	} {
		f, err := newZstdCompress(map[string]any{"concurrency": tc.conc}, "")
		if err != nil {
			t.Fatal(err)
		}
		if tc.frameSize != 0 {
			f.(*zstdCompress).frameSize = tc.frameSize
		}
		frameSize := f.(*zstdCompress).frameSize
		input := backupLike(tc.size, uint64(tc.size))[:tc.size]
		compressed, err := runFilter(t, f, bytes.NewReader(input))
		if err != nil {
			t.Fatalf("concurrency %d, %d bytes: %v", tc.conc, tc.size, err)
		}
		want := max(1, (tc.size+frameSize-1)/frameSize)
		if got := zstdFrames(t, compressed); got != want {
			t.Errorf("concurrency %d, %d bytes in frames of %d: %d frames, want %d", tc.conc, tc.size, frameSize, got, want)
		}
		if got := zstdCLI(t, compressed, "-d", "-c"); !bytes.Equal(got, input) {
			t.Fatalf("concurrency %d, %d bytes: zstd -d gave %d bytes, not the input", tc.conc, tc.size, len(got))
		}
		got, err := runFilter(t, newFilter(t, "zstd-decompress", nil, ""), bytes.NewReader(compressed))
		if err != nil || !bytes.Equal(got, input) {
			t.Fatalf("concurrency %d, %d bytes: zstd-decompress gave %d bytes, %v; want the input", tc.conc, tc.size, len(got), err)
		}
	}
}

// endlessReader never ends: only a stop or a failure ends a filter that
// reads it.
type endlessReader struct{}

func (endlessReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(i * 31)
	}
	return len(p), nil
}

// TestZstdCompressFramesOutputFails: a consumer that goes away ends the
// compressor even when its input never ends, with the broken pipe as the
// error (TestMain checks that no worker is left).
func TestZstdCompressFramesOutputFails(t *testing.T) {
	for _, left := range []int{0, 1, 3} {
		f, err := newZstdCompress(map[string]any{"concurrency": int64(2)}, "")
		if err != nil {
			t.Fatal(err)
		}
		f.(*zstdCompress).frameSize = 1 << 20
		done := make(chan error, 1)
		go func() { done <- f.Run(t.Context(), endlessReader{}, &failingWriter{left: left}) }()
		select {
		case err := <-done:
			if !errors.Is(err, syscall.EPIPE) || !strings.Contains(err.Error(), "writing output") {
				t.Errorf("output failing after %d frames: %v, want writing output: broken pipe", left, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("output failing after %d frames: still running after 30 s", left)
		}
	}
}

// TestZstdCompressFramesStop: cancelling the context and closing the
// files, as stopping a stage does, ends the compressor promptly whether it
// waits for input or for its consumer (TestMain checks that no worker is
// left).
func TestZstdCompressFramesStop(t *testing.T) {
	const mib = 1 << 20
	for _, blocked := range []string{"input", "output"} {
		f, err := newZstdCompress(map[string]any{"concurrency": int64(2)}, "")
		if err != nil {
			t.Fatal(err)
		}
		f.(*zstdCompress).frameSize = mib
		inR, inW, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		outR, outW, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- f.Run(ctx, inR, outW) }()
		// Two and a half frames of input that does not compress; the
		// input stays open.
		fed := make(chan struct{})
		go func() {
			defer close(fed)
			inW.Write(randomBytes(5*mib/2, 9))
		}()
		drained := make(chan struct{})
		if blocked == "input" {
			// Once the output of two whole frames (more than 2 MiB) came
			// out, the compressor waits for the rest of the third.
			got := make(chan struct{})
			go func() {
				defer close(drained)
				buf := make([]byte, mib)
				var n int64
				two := got
				for {
					k, err := outR.Read(buf)
					if n += int64(k); n >= 2*mib && two != nil {
						close(two)
						two = nil
					}
					if err != nil {
						return
					}
				}
			}()
			<-got
		} else {
			// Nobody reads the output but this one byte: the first frame
			// (over 1 MiB) cannot fit in the pipe, its writer is blocked.
			close(drained)
			if _, err := io.ReadFull(outR, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
		}
		cancel()
		inR.Close()
		outW.Close()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("blocked on %s, stopped: no error", blocked)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("blocked on %s, stopped: still running after 10 s", blocked)
		}
		inW.Close()
		<-fed
		<-drained
		outR.Close()
	}
}
