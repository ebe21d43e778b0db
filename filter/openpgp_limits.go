package filter

import (
	"fmt"

	"github.com/pipespool/pipespool/units"
)

// An OpenPGP message chooses how much work its session-key packets cost:
// the S2K of a passphrase packet (SKESK) is an iteration count or Argon2
// memory and passes, and the message may carry any number of packets to
// try. pgpLimits bounds that work before any key is derived, with defaults
// that what gpg and go-crypto write passes: gpg calibrates its iterated
// S2K to about 0.1 s and on a fast machine picks the format's largest
// count (65011712, also `--s2k-count 65011712`); go-crypto and OpenPGP.js
// write Argon2 with 64 MiB and 3 passes, RFC 9580's second recommended
// choice. A message over a limit is refused with an error naming the
// packet and the key that raises the limit.
type pgpLimits struct {
	maxS2KCount     int64 // iterated S2K: bytes hashed
	maxArgon2Memory int64 // bytes
	maxArgon2Passes int64
	maxSessionKeys  int // session-key packets (PKESK + SKESK) tried
}

// Defaults of pgpLimits, and what limits them.
const (
	// maxS2KCountFormat is the largest count the format can encode.
	maxS2KCountFormat        = 65011712
	defaultMaxArgon2Memory   = 64 << 20
	defaultMaxArgon2Passes   = 3
	maxArgon2PassesFormat    = 255
	maxArgon2MemoryFormat    = 1 << 41 // 2^31 KiB
	minArgon2Memory          = 8 << 10 // 8 KiB: one lane
	defaultMaxSessionKeys    = 16
	maxSessionKeysConfigured = 1 << 20
)

func defaultPGPLimits() pgpLimits {
	return pgpLimits{
		maxS2KCount:     maxS2KCountFormat,
		maxArgon2Memory: defaultMaxArgon2Memory,
		maxArgon2Passes: defaultMaxArgon2Passes,
		maxSessionKeys:  defaultMaxSessionKeys,
	}
}

// limitKeys are the [stage.with] keys of pgpLimits.
var limitKeys = []string{"max_s2k_count", "max_argon2_memory", "max_argon2_passes", "max_session_keys"}

// readLimits reads the keys of limitKeys that are set.
func (p *withParams) readLimits() (pgpLimits, error) {
	l := defaultPGPLimits()
	if n, ok, err := p.integer("max_s2k_count"); err != nil {
		return l, err
	} else if ok {
		if n < 1024 || n > maxS2KCountFormat {
			return l, &ParamError{Key: "max_s2k_count", Msg: fmt.Sprintf("%d is out of range 1024-%d (the bytes an iterated S2K hashes)", n, maxS2KCountFormat)}
		}
		l.maxS2KCount = n
	}
	if v, ok := p.m["max_argon2_memory"]; ok {
		n, err := units.ParseSize(v)
		if err != nil {
			return l, &ParamError{Key: "max_argon2_memory", Msg: err.Error()}
		}
		if n < minArgon2Memory {
			return l, &ParamError{Key: "max_argon2_memory", Msg: fmt.Sprintf("%d bytes is too small: Argon2 takes at least 8KiB", n)}
		}
		l.maxArgon2Memory = min(n, maxArgon2MemoryFormat)
	}
	if n, ok, err := p.integer("max_argon2_passes"); err != nil {
		return l, err
	} else if ok {
		if n < 1 || n > maxArgon2PassesFormat {
			return l, &ParamError{Key: "max_argon2_passes", Msg: fmt.Sprintf("%d is out of range 1-%d", n, maxArgon2PassesFormat)}
		}
		l.maxArgon2Passes = n
	}
	if n, ok, err := p.integer("max_session_keys"); err != nil {
		return l, err
	} else if ok {
		if n < 1 || n > maxSessionKeysConfigured {
			return l, &ParamError{Key: "max_session_keys", Msg: fmt.Sprintf("%d is out of range 1-%d", n, maxSessionKeysConfigured)}
		}
		l.maxSessionKeys = int(n)
	}
	return l, nil
}

