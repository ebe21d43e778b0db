package filter

import (
	"bufio"
	"context"
	"crypto"
	"crypto/rand"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/pipespool/pipespool/filter/seipd"
)

// openpgpEncrypt is the filter of openpgp-encrypt.
type openpgpEncrypt struct {
	recipients []*keyFile
	passphrase []byte // symmetric encryption, or nil
	signer     *keyFile
	signPass   []byte
	signPath   string
	armor      bool
	warnings   []string
}

// Warnings implements ConfigWarner.
func (f *openpgpEncrypt) Warnings() []string { return f.warnings }

// newOpenPGPEncrypt validates recipients (public key files) and/or
// passphrase_file (symmetric), sign_with + sign_passphrase_file, armor.
func newOpenPGPEncrypt(with map[string]any, baseDir string) (Filter, error) {
	p, err := newWithParams(with, baseDir, "recipients", "passphrase_file", "sign_with", "sign_passphrase_file", "armor")
	if err != nil {
		return nil, err
	}
	f := &openpgpEncrypt{}
	names, hasRecipients, err := p.strings("recipients")
	if err != nil {
		return nil, err
	}
	if hasRecipients && len(names) == 0 {
		return nil, &ParamError{Key: "recipients", Msg: "is empty: name at least one public key file"}
	}
	now := time.Now()
	for _, name := range names {
		kf, err := p.readKeyFile("recipients", name, false)
		if err != nil {
			return nil, err
		}
		for _, e := range kf.entities {
			if _, ok := e.EncryptionKey(now); !ok {
				return nil, &ParamError{Key: "recipients", Msg: fmt.Sprintf("key %s in %s has no valid encryption key (expired, revoked, or signing only)", keyIDString(e.PrimaryKey.KeyId), kf.path)}
			}
		}
		f.recipients = append(f.recipients, kf)
	}
	pass, _, hasPass, err := p.passphraseFile("passphrase_file")
	if err != nil {
		return nil, err
	}
	f.passphrase = pass
	if !hasRecipients && !hasPass {
		return nil, &ParamError{Msg: "openpgp-encrypt needs recipients (public key files) or passphrase_file (symmetric encryption)"}
	}
	if name, ok, err := p.str("sign_with"); err != nil {
		return nil, err
	} else if ok {
		kf, err := p.readKeyFile("sign_with", name, true)
		if err != nil {
			return nil, err
		}
		if len(kf.entities) != 1 {
			return nil, &ParamError{Key: "sign_with", Msg: fmt.Sprintf("%s holds %d keys; sign with one", kf.path, len(kf.entities))}
		}
		sk, ok := kf.entities[0].SigningKey(now)
		if !ok || sk.PrivateKey == nil {
			return nil, &ParamError{Key: "sign_with", Msg: fmt.Sprintf("%s has no valid signing key", kf.path)}
		}
		f.signer = kf
		spass, spath, hasSPass, err := p.passphraseFile("sign_passphrase_file")
		if err != nil {
			return nil, err
		}
		if sk.PrivateKey.Encrypted && !hasSPass {
			return nil, &ParamError{Key: "sign_with", Msg: fmt.Sprintf("the secret key in %s is protected by a passphrase: set sign_passphrase_file", kf.path)}
		}
		f.signPass, f.signPath = spass, spath
	} else if p.has("sign_passphrase_file") {
		return nil, &ParamError{Key: "sign_passphrase_file", Msg: "is only used with sign_with"}
	}
	if a, ok, err := p.boolean("armor"); err != nil {
		return nil, err
	} else if ok {
		f.armor = a
	}
	f.warnings = p.warnings
	return f, nil
}

// Run implements Filter.
func (f *openpgpEncrypt) Run(ctx context.Context, r io.Reader, w io.Writer) error {
	in, out := &ioSide{ctx: ctx, r: r}, &ioSide{ctx: ctx, w: w}
	err := f.run(in, out)
	return sideError(in, out, err)
}

