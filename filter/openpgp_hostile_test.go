package filter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/ProtonMail/go-crypto/openpgp/s2k"

	"github.com/pipespool/pipespool/filter/pgpcraft"
	"github.com/pipespool/pipespool/filter/seipd"
)

// The hostile messages of these tests are built from their packets: a
// message chooses what its session-key packets cost, how many there are,
// and how long an armor line is.

// symmetricMessage encrypts input with symmetric.pass through the filter.
func symmetricMessage(t testing.TB, keys string, input []byte) []byte {
	t.Helper()
	msg, err := runFilter(t, newFilter(t, "openpgp-encrypt", map[string]any{"passphrase_file": "symmetric.pass"}, keys), bytes.NewReader(input))
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// TestOpenPGPDecryptRefusesCostlyS2K: a passphrase packet asking for more
// than the limits is refused before any key is derived, with an error
// naming the packet, the limit and the key that raises it; a packet within
// them after it still opens the message.
func TestOpenPGPDecryptRefusesCostlyS2K(t *testing.T) {
	keys := testKeys(t)
	input := randomBytes(100<<10, 31)
	good := symmetricMessage(t, keys, input)
	sym := map[string]any{"passphrase_file": "symmetric.pass"}
	with := func(kv ...any) map[string]any {
		m := map[string]any{"passphrase_file": "symmetric.pass"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name string
		with map[string]any
		msg  []byte
		want []string
	}{
		{"argon2 128 MiB", sym, concat(pgpcraft.SKESK(pgpcraft.Argon2S2K(1, 4, 17)), pgpcraft.JunkSEIPD()),
			[]string{"session-key packet 1 (SKESK)", "Argon2 with 128.0 MiB of memory", "max_argon2_memory (64.0 MiB)", "raise max_argon2_memory"}},
		{"argon2 2 TiB", sym, concat(pgpcraft.SKESK(pgpcraft.Argon2S2K(1, 4, 31)), pgpcraft.JunkSEIPD()),
			[]string{"session-key packet 1 (SKESK)", "Argon2 with 2.0 TiB of memory", "max_argon2_memory"}},
		{"argon2 4 passes", sym, concat(pgpcraft.SKESK(pgpcraft.Argon2S2K(4, 4, 10)), pgpcraft.JunkSEIPD()),
			[]string{"session-key packet 1 (SKESK)", "4 passes", "max_argon2_passes (3)"}},
		{"iterated over a lowered max_s2k_count", with("max_s2k_count", int64(1<<20)), concat(pgpcraft.PKESK(42), pgpcraft.SKESK(pgpcraft.IteratedS2K(255)), pgpcraft.JunkSEIPD()),
			[]string{"session-key packet 2 (SKESK)", "iterated S2K of 65011712 bytes", "max_s2k_count (1048576)"}},
		{"argon2 2 GiB, lowered limits", with("max_argon2_memory", "1MiB", "max_argon2_passes", int64(1)), concat(pgpcraft.SKESK(pgpcraft.Argon2S2K(1, 4, 11)), pgpcraft.JunkSEIPD()),
			[]string{"Argon2 with 2.0 MiB of memory", "max_argon2_memory (1.0 MiB)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFilter(t, "openpgp-decrypt", tc.with, keys)
			start := time.Now()
			_, err := runFilter(t, f, bytes.NewReader(tc.msg))
			wantErr(t, err, tc.want...)
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("refusing took %v: a key was derived", d)
			}
		})
	}
	// Refused packets do not stop a good one after them.
	f := newFilter(t, "openpgp-decrypt", sym, keys)
	msg := concat(pgpcraft.SKESK(pgpcraft.Argon2S2K(1, 4, 31)), pgpcraft.SKESK(pgpcraft.IteratedS2K(255)), good)
	out, err := runFilter(t, f, bytes.NewReader(msg))
	if err != nil || !bytes.Equal(out, input) {
		t.Fatalf("hostile packets before a good one: %d bytes, %v; want the input back", len(out), err)
	}
}

// TestOpenPGPDecryptCapsSessionKeysTried: a message with 1000 passphrase
// packets is tried max_session_keys times, and the error says which
// packet was the first not tried and how to raise the limit.
func TestOpenPGPDecryptCapsSessionKeysTried(t *testing.T) {
	keys := testKeys(t)
	var many []byte
	for range 1000 {
		many = append(many, pgpcraft.SKESK(pgpcraft.IteratedS2K(0))...)
	}
	msg := concat(many, pgpcraft.JunkSEIPD())
	f := newFilter(t, "openpgp-decrypt", map[string]any{"passphrase_file": "symmetric.pass"}, keys)
	_, err := runFilter(t, f, bytes.NewReader(msg))
	wantErr(t, err, "16 session-key packets tried", "max_session_keys", "session-key packet 17 (SKESK) and 983 more", "raise max_session_keys")
	f = newFilter(t, "openpgp-decrypt", map[string]any{"passphrase_file": "symmetric.pass", "max_session_keys": int64(1000)}, keys)
	_, err = runFilter(t, f, bytes.NewReader(msg))
	wantErr(t, err, "wrong passphrase")

	// The real packet among many: found while within the limit.
	good := symmetricMessage(t, keys, []byte("payload\n"))
	f = newFilter(t, "openpgp-decrypt", map[string]any{"passphrase_file": "symmetric.pass"}, keys)
	out, err := runFilter(t, f, bytes.NewReader(concat(many[:15*len(pgpcraft.SKESK(pgpcraft.IteratedS2K(0)))], good)))
	if err != nil || string(out) != "payload\n" {
		t.Fatalf("good packet 16th: %q, %v", out, err)
	}
}

// TestOpenPGPDecryptBoundsErrorText: 50 000 recipients make an error of a
// line, not of 2 MB: the key IDs are listed up to a few, then counted.
func TestOpenPGPDecryptBoundsErrorText(t *testing.T) {
	keys := testKeys(t)
	var msg []byte
	for i := range 50000 {
		msg = append(msg, pgpcraft.PKESK(0x1000000+uint64(i))...)
	}
	msg = append(msg, pgpcraft.JunkSEIPD()...)
	f := newFilter(t, "openpgp-decrypt", map[string]any{"secret_key": "plain.sec.asc"}, keys)
	_, err := runFilter(t, f, bytes.NewReader(msg))
	wantErr(t, err, "no secret key for this message", "0x0000000001000000", "and 49992 more")
	if n := len(err.Error()); n > 1024 {
		t.Fatalf("error of %d bytes for 50000 recipients", n)
	}
}

// TestOpenPGPDecryptUnsupportedCipher: Twofish, Camellia, Blowfish and
// IDEA messages from gpg fail with the cipher named, not with an error
// about the passphrase or the key.
func TestOpenPGPDecryptUnsupportedCipher(t *testing.T) {
	keys := testKeys(t)
	home := newGPGHome(t, keys, "recipient.pub.asc")
	input := []byte("some backup\n")
	sym := filepath.Join(keys, "symmetric.pass")
	for _, c := range []struct{ algo, name string }{
		{"TWOFISH", "Twofish (cipher 10)"}, {"CAMELLIA128", "Camellia-128 (cipher 11)"},
		{"CAMELLIA256", "Camellia-256 (cipher 13)"}, {"BLOWFISH", "Blowfish (cipher 4)"}, {"IDEA", "IDEA (cipher 1)"},
	} {
		symMsg := home.mustRun(input, "--passphrase-file", sym, "--cipher-algo", c.algo, "--symmetric")
		_, err := runFilter(t, newFilter(t, "openpgp-decrypt", map[string]any{"passphrase_file": "symmetric.pass"}, keys), bytes.NewReader(symMsg))
		wantErr(t, err, "encrypted with "+c.name, "does not support")
		keyMsg := home.mustRun(input, "--cipher-algo", c.algo, "--encrypt", "-r", "recipient@pipespool.invalid")
		_, err = runFilter(t, newFilter(t, "openpgp-decrypt", map[string]any{"secret_key": "recipient.sec.asc", "passphrase_file": "recipient.pass"}, keys), bytes.NewReader(keyMsg))
		wantErr(t, err, "encrypted with "+c.name, "does not support")
	}
}

// TestOpenPGPDecryptTwoSigners: a message signed by two keys passes
// require_signed_by for either, whichever order gpg signed in (go-crypto
// checked only the last one-pass signature, with the first matching key).
func TestOpenPGPDecryptTwoSigners(t *testing.T) {
	keys := testKeys(t)
	home := newGPGHome(t, keys, "recipient.pub.asc", "signer.sec.asc", "other.sec.asc")
	input := randomBytes(300<<10, 32)
	signPass := filepath.Join(keys, "signer.pass")
	for _, order := range [][]string{{"signer", "other"}, {"other", "signer"}} {
		msg := home.mustRun(input, "--passphrase-file", signPass, "-u", order[0]+"@pipespool.invalid", "-u", order[1]+"@pipespool.invalid",
			"--sign", "--encrypt", "-r", "recipient@pipespool.invalid")
		for _, required := range []string{"signer.pub.asc", "other.pub.asc"} {
			f := newFilter(t, "openpgp-decrypt", map[string]any{"secret_key": "recipient.sec.asc", "passphrase_file": "recipient.pass", "require_signed_by": required}, keys)
			out, err := runFilter(t, f, bytes.NewReader(msg))
			if err != nil || !bytes.Equal(out, input) {
				t.Errorf("signed by %v, require_signed_by %s: %d bytes, %v", order, required, len(out), err)
			}
		}
		f := newFilter(t, "openpgp-decrypt", map[string]any{"secret_key": "recipient.sec.asc", "passphrase_file": "recipient.pass", "require_signed_by": "plain.pub.asc"}, keys)
		_, err := runFilter(t, f, bytes.NewReader(msg))
		wantErr(t, err, "signature by another key", signerPrimaryID, otherPrimaryID)
	}
}

// TestOpenPGPDecryptChecksIntegrityAfterOutputFails: when the consumer
// is gone (EPIPE after the first write), the decrypter still reads its
// input to the end: a modified message is its own failure, not a broken
// pipe; an intact one reports the broken pipe. The same for zstd's
// checksum.
func TestOpenPGPDecryptChecksIntegrityAfterOutputFails(t *testing.T) {
	keys := testKeys(t)
	input := backupLike(4<<20, 33)
	msg := symmetricMessage(t, keys, input)
	flipped := append([]byte(nil), msg...)
	flipped[len(flipped)*3/4] ^= 0x20
	signed := map[string]any{"secret_key": "recipient.sec.asc", "passphrase_file": "recipient.pass", "require_signed_by": "signer.pub.asc"}
	for _, tc := range []struct {
		name   string
		filter string
		with   map[string]any
		in     []byte
		want   string // "" for EPIPE
	}{
		{"intact", "openpgp-decrypt", map[string]any{"passphrase_file": "symmetric.pass"}, msg, ""},
		{"modified", "openpgp-decrypt", map[string]any{"passphrase_file": "symmetric.pass"}, flipped, "integrity check failed"},
		{"bad signature", "openpgp-decrypt", signed, badlySigned(t, keys, input), "bad signature by " + signerPrimaryID},
	} {
		f := newFilter(t, tc.filter, tc.with, keys)
		err := f.Run(t.Context(), bytes.NewReader(tc.in), &failingWriter{left: 1})
		switch {
		case tc.want == "" && !errors.Is(err, syscall.EPIPE):
			t.Errorf("%s: %v, want the broken pipe", tc.name, err)
		case tc.want != "" && (errors.Is(err, syscall.EPIPE) || !strings.Contains(fmt.Sprint(err), tc.want)):
			t.Errorf("%s: %v, want its own failure %q", tc.name, err, tc.want)
		}
	}
	compressed, err := runFilter(t, newFilter(t, "zstd-compress", nil, ""), bytes.NewReader(input))
	if err != nil {
		t.Fatal(err)
	}
	corrupt := append([]byte(nil), compressed...)
	corrupt[len(corrupt)-2] ^= 0x01 // the last frame's checksum
	f := newFilter(t, "zstd-decompress", nil, "")
	if err := f.Run(t.Context(), bytes.NewReader(corrupt), &failingWriter{left: 1}); !strings.Contains(fmt.Sprint(err), "checksum mismatch") {
		t.Errorf("zstd, checksum wrong, output gone: %v, want the checksum mismatch", err)
	}
	if err := f.Run(t.Context(), bytes.NewReader(compressed), &failingWriter{left: 1}); !errors.Is(err, syscall.EPIPE) {
		t.Errorf("zstd, intact, output gone: %v, want the broken pipe", err)
	}
}

// TestOpenPGPDecryptStopEndsTheCheck: a decrypter reading on after its
// output failed is still ended by Stop (its context cancelled, its input
// closed), and then reports the broken pipe that came first.
func TestOpenPGPDecryptStopEndsTheCheck(t *testing.T) {
	keys := testKeys(t)
	msg := symmetricMessage(t, keys, randomBytes(8<<20, 34))
	f := newFilter(t, "openpgp-decrypt", map[string]any{"passphrase_file": "symmetric.pass"}, keys)
	ctx, stop := context.WithCancel(t.Context())
	r, w := io.Pipe()
	defer r.CloseWithError(os.ErrClosed) // whatever happens, the writer ends
	written := make(chan struct{})
	go func() {
		// Enough that the filter writes (and fails), and then nothing:
		// the input never ends.
		w.Write(msg[:6<<20])
		close(written)
	}()
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, r, &failingWriter{left: 0}) }()
	select {
	case <-written: // the filter has read it all, and waits for more
	case err := <-done:
		t.Fatalf("the decrypter ended (%v) before reading the input it had: it does not read on after its output failed", err)
	case <-time.After(time.Minute):
		t.Fatal("the decrypter did not read its input")
	}
	stop()
	r.CloseWithError(os.ErrClosed)
	select {
	case err := <-done:
		if !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("stopped while checking: %v, want the broken pipe that came first", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a stopped decrypter did not end")
	}
}

