package filter

import (
	"bytes"
	"crypto"
	"fmt"
	"strings"
	"sync"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/pipespool/pipespool/filter/seipd"
)

// The OpenPGP built-ins read and write RFC 4880 messages that gpg 2.2
// reads and writes: public-key (PKESK v3) and passphrase (SKESK v4,
// iterated and salted S2K) session keys, and the data in a Symmetrically
// Encrypted Integrity Protected packet version 1 (CFB with a SHA-1
// modification detection code), AES-256, not compressed (what flows
// through a backup is compressed already, and gpg 2.2 cannot read the
// AEAD packets of RFC 9580).
//
// github.com/ProtonMail/go-crypto parses keys, decrypts session keys,
// signs and verifies, and parses the packets inside the encrypted data.
// The encrypted data itself, the bulk of the work, is en- and decrypted by
// package seipd (see there why).

func init() {
	Register("openpgp-encrypt", newOpenPGPEncrypt)
	Register("openpgp-decrypt", newOpenPGPDecrypt)
}

// pgpChunk is the size of each partial body of the packets the encrypter
// writes (a power of two, as partial lengths must be) and of the buffers
// between its layers.
const pgpChunk = seipd.ChunkSize

// keyFile is a parsed key file named in [stage.with].
type keyFile struct {
	path     string
	entities openpgp.EntityList
}

// readKeyFile parses an armored or binary key file.
func (p *withParams) readKeyFile(key, name string, secret bool) (*keyFile, error) {
	data, path, err := p.readFile(key, name, secret)
	if err != nil {
		return nil, err
	}
	var el openpgp.EntityList
	if bytes.HasPrefix(bytes.TrimLeft(data, " \t\r\n"), []byte("-----BEGIN PGP")) {
		el, err = openpgp.ReadArmoredKeyRing(bytes.NewReader(data))
	} else {
		el, err = openpgp.ReadKeyRing(bytes.NewReader(data))
	}
	if err != nil {
		return nil, &ParamError{Key: key, Msg: fmt.Sprintf("%s is not an OpenPGP key file: %v", path, err)}
	}
	if len(el) == 0 {
		return nil, &ParamError{Key: key, Msg: fmt.Sprintf("%s holds no key", path)}
	}
	if secret {
		for _, e := range el {
			if e.PrivateKey == nil {
				return nil, &ParamError{Key: key, Msg: fmt.Sprintf("%s holds a public key (%s), not a secret key: export it with gpg --export-secret-keys", path, keyIDString(e.PrimaryKey.KeyId))}
			}
		}
	}
	return &keyFile{path: path, entities: el}, nil
}

// keyIDString formats a key ID as gpg --keyid-format 0xlong does.
func keyIDString(id uint64) string { return fmt.Sprintf("0x%016X", id) }

// keyIDs lists the key IDs of the entities' primary keys and subkeys.
func (k *keyFile) keyIDs() string {
	var ids []string
	for _, e := range k.entities {
		ids = append(ids, keyIDString(e.PrimaryKey.KeyId))
		for _, s := range e.Subkeys {
			ids = append(ids, keyIDString(s.PublicKey.KeyId))
		}
	}
	return strings.Join(ids, ", ")
}

// protected reports whether any secret key material in k needs a passphrase.
func (k *keyFile) protected() bool {
	for _, e := range k.entities {
		if e.PrivateKey != nil && e.PrivateKey.Encrypted {
			return true
		}
		for _, s := range e.Subkeys {
			if s.PrivateKey != nil && s.PrivateKey.Encrypted {
				return true
			}
		}
	}
	return false
}

// unlockKey decrypts a protected secret key with the passphrase read from
// passPath; a wrong one is the error the user needs to hear about.
func unlockKey(pk *packet.PrivateKey, pass []byte, passPath string) error {
	// A filter may run more than once (queue-process, one packet after
	// another), even concurrently: the key it decrypts is shared.
	unlockMu.Lock()
	defer unlockMu.Unlock()
	if !pk.Encrypted {
		return nil
	}
	if pass == nil {
		return fmt.Errorf("secret key %s is protected by a passphrase and no passphrase_file is set", keyIDString(pk.KeyId))
	}
	if err := pk.Decrypt(pass); err != nil {
		return fmt.Errorf("wrong passphrase in %s: it does not unlock secret key %s (%v)", passPath, keyIDString(pk.KeyId), err)
	}
	return nil
}

// unlockMu serialises the decryption of secret keys, which changes them.
var unlockMu sync.Mutex

// pgpConfig is what both filters hand the library: the choices gpg 2.2
// reads (see the top of this file).
func pgpConfig() *packet.Config {
	noSaltNotation := false
	return &packet.Config{
		DefaultCipher:          packet.CipherAES256,
		DefaultHash:            crypto.SHA256,
		DefaultCompressionAlgo: packet.CompressionNone,
		// The library salts signatures with a random notation of its own
		// that gpg prints as binary junk; gpg's signatures carry none.
		NonDeterministicSignaturesViaNotation: &noSaltNotation,
	}
}
