package filter

import (
	"bytes"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/pipespool/pipespool/filter/pgpcraft"
)

// FuzzOpenPGPDecrypt feeds openpgp-decrypt messages mutated from a corpus
// that reaches every costly path: armor (headers, long lines), passphrase
// packets with iterated and Argon2 S2Ks, many public-key packets, hidden
// recipients, signatures. Each input is decrypted by a symmetric filter
// and by one with a secret key and require_signed_by, and must cost
// bounded memory and time: a run allocates less than fuzzAllocLimit (an
// Argon2 packet asking for 2 GiB, or an armor header kept whole, allocates
// more; a run's buffers take about 2 MiB) and ends within fuzzTimeLimit. The
// limits are lowered from their defaults (the same checks, smaller
// numbers) so that an input costs milliseconds, not the 1 s the defaults
// allow a message.
func FuzzOpenPGPDecrypt(f *testing.F) {
	const (
		fuzzAllocLimit = 64 << 20
		fuzzTimeLimit  = 10 * time.Second
	)
	keys := testKeys(f)
	limits := map[string]any{"max_s2k_count": int64(1 << 16), "max_argon2_memory": "1MiB", "max_argon2_passes": int64(2), "max_session_keys": int64(4)}
	with := func(kv map[string]any) map[string]any {
		for k, v := range limits {
			kv[k] = v
		}
		return kv
	}
	sym := newFilter(f, "openpgp-decrypt", with(map[string]any{"passphrase_file": "symmetric.pass"}), keys)
	key := newFilter(f, "openpgp-decrypt", with(map[string]any{"secret_key": "plain.sec.asc", "require_signed_by": "signer.pub.asc"}), keys)

	encrypt := func(with map[string]any, data []byte) []byte {
		var msg bytes.Buffer
		if err := newFilter(f, "openpgp-encrypt", with, keys).Run(f.Context(), bytes.NewReader(data), &msg); err != nil {
			f.Fatal(err)
		}
		return msg.Bytes()
	}
	seed := []byte("seed data\n")
	symMsg := encrypt(map[string]any{"passphrase_file": "symmetric.pass"}, seed)
	f.Add(symMsg)
	f.Add(encrypt(map[string]any{"passphrase_file": "symmetric.pass", "armor": true}, seed))
	signed := encrypt(map[string]any{"recipients": []any{"plain.pub.asc"}, "sign_with": "signer.sec.asc", "sign_passphrase_file": "signer.pass"}, seed)
	f.Add(signed)
	f.Add(encrypt(map[string]any{"recipients": []any{"plain.pub.asc", "other.pub.asc"}, "passphrase_file": "symmetric.pass", "armor": true}, seed))
	f.Add(concat(pgpcraft.SKESK(pgpcraft.Argon2S2K(1, 1, 10)), symMsg))
	f.Add(concat(pgpcraft.SKESK(pgpcraft.Argon2S2K(1, 4, 21)), symMsg))
	f.Add(concat(pgpcraft.SKESK(pgpcraft.IteratedS2K(255)), pgpcraft.SKESK(pgpcraft.IteratedS2K(0)), symMsg))
	var many []byte
	for i := range 100 {
		many = append(many, pgpcraft.PKESK(uint64(i))...)
	}
	f.Add(concat(many, pgpcraft.PKESK(0), signed))
	f.Add([]byte("-----BEGIN PGP MESSAGE-----\nComment: x\n\nwy4ECQMI\n=abcd\n-----END PGP MESSAGE-----\n"))
	f.Add([]byte("-----BEGIN PGP MESSAGE-----\nComment: " + string(bytes.Repeat([]byte("c"), 70<<10)) + "\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, dec := range []Filter{sym, key} {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			dec.Run(t.Context(), bytes.NewReader(data), io.Discard)
			if d := time.Since(start); d > fuzzTimeLimit {
				t.Fatalf("a %d-byte message took %v", len(data), d)
			}
			runtime.ReadMemStats(&after)
			if n := after.TotalAlloc - before.TotalAlloc; n > fuzzAllocLimit {
				t.Fatalf("a %d-byte message allocated %d MiB", len(data), n>>20)
			}
		}
	})
}
