// Package pgpcraft builds OpenPGP packets byte by byte, for tests that need
// messages no honest encoder writes: a passphrase packet asking for a huge
// KDF, thousands of session-key packets, encrypted data no key opens. It is
// used by tests only.
package pgpcraft

import "encoding/binary"

// Packet frames body as a new-format packet of the given tag with a
// definite length.
func Packet(tag byte, body []byte) []byte {
	p := []byte{0xc0 | tag}
	switch n := len(body); {
	case n < 192:
		p = append(p, byte(n))
	case n < 8384:
		p = append(p, byte((n-192)>>8)+192, byte(n-192))
	default:
		p = binary.BigEndian.AppendUint32(append(p, 0xff), uint32(n))
	}
	return append(p, body...)
}

// IteratedS2K is an iterated and salted SHA-256 S2K specifier with the
// count byte c (65011712 bytes hashed for 255, 1024 for 0).
func IteratedS2K(c byte) []byte {
	return append([]byte{3, 8, 1, 2, 3, 4, 5, 6, 7, 8}, c)
}

// Argon2S2K is an Argon2 S2K specifier: passes, parallelism, and memory of
// 2^exp KiB.
func Argon2S2K(passes, parallelism, exp byte) []byte {
	return append(append([]byte{4}, make([]byte, 16)...), passes, parallelism, exp)
}

// SKESK is a version 4 passphrase packet (tag 3) for AES-256 whose S2K
// output is the session key.
func SKESK(s2kSpec []byte) []byte {
	return Packet(3, append([]byte{4, 9}, s2kSpec...))
}

// PKESK is a version 3 public-key packet (tag 1) to keyID: ECDH, with junk
// key material no key opens.
func PKESK(keyID uint64) []byte {
	body := binary.BigEndian.AppendUint64([]byte{3}, keyID)
	body = append(body, 18)                  // ECDH
	body = append(body, 0x01, 0x07, 0x40)    // MPI of 263 bits: 0x40 and 32 bytes
	body = append(body, make([]byte, 32)...) // the ephemeral point
	body = append(body, 8)                   // the wrapped key's length
	return Packet(1, append(body, make([]byte, 8)...))
}

// JunkSEIPD is an integrity-protected encrypted data packet (tag 18) that
// no key opens.
func JunkSEIPD() []byte { return Packet(18, append([]byte{1}, make([]byte, 64)...)) }
