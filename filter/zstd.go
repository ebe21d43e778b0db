package filter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"

	"github.com/klauspost/compress/zstd"

	"github.com/pipespool/pipespool/units"
)

// The zstd built-ins use github.com/klauspost/compress/zstd, which writes
// standard frames that `zstd -d` reads and reads what `zstd` writes:
// several frames one after the other (`zstd -T0` on large inputs,
// `cat a.zst b.zst`) and skippable frames included.

func init() {
	Register("zstd-compress", newZstdCompress)
	Register("zstd-decompress", newZstdDecompress)
}

// defaultZstdMaxMemory bounds the decoder's window when max_memory is not
// given. zstd's own command line refuses windows above 128 MiB unless told
// --memory, so what `zstd` wrote without --long=28 or more decodes.
const defaultZstdMaxMemory = 128 << 20

// defaultZstdConcurrency caps the encoder's default parallelism: each
// worker costs about 20-25 MiB (its frame's input, output and history), and
// three keep the backup chain under 96 MiB on a machine of many cores.
const defaultZstdConcurrency = 3

// zstdMaxWindow is the largest window the zstd format allows (3.75 TiB);
// a max_memory above it is clamped, not refused.
const zstdMaxWindow = uint64(1<<41 + 7*(1<<38))

// zstdCompress is the filter of zstd-compress.
type zstdCompress struct {
	level       zstd.EncoderLevel
	concurrency int
	frameSize   int // input bytes of a frame when concurrency > 1
}

// newZstdCompress validates level and concurrency.
//
// level is zstd's 1..22 mapped onto the four levels klauspost implements
// (zstd.EncoderLevelFromZstd): 1-2 fastest (≈ zstd -1), 3-5 default
// (≈ zstd -3), 6-9 better (≈ zstd -7), 10-22 best (≈ zstd -11); or one of
// those names. The default is 3, as with zstd.
func newZstdCompress(with map[string]any, baseDir string) (Filter, error) {
	p, err := newWithParams(with, baseDir, "level", "concurrency")
	if err != nil {
		return nil, err
	}
	// Each worker holds its own frames and history: capped by default so
	// that memory stays under 96 MiB on a big machine; a user who wants
	// more says so.
	f := &zstdCompress{level: zstd.SpeedDefault, concurrency: min(runtime.GOMAXPROCS(0), defaultZstdConcurrency), frameSize: zstdFrameSize}
	if v, ok := p.m["level"]; ok {
		switch l := v.(type) {
		case string:
			ok, lv := zstd.EncoderLevelFromString(l)
			if !ok {
				return nil, &ParamError{Key: "level", Msg: fmt.Sprintf("%q is not a level: use 1-22 or fastest, default, better, best", l)}
			}
			f.level = lv
		case int64, int:
			n, _, _ := p.integer("level")
			if n < 1 || n > 22 {
				return nil, &ParamError{Key: "level", Msg: fmt.Sprintf("%d is out of range 1-22", n)}
			}
			f.level = zstd.EncoderLevelFromZstd(int(n))
		default:
			return nil, &ParamError{Key: "level", Msg: "must be an integer 1-22 or a name (fastest, default, better, best), not " + typeName(v)}
		}
	}
	if n, ok, err := p.integer("concurrency"); err != nil {
		return nil, err
	} else if ok {
		if n < 1 || n > 256 {
			return nil, &ParamError{Key: "concurrency", Msg: fmt.Sprintf("%d is out of range 1-256", n)}
		}
		f.concurrency = int(n)
	}
	return f, nil
}

