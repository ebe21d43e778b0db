package queue

import (
	"encoding/binary"
	"hash/crc32"
	"time"
)

// Magic is the first 12 bytes of every packet.
const Magic = "*FILESPOOLER"

// FormatVersion is the only packet format version fspl 1.2 writes and reads.
const FormatVersion = 1

// PrefixLen is the size of the fixed part before the header body: magic,
// version, body length, body CRC, prefix CRC.
const PrefixLen = 30

// MaxHeaderLen bounds the header body length a reader accepts, before
// anything is read. No fspl on Linux can write a longer one: its params and
// environment come from its own argument list and environment, which the
// kernel caps at 6 MiB together (a quarter of the stack limit, at most
// three quarters of 8 MiB), and a byte takes at most 2 bytes in the header.
// The body is held in memory while it is decoded, so this is also the
// largest buffer a packet can cost; below the bound a reader allocates
// only as many bytes as actually arrive.
const MaxHeaderLen = 16 << 20

// MaxHeaderEntries bounds the params and environment entries of one header
// together. fspl cannot write more: each of its own arguments and variables
// takes at least 9 bytes of the 6 MiB the kernel allows (699 050 at most).
// A decoder that keeps them costs a slice header (24 bytes) per entry, and
// a command can be given far fewer (each FSPL_PARAM_n costs at least 22
// bytes of its argument space), so the bound only stops a header of empty
// params, 16 million of them in 16 MiB, from costing gigabytes.
const MaxHeaderEntries = 1 << 20

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
	Params     [][]byte // only for CmdCommand; nil when only summarized
	Env        []EnvVar // only for CmdCommand; nil when only summarized
	// Size is what the params and environment add up to, known after
	// every decode, also one that did not keep them (Encode ignores it).
	Size HeaderSize

	body []byte // the body, kept by ReadHeaderLazy for Decode and Each
}

// HeaderSize is what a header's params and environment cost: everything
// needed to know, before they are allocated, whether a command could be
// given them (see ExecSpace).
type HeaderSize struct {
	Body       int // bytes of the header body
	Params     int // number of params
	Env        int // number of environment entries
	ParamBytes int // bytes of all params
	EnvBytes   int // bytes of all environment names and values
	// LongestParam is the longest param, in bytes; LongestParamVar the
	// longest FSPL_PARAM_<n>=<param> and LongestEnvVar the longest
	// FSPL_SET_<name>=<value>, the strings the command's environment gets.
	LongestParam, LongestParamVar, LongestEnvVar int
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
	return Frame(uint64(len(body)), body)
}

// Frame returns the 30-byte prefix announcing a header body of bodyLen
// bytes with body's CRC, followed by body. Encode frames a body with its
// own length; another length makes a packet that lies about it, as tests
// of hostile input need.
func Frame(bodyLen uint64, body []byte) []byte {
	b := make([]byte, PrefixLen, PrefixLen+len(body))
	copy(b, Magic)
	binary.BigEndian.PutUint16(b[12:], FormatVersion)
	binary.BigEndian.PutUint64(b[14:], bodyLen)
	binary.BigEndian.PutUint32(b[22:], crc32.ChecksumIEEE(body))
	binary.BigEndian.PutUint32(b[26:], crc32.ChecksumIEEE(b[:26]))
	return append(b, body...)
}
