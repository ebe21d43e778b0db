package queue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"
)

// Magic is the first 12 bytes of every packet.
const Magic = "*FILESPOOLER"

// FormatVersion is the only packet format version fspl 1.2 writes and reads.
const FormatVersion = 1

// PrefixLen is the size of the fixed part before the header body: magic,
// version, body length, body CRC, prefix CRC.
const PrefixLen = 30

// MaxHeaderLen bounds the header body length a reader accepts. fspl headers
// are under 100 bytes unless params or env are large; 16 MiB leaves room for
// any sane command line and environment (Linux caps argv+envp at a quarter of
// the stack limit, 2 MiB by default, and a byte can take 2 bytes here) while
// making a hostile length (2^63) an error before anything is allocated. Even
// below the bound a reader allocates only as many bytes as actually arrive.
const MaxHeaderLen = 16 << 20

// CmdType is what a packet asks the processor to do.
type CmdType int

const (
	// CmdCommand runs the processor's command with the packet's params,
	// env and payload.
	CmdCommand CmdType = iota
	// CmdNOP always succeeds and runs nothing.
	CmdNOP
	// CmdFail always fails and runs nothing.
	CmdFail
)

func (t CmdType) String() string {
	switch t {
	case CmdNOP:
		return "NOP"
	case CmdFail:
		return "Fail"
	}
	return "Command"
}

// EnvVar is one packet environment entry. Name has the FSPL_SET_ prefix
// removed; it is set again as FSPL_SET_<Name> for the command.
type EnvVar struct {
	Name, Value []byte
}

// Header is the decoded header of a packet.
type Header struct {
	Seq        uint64
	CTimeSecs  uint64 // seconds since the Unix epoch
	CTimeNanos uint64 // nanoseconds within the second
	Type       CmdType
	Params     [][]byte // only for CmdCommand
	Env        []EnvVar // only for CmdCommand
}

// CTime returns the creation time of the packet.
func (h *Header) CTime() time.Time {
	return time.Unix(int64(h.CTimeSecs), int64(h.CTimeNanos))
}

// PacketError is input that is not a valid fspl packet.
type PacketError struct {
	Reason string
	Err    error // underlying I/O error, if any
}

func (e *PacketError) Error() string {
	if e.Err != nil {
		return "not a valid filespooler packet: " + e.Reason + ": " + e.Err.Error()
	}
	return "not a valid filespooler packet: " + e.Reason
}

func (e *PacketError) Unwrap() error { return e.Err }

// ExitCode is 2: bad input.
func (e *PacketError) ExitCode() int { return 2 }

// EncodeBody returns the MessagePack header body of h, byte for byte as fspl
// writes it.
func EncodeBody(h *Header) []byte {
	b := make([]byte, 0, 64)
	b = appendMapLen(b, 3)
	b = appendStr(b, "seq")
	b = appendUint(b, h.Seq)
	b = appendStr(b, "ctime")
	b = appendArrayLen(b, 2)
	b = appendUint(b, h.CTimeSecs)
	b = appendUint(b, h.CTimeNanos)
	b = appendStr(b, "cmd_type")
	switch h.Type {
	case CmdNOP, CmdFail:
		b = appendStr(b, h.Type.String())
	default:
		b = appendMapLen(b, 1)
		b = appendStr(b, "Command")
		b = appendMapLen(b, 2)
		b = appendStr(b, "params")
		b = appendArrayLen(b, len(h.Params))
		for _, p := range h.Params {
			b = appendBytes(b, p)
		}
		b = appendStr(b, "env")
		b = appendArrayLen(b, len(h.Env))
		for _, e := range h.Env {
			b = appendArrayLen(b, 2)
			b = appendBytes(b, e.Name)
			b = appendBytes(b, e.Value)
		}
	}
	return b
}

// Encode returns the whole packet header of h (prefix and body); the payload
// follows it unframed.
func Encode(h *Header) []byte {
	body := EncodeBody(h)
	b := make([]byte, PrefixLen, PrefixLen+len(body))
	copy(b, Magic)
	binary.BigEndian.PutUint16(b[12:], FormatVersion)
	binary.BigEndian.PutUint64(b[14:], uint64(len(body)))
	binary.BigEndian.PutUint32(b[22:], crc32.ChecksumIEEE(body))
	binary.BigEndian.PutUint32(b[26:], crc32.ChecksumIEEE(b[:26]))
	return append(b, body...)
}

// ReadHeader reads a packet header from r and leaves r positioned at the
// first payload byte: it reads exactly PrefixLen + H bytes and never more,
// so that an *os.File can then be handed to a command as its stdin. It
// allocates no more than the bytes that actually arrive, whatever length
// the prefix claims. Any malformed input is a *PacketError.
func ReadHeader(r io.Reader) (*Header, error) {
	var pre [PrefixLen]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, &PacketError{Reason: fmt.Sprintf("shorter than the %d-byte header prefix", PrefixLen)}
		}
		return nil, &PacketError{Reason: "reading header prefix", Err: err}
	}
	bodyLen, bodyCRC, err := checkPrefix(pre[:])
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	// Grow with the data rather than trusting bodyLen: a truncated file
	// that claims 16 MiB costs only what it holds.
	buf.Grow(int(min(bodyLen, 4096)))
	n, err := buf.ReadFrom(io.LimitReader(r, int64(bodyLen)))
	if err != nil {
		return nil, &PacketError{Reason: "reading header body", Err: err}
	}
	if uint64(n) != bodyLen {
		return nil, &PacketError{Reason: fmt.Sprintf("header body truncated: %d of %d bytes", n, bodyLen)}
	}
	if got := crc32.ChecksumIEEE(buf.Bytes()); got != bodyCRC {
		return nil, &PacketError{Reason: fmt.Sprintf("header body CRC mismatch: stored %08x, computed %08x", bodyCRC, got)}
	}
	h, err := DecodeBody(buf.Bytes())
	if err != nil {
		return nil, err
	}
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
		return 0, 0, &PacketError{Reason: fmt.Sprintf("header length %d exceeds the limit of %d bytes", bodyLen, MaxHeaderLen)}
	}
	return bodyLen, binary.BigEndian.Uint32(pre[22:]), nil
}