// Run implements Filter: independent frames compressed in parallel when
// the concurrency is above 1, one stream otherwise.
func (f *zstdCompress) Run(ctx context.Context, r io.Reader, w io.Writer) error {
	if f.concurrency > 1 {
		return f.runFrames(ctx, r, w)
	}
	in, out := &ioSide{ctx: ctx, r: r}, &ioSide{ctx: ctx, w: w}
	enc, err := zstd.NewWriter(out,
		zstd.WithEncoderLevel(f.level),
		zstd.WithEncoderConcurrency(1),
		// An empty input still gets a frame, as `zstd` writes one: without
		// it the output is 0 bytes, which zstd-decompress (and `zstd -d`)
		// reject, so an empty stream did not survive a round trip
		// (TestRegressionZstdEmptyInputRoundTrip).
		zstd.WithZeroFrames(true))
	if err != nil {
		return fmt.Errorf("zstd: %w", err)
	}
	// Not enc.ReadFrom: on a read error it stores the error in the
	// encoder's state without waiting for its block goroutines, which may
	// store a write error there at the same time (a data race the race
	// detector found in klauspost/compress v1.20.3, encoder.go:480 against
	// :411, when a stopped stage's input and output fail together). Write
	// synchronises with those goroutines; on an error Reset waits for them
	// and no final frame is written, so a failed stream never looks
	// complete.
	buf := make([]byte, copyBufSize)
	for {
		n, rerr := in.Read(buf)
		if n > 0 {
			if _, werr := enc.Write(buf[:n]); werr != nil {
				enc.Reset(io.Discard)
				return sideError(in, out, fmt.Errorf("zstd: compressing: %w", werr))
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			enc.Reset(io.Discard)
			return sideError(in, out, fmt.Errorf("zstd: compressing: %w", rerr))
		}
	}
	if err := enc.Close(); err != nil {
		return sideError(in, out, fmt.Errorf("zstd: finishing the frame: %w", err))
	}
	return nil
}

// zstdDecompress is the filter of zstd-decompress.
type zstdDecompress struct {
	maxMemory uint64
}

// newZstdDecompress validates max_memory, the largest window the decoder
// accepts (and so, roughly, the memory it may use).
func newZstdDecompress(with map[string]any, baseDir string) (Filter, error) {
	p, err := newWithParams(with, baseDir, "max_memory")
	if err != nil {
		return nil, err
	}
	f := &zstdDecompress{maxMemory: defaultZstdMaxMemory}
	if v, ok := p.m["max_memory"]; ok {
		n, err := units.ParseSize(v)
		if err != nil {
			return nil, &ParamError{Key: "max_memory", Msg: err.Error()}
		}
		// zstd's smallest window is 1 KiB; anything under 1 MiB is a typo
		// that would refuse what every zstd writes.
		if n < 1<<20 {
			return nil, &ParamError{Key: "max_memory", Msg: fmt.Sprintf("%d bytes is too small: at least 1MiB", n)}
		}
		f.maxMemory = min(uint64(n), zstdMaxWindow)
	}
	return f, nil
}

// Run implements Filter.
func (f *zstdDecompress) Run(ctx context.Context, r io.Reader, w io.Writer) error {
	read := &readCounter{r: r}
	in, out := &ioSide{ctx: ctx, r: read}, &ioSide{ctx: ctx, w: w}
	dec, err := zstd.NewReader(newBufReader(in),
		zstd.WithDecoderMaxWindow(f.maxMemory),
		zstd.WithDecoderMaxMemory(f.maxMemory),
		// Synchronous: no goroutines between reading, decoding and
		// writing. The asynchronous decoder hands every block across
		// three goroutines; with 2 blocks in flight it took 1.45 s and
		// 1.8 s of CPU for 1 GiB where this takes 1.21 s and 1.2 s
		// (zstdcat 1.16 s). More blocks in flight (16: 0.73 s, 1.4 s of
		// CPU, +11 MiB) win alone on an idle machine, but in a chain on
		// 2 cores (gpg -d -> zstd-decompress) they lost to this by 7%.
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(false))
	if err != nil {
		return fmt.Errorf("zstd: %w", err)
	}
	defer dec.Close()
	// WriteTo hands out decoded blocks without another copy. When the
	// output fails, the rest is still decoded (and discarded) so that the
	// frames' checksums are checked: corrupt input is then this stage's
	// own failure, not the broken pipe of a consumer that died of it.
	sink := &drainingWriter{w: out}
	if _, err := dec.WriteTo(sink); err != nil || in.err != nil || sink.err != nil {
		if err != nil {
			err = f.explain(err)
		}
		return decoderResult(in, sink, err)
	}
	// The input's length, not the output's: a valid frame of an empty
	// stream decodes to 0 bytes and is no error
	// (TestRegressionZstdEmptyInputRoundTrip).
	if read.n == 0 {
		// An empty input is no zstd stream: `zstd -d` refuses it too, and
		// a backup that decompresses to nothing is worth stopping for.
		return errors.New("zstd: empty input: not a zstd frame")
	}
	return nil
}

// readCounter counts the bytes read through it.
type readCounter struct {
	r io.Reader
	n int64
}

func (c *readCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// explain turns the decoder's errors into what a user can act on.
func (f *zstdDecompress) explain(err error) error {
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("zstd: unexpected end of stream: the input is truncated (%w)", err)
	case errors.Is(err, zstd.ErrMagicMismatch):
		return fmt.Errorf("zstd: not a zstd frame: the input (or what follows the last frame) is not zstd data (%w)", err)
	case errors.Is(err, zstd.ErrWindowSizeExceeded), errors.Is(err, zstd.ErrDecoderSizeExceeded):
		return fmt.Errorf("zstd: the stream needs a window larger than max_memory (%d bytes); raise max_memory if you trust it (%w)", f.maxMemory, err)
	case errors.Is(err, zstd.ErrCRCMismatch):
		return fmt.Errorf("zstd: checksum mismatch: the input is corrupt (%w)", err)
	}
	return fmt.Errorf("zstd: corrupt input: %w", err)
}
