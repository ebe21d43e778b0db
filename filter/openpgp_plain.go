package filter

import (
	"crypto"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/pipespool/pipespool/filter/seipd"
)

// The packets inside the encrypted data are parsed here, on go-crypto's
// packet reader, not by openpgp.ReadMessage, which checks one signature
// only (the last one-pass signature's) and keeps every other signature
// packet in memory: a message signed by two keys was refused when the
// required key signed first.
//
// The rule for require_signed_by: the message is accepted when at least
// one signature by a required key verifies, as gpg reports a good
// signature; it is refused when any signature by a required key is bad
// (gpg's exit status is then 1 too). Signatures by other keys are
// ignored: they cannot vouch for the data, and without a signature of a
// required key nothing another signer adds is trusted. Only one-pass
// signatures by a required key are hashed, at most maxHashedSignatures of
// them, so extra signature packets cost their own bytes and nothing more.

// maxHashedSignatures bounds the one-pass signatures by a required key
// whose hash is computed over the data (each is a pass over every byte);
// gpg signs once per key.
const maxHashedSignatures = 4

// onePass is a one-pass signature by a required key, with its hash of the
// literal data.
type onePass struct {
	ops     *packet.OnePassSignature
	key     openpgp.Key
	h       hash.Hash // what VerifySignature finishes
	wrapped hash.Hash // what the data is written to (text signatures canonicalise)
}

// signatures collects what the message says about its signers.
type signatures struct {
	signed  bool     // any one-pass signature
	signers []string // key IDs of the one-pass signatures, the first maxListedKeyIDs
	more    int
	ours    []*onePass // by a required key, hashed
	good    int        // of ours, verified
	bad     error      // the first signature by a required key that failed
}