func (f *openpgpEncrypt) run(in io.Reader, out io.Writer) error {
	config := pgpConfig()
	now := time.Now()

	var signKey *packet.PrivateKey
	if f.signer != nil {
		sk, _ := f.signer.entities[0].SigningKey(now)
		signKey = sk.PrivateKey
		if err := unlockKey(signKey, f.signPass, f.signPath); err != nil {
			return fmt.Errorf("openpgp: sign_with: %w", err)
		}
	}

	bw := bufio.NewWriterSize(out, pgpChunk)
	var dst io.Writer = bw
	var armorW io.WriteCloser
	if f.armor {
		var err error
		armorW, err = armor.Encode(bw, "PGP MESSAGE", nil)
		if err != nil {
			return fmt.Errorf("openpgp: armor: %w", err)
		}
		dst = armorW
	}

	sessionKey := make([]byte, packet.CipherAES256.KeySize())
	if _, err := rand.Read(sessionKey); err != nil {
		return fmt.Errorf("openpgp: session key: %w", err)
	}
	for _, kf := range f.recipients {
		for _, e := range kf.entities {
			ek, ok := e.EncryptionKey(now)
			if !ok {
				return fmt.Errorf("openpgp: key %s in %s has no valid encryption key", keyIDString(e.PrimaryKey.KeyId), kf.path)
			}
			if err := packet.SerializeEncryptedKeyAEAD(dst, ek.PublicKey, packet.CipherAES256, false, sessionKey, config); err != nil {
				return fmt.Errorf("openpgp: encrypting the session key to %s: %w", keyIDString(ek.PublicKey.KeyId), err)
			}
		}
	}
	if f.passphrase != nil {
		if err := packet.SerializeSymmetricKeyEncryptedAEADReuseKey(dst, sessionKey, f.passphrase, false, config); err != nil {
			return fmt.Errorf("openpgp: encrypting the session key with the passphrase: %w", err)
		}
	}

	if armorW == nil {
		// The key packets are small and wait in bw; the encrypted data is
		// written a whole body at a time, which an empty bufio.Writer
		// passes through without copying.
		if err := bw.Flush(); err != nil {
			return fmt.Errorf("openpgp: writing output: %w", err)
		}
	}
	enc, err := seipd.NewWriter(dst, sessionKey)
	if err != nil {
		return err
	}
	var sigHash hash.Hash
	if signKey != nil {
		sigHash = crypto.SHA256.New()
		ops := &packet.OnePassSignature{Version: 3, SigType: packet.SigTypeBinary, Hash: crypto.SHA256,
			PubKeyAlgo: signKey.PubKeyAlgo, KeyId: signKey.KeyId, IsLast: true}
		if err := ops.Serialize(enc); err != nil {
			return fmt.Errorf("openpgp: one-pass signature: %w", err)
		}
	}
	lit := seipd.NewPartialWriter(enc, seipd.TagLiteral, pgpChunk)
	// Literal data header: binary, no file name, no date (which would
	// only tell a reader when the backup ran).
	if _, err := lit.Write([]byte{'b', 0, 0, 0, 0, 0}); err != nil {
		return err
	}
	// The input is read straight into the literal packet's body. A full
	// body is a partial body only if more data follows: one byte is read
	// to know, and it starts the next body.
	var one [1]byte
	for {
		space := lit.Avail()
		lookahead := len(space) == 0
		if lookahead {
			space = one[:]
		}
		n, rerr := in.Read(space)
		if n > 0 {
			if sigHash != nil {
				sigHash.Write(space[:n])
			}
			if lookahead {
				next, err := lit.Space()
				if err != nil {
					return fmt.Errorf("openpgp: writing output: %w", err)
				}
				next[0] = one[0]
			}
			lit.Commit(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("reading input: %w", rerr)
		}
	}
	if err := lit.Close(); err != nil {
		return fmt.Errorf("openpgp: writing output: %w", err)
	}
	if signKey != nil {
		sig := &packet.Signature{
			Version: signKey.PublicKey.Version, SigType: packet.SigTypeBinary,
			PubKeyAlgo: signKey.PubKeyAlgo, Hash: crypto.SHA256, CreationTime: now,
			IssuerKeyId: &signKey.KeyId, IssuerKeyVersion: uint8(signKey.PublicKey.Version),
			IssuerFingerprint: signKey.Fingerprint,
		}
		if err := sig.Sign(sigHash, signKey, config); err != nil {
			return fmt.Errorf("openpgp: signing: %w", err)
		}
		if err := sig.Serialize(enc); err != nil {
			return fmt.Errorf("openpgp: writing the signature: %w", err)
		}
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("openpgp: writing output: %w", err)
	}
	if armorW != nil {
		if err := armorW.Close(); err != nil {
			return fmt.Errorf("openpgp: writing output: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("openpgp: writing output: %w", err)
	}
	return nil
}