// DecodeBody decodes a MessagePack header body. Keys may come in any order;
// each of seq, ctime and cmd_type must be present once, and nothing may
// follow the map.
func DecodeBody(body []byte) (*Header, error) {
	h, err := decodeBody(&mpReader{b: body})
	if err != nil {
		var pe *PacketError
		if errors.As(err, &pe) {
			return nil, err
		}
		return nil, &PacketError{Reason: "header body: " + err.Error()}
	}
	return h, nil
}

func decodeBody(r *mpReader) (*Header, error) {
	n, err := r.mapLen()
	if err != nil {
		return nil, err
	}
	h := &Header{}
	var seen [3]bool
	for i := 0; i < n; i++ {
		k, err := r.str()
		if err != nil {
			return nil, fmt.Errorf("key: %w", err)
		}
		var idx int
		switch string(k) {
		case "seq":
			idx = 0
			h.Seq, err = r.uint()
		case "ctime":
			idx = 1
			err = decodeCTime(r, h)
		case "cmd_type":
			idx = 2
			err = decodeCmdType(r, h)
		default:
			return nil, fmt.Errorf("unknown key %q", k)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		if seen[idx] {
			return nil, fmt.Errorf("key %q twice", k)
		}
		seen[idx] = true
	}
	for i, name := range []string{"seq", "ctime", "cmd_type"} {
		if !seen[i] {
			return nil, fmt.Errorf("missing key %q", name)
		}
	}
	if r.remaining() != 0 {
		return nil, fmt.Errorf("%d bytes after the header map", r.remaining())
	}
	return h, nil
}

func decodeCTime(r *mpReader, h *Header) error {
	n, err := r.arrayLen()
	if err != nil {
		return err
	}
	if n != 2 {
		return fmt.Errorf("array of %d elements, want [secs, nanos]", n)
	}
	if h.CTimeSecs, err = r.uint(); err != nil {
		return err
	}
	if h.CTimeNanos, err = r.uint(); err != nil {
		return err
	}
	if h.CTimeNanos >= 1e9 || h.CTimeSecs > 1<<62 {
		return fmt.Errorf("time out of range: %d s %d ns", h.CTimeSecs, h.CTimeNanos)
	}
	return nil
}

func decodeCmdType(r *mpReader, h *Header) error {
	c, err := r.peek()
	if err != nil {
		return err
	}
	if c&0xf0 != 0x80 && c != 0xde && c != 0xdf {
		s, err := r.str()
		if err != nil {
			return err
		}
		switch string(s) {
		case "NOP":
			h.Type = CmdNOP
		case "Fail":
			h.Type = CmdFail
		default:
			return fmt.Errorf("unknown command type %q", s)
		}
		return nil
	}
	n, err := r.mapLen()
	if err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("map of %d entries, want {Command: ...}", n)
	}
	k, err := r.str()
	if err != nil {
		return err
	}
	if string(k) != "Command" {
		return fmt.Errorf("unknown command type %q", k)
	}
	h.Type = CmdCommand
	if n, err = r.mapLen(); err != nil {
		return err
	}
	var seen [2]bool
	for i := 0; i < n; i++ {
		k, err := r.str()
		if err != nil {
			return err
		}
		switch string(k) {
		case "params":
			if seen[0] {
				return errors.New(`key "params" twice`)
			}
			seen[0] = true
			m, err := r.arrayLen()
			if err != nil {
				return fmt.Errorf("params: %w", err)
			}
			h.Params = make([][]byte, 0, m)
			for j := 0; j < m; j++ {
				p, err := r.bytes()
				if err != nil {
					return fmt.Errorf("params[%d]: %w", j, err)
				}
				h.Params = append(h.Params, p)
			}
		case "env":
			if seen[1] {
				return errors.New(`key "env" twice`)
			}
			seen[1] = true
			m, err := r.arrayLen()
			if err != nil {
				return fmt.Errorf("env: %w", err)
			}
			h.Env = make([]EnvVar, 0, m)
			for j := 0; j < m; j++ {
				if l, err := r.arrayLen(); err != nil || l != 2 {
					if err == nil {
						err = fmt.Errorf("array of %d elements, want [name, value]", l)
					}
					return fmt.Errorf("env[%d]: %w", j, err)
				}
				name, err := r.bytes()
				if err != nil {
					return fmt.Errorf("env[%d] name: %w", j, err)
				}
				val, err := r.bytes()
				if err != nil {
					return fmt.Errorf("env[%d] value: %w", j, err)
				}
				h.Env = append(h.Env, EnvVar{Name: name, Value: val})
			}
		default:
			return fmt.Errorf("unknown key %q in Command", k)
		}
	}
	if !seen[0] || !seen[1] {
		return errors.New("Command needs both params and env")
	}
	return nil
}
