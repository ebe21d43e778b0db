package filter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// The head of a message, the packets before its encrypted data, is read
// here packet by packet, with the framing parsed before go-crypto sees a
// packet: a session-key packet is read whole (it is small) and its S2K
// checked against the limits before anything is derived, and only the
// packets that can be tried are kept, at most max_session_keys of them, so
// that neither memory nor work grows with the number of packets.

// OpenPGP packet tags (RFC 9580 5) the head reader tells apart.
const (
	tagPKESK      = 1
	tagSignature  = 2
	tagSKESK      = 3
	tagOPS        = 4
	tagSecretKey  = 5
	tagPublicKey  = 6
	tagSecretSub  = 7
	tagCompressed = 8
	tagSED        = 9
	tagMarker     = 10
	tagLiteral    = 11
	tagTrust      = 12
	tagUserID     = 13
	tagPublicSub  = 14
	tagUserAttr   = 17
	tagSEIPD      = 18
	tagAEAD       = 20
	tagPadding    = 21
)

// maxKeyPacketSize bounds the body of a session-key packet: an RSA-16384
// PKESK is about 2 KiB, a post-quantum one under 2 KiB.
const maxKeyPacketSize = 64 << 10

// maxListedKeyIDs is how many recipient key IDs an error lists; the rest
// are counted ("and 49990 more"), so that the message stays short whatever
// the number of packets.
const maxListedKeyIDs = 8

// pgpHeader is an OpenPGP packet header (RFC 9580 4.2).
type pgpHeader struct {
	tag     byte
	length  int64 // of the body, or of its first part when partial; -1: up to the end (old format)
	partial bool
	raw     []byte // the header's bytes
}

// readPacketHeader reads a packet header from r: io.EOF at a clean end
// before it, io.ErrUnexpectedEOF inside it.
func readPacketHeader(r io.Reader) (pgpHeader, error) {
	var b [6]byte
	if _, err := io.ReadFull(r, b[:1]); err != nil {
		return pgpHeader{}, err
	}
	h := pgpHeader{}
	if b[0]&0x80 == 0 {
		return h, fmt.Errorf("not a packet header (byte %#02x)", b[0])
	}
	if b[0]&0x40 == 0 { // old format: tag and length type in one byte
		h.tag = (b[0] & 0x3f) >> 2
		lt := b[0] & 3
		if lt == 3 {
			h.length, h.raw = -1, append([]byte(nil), b[0])
			return h, nil
		}
		n := 1 << lt
		if _, err := io.ReadFull(r, b[1:1+n]); err != nil {
			return h, eofIsUnexpected(err)
		}
		for _, c := range b[1 : 1+n] {
			h.length = h.length<<8 | int64(c)
		}
		h.raw = append([]byte(nil), b[:1+n]...)
		return h, nil
	}
	h.tag = b[0] & 0x3f
	n, length, partial, err := readNewLength(r, b[1:])
	if err != nil {
		return h, err
	}
	h.length, h.partial, h.raw = length, partial, append([]byte(nil), b[:1+n]...)
	return h, nil
}

// readNewLength reads a new-format body length into buf (at least 5
// bytes) and returns how many bytes it took.
func readNewLength(r io.Reader, buf []byte) (int, int64, bool, error) {
	if _, err := io.ReadFull(r, buf[:1]); err != nil {
		return 0, 0, false, eofIsUnexpected(err)
	}
	switch c := buf[0]; {
	case c < 192:
		return 1, int64(c), false, nil
	case c < 224:
		if _, err := io.ReadFull(r, buf[1:2]); err != nil {
			return 0, 0, false, eofIsUnexpected(err)
		}
		return 2, int64(c-192)<<8 + int64(buf[1]) + 192, false, nil
	case c < 255:
		return 1, 1 << (c & 0x1f), true, nil
	default:
		if _, err := io.ReadFull(r, buf[1:5]); err != nil {
			return 0, 0, false, eofIsUnexpected(err)
		}
		return 5, int64(binary.BigEndian.Uint32(buf[1:5])), false, nil
	}
}

func eofIsUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// skipBody reads a packet's body and discards it.
func skipBody(r io.Reader, h pgpHeader) error {
	if h.length < 0 {
		_, err := io.Copy(io.Discard, r)
		return err
	}
	length, partial := h.length, h.partial
	var buf [5]byte
	for {
		if _, err := io.CopyN(io.Discard, r, length); err != nil {
			return eofIsUnexpected(err)
		}
		if !partial {
			return nil
		}
		var err error
		if _, length, partial, err = readNewLength(r, buf[:]); err != nil {
			return err
		}
	}
}

// keyPacket is a session-key packet kept to be tried.
type keyPacket struct {
	index int // 1-based among the message's session-key packets
	pkesk *packet.EncryptedKey
	skesk *packet.SymmetricKeyEncrypted
}

// msgHead is what the head of a message says about its session keys.
type msgHead struct {
	limits  pgpLimits
	n       int         // session-key packets read
	pkesks  []keyPacket // PKESKs for our keys, to try, in order
	skesks  []keyPacket // SKESKs, to try with our passphrase, in order
	hasPKs  bool        // the message has PKESKs (for any key)
	hasSKs  bool        // the message has SKESKs
	ids     []string    // the recipients of its PKESKs, the first maxListedKeyIDs
	moreIDs int         // and how many more

	notTried    int    // packets that could have been tried beyond max_session_keys
	firstSkip   string // the first of them: "packet 17 (SKESK)"
	refused     error  // the first packet a limit refused
	unsupported string // the first cipher or packet version not supported
}

// tryable counts the packets kept to be tried.
func (h *msgHead) tryable() int { return len(h.pkesks) + len(h.skesks) }

// keep adds a packet to try, unless max_session_keys are kept already.
func (h *msgHead) keep(kp keyPacket, kind string) {
	if h.tryable() >= h.limits.maxSessionKeys {
		if h.notTried == 0 {
			h.firstSkip = fmt.Sprintf("session-key packet %d (%s)", kp.index, kind)
		}
		h.notTried++
		return
	}
	if kp.pkesk != nil {
		h.pkesks = append(h.pkesks, kp)
	} else {
		h.skesks = append(h.skesks, kp)
	}
}

func (h *msgHead) listRecipient(id string) {
	if len(h.ids) < maxListedKeyIDs {
		h.ids = append(h.ids, id)
	} else {
		h.moreIDs++
	}
}

// recipients lists the PKESKs' key IDs, bounded: "0xA, 0xB and 49990 more".
func (h *msgHead) recipients() string {
	s := strings.Join(h.ids, ", ")
	if h.moreIDs > 0 {
		s += fmt.Sprintf(" and %d more", h.moreIDs)
	}
	return s
}

// readHead reads the session-key packets up to the encrypted data packet,
// which it returns with its contents still to read from src.
func (f *openpgpDecrypt) readHead(src io.Reader, h *msgHead) (packet.Packet, error) {
	for first := true; ; first = false {
		hdr, err := readPacketHeader(src)
		switch {
		case err == io.EOF && first:
			return nil, errors.New("openpgp: not an OpenPGP message: no packets")
		case err == io.EOF, errors.Is(err, io.ErrUnexpectedEOF):
			return nil, errors.New("openpgp: " + truncatedMsg)
		case err != nil && first:
			return nil, fmt.Errorf("openpgp: not an OpenPGP message: %v", err)
		case err != nil:
			return nil, fmt.Errorf("openpgp: malformed message: %v", err)
		}
		switch hdr.tag {
		case tagPKESK, tagSKESK:
			if err := f.readKeyPacket(src, hdr, h); err != nil {
				return nil, err
			}
		case tagSEIPD, tagAEAD, tagSED:
			p, err := packet.Read(io.MultiReader(bytes.NewReader(hdr.raw), src))
			if err != nil {
				if errors.Is(err, io.ErrUnexpectedEOF) {
					return nil, errors.New("openpgp: " + truncatedMsg)
				}
				return nil, fmt.Errorf("openpgp: malformed encrypted data packet: %v", err)
			}
			return p, nil
		case tagCompressed, tagLiteral, tagOPS, tagSignature:
			return nil, errors.New("openpgp: the message is not encrypted (signed or plain data only); openpgp-decrypt reads encrypted messages")
		case tagPublicKey, tagSecretKey, tagPublicSub, tagSecretSub:
			return nil, errors.New("openpgp: not an OpenPGP message: the input is a key, not a message")
		case tagMarker, tagTrust, tagUserID, tagUserAttr, tagPadding:
			// Ignored, as RFC 9580 and gpg ignore them.
			if err := skipBody(src, hdr); err != nil {
				return nil, errors.New("openpgp: " + truncatedMsg)
			}
		default:
			if hdr.tag < 40 { // a critical packet (RFC 9580 4.3)
				if first {
					return nil, fmt.Errorf("openpgp: not an OpenPGP message: unknown packet type %d", hdr.tag)
				}
				return nil, fmt.Errorf("openpgp: malformed message: unknown packet type %d", hdr.tag)
			}
			if err := skipBody(src, hdr); err != nil {
				return nil, errors.New("openpgp: " + truncatedMsg)
			}
		}
	}
}

