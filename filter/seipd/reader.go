package seipd

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha1"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sync"
)

// Reader decrypts a SEIPD v1 packet body (after its version byte)
// with AES in CFB mode, hashing the plaintext for the MDC. The last 22
// bytes of plaintext are the MDC packet, not data: the reader holds them
// back until the end of the packet, where Read returns io.EOF, or the
// integrity error when the hash does not match.
//
// CFB decryption of a block needs only the ciphertext block before it, so
// chunks of the stream are decrypted by worker goroutines in parallel
// (one AES block at a time is latency-bound, and the CPU can run several
// at once), a hasher goroutine runs SHA-1 over them in order, and the
// caller's goroutine reads ahead, parses and writes: neither SHA-1 nor AES
// adds to the critical path. The helpers only compute on memory handed to
// them and never block on I/O, so Stop can always end and wait for them.
type Reader struct {
	src    io.Reader
	block  cipher.Block
	mdc    hash.Hash
	buf    []byte // buf[start:end] is decrypted, not yet returned
	start  int
	end    int
	srcEOF bool  // src is read to its end (all its chunks are queued)
	err    error // sticky: io.EOF once verified, or the failure

	first   cipher.Stream // decrypts the first chunk, which starts mid-block
	prevCT  [aes.BlockSize]byte
	queue   []*cfbChunk // in stream order
	free    []*cfbChunk
	jobs    chan *cfbChunk // to the decrypting workers
	hashq   chan *cfbChunk // to the hasher, in stream order
	helpers sync.WaitGroup
	stopped bool
}

// cfbChunk is a piece of ciphertext that a worker decrypts in place and
// the hasher then hashes.
type cfbChunk struct {
	buf       []byte
	n         int
	iv        [aes.BlockSize]byte
	decrypted chan struct{}
	hashed    chan struct{}
}

const (
	// cfbChunkSize is a multiple of the block size, so that every chunk
	// after the first starts on a block boundary.
	cfbChunkSize = ChunkSize
	// cfbDepth chunks are in flight: enough for two workers to always
	// have one while the reader goroutine reads and hashes another.
	cfbDepth = 4
)

// NewReader reads the random prefix of a SEIPD v1 packet from src (the
// packet's body after its version byte) and checks it with the AES key:
// ErrWrongKey when the key is not the packet's, io.ErrUnexpectedEOF when
// src ends first. The caller must Close or Stop the Reader.
func NewReader(src io.Reader, key []byte) (*Reader, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("seipd: %w", err)
	}
	bs := block.BlockSize()
	s := &Reader{
		src:   src,
		block: block,
		mdc:   sha1.New(),
		buf:   make([]byte, cfbChunkSize+mdcPacketSize),
		first: cipher.NewCFBDecrypter(block, make([]byte, bs)),
	}
	prefix := make([]byte, bs+2)
	if _, err := io.ReadFull(src, prefix); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	ct := append([]byte(nil), prefix...)
	s.first.XORKeyStream(prefix, prefix)
	// The quick check (RFC 4880 5.13): the random block's last two bytes
	// repeat. With the wrong session key they almost never do.
	if prefix[bs-2] != prefix[bs] || prefix[bs-1] != prefix[bs+1] {
		return nil, ErrWrongKey
	}
	s.mdc.Write(prefix)
	copy(s.prevCT[:], ct[len(ct)-bs:])

	workers := min(runtime.GOMAXPROCS(0), 4)
	s.jobs = make(chan *cfbChunk, cfbDepth)
	s.hashq = make(chan *cfbChunk, cfbDepth)
	for range workers {
		s.helpers.Add(1)
		go func() {
			defer s.helpers.Done()
			ks := make([]byte, cfbChunkSize)
			for c := range s.jobs {
				cfbDecrypt(s.block, c.iv, c.buf[:c.n], ks)
				close(c.decrypted)
			}
		}()
	}
	s.helpers.Add(1)
	go func() {
		defer s.helpers.Done()
		s.hashChunks()
	}()
	return s, nil
}

// hashChunks hashes the plaintext for the MDC, in stream order: all of it
// but its last 20 bytes, the MDC's hash value itself, which is held back
// in carry until the next chunk shows it was not the end.
func (s *Reader) hashChunks() {
	var carryBuf [2 * sha1.Size]byte
	carry := carryBuf[:0]
	for c := range s.hashq {
		<-c.decrypted
		d := c.buf[:c.n]
		if len(d) >= sha1.Size {
			s.mdc.Write(carry)
			s.mdc.Write(d[:len(d)-sha1.Size])
			carry = append(carry[:0], d[len(d)-sha1.Size:]...)
		} else {
			carry = append(carry, d...)
			if k := len(carry) - sha1.Size; k > 0 {
				s.mdc.Write(carry[:k])
				carry = append(carry[:0], carry[k:]...)
			}
		}
		close(c.hashed)
	}
}

// Read returns the decrypted data, without the MDC packet at its end:
// io.EOF once the MDC matched, ErrIntegrity when it does not,
// io.ErrUnexpectedEOF when the packet is truncated, or src's error.
func (s *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for s.end-s.start <= mdcPacketSize && s.err == nil {
		if s.srcEOF && len(s.queue) == 0 {
			s.err = s.verify()
			break
		}
		s.fill()
	}
	avail := s.end - s.start - mdcPacketSize
	if avail <= 0 {
		return 0, s.err
	}
	n := copy(p, s.buf[s.start:s.start+avail])
	s.start += n
	return n, nil
}

