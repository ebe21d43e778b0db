package seipd

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"fmt"
	"hash"
	"io"
	"sync"
)

// Writer encrypts into a SEIPD v1 packet: CFB with a zero IV over a random
// block, its last two bytes again, the data and an MDC packet holding the
// SHA-1 of all that.
//
// CFB encryption is sequential, but the SHA-1 of the plaintext is not tied
// to it: a hasher goroutine hashes each large write while the caller's
// goroutine encrypts it.
type Writer struct {
	pkt *PartialWriter
	cfb cfbEncrypter
	mdc hash.Hash

	hashReq  chan []byte   // to the hasher: hash this, then answer on hashDone
	hashDone chan struct{} // the hasher is done with the last request
	hasher   sync.WaitGroup
	stopped  bool
}

// hashInline is the size under which a write is hashed by the caller: a
// packet header is not worth two goroutine switches.
const hashInline = 4 << 10

// NewWriter starts a SEIPD v1 packet on w, encrypted with the AES key (16,
// 24 or 32 bytes), and writes its version byte and random prefix. The
// caller must Close the Writer, or Stop it on an error path.
func NewWriter(w io.Writer, key []byte) (*Writer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("seipd: %w", err)
	}
	prefix := make([]byte, block.BlockSize())
	if _, err := rand.Read(prefix); err != nil {
		return nil, fmt.Errorf("seipd: random prefix: %w", err)
	}
	return newWriter(w, block, prefix)
}

// newWriter is NewWriter with the random block given (the known-answer
// tests give gpg's).
func newWriter(w io.Writer, block cipher.Block, random []byte) (*Writer, error) {
	s := &Writer{
		pkt:      NewPartialWriter(w, TagSEIPD, ChunkSize),
		cfb:      cfbEncrypter{b: block},
		mdc:      sha1.New(),
		hashReq:  make(chan []byte),
		hashDone: make(chan struct{}),
	}
	block.Encrypt(s.cfb.out[:], s.cfb.out[:]) // the keystream of the zero IV
	s.hasher.Add(1)
	go func() {
		defer s.hasher.Done()
		for p := range s.hashReq {
			s.mdc.Write(p)
			s.hashDone <- struct{}{}
		}
	}()
	if _, err := s.pkt.Write([]byte{1}); err != nil { // packet version
		s.Stop()
		return nil, err
	}
	bs := block.BlockSize()
	prefix := make([]byte, bs+2)
	copy(prefix, random[:bs])
	copy(prefix[bs:], random[bs-2:bs])
	if _, err := s.Write(prefix); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// Stop ends the hasher goroutine without finishing the packet; it may be
// called more than once, and after Close.
func (s *Writer) Stop() {
	if !s.stopped {
		s.stopped = true
		close(s.hashReq)
		s.hasher.Wait()
	}
}

// Write encrypts p into the packet.
func (s *Writer) Write(p []byte) (int, error) {
	if len(p) < hashInline {
		s.mdc.Write(p)
	} else {
		s.hashReq <- p
		// p is only read by both goroutines until the hasher answers.
		defer func() { <-s.hashDone }()
	}
	// Encrypted straight into the body being filled: no copy.
	n := 0
	for len(p) > 0 {
		space, err := s.pkt.Space()
		if err != nil {
			return n, err
		}
		k := min(len(p), len(space))
		s.cfb.XORKeyStream(space[:k], p[:k])
		s.pkt.Commit(k)
		n += k
		p = p[k:]
	}
	return n, nil
}

// Close appends the MDC packet and ends the packet; it does not close the
// writer underneath. It stops the hasher, as Stop does on error paths.
func (s *Writer) Close() error {
	s.Stop()
	trailer := []byte{0xc0 | TagMDC, sha1.Size}
	s.mdc.Write(trailer)
	trailer = s.mdc.Sum(trailer)
	enc := make([]byte, len(trailer))
	s.cfb.XORKeyStream(enc, trailer)
	if _, err := s.pkt.Write(enc); err != nil {
		return err
	}
	return s.pkt.Close()
}

// cfbEncrypter is CFB encryption (RFC 4880 13.9 without resync, which for
// SEIPD is plain CFB with a zero IV). It does what crypto/cipher's CFB
// does, without its copy of every ciphertext block into the register.
//
// CFB encryption is a chain: each block's keystream is the encryption of
// the ciphertext block before it, so its cost is the latency of one AES
// call per block. A block is XORed by subtle.XORBytes, which stores it
// with one 16-byte store: the AES call then loads it straight from the
// store. Two 8-byte stores (the XOR done as two words) cannot be
// forwarded to that 16-byte load, which waits for them to reach the
// cache: measured 26-27 ns a block against 23.6-24.7 ns this way (AES-256,
// AMD EPYC with AES-NI).
type cfbEncrypter struct {
	b    cipher.Block
	out  [aes.BlockSize]byte // keystream: encryption of the last ciphertext block
	next [aes.BlockSize]byte // the ciphertext block being built
	used int                 // bytes of out consumed
}

func (x *cfbEncrypter) XORKeyStream(dst, src []byte) {
	const bs = aes.BlockSize
	for len(src) > 0 {
		if x.used == 0 && len(src) >= bs {
			for len(src) >= bs {
				subtle.XORBytes(dst[:bs], src[:bs], x.out[:])
				x.b.Encrypt(x.out[:], dst[:bs])
				src, dst = src[bs:], dst[bs:]
			}
			continue
		}
		c := src[0] ^ x.out[x.used]
		dst[0] = c
		x.next[x.used] = c
		x.used++
		src, dst = src[1:], dst[1:]
		if x.used == bs {
			x.b.Encrypt(x.out[:], x.next[:])
			x.used = 0
		}
	}
}
