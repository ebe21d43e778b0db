package filter

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/pipespool/pipespool/filter/seipd"
)

// openpgpDecrypt is the filter of openpgp-decrypt.
type openpgpDecrypt struct {
	secret      *keyFile // or nil: symmetric only
	passphrase  []byte   // unlocks secret, or decrypts a symmetric message
	passPath    string
	requireSign *keyFile // or nil
	limits      pgpLimits
	warnings    []string
}

// Warnings implements ConfigWarner.
func (f *openpgpDecrypt) Warnings() []string { return f.warnings }

// newOpenPGPDecrypt validates secret_key, passphrase_file,
// require_signed_by and the limits on what a message may cost.
func newOpenPGPDecrypt(with map[string]any, baseDir string) (Filter, error) {
	p, err := newWithParams(with, baseDir, append([]string{"secret_key", "passphrase_file", "require_signed_by"}, limitKeys...)...)
	if err != nil {
		return nil, err
	}
	f := &openpgpDecrypt{}
	if f.limits, err = p.readLimits(); err != nil {
		return nil, err
	}
	if name, ok, err := p.str("secret_key"); err != nil {
		return nil, err
	} else if ok {
		if f.secret, err = p.readKeyFile("secret_key", name, true); err != nil {
			return nil, err
		}
	}
	pass, path, hasPass, err := p.passphraseFile("passphrase_file")
	if err != nil {
		return nil, err
	}
	f.passphrase, f.passPath = pass, path
	switch {
	case f.secret == nil && !hasPass:
		return nil, &ParamError{Msg: "openpgp-decrypt needs secret_key (with passphrase_file if the key is protected) or passphrase_file (symmetric encryption)"}
	case f.secret != nil && f.secret.protected() && !hasPass:
		return nil, &ParamError{Key: "secret_key", Msg: fmt.Sprintf("the secret key in %s is protected by a passphrase: set passphrase_file", f.secret.path)}
	}
	if name, ok, err := p.str("require_signed_by"); err != nil {
		return nil, err
	} else if ok {
		if f.requireSign, err = p.readKeyFile("require_signed_by", name, false); err != nil {
			return nil, err
		}
	}
	f.warnings = p.warnings
	return f, nil
}

// Run implements Filter.
func (f *openpgpDecrypt) Run(ctx context.Context, r io.Reader, w io.Writer) error {
	in, out := &ioSide{ctx: ctx, r: r}, &ioSide{ctx: ctx, w: w}
	sink := &drainingWriter{w: out}
	return decoderResult(in, sink, f.run(in, sink))
}

// truncatedMsg is how every flavour of early end reads to the user.
const truncatedMsg = "truncated message: the input ends before the OpenPGP message does"

func (f *openpgpDecrypt) run(in io.Reader, out *drainingWriter) error {
	br := bufio.NewReaderSize(in, copyBufSize)
	head, _ := br.Peek(64)
	if len(head) == 0 {
		return errors.New("openpgp: not an OpenPGP message: the input is empty")
	}
	var body io.Reader = br
	armored := bytes.HasPrefix(bytes.TrimLeft(head, " \t\r\n"), []byte("-----BEGIN PGP"))
	if armored {
		ar, err := newArmorReader(br)
		if err != nil {
			return fmt.Errorf("openpgp: not an OpenPGP message: %v", err)
		}
		body = ar
	} else if head[0]&0x80 == 0 {
		return fmt.Errorf("openpgp: not an OpenPGP message: it starts with bytes %x%s", head[:min(8, len(head))], guessFormat(head))
	}

	h := &msgHead{limits: f.limits}
	edp, err := f.readHead(body, h)
	if err != nil {
		return err
	}
	plain, err := f.decryptData(edp, h)
	if err != nil {
		return err
	}
	// seipd.Reader's helper goroutines stop on every path. (The library's
	// readers are not closed here: their Close reads to the end of the
	// input, which after a failure nobody wants.)
	if sr, ok := plain.(*seipd.Reader); ok {
		defer sr.Stop()
	}
	if err := f.copyPlaintext(plain, out); err != nil {
		return err
	}
	// Nothing may follow the encrypted data: a second message glued on is
	// not what the user meant to restore.
	if hdr, err := readPacketHeader(body); err == nil {
		return fmt.Errorf("openpgp: data follows the encrypted message (a packet of type %d)", hdr.tag)
	} else if err != io.EOF {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return errors.New("openpgp: " + truncatedMsg)
		}
		return fmt.Errorf("openpgp: after the encrypted message: %v", err)
	}
	if armored {
		// gpg ignores what follows the armor's last line; so do we.
		if _, err := io.Copy(io.Discard, br); err != nil {
			return fmt.Errorf("reading input: %w", err)
		}
	}
	return nil
}

