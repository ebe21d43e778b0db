// Package seipd is the bulk codec of the OpenPGP built-ins: the
// Symmetrically Encrypted Integrity Protected Data packet, version 1
// (RFC 4880 5.13, RFC 9580 5.13.1), with AES: CFB with a zero IV over a
// random block and its last two bytes repeated, the data, and a
// Modification Detection Code packet holding the SHA-1 of all that. It
// also writes packets of unknown length in partial bodies (RFC 4880
// 4.2.2.4), as the encrypter needs for the packets it streams.
//
// Everything else of OpenPGP (keys, session keys, signatures, the packets
// inside the encrypted data) is github.com/ProtonMail/go-crypto's. This
// packet is done here because it is the bulk of the work: the library's
// OpenPGP CFB handles one byte per loop iteration, and its SHA-1 runs on
// the same goroutine as the cipher. Here whole blocks are XORed a word at
// a time, decryption runs on several goroutines (CFB decryption of a block
// needs only the ciphertext block before it), and the SHA-1 of the MDC runs
// beside the cipher.
package seipd

import (
	"crypto/sha1"
	"encoding/binary"
	"errors"
	"io"
)

// ChunkSize is the size of each partial body the writers write (a power of
// two, as partial lengths must be) and of the pieces the reader decrypts in
// parallel (a multiple of the AES block size, so that every piece after the
// first starts on a block boundary). 256 KiB is what a pipe usually holds,
// and small enough to stay in the L2 cache of common CPUs.
const ChunkSize = 256 << 10

// OpenPGP packet tags (RFC 4880 4.3) of the packets written here and by the
// encrypter.
const (
	TagLiteral = 11
	TagSEIPD   = 18
	TagMDC     = 19
)

// mdcPacketSize is the MDC packet: its tag, its length and the SHA-1.
const mdcPacketSize = 2 + sha1.Size

var (
	// ErrWrongKey is the quick check of the random prefix failing: the
	// session key is not this packet's (RFC 4880 5.13; with a wrong key the
	// two repeated bytes match once in 65536).
	ErrWrongKey = errors.New("seipd: the session key does not decrypt this packet")
	// ErrIntegrity is a modification detection code that does not match
	// the data: the packet was modified or is corrupt.
	ErrIntegrity = errors.New("seipd: integrity check failed (MDC mismatch)")
)

// PartialWriter writes one packet of unknown length in partial bodies of
// chunk bytes (a power of two of at least 512, RFC 4880 4.2.2.4), the last
// body with a definite length.
//
// Each body goes out in one Write, its header in front: the buffer keeps
// room for the longest header before the body, so that a bufio.Writer
// underneath (empty between bodies) passes the body through without
// copying it.
type PartialWriter struct {
	w      io.Writer
	tag    byte
	header bool
	buf    []byte // maxHeader bytes of room, then the body
	n      int    // body bytes in buf
}

// maxHeader is the longest header in front of a body: the tag, then a
// five-byte definite length.
const maxHeader = 6

// NewPartialWriter starts a packet with the given tag on w.
func NewPartialWriter(w io.Writer, tag byte, chunk int) *PartialWriter {
	return &PartialWriter{w: w, tag: tag, buf: make([]byte, maxHeader+chunk)}
}

// Write buffers p, writing each full chunk that more data follows as a
// partial body.
func (p *PartialWriter) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		space, err := p.Space()
		if err != nil {
			return n, err
		}
		k := copy(space, b)
		p.n += k
		b = b[k:]
		n += k
	}
	return n, nil
}

// Space returns the free part of the body being filled, for a caller that
// writes into it and then calls Commit. When the body is full it is
// written out first as a partial body: Space must be called only when
// more data follows.
func (p *PartialWriter) Space() ([]byte, error) {
	if p.n == len(p.buf)-maxHeader {
		// Only a full chunk with more to come is a partial body: the
		// last one must carry a definite length.
		if err := p.flush(true); err != nil {
			return nil, err
		}
	}
	return p.buf[maxHeader+p.n:], nil
}

// Avail returns the free part of the body being filled, empty when the
// body is full (Space then writes it out); unlike Space it never writes.
func (p *PartialWriter) Avail() []byte { return p.buf[maxHeader+p.n:] }

// Commit adds the first k bytes of the last Space or Avail to the body.
func (p *PartialWriter) Commit(k int) { p.n += k }

func (p *PartialWriter) flush(partial bool) error {
	var h [maxHeader]byte
	hdr := h[:0]
	if !p.header {
		hdr = append(hdr, 0xc0|p.tag) // new-format packet tag
		p.header = true
	}
	if partial {
		shift := 0
		for 1<<shift < p.n {
			shift++
		}
		hdr = append(hdr, 0xe0|byte(shift))
	} else {
		hdr = appendLength(hdr, p.n)
	}
	start := maxHeader - len(hdr)
	copy(p.buf[start:], hdr)
	if _, err := p.w.Write(p.buf[start : maxHeader+p.n]); err != nil {
		return err
	}
	p.n = 0
	return nil
}

// Close writes the last body, with its definite length. It does not close
// the writer underneath.
func (p *PartialWriter) Close() error { return p.flush(false) }

// appendLength appends a new-format body length (RFC 4880 4.2.2).
func appendLength(b []byte, n int) []byte {
	switch {
	case n < 192:
		return append(b, byte(n))
	case n < 8384:
		n -= 192
		return append(b, byte(n>>8)+192, byte(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, 0xff), uint32(n))
	}
}