// copyPlaintext parses the packets inside the encrypted data (compressed,
// one-pass signatures, literal data, signatures), writes the literal data
// to out, and checks integrity and signatures once the last byte is
// through. When out has failed (its consumer is gone), the rest is still
// read, to end with the message's own failure if it has one: without
// require_signed_by only the decryption layer is read on (the MDC covers
// all of it); with it the literal data is hashed to the end.
func (f *openpgpDecrypt) copyPlaintext(plain decryptedData, out *drainingWriter) error {
	packets := packet.NewReader(plain)
	sigs := &signatures{}
	var lit *packet.LiteralData
	for lit == nil {
		p, err := packets.Next()
		if err != nil {
			return f.malformed(plain, err)
		}
		switch p := p.(type) {
		case *packet.Compressed:
			if err := packets.Push(p.Body); err != nil {
				return f.malformed(plain, err)
			}
		case *packet.OnePassSignature:
			f.onePass(sigs, p)
		case *packet.LiteralData:
			lit = p
		}
	}
	buf := make([]byte, copyBufSize)
	for {
		n, rerr := lit.Body.Read(buf)
		if n > 0 {
			for _, o := range sigs.ours {
				o.wrapped.Write(buf[:n])
			}
			out.Write(buf[:n])
			if out.err != nil && f.requireSign == nil {
				return finishData(plain)
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
	// The signature packets after the data.
	for {
		p, err := packets.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return f.malformed(plain, err)
		}
		switch p := p.(type) {
		case *packet.Signature:
			f.verify(sigs, p)
		case *packet.LiteralData, *packet.Compressed, *packet.SymmetricallyEncrypted, *packet.AEADEncrypted:
			// One literal data packet per message (RFC 9580 10.3); gpg
			// refuses more too ("multiple plaintexts").
			if ierr := finishData(plain); ierr != nil {
				return ierr
			}
			return errors.New("openpgp: malformed encrypted data: more data follows the literal data")
		}
	}
	if err := finishData(plain); err != nil {
		return err
	}
	return f.checkSignatures(sigs)
}

// malformed reports a parse error inside the encrypted data: the
// integrity check first (a modified message upsets the parser with its
// garbage), else the error itself.
func (f *openpgpDecrypt) malformed(plain decryptedData, err error) error {
	if ierr := finishData(plain); ierr != nil {
		return ierr
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("openpgp: " + truncatedMsg)
	}
	return fmt.Errorf("openpgp: malformed encrypted data: %v", err)
}

// onePass records a one-pass signature, and starts its hash when a
// required key made it.
func (f *openpgpDecrypt) onePass(sigs *signatures, p *packet.OnePassSignature) {
	sigs.signed = true
	if len(sigs.signers) < maxListedKeyIDs {
		sigs.signers = append(sigs.signers, keyIDString(p.KeyId))
	} else {
		sigs.more++
	}
	if f.requireSign == nil || len(sigs.ours) >= maxHashedSignatures {
		return
	}
	keys := f.requireSign.entities.KeysByIdUsage(p.KeyId, packet.KeyFlagSign)
	if len(keys) == 0 {
		return
	}
	h, wrapped, err := signatureHash(p.Hash, p.SigType, p.Salt)
	if err != nil {
		if sigs.bad == nil {
			sigs.bad = fmt.Errorf("openpgp: bad signature by %s: %v", keyIDString(p.KeyId), err)
		}
		return
	}
	sigs.ours = append(sigs.ours, &onePass{ops: p, key: keys[0], h: h, wrapped: wrapped})
}

// signatureHash returns the hash a signature of sigType is computed with,
// and the writer the data goes to (RFC 9580 5.2.4).
func signatureHash(hf crypto.Hash, sigType packet.SignatureType, salt []byte) (h, wrapped hash.Hash, err error) {
	if !hf.Available() {
		return nil, nil, fmt.Errorf("hash %v not available", hf)
	}
	h = hf.New()
	h.Write(salt)
	switch sigType {
	case packet.SigTypeBinary:
		return h, h, nil
	case packet.SigTypeText:
		return h, openpgp.NewCanonicalTextHash(h), nil
	}
	return nil, nil, fmt.Errorf("signature type %#x is not one over data", sigType)
}

// verify checks a signature packet against the one-pass signature of the
// same key that announced it, if it is one of ours.
func (f *openpgpDecrypt) verify(sigs *signatures, sig *packet.Signature) {
	if sig.IssuerKeyId == nil {
		return
	}
	for i, o := range sigs.ours {
		if o.ops.KeyId != *sig.IssuerKeyId || o.ops.Hash != sig.Hash {
			continue
		}
		sigs.ours = append(sigs.ours[:i], sigs.ours[i+1:]...)
		err := o.key.PublicKey.VerifySignature(o.h, sig)
		if err == nil {
			err = checkSigningKey(o.key, sig, pgpConfig())
		}
		if err != nil {
			if sigs.bad == nil {
				sigs.bad = fmt.Errorf("openpgp: bad signature by %s: %v", keyIDString(*sig.IssuerKeyId), err)
			}
			return
		}
		sigs.good++
		return
	}
}

// checkSigningKey checks what go-crypto's ReadMessage checks after the
// signature itself: critical notations it does not know, a revoked or
// expired key, an expired signature.
func checkSigningKey(key openpgp.Key, sig *packet.Signature, config *packet.Config) error {
	now := time.Now()
	primarySig, primaryID := key.Entity.PrimarySelfSignature()
	bySubkey := key.PublicKey != key.Entity.PrimaryKey
	toCheck := []*packet.Signature{sig, primarySig}
	if bySubkey {
		toCheck = append(toCheck, key.SelfSignature, key.SelfSignature.EmbeddedSignature)
	}
	for _, s := range toCheck {
		if s == nil {
			continue
		}
		for _, n := range s.Notations {
			if n.IsCritical && !config.KnownNotation(n.Name) {
				return pgperrors.SignatureError("unknown critical notation: " + n.Name)
			}
		}
	}
	if key.Entity.Revoked(now) || bySubkey && key.Revoked(now) || primaryID != nil && primaryID.Revoked(now) {
		return pgperrors.ErrKeyRevoked
	}
	if key.Entity.PrimaryKey.KeyExpired(primarySig, now) || bySubkey && key.PublicKey.KeyExpired(key.SelfSignature, now) {
		return pgperrors.ErrKeyExpired
	}
	for _, s := range toCheck {
		if s != nil && s.SigExpired(now) {
			return pgperrors.ErrSignatureExpired
		}
	}
	return nil
}

// checkSignatures enforces require_signed_by, after the last byte.
func (f *openpgpDecrypt) checkSignatures(sigs *signatures) error {
	if f.requireSign == nil {
		return nil
	}
	want := f.requireSign.keyIDs()
	switch {
	case sigs.bad != nil:
		return sigs.bad
	case sigs.good > 0:
		return nil
	case !sigs.signed:
		return fmt.Errorf("openpgp: signature missing: the message is not signed, and require_signed_by wants a signature by %s (%s)", want, f.requireSign.path)
	case len(sigs.ours) == 0:
		signers := strings.Join(sigs.signers, ", ")
		if sigs.more > 0 {
			signers += fmt.Sprintf(" and %d more", sigs.more)
		}
		return fmt.Errorf("openpgp: signature by another key: the message is signed by %s, not by require_signed_by's %s (%s)", signers, want, f.requireSign.path)
	}
	return fmt.Errorf("openpgp: signature missing: the one-pass signature by %s is not followed by a signature", keyIDString(sigs.ours[0].ops.KeyId))
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