// TestOpenPGPArmorLineCap: an armor line longer than 64 KiB is an error
// naming the limit, and memory stays bounded (go-crypto's armor.Decode
// kept a header line whole, 300 MB cost 2.1 GB).
func TestOpenPGPArmorLineCap(t *testing.T) {
	keys := testKeys(t)
	f := newFilter(t, "openpgp-decrypt", map[string]any{"passphrase_file": "symmetric.pass"}, keys)
	for _, tc := range []struct{ name, head string }{
		{"header line", "-----BEGIN PGP MESSAGE-----\nComment: "},
		{"body line", "-----BEGIN PGP MESSAGE-----\n\n"},
		{"begin line", "-----BEGIN PGP MESSAGE"},
	} {
		long := io.MultiReader(strings.NewReader(tc.head), io.LimitReader(repeatReader('A'), 64<<20))
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		err := f.Run(t.Context(), long, io.Discard)
		runtime.ReadMemStats(&after)
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
			t.Errorf("%s: %d MiB allocated for a 64 MiB line", tc.name, alloc>>20)
		}
		if err == nil || !strings.Contains(err.Error(), "longer than 64 KiB") {
			t.Errorf("%s: %v, want an error naming the limit of an armor line", tc.name, err)
		}
	}
	// Armor as gpg and others write it still reads: CRLF, headers, a
	// checksum line, text after the END line.
	input := randomBytes(50<<10, 35)
	armored, err := runFilter(t, newFilter(t, "openpgp-encrypt", map[string]any{"passphrase_file": "symmetric.pass", "armor": true}, keys), bytes.NewReader(input))
	if err != nil {
		t.Fatal(err)
	}
	variants := map[string][]byte{
		"as written": armored,
		"crlf":       bytes.ReplaceAll(armored, []byte("\n"), []byte("\r\n")),
		"headers":    bytes.Replace(armored, []byte("-----\n"), []byte("-----\nVersion: x\nComment: "+strings.Repeat("c", 2000)+"\n"), 1),
		"trailer":    append(append([]byte("\n\n"), armored...), "\nsome mail signature\n"...),
	}
	for name, msg := range variants {
		out, err := runFilter(t, f, bytes.NewReader(msg))
		if err != nil || !bytes.Equal(out, input) {
			t.Errorf("armor %s: %d bytes, %v", name, len(out), err)
		}
	}
	for name, msg := range map[string][]byte{
		"no blank line": bytes.Replace(armored, []byte("-----\n\n"), []byte("-----\n"), 1),
		"other type":    bytes.Replace(armored, []byte("PGP MESSAGE"), []byte("PGP PUBLIC KEY BLOCK"), 1),
	} {
		if _, err := runFilter(t, f, bytes.NewReader(msg)); err == nil || !strings.Contains(err.Error(), "not an OpenPGP message") {
			t.Errorf("armor %s: %v, want not an OpenPGP message", name, err)
		}
	}
}

