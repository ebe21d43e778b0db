package filter

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
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
	warnings    []string
}

// Warnings implements ConfigWarner.
func (f *openpgpDecrypt) Warnings() []string { return f.warnings }

// newOpenPGPDecrypt validates secret_key, passphrase_file and
// require_signed_by.
func newOpenPGPDecrypt(with map[string]any, baseDir string) (Filter, error) {
	p, err := newWithParams(with, baseDir, "secret_key", "passphrase_file", "require_signed_by")
	if err != nil {
		return nil, err
	}
	f := &openpgpDecrypt{}
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
	err := f.run(in, out)
	if err != nil && !errors.Is(err, errDecryptOutput) {
		// A decoder sees a failed read as a broken message; say what broke.
		if in.err != nil {
			return fmt.Errorf("reading input: %w", in.err)
		}
	}
	if out.err != nil {
		return fmt.Errorf("writing output: %w", out.err)
	}
	return err
}

// errDecryptOutput marks a failure to write the plaintext.
var errDecryptOutput = errors.New("writing output")

// truncatedMsg is how every flavour of early end reads to the user.
const truncatedMsg = "truncated message: the input ends before the OpenPGP message does"

func (f *openpgpDecrypt) run(in io.Reader, out io.Writer) error {
	br := bufio.NewReaderSize(in, copyBufSize)
	head, _ := br.Peek(64)
	if len(head) == 0 {
		return errors.New("openpgp: not an OpenPGP message: the input is empty")
	}
	var body io.Reader = br
	armored := bytes.HasPrefix(bytes.TrimLeft(head, " \t\r\n"), []byte("-----BEGIN PGP"))
	if armored {
		block, err := armor.Decode(br)
		if err != nil {
			return fmt.Errorf("openpgp: not an OpenPGP message: bad armor: %v", err)
		}
		if block.Type != "PGP MESSAGE" {
			return fmt.Errorf("openpgp: not an OpenPGP message: the armor holds a %s", strings.ToLower(block.Type))
		}
		body = block.Body
	} else if head[0]&0x80 == 0 {
		return fmt.Errorf("openpgp: not an OpenPGP message: it starts with bytes %x%s", head[:min(8, len(head))], guessFormat(head))
	}

	packets := packet.NewReader(body)
	var pkesks []*packet.EncryptedKey
	var skesks []*packet.SymmetricKeyEncrypted
	var edp packet.Packet
	for first := true; edp == nil; first = false {
		p, err := packets.Next()
		switch {
		case err == io.EOF && first:
			return errors.New("openpgp: not an OpenPGP message: no packets")
		case err == io.EOF, errors.Is(err, io.ErrUnexpectedEOF):
			return errors.New("openpgp: " + truncatedMsg)
		case err != nil && first:
			return fmt.Errorf("openpgp: not an OpenPGP message: %v", err)
		case err != nil:
			return fmt.Errorf("openpgp: malformed message: %v", err)
		}
		switch p := p.(type) {
		case *packet.EncryptedKey:
			pkesks = append(pkesks, p)
		case *packet.SymmetricKeyEncrypted:
			skesks = append(skesks, p)
		case *packet.SymmetricallyEncrypted, *packet.AEADEncrypted:
			edp = p
		case *packet.Compressed, *packet.LiteralData, *packet.OnePassSignature, *packet.Signature:
			return errors.New("openpgp: the message is not encrypted (signed or plain data only); openpgp-decrypt reads encrypted messages")
		case *packet.PublicKey, *packet.PrivateKey:
			return errors.New("openpgp: not an OpenPGP message: the input is a key, not a message")
		}
	}

	plain, err := f.decryptData(edp, pkesks, skesks)
	if err != nil {
		return err
	}
	// seipdReader's helper goroutines stop on every path. (The library's
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
	if p, err := packets.Next(); err == nil {
		return fmt.Errorf("openpgp: data follows the encrypted message (a %T packet)", p)
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

// decryptData finds the session key (a PKESK for our secret key, or an
// SKESK that our passphrase opens) and returns the decrypting reader.
func (f *openpgpDecrypt) decryptData(edp packet.Packet, pkesks []*packet.EncryptedKey, skesks []*packet.SymmetricKeyEncrypted) (decryptedData, error) {
	config := pgpConfig()
	if se, ok := edp.(*packet.SymmetricallyEncrypted); ok && !se.IntegrityProtected {
		return nil, errors.New("openpgp: the message is not integrity protected (old Symmetrically Encrypted packet without MDC); refusing to decrypt it")
	}
	var wrongKey error
	tryKey := func(cf packet.CipherFunction, key []byte) (decryptedData, error) {
		d, err := openData(edp, cf, key)
		if errors.Is(err, pgperrors.ErrKeyIncorrect) || errors.Is(err, seipd.ErrWrongKey) {
			return nil, nil
		}
		return d, err
	}

	if f.secret != nil {
		for _, ek := range pkesks {
			var keys []openpgp.Key
			if ek.KeyId == 0 { // hidden recipient (gpg -R): try each key
				keys = f.secret.entities.DecryptionKeys()
			} else {
				keys = f.secret.entities.KeysById(ek.KeyId)
			}
			for _, k := range keys {
				if k.PrivateKey == nil {
					continue
				}
				if err := unlockKey(k.PrivateKey, f.passphrase, f.passPath); err != nil {
					return nil, fmt.Errorf("openpgp: %w", err)
				}
				if err := ek.Decrypt(k.PrivateKey, config); err != nil {
					wrongKey = err
					continue
				}
				d, err := tryKey(ek.CipherFunc, ek.Key)
				if d != nil || err != nil {
					return d, err
				}
			}
		}
	}
	if f.passphrase != nil && len(skesks) > 0 {
		for _, s := range skesks {
			key, cf, err := s.Decrypt(f.passphrase)
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
		if len(pkesks) == 0 || f.secret == nil {
			return nil, fmt.Errorf("openpgp: wrong passphrase in %s: it does not decrypt this message", f.passPath)
		}
	}

	if len(pkesks) == 0 {
		return nil, errors.New("openpgp: the message is encrypted with a passphrase (symmetric), not to a key: set passphrase_file to that passphrase")
	}
	var ids []string
	for _, ek := range pkesks {
		if ek.KeyId == 0 {
			ids = append(ids, "(hidden recipient)")
		} else {
			ids = append(ids, keyIDString(ek.KeyId))
		}
	}
	msg := fmt.Sprintf("openpgp: no secret key for this message; it is encrypted to key IDs %s", strings.Join(ids, ", "))
	if f.secret != nil {
		msg += fmt.Sprintf(", and secret_key %s holds %s", f.secret.path, f.secret.keyIDs())
	} else {
		msg += "; set secret_key"
	}
	if wrongKey != nil {
		msg += fmt.Sprintf(" (decrypting the session key failed: %v)", wrongKey)
	}
	return nil, errors.New(msg)
}

// openData opens the encrypted data packet with a session key. SEIPD v1
// with AES, what gpg 2.2 writes, goes through seipd.Reader; anything else
// (other ciphers, AEAD) through the library.
func openData(edp packet.Packet, cf packet.CipherFunction, key []byte) (decryptedData, error) {
	if se, ok := edp.(*packet.SymmetricallyEncrypted); ok && se.Version == 1 {
		switch cf {
		case packet.CipherAES128, packet.CipherAES192, packet.CipherAES256:
			r, err := seipd.NewReader(se.Contents, key)
			if err != nil {
				return nil, err
			}
			return r, nil
		}
	}
	var rc io.ReadCloser
	var err error
	switch e := edp.(type) {
	case *packet.SymmetricallyEncrypted:
		rc, err = e.Decrypt(cf, key)
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

// copyPlaintext parses the packets inside the encrypted data (compressed,
// one-pass signature, literal data, signature), writes the literal data to
// out, and checks integrity and signature once the last byte is through.
func (f *openpgpDecrypt) copyPlaintext(plain decryptedData, out io.Writer) error {
	var keyring openpgp.KeyRing
	if f.requireSign != nil {
		keyring = f.requireSign.entities
	}
	md, err := openpgp.ReadMessage(plain, keyring, nil, pgpConfig())
	if err != nil {
		if ierr := finishData(plain); ierr != nil {
			return ierr
		}
		return fmt.Errorf("openpgp: malformed encrypted data: %v", err)
	}
	buf := make([]byte, copyBufSize)
	for {
		n, rerr := md.UnverifiedBody.Read(buf)
		if n > 0 {
			if _, werr := out.Write(buf[:n]); werr != nil {
				return fmt.Errorf("%w: %w", errDecryptOutput, werr)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if ierr := finishData(plain); ierr != nil {
				return ierr
			}
			return fmt.Errorf("openpgp: %v", explainReadError(rerr))
		}
	}
	if err := finishData(plain); err != nil {
		return err
	}
	return f.checkSignature(md)
}

// explainReadError names what went wrong reading the decrypted data.
func explainReadError(err error) string {
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return truncatedMsg
	case errors.Is(err, seipd.ErrIntegrity), errors.Is(err, pgperrors.ErrMDCHashMismatch), errors.Is(err, pgperrors.ErrMDCMissing):
		return integrityMsg
	}
	return "malformed encrypted data: " + err.Error()
}

const integrityMsg = "integrity check failed: the message was modified or is corrupt (MDC mismatch); discard what was written"

// finishData reads plain to its end and checks the integrity of the whole
// (MDC or AEAD tag). After a clean end of the literal data there is
// nothing left, or a compressed packet's checksum; after a parse error,
// reading on tells what the error was: a modified message (its garbage
// upset the parser) or a truncated one.
func finishData(plain decryptedData) error {
	if _, err := io.Copy(io.Discard, plain); err != nil {
		return fmt.Errorf("openpgp: %s", explainReadError(err))
	}
	if err := plain.Close(); err != nil {
		return fmt.Errorf("openpgp: %s", explainReadError(err))
	}
	return nil
}

// checkSignature enforces require_signed_by, after the last byte.
func (f *openpgpDecrypt) checkSignature(md *openpgp.MessageDetails) error {
	if f.requireSign == nil {
		return nil
	}
	want := f.requireSign.keyIDs()
	switch {
	case !md.IsSigned:
		return fmt.Errorf("openpgp: signature missing: the message is not signed, and require_signed_by wants a signature by %s (%s)", want, f.requireSign.path)
	case md.SignedBy == nil:
		return fmt.Errorf("openpgp: signature by another key: the message is signed by %s, not by require_signed_by's %s (%s)", keyIDString(md.SignedByKeyId), want, f.requireSign.path)
	case md.SignatureError != nil:
		return fmt.Errorf("openpgp: bad signature by %s: %v", keyIDString(md.SignedByKeyId), md.SignatureError)
	case md.Signature == nil:
		return fmt.Errorf("openpgp: signature missing: the one-pass signature by %s is not followed by a signature", keyIDString(md.SignedByKeyId))
	}
	return nil
}