// S2K specifier types (RFC 9580 3.7.1).
const (
	s2kSimple   = 0
	s2kSalted   = 1
	s2kIterated = 3
	s2kArgon2   = 4
	s2kGNU      = 101
)

// skeskInfo is what a passphrase packet asks for, read from its body
// before go-crypto parses it (go-crypto keeps the S2K parameters private).
type skeskInfo struct {
	version     int
	cipher      byte
	s2kMode     byte
	s2kCount    int64 // iterated: bytes hashed
	argonPasses int64
	argonMemory int64 // bytes
}

// inspectSKESK reads the version, cipher and S2K of an SKESK body (RFC 9580
// 5.3). A body too short for what it announces is reported by go-crypto's
// parser afterwards; here it only leaves the fields it has not reached 0.
func inspectSKESK(body []byte) skeskInfo {
	var info skeskInfo
	if len(body) < 2 {
		return info
	}
	info.version = int(body[0])
	var s2k []byte
	switch info.version {
	case 4: // version, cipher, S2K
		info.cipher = body[1]
		s2k = body[2:]
	case 5: // version, cipher, AEAD mode, S2K
		info.cipher = body[1]
		if len(body) > 3 {
			s2k = body[3:]
		}
	case 6: // version, count, cipher, AEAD mode, S2K length, S2K
		if len(body) > 5 {
			info.cipher = body[2]
			s2k = body[5:]
		}
	default:
		return info
	}
	if len(s2k) == 0 {
		return info
	}
	info.s2kMode = s2k[0]
	switch info.s2kMode {
	case s2kIterated: // mode, hash, 8 bytes of salt, count
		if len(s2k) >= 11 {
			c := s2k[10]
			info.s2kCount = int64(16+c&15) << (c>>4 + 6)
		}
	case s2kArgon2: // mode, 16 bytes of salt, passes, parallelism, memory exponent
		if len(s2k) >= 20 {
			info.argonPasses = int64(s2k[17])
			if e := s2k[19]; e <= 31 {
				info.argonMemory = int64(1) << e << 10
			} else {
				info.argonMemory = -1 // invalid: go-crypto refuses it
			}
		}
	}
	return info
}

// checkS2K returns why the limits refuse an SKESK's S2K, or "".
func (l pgpLimits) checkS2K(info skeskInfo) (msg, key string) {
	switch info.s2kMode {
	case s2kIterated:
		if info.s2kCount > l.maxS2KCount {
			return fmt.Sprintf("asks for an iterated S2K of %d bytes, more than max_s2k_count (%d)", info.s2kCount, l.maxS2KCount), "max_s2k_count"
		}
	case s2kArgon2:
		if info.argonMemory > l.maxArgon2Memory {
			return fmt.Sprintf("asks for Argon2 with %s of memory, more than max_argon2_memory (%s)", units.FormatSize(info.argonMemory), units.FormatSize(l.maxArgon2Memory)), "max_argon2_memory"
		}
		if info.argonPasses > l.maxArgon2Passes {
			return fmt.Sprintf("asks for Argon2 with %d passes, more than max_argon2_passes (%d)", info.argonPasses, l.maxArgon2Passes), "max_argon2_passes"
		}
	}
	return "", ""
}

// cipherName names an OpenPGP symmetric cipher (RFC 9580 9.3).
func cipherName(c byte) string {
	names := map[byte]string{1: "IDEA", 2: "3DES", 3: "CAST5", 4: "Blowfish", 7: "AES-128", 8: "AES-192",
		9: "AES-256", 10: "Twofish", 11: "Camellia-128", 12: "Camellia-192", 13: "Camellia-256"}
	if n, ok := names[c]; ok {
		return fmt.Sprintf("%s (cipher %d)", n, c)
	}
	return fmt.Sprintf("cipher %d", c)
}