// fill keeps cfbDepth chunks in flight and appends the oldest, once
// decrypted, to what is buffered.
func (s *Reader) fill() {
	for len(s.queue) < cfbDepth && !s.srcEOF {
		c := s.chunk()
		want := c.buf
		if s.first != nil {
			// The prefix took a block and 2 bytes: 2 bytes short of a
			// full chunk, and the next chunks start on block boundaries.
			want = c.buf[:len(c.buf)-2]
		}
		n, err := readFullOrEOF(s.src, want)
		c.n = n
		switch {
		case err == io.EOF:
			s.srcEOF = true
		case err != nil:
			s.err = err
			return
		}
		if n == 0 {
			s.free = append(s.free, c)
			break
		}
		// The next chunk's IV is this chunk's last ciphertext block:
		// taken before the chunk is decrypted in place.
		c.iv = s.prevCT
		if n >= aes.BlockSize {
			copy(s.prevCT[:], c.buf[n-aes.BlockSize:n])
		}
		if s.first != nil {
			// The first chunk starts 2 bytes into a block (after the
			// prefix): the stream that decrypted the prefix goes on.
			s.first.XORKeyStream(c.buf[:n], c.buf[:n])
			s.first = nil
			close(c.decrypted)
		} else {
			s.jobs <- c // never blocks: at most cfbDepth chunks are queued
		}
		s.hashq <- c
		s.queue = append(s.queue, c)
		if n < len(want) {
			// Only the last chunk is short: the next chunk's IV would
			// be wrong, and there is none.
			s.srcEOF = true
		}
	}
	if len(s.queue) == 0 {
		return
	}
	c := s.queue[0]
	<-c.hashed
	s.queue = s.queue[1:]
	if s.start > 0 {
		s.end = copy(s.buf, s.buf[s.start:s.end])
		s.start = 0
	}
	if need := s.end + c.n; need > len(s.buf) {
		s.buf = append(s.buf[:s.end], make([]byte, need-s.end)...)
	}
	s.end += copy(s.buf[s.end:], c.buf[:c.n])
	s.free = append(s.free, c)
}

// cfbDecrypt decrypts buf in place in CFB mode, from a block boundary,
// with iv the ciphertext block before it; ks is scratch of len(buf). All
// of the keystream is computed first, from the untouched ciphertext, and
// XORed in one pass: cheaper than crypto/cipher's CFB, which works
// block by block with a copy and a short XOR each.
func cfbDecrypt(block cipher.Block, iv [aes.BlockSize]byte, buf, ks []byte) {
	const bs = aes.BlockSize
	n := len(buf)
	if n == 0 {
		return
	}
	block.Encrypt(ks[:bs], iv[:])
	full := n / bs * bs
	for off := bs; off < full; off += bs {
		block.Encrypt(ks[off:off+bs], buf[off-bs:off])
	}
	// The last, partial block's keystream is the encryption of the last
	// full ciphertext block (with less than a block in all, the IV's,
	// computed above).
	if full < n && full > 0 {
		var tail [bs]byte
		block.Encrypt(tail[:], buf[full-bs:full])
		copy(ks[full:n], tail[:])
	}
	subtle.XORBytes(buf, buf, ks[:n])
}

// chunk returns a chunk buffer to fill, reusing decrypted ones.
func (s *Reader) chunk() *cfbChunk {
	var c *cfbChunk
	if k := len(s.free); k > 0 {
		c, s.free = s.free[k-1], s.free[:k-1]
	} else {
		c = &cfbChunk{buf: make([]byte, cfbChunkSize)}
	}
	c.n, c.decrypted, c.hashed = 0, make(chan struct{}), make(chan struct{})
	return c
}

// readFullOrEOF reads until buf is full or src ends: err is io.EOF at the
// clean end of src (n may be > 0), another error (io.ErrUnexpectedEOF for
// a truncated packet) otherwise.
func readFullOrEOF(src io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := src.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// verify checks the MDC packet held in the buffer against the hash.
func (s *Reader) verify() error {
	if s.end-s.start < mdcPacketSize {
		return io.ErrUnexpectedEOF
	}
	// Every chunk has been hashed (fill waited for it), and the hasher
	// has hashed all but the hash value: the MDC's tag and length too.
	trailer := s.buf[s.start:s.end]
	sum := s.mdc.Sum(nil)
	if trailer[0] != 0xc0|TagMDC || trailer[1] != sha1.Size || subtle.ConstantTimeCompare(sum, trailer[2:]) != 1 {
		return ErrIntegrity
	}
	s.start = s.end
	return io.EOF
}

// Stop ends the helper goroutines and waits for them; it may be called
// more than once.
func (s *Reader) Stop() {
	if !s.stopped {
		s.stopped = true
		close(s.jobs)
		close(s.hashq)
		s.helpers.Wait()
	}
}

// Close stops the helpers and reports the integrity of the packet: nil
// only when it was read to its end and the MDC matched. It may be called
// more than once.
func (s *Reader) Close() error {
	s.Stop()
	if s.err == io.EOF {
		return nil
	}
	if s.err == nil {
		return errors.New("seipd: encrypted data not read to its end")
	}
	return s.err
}