// guessFormat names a few formats people feed a decrypter by mistake.
func guessFormat(head []byte) string {
	switch {
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return " (zstd data: is the zstd-decompress stage before openpgp-decrypt instead of after it?)"
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return " (gzip data)"
	}
	return ""
}

// decryptedData is the plaintext of the encrypted data packet; Close
// checks its integrity (MDC or AEAD tag) once everything has been read.
type decryptedData interface {
	io.Reader
	Close() error
}

// decryptionKeys are the keys of secret_key that may open ek: the one it
// names, or each decryption key for a hidden recipient.
func (f *openpgpDecrypt) decryptionKeys(ek *packet.EncryptedKey) []openpgp.Key {
	var keys []openpgp.Key
	if ek.KeyId == 0 {
		keys = f.secret.entities.DecryptionKeys()
	} else {
		keys = f.secret.entities.KeysById(ek.KeyId)
	}
	usable := keys[:0]
	for _, k := range keys {
		if k.PrivateKey != nil {
			usable = append(usable, k)
		}
	}
	return usable
}

// decryptData finds the session key among the packets the head kept (a
// PKESK for our secret key, or an SKESK that our passphrase opens), PKESKs
// first, and returns the decrypting reader. When none opens the data, the
// error says why, most telling first: a packet refused by a limit, packets
// left untried by max_session_keys, a cipher not supported, a wrong
// passphrase or key.
func (f *openpgpDecrypt) decryptData(edp packet.Packet, h *msgHead) (decryptedData, error) {
	config := pgpConfig()
	if se, ok := edp.(*packet.SymmetricallyEncrypted); ok && !se.IntegrityProtected {
		return nil, errors.New("openpgp: the message is not integrity protected (old Symmetrically Encrypted packet without MDC); refusing to decrypt it")
	}
	var wrongKey error
	data := &dataOpener{edp: edp}
	tryKey := func(cf packet.CipherFunction, key []byte) (decryptedData, error) {
		// (A session key of a v6 SKESK or PKESK comes without a cipher:
		// the SEIPD v2 packet names it.)
		if cf != 0 && !cf.IsSupported() {
			h.noteUnsupported("the message is encrypted with " + cipherName(byte(cf)))
			return nil, nil
		}
		d, err := data.open(cf, key)
		if errors.Is(err, pgperrors.ErrKeyIncorrect) || errors.Is(err, seipd.ErrWrongKey) {
			return nil, nil
		}
		return d, err
	}
	for _, kp := range h.pkesks {
		ek := kp.pkesk
		for _, k := range f.decryptionKeys(ek) {
			if err := unlockKey(k.PrivateKey, f.passphrase, f.passPath); err != nil {
				return nil, fmt.Errorf("openpgp: %w", err)
			}
			if err := ek.Decrypt(k.PrivateKey, config); err != nil {
				var unsupported pgperrors.UnsupportedError
				if errors.As(err, &unsupported) && ek.CipherFunc != 0 && !ek.CipherFunc.IsSupported() {
					h.noteUnsupported("the message is encrypted with " + cipherName(byte(ek.CipherFunc)))
				}
				wrongKey = err
				continue
			}
			d, err := tryKey(ek.CipherFunc, ek.Key)
			if d != nil || err != nil {
				return d, err
			}
		}
	}
	for _, kp := range h.skesks {
		key, cf, err := kp.skesk.Decrypt(f.passphrase)
		if err != nil {
			// With a wrong passphrase, the session key usually decrypts
			// to an impossible cipher number.
			continue
		}
		d, err := tryKey(cf, key)
		if d != nil || err != nil {
			return d, err
		}
	}
	return nil, f.noSessionKey(h, wrongKey)
}

