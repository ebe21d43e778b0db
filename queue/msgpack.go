package queue

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
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

// mpReader decodes MessagePack values from a byte slice, or from a stream
// of a known length (src). It never allocates more than the bytes it has: a
// length prefix larger than what remains is an error, not an allocation.
//
// A stream is read through a bufio.Reader: what take returns is then valid
// only until the next read, and is at most the reader's buffer; longer
// strings can only be skipped. That is all a summary of a header (seq,
// ctime, type, the sizes of params and environment) needs, in constant
// memory whatever the header's length.
type mpReader struct {
	b   []byte
	off int

	src *bufio.Reader // when set, the input instead of b
	n   int           // the input's length, when src is set
}

func (r *mpReader) remaining() int {
	if r.src != nil {
		return r.n - r.off
	}
	return len(r.b) - r.off
}

func (r *mpReader) byte1() (byte, error) {
	if r.remaining() <= 0 {
		return 0, errShort
	}
	if r.src != nil {
		c, err := r.src.ReadByte()
		if err != nil {
			return 0, errShort // the caller finds what ended the stream
		}
		r.off++
		return c, nil
	}
	c := r.b[r.off]
	r.off++
	return c, nil
}

// errLongString is a string too long to be held while reading a stream,
// where only a short one (a key, a command type) makes sense.
var errLongString = errors.New("string too long for its place")

func (r *mpReader) take(n int) ([]byte, error) {
	if n < 0 || n > r.remaining() {
		return nil, errShort
	}
	if r.src != nil {
		if n > r.src.Size() {
			return nil, errLongString
		}
		p, err := r.src.Peek(n)
		if err != nil {
			return nil, errShort
		}
		r.src.Discard(n)
		r.off += n
		return p, nil
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p, nil
}

// skip passes over n bytes.
func (r *mpReader) skip(n int) error {
	if n < 0 || n > r.remaining() {
		return errShort
	}
	if r.src != nil {
		if m, _ := r.src.Discard(n); m != n {
			return errShort
		}
	}
	r.off += n
	return nil
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
	if r.remaining() <= 0 {
		return 0, errShort
	}
	if r.src != nil {
		p, err := r.src.Peek(1)
		if err != nil {
			return 0, errShort
		}
		return p[0], nil
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
	n, err := r.strLen()
	if err != nil {
		return nil, err
	}
	return r.take(n)
}

// strLen reads the prefix of a str (or bin) and returns its length, checked
// against the bytes left.
func (r *mpReader) strLen() (int, error) {
	c, err := r.byte1()
	if err != nil {
		return 0, err
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
		return 0, fmt.Errorf("type byte 0x%02x where a string is expected", c)
	}
	if err != nil {
		return 0, err
	}
	if n > uint64(r.remaining()) {
		return 0, errShort
	}
	return int(n), nil
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

// byteString reads a byte string: an array of unsigned ints below 256
// (what fspl writes), or a bin/str. With dst nil it is checked and only
// its length returned. Otherwise a bin/str is returned aliasing the input,
// and an array of ints is decoded by appending to *dst and returned as the
// part appended.
func (r *mpReader) byteString(dst *[]byte) (p []byte, n int, err error) {
	c, err := r.peek()
	if err != nil {
		return nil, 0, err
	}
	if c&0xe0 == 0xa0 || c == 0xd9 || c == 0xda || c == 0xdb || c == 0xc4 || c == 0xc5 || c == 0xc6 {
		n, err := r.strLen()
		if err != nil {
			return nil, 0, err
		}
		if dst == nil {
			return nil, n, r.skip(n)
		}
		s, err := r.take(n)
		return s, n, err
	}
	n, err = r.arrayLen()
	if err != nil {
		return nil, 0, err
	}
	var b []byte
	start := 0
	if dst != nil {
		b = *dst
		start = len(b)
		b = slices.Grow(b, n)
	}
	for i := 0; i < n; {
		// Most elements are fixints or 0xcc NN: take those from what
		// is at hand in one loop, the rest one by one.
		if k := r.smallUints(n-i, &b, dst != nil); k > 0 {
			i += k
			continue
		}
		v, err := r.uint()
		if err != nil {
			return nil, 0, err
		}
		if v > 0xff {
			return nil, 0, fmt.Errorf("byte string element %d is %d, not a byte", i, v)
		}
		if dst != nil {
			b = append(b, byte(v))
		}
		i++
	}
	if dst == nil {
		return nil, n, nil
	}
	*dst = b
	return b[start:len(b):len(b)], n, nil
}

// smallUints consumes up to max unsigned ints below 256 encoded as a
// fixint or as 0xcc NN, from the bytes at hand (the slice, or what the
// stream has buffered), appending their values to *b when keep is set, and
// returns how many it took: 0 when the next one is not of that form or
// nothing is at hand.
func (r *mpReader) smallUints(max int, b *[]byte, keep bool) int {
	var p []byte
	if r.src != nil {
		if r.src.Buffered() == 0 {
			if _, err := r.src.Peek(1); err != nil {
				return 0
			}
		}
		p, _ = r.src.Peek(min(r.src.Buffered(), r.remaining()))
	} else {
		p = r.b[r.off:]
	}
	k, used := 0, 0
	for k < max && used < len(p) {
		c := p[used]
		switch {
		case c < 0x80:
			if keep {
				*b = append(*b, c)
			}
			used++
		case c == 0xcc && used+1 < len(p):
			if keep {
				*b = append(*b, p[used+1])
			}
			used += 2
		default:
			max = k // not of the fast form: stop here
			continue
		}
		k++
	}
	if r.src != nil {
		r.src.Discard(used)
	}
	r.off += used
	return k
}

// shortByteArrays consumes up to max byte strings encoded as fixarrays of
// fixints (up to 15 bytes below 0x80: most params and names), as many as
// are wholly at hand (the slice, or what the stream has buffered), calls
// each with the length of each, and returns how many it took: 0 when the
// next one is not of that form or not all at hand.
func (r *mpReader) shortByteArrays(max int, each func(n int)) int {
	var p []byte
	if r.src != nil {
		if r.src.Buffered() < 16 {
			r.src.Peek(min(16, r.remaining())) // fill
		}
		p, _ = r.src.Peek(min(r.src.Buffered(), r.remaining()))
	} else {
		p = r.b[r.off:]
	}
	k, used := 0, 0
outer:
	for k < max && used < len(p) {
		c := p[used]
		if c&0xf0 != 0x90 {
			break
		}
		n := int(c & 0x0f)
		if used+1+n > len(p) {
			break
		}
		for _, b := range p[used+1 : used+1+n] {
			if b >= 0x80 {
				break outer
			}
		}
		used += 1 + n
		k++
		each(n)
	}
	if r.src != nil {
		r.src.Discard(used)
	}
	r.off += used
	return k
}