type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// TestOpenPGPDecryptReadsWhatKDFDefaultsWrite: the limits' defaults pass
// what gpg writes with every --s2k-count up to the largest, and what
// go-crypto writes with its Argon2 and iterated defaults.
func TestOpenPGPDecryptReadsWhatKDFDefaultsWrite(t *testing.T) {
	keys := testKeys(t)
	home := newGPGHome(t, keys)
	input := []byte("backup\n")
	pass := filepath.Join(keys, "symmetric.pass")
	f := newFilter(t, "openpgp-decrypt", map[string]any{"passphrase_file": "symmetric.pass"}, keys)
	for _, count := range []string{"1024", "65536", "1048576", "16777216", "65011712"} {
		msg := home.mustRun(input, "--passphrase-file", pass, "--s2k-count", count, "--symmetric")
		if out, err := runFilter(t, f, bytes.NewReader(msg)); err != nil || !bytes.Equal(out, input) {
			t.Errorf("gpg --s2k-count %s: %q, %v", count, out, err)
		}
	}
	passphrase := mustRead(t, filepath.Join(keys, "symmetric.pass"))
	passphrase = passphrase[:bytes.IndexByte(passphrase, '\n')]
	for name, cfg := range map[string]*packet.Config{
		"argon2 defaults":   {S2KConfig: &s2k.Config{S2KMode: s2k.Argon2S2K}},
		"iterated defaults": {},
		"aead argon2":       {AEADConfig: &packet.AEADConfig{}, S2KConfig: &s2k.Config{S2KMode: s2k.Argon2S2K}},
	} {
		var msg bytes.Buffer
		w, err := openpgp.SymmetricallyEncrypt(&msg, passphrase, nil, cfg)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(input)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if out, err := runFilter(t, f, bytes.NewReader(msg.Bytes())); err != nil || !bytes.Equal(out, input) {
			t.Errorf("go-crypto, %s: %q, %v", name, out, err)
		}
	}
}

