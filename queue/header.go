package queue

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Reading a header costs its honest size and no more, whatever it claims:
//
//   - the body is read into a buffer that grows with the bytes that
//     arrive, up to MaxHeaderLen, so a file claiming 16 MiB and holding 70
//     bytes costs 70 bytes;
//   - it is then walked once without keeping anything (seq, ctime, the
//     command type, and the counts and sizes of the params and
//     environment), so the scan of a queue, and the check of what a
//     command could be given, cost no allocation per param;
//   - params and environment are materialized only on demand, in one block
//     for all their bytes and one slice header per entry (at most
//     MaxHeaderEntries), or streamed one at a time (Each).

// ReadHeader reads a packet header from r, params and environment decoded,
// and leaves r positioned at the first payload byte: it reads exactly
// PrefixLen + H bytes and never more, so that an *os.File can then be
// handed to a command as its stdin. Any malformed input is a *PacketError.
func ReadHeader(r io.Reader) (*Header, error) {
	h, err := ReadHeaderLazy(r)
	if err != nil {
		return nil, err
	}
	if err := h.Decode(); err != nil {
		return nil, err
	}
	h.body = nil
	return h, nil
}

// ReadHeaderLazy reads and checks a packet header like ReadHeader, but
// leaves Params and Env nil: Size says what they would cost, Decode
// materializes them and Each streams them.
func ReadHeaderLazy(r io.Reader) (*Header, error) {
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	h, err := walkBody(body, nil)
	if err != nil {
		return nil, err
	}
	h.body = body
	return h, nil
}

// DecodeHeader decodes a packet header at the start of b and returns it with
// the offset of the payload.
func DecodeHeader(b []byte) (*Header, int, error) {
	if len(b) < PrefixLen {
		return nil, 0, &PacketError{Reason: fmt.Sprintf("shorter than the %d-byte header prefix", PrefixLen)}
	}
	bodyLen, bodyCRC, err := checkPrefix(b[:PrefixLen])
	if err != nil {
		return nil, 0, err
	}
	if bodyLen > uint64(len(b)-PrefixLen) {
		return nil, 0, &PacketError{Reason: fmt.Sprintf("header body truncated: %d of %d bytes", len(b)-PrefixLen, bodyLen)}
	}
	body := b[PrefixLen : PrefixLen+int(bodyLen)]
	if got := crc32.ChecksumIEEE(body); got != bodyCRC {
		return nil, 0, &PacketError{Reason: fmt.Sprintf("header body CRC mismatch: stored %08x, computed %08x", bodyCRC, got)}
	}
	h, err := DecodeBody(body)
	if err != nil {
		return nil, 0, err
	}
	return h, PrefixLen + int(bodyLen), nil
}

// DecodeBody decodes a MessagePack header body, params and environment
// included. Keys may come in any order; each of seq, ctime and cmd_type
// must be present once, and nothing may follow the map.
func DecodeBody(body []byte) (*Header, error) {
	h, err := walkBody(body, nil)
	if err != nil {
		return nil, err
	}
	h.body = body
	err = h.Decode()
	h.body = nil
	return h, err
}

// Decode fills Params and Env of a header read by ReadHeaderLazy: one
// allocation for all their bytes, one for the params' slice headers, one
// for the environment's. It does nothing when they are filled already.
func (h *Header) Decode() error {
	if h.body == nil || h.Params != nil || h.Env != nil {
		return nil
	}
	if h.Type != CmdCommand {
		return nil
	}
	flat := make([]byte, 0, h.Size.ParamBytes+h.Size.EnvBytes)
	params := make([][]byte, 0, h.Size.Params)
	env := make([]EnvVar, 0, h.Size.Env)
	keep := func(p []byte) []byte {
		flat = append(flat, p...)
		return flat[len(flat)-len(p) : len(flat) : len(flat)]
	}
	err := h.Each(func(_ int, p []byte) error {
		params = append(params, keep(p))
		return nil
	}, func(_ int, name, value []byte) error {
		env = append(env, EnvVar{Name: keep(name), Value: keep(value)})
		return nil
	})
	if err != nil {
		return err
	}
	h.Params, h.Env = params, env
	return nil
}

// Each calls param for every param and env for every environment entry of
// a header read by ReadHeaderLazy (or built in memory), in order, without
// keeping them: the slices are valid only during the call.
func (h *Header) Each(param func(i int, p []byte) error, env func(i int, name, value []byte) error) error {
	if h.body == nil {
		for i, p := range h.Params {
			if err := param(i, p); err != nil {
				return err
			}
		}
		for i, e := range h.Env {
			if err := env(i, e.Name, e.Value); err != nil {
				return err
			}
		}
		return nil
	}
	_, err := walkBody(h.body, &visitor{param: param, env: env})
	return err
}

// headerScanner reads the summaries of many headers one after the other,
// each in constant memory: the body is decoded as it streams by (through
// one reused buffer), never held whole.
type headerScanner struct {
	br *bufio.Reader
}

// summaryBuffer is the scanner's read buffer: keys and command types are
// far shorter, params and environment are only skipped.
const summaryBuffer = 64 << 10