// readKeyPacket reads one session-key packet and keeps it if it can be
// tried: a PKESK for one of our keys, an SKESK when we have a passphrase
// and its S2K is within the limits.
func (f *openpgpDecrypt) readKeyPacket(src io.Reader, hdr pgpHeader, h *msgHead) error {
	h.n++
	kind := "PKESK"
	if hdr.tag == tagSKESK {
		kind = "SKESK"
	}
	name := fmt.Sprintf("session-key packet %d (%s)", h.n, kind)
	if hdr.partial || hdr.length < 0 || hdr.length > maxKeyPacketSize {
		return fmt.Errorf("openpgp: malformed message: %s is larger than any session key (%d bytes at most) or has no definite length", name, maxKeyPacketSize)
	}
	raw := make([]byte, len(hdr.raw)+int(hdr.length))
	copy(raw, hdr.raw)
	if _, err := io.ReadFull(src, raw[len(hdr.raw):]); err != nil {
		return errors.New("openpgp: " + truncatedMsg)
	}
	body := raw[len(hdr.raw):]
	var info skeskInfo
	if hdr.tag == tagSKESK {
		h.hasSKs = true
		info = inspectSKESK(body)
		if info.cipher != 0 && !packet.CipherFunction(info.cipher).IsSupported() {
			h.noteUnsupported("the message is encrypted with " + cipherName(info.cipher))
			return nil
		}
	} else {
		h.hasPKs = true
	}
	p, err := packet.Read(bytes.NewReader(raw))
	if err != nil {
		var unsupported pgperrors.UnsupportedError
		if errors.As(err, &unsupported) {
			// go-crypto skips these too: another packet may do.
			if hdr.tag == tagPKESK && len(body) >= 10 && body[0] == 3 { // v3: version, key ID
				h.listRecipient(keyIDString(binary.BigEndian.Uint64(body[1:9])))
			}
			h.noteUnsupported(fmt.Sprintf("%s: %v", name, err))
			return nil
		}
		return fmt.Errorf("openpgp: malformed message: %s: %v", name, err)
	}
	switch p := p.(type) {
	case *packet.EncryptedKey:
		id := "(hidden recipient)"
		if p.KeyId != 0 {
			id = keyIDString(p.KeyId)
		}
		h.listRecipient(id)
		if f.secret == nil || len(f.decryptionKeys(p)) == 0 {
			return nil
		}
		h.keep(keyPacket{index: h.n, pkesk: p}, kind)
	case *packet.SymmetricKeyEncrypted:
		if f.passphrase == nil {
			return nil
		}
		if msg, key := h.limits.checkS2K(info); msg != "" {
			if h.refused == nil {
				h.refused = fmt.Errorf("openpgp: %s %s: refused before deriving any key; if the sender is trusted, raise %s in this stage's [stage.with] (or [decoder.openpgp] for -d openpgp)", name, msg, key)
			}
			return nil
		}
		h.keep(keyPacket{index: h.n, skesk: p}, kind)
	}
	return nil
}

func (h *msgHead) noteUnsupported(what string) {
	if h.unsupported == "" {
		h.unsupported = what
	}
}