// noSessionKey explains why no packet of the head opened the data.
func (f *openpgpDecrypt) noSessionKey(h *msgHead, wrongKey error) error {
	switch {
	case h.refused != nil:
		return h.refused
	case h.notTried > 0:
		return fmt.Errorf("openpgp: no session key found in the %d session-key packets tried, the limit max_session_keys; %s and %d more after it were not tried: if the message is trusted, raise max_session_keys in this stage's [stage.with] (or [decoder.openpgp] for -d openpgp)",
			h.tryable(), h.firstSkip, h.notTried-1)
	case strings.HasPrefix(h.unsupported, "the message is encrypted with"):
		return fmt.Errorf("openpgp: %s, which openpgp-decrypt does not support (it reads AES, CAST5 and 3DES): decrypt it with gpg, or have it encrypted with AES", h.unsupported)
	case f.passphrase != nil && len(h.skesks) > 0 && (len(h.pkesks) == 0 || f.secret == nil):
		return fmt.Errorf("openpgp: wrong passphrase in %s: it does not decrypt this message", f.passPath)
	case !h.hasPKs:
		return errors.New("openpgp: the message is encrypted with a passphrase (symmetric), not to a key: set passphrase_file to that passphrase")
	}
	msg := fmt.Sprintf("openpgp: no secret key for this message; it is encrypted to key IDs %s", h.recipients())
	if f.secret != nil {
		msg += fmt.Sprintf(", and secret_key %s holds %s", f.secret.path, f.secret.keyIDs())
	} else {
		msg += "; set secret_key"
	}
	if wrongKey != nil {
		msg += fmt.Sprintf(" (decrypting the session key failed: %v)", wrongKey)
	}
	if h.unsupported != "" {
		msg += fmt.Sprintf(" (%s)", h.unsupported)
	}
	return errors.New(msg)
}

// dataOpener opens the encrypted data packet with the session keys tried
// one after the other. SEIPD v1 with AES, what gpg 2.2 writes, goes
// through seipd.Reader; anything else (other ciphers, AEAD) through the
// library. A key is checked on the random prefix at the start of a SEIPD
// v1 body (RFC 9580 5.13.2), which is read once and replayed for each key:
// a wrong key must not consume the bytes the next key needs.
type dataOpener struct {
	edp  packet.Packet
	head []byte // the start of a SEIPD v1 body, prefix of any cipher
	err  error  // reading head
}

// open returns the plaintext of the data under key; a wrong key is
// pgperrors.ErrKeyIncorrect or seipd.ErrWrongKey.
func (o *dataOpener) open(cf packet.CipherFunction, key []byte) (decryptedData, error) {
	var rc io.ReadCloser
	var err error
	switch e := o.edp.(type) {
	case *packet.SymmetricallyEncrypted:
		if e.Version != 1 {
			rc, err = e.Decrypt(cf, key)
			break
		}
		if o.head == nil && o.err == nil {
			o.head = make([]byte, aes.BlockSize+2) // the largest prefix
			if _, err := io.ReadFull(e.Contents, o.head); err != nil {
				o.err = errors.New("openpgp: " + truncatedMsg)
			}
		}
		if o.err != nil {
			return nil, o.err
		}
		contents := io.MultiReader(bytes.NewReader(o.head), e.Contents)
		switch cf {
		case packet.CipherAES128, packet.CipherAES192, packet.CipherAES256:
			r, err := seipd.NewReader(contents, key)
			if err != nil {
				return nil, err
			}
			return r, nil
		}
		fresh := &packet.SymmetricallyEncrypted{Version: 1, IntegrityProtected: true, Contents: contents}
		rc, err = fresh.Decrypt(cf, key)
	case *packet.AEADEncrypted:
		rc, err = e.Decrypt(cf, key)
	}
	if err != nil {
		if errors.Is(err, pgperrors.ErrKeyIncorrect) {
			return nil, err
		}
		return nil, fmt.Errorf("openpgp: %v", err)
	}
	return rc, nil
}