// summary reads the header on r and returns its seq, ctime, type and Size,
// leaving r at the payload. Errors are those of ReadHeader, in the same
// order: a truncated body or a CRC mismatch is reported before a body of
// the wrong shape, so the body is read to its end before a shape error is
// returned.
func (s *headerScanner) summary(r io.Reader) (*Header, error) {
	bodyLen, bodyCRC, err := readPrefix(r)
	if err != nil {
		return nil, err
	}
	body := &countingReader{r: io.LimitReader(r, int64(bodyLen)), crc: crc32.NewIEEE()}
	if s.br == nil {
		s.br = bufio.NewReaderSize(body, summaryBuffer)
	} else {
		s.br.Reset(body)
	}
	h, shapeErr := walkStream(s.br, int(bodyLen))
	if _, err := s.br.WriteTo(io.Discard); err != nil && body.err == nil {
		body.err = err
	}
	switch {
	case body.err != nil:
		return nil, &PacketError{Reason: "reading header body", Err: body.err}
	case body.n != int64(bodyLen):
		return nil, &PacketError{Reason: fmt.Sprintf("header body truncated: %d of %d bytes", body.n, bodyLen)}
	case body.crc.Sum32() != bodyCRC:
		return nil, &PacketError{Reason: fmt.Sprintf("header body CRC mismatch: stored %08x, computed %08x", bodyCRC, body.crc.Sum32())}
	case shapeErr != nil:
		return nil, shapeErr
	}
	return h, nil
}

// countingReader counts and checksums what is read through it, and keeps
// the first error other than EOF.
type countingReader struct {
	r   io.Reader
	n   int64
	crc hash.Hash32
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	c.crc.Write(p[:n])
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return n, err
}

// readPrefix reads and checks the 30-byte prefix on r and returns the body
// length and CRC it announces.
func readPrefix(r io.Reader) (bodyLen uint64, bodyCRC uint32, err error) {
	var pre [PrefixLen]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return 0, 0, &PacketError{Reason: fmt.Sprintf("shorter than the %d-byte header prefix", PrefixLen)}
		}
		return 0, 0, &PacketError{Reason: "reading header prefix", Err: err}
	}
	return checkPrefix(pre[:])
}

// readBody reads the prefix from r and the body it announces (into a
// buffer grown as the bytes arrive, never beyond the length announced), and
// checks both CRCs. It reads nothing past the body.
func readBody(r io.Reader) ([]byte, error) {
	bodyLen, bodyCRC, err := readPrefix(r)
	if err != nil {
		return nil, err
	}
	n := int(bodyLen)
	var body []byte
	if left, ok := bytesLeft(r); ok {
		// A file says how much it holds: allocate that at once, and
		// no more (growing would cost half as much again, in copies).
		body = make([]byte, 0, min(n, left))
	}
	for len(body) < n {
		if len(body) == cap(body) {
			// Grow with the data rather than trusting the length: a
			// truncated file that claims 16 MiB costs only what it holds.
			grown := make([]byte, len(body), min(max(2*cap(body), 4096), n))
			copy(grown, body)
			body = grown
		}
		m, err := r.Read(body[len(body):min(cap(body), n)])
		body = body[:len(body)+m]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, &PacketError{Reason: "reading header body", Err: err}
		}
	}
	if len(body) != n {
		return nil, &PacketError{Reason: fmt.Sprintf("header body truncated: %d of %d bytes", len(body), n)}
	}
	if got := crc32.ChecksumIEEE(body); got != bodyCRC {
		return nil, &PacketError{Reason: fmt.Sprintf("header body CRC mismatch: stored %08x, computed %08x", bodyCRC, got)}
	}
	return body, nil
}

// bytesLeft returns how many bytes r holds from its offset to its end,
// when r is a regular file.
func bytesLeft(r io.Reader) (int, bool) {
	f, ok := r.(*os.File)
	if !ok {
		return 0, false
	}
	var st unix.Stat_t
	if unix.Fstat(rawFD(f), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0, false
	}
	off, err := f.Seek(0, io.SeekCurrent)
	if err != nil || off > st.Size {
		return 0, false
	}
	return int(st.Size - off), true
}

// checkPrefix validates the 30-byte prefix and returns the body length and
// CRC it announces.
func checkPrefix(pre []byte) (bodyLen uint64, bodyCRC uint32, err error) {
	if string(pre[:12]) != Magic {
		return 0, 0, &PacketError{Reason: "bad magic (does not start with " + Magic + ")"}
	}
	if v := binary.BigEndian.Uint16(pre[12:]); v != FormatVersion {
		return 0, 0, &PacketError{Reason: fmt.Sprintf("unknown format version %d (this reads version %d)", v, FormatVersion)}
	}
	if stored, got := binary.BigEndian.Uint32(pre[26:]), crc32.ChecksumIEEE(pre[:26]); stored != got {
		return 0, 0, &PacketError{Reason: fmt.Sprintf("header prefix CRC mismatch: stored %08x, computed %08x", stored, got)}
	}
	bodyLen = binary.BigEndian.Uint64(pre[14:])
	if bodyLen > MaxHeaderLen {
		return 0, 0, &PacketError{Reason: fmt.Sprintf("header length %d exceeds the limit of %d bytes (no fspl writes a longer one)", bodyLen, MaxHeaderLen)}
	}
	return bodyLen, binary.BigEndian.Uint32(pre[22:]), nil
}
