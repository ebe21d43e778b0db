package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// This file is the small subset of MessagePack that fspl's header body uses,
// written by hand so that the bytes are exactly those of fspl (which
// serializes with Rust's rmp-serde): unsigned ints in their smallest form,
// fixstr keys, arrays and maps with their smallest length prefix, and byte
// strings as arrays of unsigned ints (serde's default for Vec<u8>).

// appendUint appends v in its smallest MessagePack encoding, as
// rmp::encode::write_uint does.
func appendUint(b []byte, v uint64) []byte {
	switch {
	case v < 0x80:
		return append(b, byte(v))
	case v <= 0xff:
		return append(b, 0xcc, byte(v))
	case v <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(v))
	case v <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(v))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xcf), v)
	}
}

// appendStr appends s as a MessagePack str.
func appendStr(b []byte, s string) []byte {
	n := len(s)
	switch {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n <= 0xff:
		b = append(b, 0xd9, byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, 0xda), uint16(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xdb), uint32(n))
	}
	return append(b, s...)
}

// appendArrayLen appends the prefix of an array of n elements.
func appendArrayLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x90|byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, 0xdc), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, 0xdd), uint32(n))
	}
}

// appendMapLen appends the prefix of a map of n pairs.
func appendMapLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x80|byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, 0xde), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, 0xdf), uint32(n))
	}
}

// appendBytes appends p the way serde serializes a Vec<u8>: an array of
// unsigned ints, one per byte.
func appendBytes(b []byte, p []byte) []byte {
	b = appendArrayLen(b, len(p))
	for _, c := range p {
		b = appendUint(b, uint64(c))
	}
	return b
}

// errShort is a body that ends in the middle of a value.
var errShort = errors.New("header body ends in the middle of a value")

// mpReader decodes MessagePack values from a byte slice. It never allocates
// more than the bytes it has: a length prefix larger than what remains is an
// error, not an allocation.
type mpReader struct {
	b   []byte
	off int
}

func (r *mpReader) remaining() int { return len(r.b) - r.off }

func (r *mpReader) byte1() (byte, error) {
	if r.off >= len(r.b) {
		return 0, errShort
	}
	c := r.b[r.off]
	r.off++
	return c, nil
}

func (r *mpReader) take(n int) ([]byte, error) {
	if n < 0 || n > r.remaining() {
		return nil, errShort
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p, nil
}

func (r *mpReader) beN(n int) (uint64, error) {
	p, err := r.take(n)
	if err != nil {
		return 0, err
	}
	var v uint64
	for _, c := range p {
		v = v<<8 | uint64(c)
	}
	return v, nil
}

// peek returns the next type byte without consuming it.
func (r *mpReader) peek() (byte, error) {
	if r.off >= len(r.b) {
		return 0, errShort
	}
	return r.b[r.off], nil
}

// uint reads an unsigned integer in any of its encodings (readers accept
// more than fspl writes, as rmp-serde does), and also non-negative signed
// ints.
func (r *mpReader) uint() (uint64, error) {
	c, err := r.byte1()
	if err != nil {
		return 0, err
	}
	switch {
	case c < 0x80:
		return uint64(c), nil
	case c == 0xcc:
		return r.beN(1)
	case c == 0xcd:
		return r.beN(2)
	case c == 0xce:
		return r.beN(4)
	case c == 0xcf:
		return r.beN(8)
	case c >= 0xd0 && c <= 0xd3:
		v, err := r.beN(1 << (c - 0xd0))
		if err != nil {
			return 0, err
		}
		bits := uint(8) << (c - 0xd0)
		if bits < 64 && v>>(bits-1) != 0 || bits == 64 && v>>63 != 0 {
			return 0, fmt.Errorf("negative integer where an unsigned one is expected")
		}
		return v, nil
	}
	return 0, fmt.Errorf("type byte 0x%02x where an unsigned integer is expected", c)
}

// str reads a str (or bin) and returns its bytes, aliasing the input.
func (r *mpReader) str() ([]byte, error) {
	c, err := r.byte1()
	if err != nil {
		return nil, err
	}
	var n uint64
	switch {
	case c&0xe0 == 0xa0:
		n = uint64(c & 0x1f)
	case c == 0xd9 || c == 0xc4:
		n, err = r.beN(1)
	case c == 0xda || c == 0xc5:
		n, err = r.beN(2)
	case c == 0xdb || c == 0xc6:
		n, err = r.beN(4)
	default:
		return nil, fmt.Errorf("type byte 0x%02x where a string is expected", c)
	}
	if err != nil {
		return nil, err
	}
	if n > uint64(r.remaining()) {
		return nil, errShort
	}
	return r.take(int(n))
}

// arrayLen reads an array prefix. The length is checked against the bytes
// left (every element takes at least one byte), so callers may use it as a
// capacity.
func (r *mpReader) arrayLen() (int, error) {
	c, err := r.byte1()
	if err != nil {
		return 0, err
	}
	var n uint64
	switch {
	case c&0xf0 == 0x90:
		n = uint64(c & 0x0f)
	case c == 0xdc:
		n, err = r.beN(2)
	case c == 0xdd:
		n, err = r.beN(4)
	default:
		return 0, fmt.Errorf("type byte 0x%02x where an array is expected", c)
	}
	if err != nil {
		return 0, err
	}
	if n > uint64(r.remaining()) {
		return 0, errShort
	}
	return int(n), nil
}

// mapLen reads a map prefix, checked like arrayLen (a pair takes at least
// two bytes).
func (r *mpReader) mapLen() (int, error) {
	c, err := r.byte1()
	if err != nil {
		return 0, err
	}
	var n uint64
	switch {
	case c&0xf0 == 0x80:
		n = uint64(c & 0x0f)
	case c == 0xde:
		n, err = r.beN(2)
	case c == 0xdf:
		n, err = r.beN(4)
	default:
		return 0, fmt.Errorf("type byte 0x%02x where a map is expected", c)
	}
	if err != nil {
		return 0, err
	}
	if n > uint64(r.remaining())/2 {
		return 0, errShort
	}
	return int(n), nil
}

// bytes reads a byte string: an array of unsigned ints below 256 (what fspl
// writes), or a bin/str.
func (r *mpReader) bytes() ([]byte, error) {
	c, err := r.peek()
	if err != nil {
		return nil, err
	}
	if c&0xe0 == 0xa0 || c == 0xd9 || c == 0xda || c == 0xdb || c == 0xc4 || c == 0xc5 || c == 0xc6 {
		s, err := r.str()
		if err != nil {
			return nil, err
		}
		return append([]byte(nil), s...), nil
	}
	n, err := r.arrayLen()
	if err != nil {
		return nil, err
	}
	p := make([]byte, 0, n)
	for i := 0; i < n; i++ {
		v, err := r.uint()
		if err != nil {
			return nil, err
		}
		if v > 0xff {
			return nil, fmt.Errorf("byte string element %d is %d, not a byte", i, v)
		}
		p = append(p, byte(v))
	}
	return p, nil
}