func TestOpenPGPLimitParams(t *testing.T) {
	keys := testKeys(t)
	for _, tc := range []struct {
		key, msg string
		v        any
	}{
		{"max_s2k_count", "out of range", int64(100)},
		{"max_s2k_count", "out of range", int64(65011713)},
		{"max_s2k_count", "must be an integer", "1M"},
		{"max_argon2_memory", "too small", "1KiB"},
		{"max_argon2_memory", "not a size", "lots"},
		{"max_argon2_passes", "out of range", int64(0)},
		{"max_argon2_passes", "out of range", int64(256)},
		{"max_session_keys", "out of range", int64(0)},
	} {
		_, err := buildFilter("openpgp-decrypt", map[string]any{"passphrase_file": "symmetric.pass", tc.key: tc.v}, keys)
		wantParamError(t, err, tc.key, tc.msg)
	}
	if _, err := buildFilter("openpgp-decrypt", map[string]any{"passphrase_file": "symmetric.pass",
		"max_s2k_count": int64(65536), "max_argon2_memory": "2GiB", "max_argon2_passes": int64(8), "max_session_keys": int64(100)}, keys); err != nil {
		t.Fatal(err)
	}
}

// TestOpenPGPRefusesFilesOthersCanChange: a key, passphrase or trust file
// that any user can write, or that another (non-root) user owns, is
// refused; a group-writable one gets a warning.
func TestOpenPGPRefusesFilesOthersCanChange(t *testing.T) {
	keys := testKeys(t)
	decrypt := map[string]any{"secret_key": "recipient.sec.asc", "passphrase_file": "recipient.pass", "require_signed_by": "signer.pub.asc"}
	encrypt := map[string]any{"recipients": []any{"recipient.pub.asc"}, "sign_with": "signer.sec.asc", "sign_passphrase_file": "signer.pass"}
	for _, tc := range []struct {
		builtin, key, file string
		with               map[string]any
	}{
		{"openpgp-decrypt", "secret_key", "recipient.sec.asc", decrypt},
		{"openpgp-decrypt", "passphrase_file", "recipient.pass", decrypt},
		{"openpgp-decrypt", "require_signed_by", "signer.pub.asc", decrypt},
		{"openpgp-encrypt", "recipients", "recipient.pub.asc", encrypt},
		{"openpgp-encrypt", "sign_with", "signer.sec.asc", encrypt},
		{"openpgp-encrypt", "sign_passphrase_file", "signer.pass", encrypt},
	} {
		path := filepath.Join(keys, tc.file)
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		os.Chmod(path, st.Mode().Perm()|0o002)
		_, err = buildFilter(tc.builtin, tc.with, keys)
		wantParamError(t, err, tc.key, "can be changed by any user")
		os.Chmod(path, st.Mode().Perm()|0o020)
		f, err := buildFilter(tc.builtin, tc.with, keys)
		if err != nil {
			t.Fatalf("%s group-writable: %v, want a warning only", tc.file, err)
		}
		if w := f.(ConfigWarner).Warnings(); len(w) != 1 || !strings.Contains(w[0], "users of its group") {
			t.Errorf("%s group-writable: warnings %q", tc.file, w)
		}
		if os.Geteuid() == 0 { // only root can give a file away
			os.Chmod(path, st.Mode().Perm())
			if err := os.Chown(path, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			_, err = buildFilter(tc.builtin, tc.with, keys)
			wantParamError(t, err, tc.key, "owned by another user (uid 65534)")
			os.Chown(path, 0, 0)
		}
		os.Chmod(path, st.Mode().Perm())
	}
}

// TestOpenPGPDecryptRefusesTwoLiterals: a second literal data packet after
// the first is an error, not bytes silently dropped or appended.
func TestOpenPGPDecryptRefusesTwoLiterals(t *testing.T) {
	keys := testKeys(t)
	key := randomBytes(32, 36)
	p, _ := newWithParams(map[string]any{}, keys)
	rcpt, err := p.readKeyFile("recipients", "plain.pub.asc", false)
	if err != nil {
		t.Fatal(err)
	}
	ek, _ := rcpt.entities[0].EncryptionKey(time.Now())
	var msg bytes.Buffer
	if err := packet.SerializeEncryptedKeyAEAD(&msg, ek.PublicKey, packet.CipherAES256, false, key, pgpConfig()); err != nil {
		t.Fatal(err)
	}
	enc, err := seipd.NewWriter(&msg, key)
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range []string{"first\n", "second\n"} {
		lit := seipd.NewPartialWriter(enc, seipd.TagLiteral, pgpChunk)
		lit.Write(append([]byte{'b', 0, 0, 0, 0, 0}, part...))
		lit.Close()
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	f := newFilter(t, "openpgp-decrypt", map[string]any{"secret_key": "plain.sec.asc"}, keys)
	_, err = runFilter(t, f, bytes.NewReader(msg.Bytes()))
	wantErr(t, err, "more data follows the literal data")
}
