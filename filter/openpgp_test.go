package filter

import (
	"bytes"
	"crypto"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/pipespool/pipespool/filter/seipd"
)

// Key IDs of testdata/keys (see generate.sh): the primary (signing) key and
// the encryption subkey of each.
const (
	signerPrimaryID = "0x271D2BA8598E17BE"
	otherPrimaryID  = "0xD087B205D8336AE4"
	otherSubkeyID   = "0x69CE8645C5B4943E"
)

// testKeys copies testdata/keys into a temp directory, secret files mode
// 0600 (git does not keep modes), and returns it: the tests' baseDir.
func testKeys(t testing.TB) string {
	t.Helper()
	src := filepath.Join("..", "testdata", "keys")
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatalf("test keys: %v", err)
	}
	dir := t.TempDir()
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(e.Name(), ".sec.asc") || strings.HasSuffix(e.Name(), ".pass") {
			mode = 0o600
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), data, mode); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// gpgHome is a throw-away GNUPGHOME holding the given key files (relative
// to keys), secret keys imported with their passphrase files.
type gpgHome struct {
	t    testing.TB
	dir  string
	keys string
}

func newGPGHome(t testing.TB, keys string, files ...string) *gpgHome {
	t.Helper()
	needTools(t, "gpg", "gpgconf")
	// A short path: gpg-agent's socket must fit in sun_path.
	dir, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o700)
	h := &gpgHome{t: t, dir: dir, keys: keys}
	t.Cleanup(func() {
		cmd := exec.Command("gpgconf", "--kill", "all")
		cmd.Env = append(os.Environ(), "GNUPGHOME="+dir)
		cmd.Run()
		os.RemoveAll(dir)
	})
	for _, f := range files {
		args := []string{"--import", filepath.Join(keys, f)}
		if pass := strings.TrimSuffix(f, ".sec.asc") + ".pass"; strings.HasSuffix(f, ".sec.asc") {
			if _, err := os.Stat(filepath.Join(keys, pass)); err == nil {
				args = append([]string{"--passphrase-file", filepath.Join(keys, pass)}, args...)
			}
		}
		if _, stderr, err := h.run(nil, args...); err != nil {
			t.Fatalf("gpg --import %s: %v\n%s", f, err, stderr)
		}
	}
	return h
}

// run runs gpg in the home, in batch mode, and returns stdout and stderr.
func (h *gpgHome) run(input []byte, args ...string) ([]byte, string, error) {
	args = append([]string{"--batch", "--no-tty", "--pinentry-mode", "loopback", "--trust-model", "always"}, args...)
	cmd := exec.Command("gpg", args...)
	cmd.Env = append(os.Environ(), "GNUPGHOME="+h.dir)
	cmd.Stdin = bytes.NewReader(input)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.Bytes(), errb.String(), err
}

func (h *gpgHome) mustRun(input []byte, args ...string) []byte {
	h.t.Helper()
	out, stderr, err := h.run(input, args...)
	if err != nil {
		h.t.Fatalf("gpg %q: %v\n%s", args, err, stderr)
	}
	return out
}

func TestOpenPGPEncryptReadByGPG(t *testing.T) {
	keys := testKeys(t)
	home := newGPGHome(t, keys, "recipient.sec.asc", "plain.sec.asc", "signer.pub.asc")
	input := randomBytes(6<<20+123, 11)
	for _, tc := range []struct {
		name    string
		with    map[string]any
		passArg string // gpg --passphrase-file
		status  []string
	}{
		{"public key", map[string]any{"recipients": []any{"recipient.pub.asc"}}, "recipient.pass", nil},
		{"two recipients, binary key", map[string]any{"recipients": []any{"other.pub.asc", "plain.pub.asc"}}, "", nil},
		{"symmetric", map[string]any{"passphrase_file": "symmetric.pass"}, "symmetric.pass", nil},
		{"signed", map[string]any{"recipients": []any{"recipient.pub.gpg"}, "sign_with": "signer.sec.asc", "sign_passphrase_file": "signer.pass"},
			"recipient.pass", []string{"[GNUPG:] GOODSIG 271D2BA8598E17BE", "[GNUPG:] VALIDSIG"}},
		{"armored symmetric", map[string]any{"passphrase_file": "symmetric.pass", "armor": true}, "symmetric.pass", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFilter(t, "openpgp-encrypt", tc.with, keys)
			msg, err := runFilter(t, f, bytes.NewReader(input))
			if err != nil {
				t.Fatal(err)
			}
			if armored := bytes.HasPrefix(msg, []byte("-----BEGIN PGP MESSAGE-----")); armored != (tc.with["armor"] == true) {
				t.Fatalf("armored output %v, want %v", armored, tc.with["armor"] == true)
			}
			args := []string{"--status-fd", "2", "--decrypt"}
			if tc.passArg != "" {
				args = append([]string{"--passphrase-file", filepath.Join(keys, tc.passArg)}, args...)
			}
			out, stderr, err := home.run(msg, args...)
			if err != nil {
				t.Fatalf("gpg --decrypt: %v\n%s", err, stderr)
			}
			if sum(out) != sum(input) {
				t.Fatalf("gpg --decrypt: sha256 %s, want %s", sum(out), sum(input))
			}
			for _, s := range append([]string{"[GNUPG:] DECRYPTION_OKAY", "[GNUPG:] GOODMDC"}, tc.status...) {
				if !strings.Contains(stderr, s) {
					t.Errorf("gpg status lacks %q:\n%s", s, stderr)
				}
			}
			// (The test home trusts keys with --trust-model always, which
			// gpg warns about.)
			if strings.Contains(strings.ReplaceAll(stderr, "WARNING: Using untrusted key!", ""), "WARNING") {
				t.Errorf("gpg warns:\n%s", stderr)
			}
		})
	}
}

// gpgMessages makes the messages gpg 2.2 writes with its defaults.
func gpgMessages(t testing.TB, keys string, input []byte) map[string][]byte {
	home := newGPGHome(t, keys, "recipient.pub.asc", "signer.sec.asc", "other.sec.asc")
	in := filepath.Join(t.TempDir(), "input")
	if err := os.WriteFile(in, input, 0o600); err != nil {
		t.Fatal(err)
	}
	sym := filepath.Join(keys, "symmetric.pass")
	signPass := filepath.Join(keys, "signer.pass")
	return map[string][]byte{
		"encrypt":              home.mustRun(nil, "-o", "-", "--encrypt", "-r", "recipient@pipespool.invalid", in),
		"encrypt armor":        home.mustRun(nil, "-o", "-", "--armor", "--encrypt", "-r", "recipient@pipespool.invalid", in),
		"encrypt uncompressed": home.mustRun(input, "-z", "0", "--encrypt", "-r", "recipient@pipespool.invalid"),
		"encrypt hidden":       home.mustRun(input, "--encrypt", "-R", "recipient@pipespool.invalid"),
		"symmetric":            home.mustRun(input, "--passphrase-file", sym, "--symmetric"),
		"symmetric aes256":     home.mustRun(input, "--passphrase-file", sym, "--symmetric", "--cipher-algo", "AES256", "-z", "0"),
		"symmetric cast5":      home.mustRun(input, "--passphrase-file", sym, "--symmetric", "--cipher-algo", "CAST5"),
		"sign encrypt": home.mustRun(input, "--passphrase-file", signPass, "-u", "signer@pipespool.invalid",
			"--sign", "--encrypt", "-r", "recipient@pipespool.invalid"),
		"sign encrypt other": home.mustRun(input, "-u", "other@pipespool.invalid",
			"--sign", "--encrypt", "-r", "recipient@pipespool.invalid"),
		"encrypt to other": home.mustRun(input, "--encrypt", "-r", "other@pipespool.invalid"),
	}
}

func TestOpenPGPDecryptReadsGPG(t *testing.T) {
	keys := testKeys(t)
	input := backupLike(5<<20+7, 12)
	msgs := gpgMessages(t, keys, input)
	withKey := map[string]any{"secret_key": "recipient.sec.asc", "passphrase_file": "recipient.pass"}
	signed := map[string]any{"secret_key": "recipient.sec.asc", "passphrase_file": "recipient.pass", "require_signed_by": "signer.pub.asc"}
	symmetric := map[string]any{"passphrase_file": "symmetric.pass"}
	for _, tc := range []struct {
		msg  string
		with map[string]any
	}{
		{"encrypt", withKey},
		{"encrypt armor", withKey},
		{"encrypt uncompressed", withKey},
		{"encrypt hidden", withKey},
		{"symmetric", symmetric},
		{"symmetric aes256", symmetric},
		{"symmetric cast5", symmetric},
		{"sign encrypt", withKey},
		{"sign encrypt", signed},
	} {
		t.Run(tc.msg, func(t *testing.T) {
			f := newFilter(t, "openpgp-decrypt", tc.with, keys)
			out, err := runFilter(t, f, bytes.NewReader(msgs[tc.msg]))
			if err != nil {
				t.Fatal(err)
			}
			if sum(out) != sum(input) {
				t.Fatalf("sha256 %s, want %s", sum(out), sum(input))
			}
		})
	}
}

func TestOpenPGPRoundTrip(t *testing.T) {
	keys := testKeys(t)
	input := randomBytes(3<<20+5, 13)
	// A passphrase file written on Windows: the CR is not part of it.
	os.WriteFile(filepath.Join(keys, "signer.crlf.pass"), []byte("signer passphrase with spaces\r\n"), 0o600)
	enc := newFilter(t, "openpgp-encrypt", map[string]any{"recipients": []any{"plain.pub.asc"},
		"sign_with": "signer.sec.asc", "sign_passphrase_file": "signer.crlf.pass", "armor": true}, keys)
	msg, err := runFilter(t, enc, bytes.NewReader(input))
	if err != nil {
		t.Fatal(err)
	}
	dec := newFilter(t, "openpgp-decrypt", map[string]any{"secret_key": "plain.sec.asc", "require_signed_by": "signer.pub.asc"}, keys)
	out, err := runFilter(t, dec, bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, input) {
		t.Fatal("round trip changed the bytes")
	}
	// Every size around the chunk boundaries of the packet framing.
	sym := newFilter(t, "openpgp-encrypt", map[string]any{"passphrase_file": "symmetric.pass"}, keys)
	symDec := newFilter(t, "openpgp-decrypt", map[string]any{"passphrase_file": "symmetric.pass"}, keys)
	for _, n := range []int{0, 1, 21, 22, 23, 191, 192, 8383, 8384, pgpChunk - 6, pgpChunk - 5, pgpChunk, 2*pgpChunk + 1} {
		data := randomBytes(n, uint64(n))
		var msg, out bytes.Buffer
		if err := sym.Run(t.Context(), bytes.NewReader(data), &msg); err != nil {
			t.Fatalf("%d bytes: encrypt: %v", n, err)
		}
		if err := symDec.Run(t.Context(), &msg, &out); err != nil {
			t.Fatalf("%d bytes: decrypt: %v", n, err)
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("%d bytes: round trip changed the bytes", n)
		}
	}
}

func TestOpenPGPDecryptErrors(t *testing.T) {
	keys := testKeys(t)
	input := randomBytes(2<<20, 14)
	msgs := gpgMessages(t, keys, input)
	os.WriteFile(filepath.Join(keys, "wrong.pass"), []byte("not the passphrase\n"), 0o600)
	withKey := map[string]any{"secret_key": "recipient.sec.asc", "passphrase_file": "recipient.pass"}
	signed := map[string]any{"secret_key": "recipient.sec.asc", "passphrase_file": "recipient.pass", "require_signed_by": "signer.pub.asc"}

	ours := func(with map[string]any) []byte {
		msg, err := runFilter(t, newFilter(t, "openpgp-encrypt", with, keys), bytes.NewReader(input))
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	symMsg := ours(map[string]any{"passphrase_file": "symmetric.pass"})
	flipped := append([]byte(nil), symMsg...)
	flipped[len(flipped)/2] ^= 0x01
	flippedEnd := append([]byte(nil), symMsg...)
	flippedEnd[len(flippedEnd)-5] ^= 0x80

	for _, tc := range []struct {
		name string
		with map[string]any
		msg  []byte
		want []string
	}{
		{"wrong key", withKey, msgs["encrypt to other"],
			[]string{"no secret key for this message; it is encrypted to key IDs " + otherSubkeyID, "recipient.sec.asc"}},
		{"wrong key passphrase", map[string]any{"secret_key": "recipient.sec.asc", "passphrase_file": "wrong.pass"}, msgs["encrypt"],
			[]string{"wrong passphrase in", "wrong.pass"}},
		{"wrong symmetric passphrase", map[string]any{"passphrase_file": "wrong.pass"}, msgs["symmetric"],
			[]string{"wrong passphrase in", "wrong.pass"}},
		{"wrong symmetric passphrase, ours", map[string]any{"passphrase_file": "wrong.pass"}, symMsg,
			[]string{"wrong passphrase in", "wrong.pass"}},
		{"symmetric message, key given", map[string]any{"secret_key": "plain.sec.asc"}, msgs["symmetric"],
			[]string{"encrypted with a passphrase", "set passphrase_file"}},
		{"key message, passphrase given", map[string]any{"passphrase_file": "symmetric.pass"}, msgs["encrypt"],
			[]string{"no secret key for this message; it is encrypted to key IDs 0x", "set secret_key"}},
		{"not OpenPGP", withKey, []byte("just some text\n"), []string{"not an OpenPGP message"}},
		{"zstd data", withKey, []byte{0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3, 4}, []string{"not an OpenPGP message", "zstd"}},
		{"empty", withKey, nil, []string{"not an OpenPGP message", "empty"}},
		{"key instead of message", withKey, mustRead(t, filepath.Join(keys, "other.pub.asc")), []string{"not an OpenPGP message"}},
		{"truncated", withKey, msgs["encrypt"][:len(msgs["encrypt"])-4000], []string{"truncated message"}},
		{"truncated in key packets", withKey, msgs["encrypt"][:40], []string{"truncated message"}},
		{"truncated ours", map[string]any{"passphrase_file": "symmetric.pass"}, symMsg[:len(symMsg)-10], []string{"truncated message"}},
		{"truncated armor", withKey, msgs["encrypt armor"][:len(msgs["encrypt armor"])/2], []string{"openpgp:"}},
		{"modified", map[string]any{"passphrase_file": "symmetric.pass"}, flipped, []string{"integrity check failed"}},
		{"modified MDC", map[string]any{"passphrase_file": "symmetric.pass"}, flippedEnd, []string{"integrity check failed"}},
		{"signature missing", signed, msgs["encrypt"], []string{"signature missing", signerPrimaryID}},
		{"signature by another key", signed, msgs["sign encrypt other"], []string{"signature by another key", otherPrimaryID, signerPrimaryID}},
		{"bad signature", signed, badlySigned(t, keys, input), []string{"bad signature by " + signerPrimaryID}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFilter(t, "openpgp-decrypt", tc.with, keys)
			_, err := runFilter(t, f, bytes.NewReader(tc.msg))
			wantErr(t, err, tc.want...)
			t.Log(err)
		})
	}
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// badlySigned builds, with the encrypter's own parts, a message encrypted
// to recipient and signed by signer whose signature covers other bytes
// than the literal data: integrity intact, signature bad.
func badlySigned(t testing.TB, keys string, input []byte) []byte {
	t.Helper()
	p, _ := newWithParams(map[string]any{}, keys)
	rcpt, err := p.readKeyFile("recipients", "recipient.pub.asc", false)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := p.readKeyFile("sign_with", "signer.sec.asc", true)
	if err != nil {
		t.Fatal(err)
	}
	sk, _ := signer.entities[0].SigningKey(time.Now())
	if err := unlockKey(sk.PrivateKey, []byte("signer passphrase with spaces"), "signer.pass"); err != nil {
		t.Fatal(err)
	}
	var msg bytes.Buffer
	key := randomBytes(32, 99)
	ek, _ := rcpt.entities[0].EncryptionKey(time.Now())
	if err := packet.SerializeEncryptedKeyAEAD(&msg, ek.PublicKey, packet.CipherAES256, false, key, pgpConfig()); err != nil {
		t.Fatal(err)
	}
	enc, err := seipd.NewWriter(&msg, key)
	if err != nil {
		t.Fatal(err)
	}
	ops := &packet.OnePassSignature{Version: 3, SigType: packet.SigTypeBinary, Hash: crypto.SHA256,
		PubKeyAlgo: sk.PrivateKey.PubKeyAlgo, KeyId: sk.PrivateKey.KeyId, IsLast: true}
	ops.Serialize(enc)
	lit := seipd.NewPartialWriter(enc, seipd.TagLiteral, pgpChunk)
	lit.Write([]byte{'b', 0, 0, 0, 0, 0})
	lit.Write(input)
	lit.Close()
	h := crypto.SHA256.New()
	h.Write([]byte("not the data"))
	sig := &packet.Signature{Version: 4, SigType: packet.SigTypeBinary, PubKeyAlgo: sk.PrivateKey.PubKeyAlgo,
		Hash: crypto.SHA256, CreationTime: time.Now(), IssuerKeyId: &sk.PrivateKey.KeyId}
	if err := sig.Sign(h, sk.PrivateKey, pgpConfig()); err != nil {
		t.Fatal(err)
	}
	sig.Serialize(enc)
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return msg.Bytes()
}

func TestOpenPGPParams(t *testing.T) {
	keys := testKeys(t)
	os.WriteFile(filepath.Join(keys, "garbage.asc"), []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnope\n"), 0o644)
	for _, tc := range []struct {
		name, key, msg string
		with           map[string]any
	}{
		{"openpgp-encrypt", "", "needs recipients", map[string]any{"armor": true}},
		{"openpgp-encrypt", "recipients", "no such file", map[string]any{"recipients": []any{"missing.asc"}}},
		{"openpgp-encrypt", "recipients", "is empty", map[string]any{"recipients": []any{}}},
		{"openpgp-encrypt", "recipients", "element 1 must be a string", map[string]any{"recipients": []any{int64(1)}}},
		{"openpgp-encrypt", "recipients", "not an OpenPGP key file", map[string]any{"recipients": []any{"garbage.asc"}}},
		{"openpgp-encrypt", "recipients", "not an OpenPGP key file", map[string]any{"recipients": []any{"recipient.pass"}}},
		{"openpgp-encrypt", "passphrase_file", "no such file", map[string]any{"passphrase_file": "missing.pass"}},
		{"openpgp-encrypt", "sign_with", "protected by a passphrase", map[string]any{"passphrase_file": "symmetric.pass", "sign_with": "signer.sec.asc"}},
		{"openpgp-encrypt", "sign_with", "holds a public key", map[string]any{"passphrase_file": "symmetric.pass", "sign_with": "signer.pub.asc"}},
		{"openpgp-encrypt", "sign_passphrase_file", "only used with sign_with", map[string]any{"passphrase_file": "symmetric.pass", "sign_passphrase_file": "signer.pass"}},
		{"openpgp-encrypt", "armor", "must be true or false", map[string]any{"passphrase_file": "symmetric.pass", "armor": "yes"}},
		{"openpgp-decrypt", "", "needs secret_key", map[string]any{}},
		{"openpgp-decrypt", "secret_key", "no such file", map[string]any{"secret_key": "missing.sec.asc"}},
		{"openpgp-decrypt", "secret_key", "holds a public key", map[string]any{"secret_key": "recipient.pub.asc"}},
		{"openpgp-decrypt", "secret_key", "protected by a passphrase: set passphrase_file", map[string]any{"secret_key": "recipient.sec.asc"}},
		{"openpgp-decrypt", "require_signed_by", "no such file", map[string]any{"secret_key": "plain.sec.asc", "require_signed_by": "missing.asc"}},
		{"openpgp-decrypt", "passphrase_file", "must be a string", map[string]any{"passphrase_file": []any{"a"}}},
	} {
		_, err := buildFilter(tc.name, tc.with, keys)
		wantParamError(t, err, tc.key, tc.msg)
	}
}

func TestOpenPGPWarnsAboutReadableSecrets(t *testing.T) {
	keys := testKeys(t)
	f := newFilter(t, "openpgp-decrypt", map[string]any{"secret_key": "recipient.sec.asc", "passphrase_file": "recipient.pass"}, keys)
	if w := f.(ConfigWarner).Warnings(); len(w) != 0 {
		t.Fatalf("mode 0600 files: warnings %q", w)
	}
	os.Chmod(filepath.Join(keys, "recipient.sec.asc"), 0o644)
	f = newFilter(t, "openpgp-decrypt", map[string]any{"secret_key": "recipient.sec.asc", "passphrase_file": "recipient.pass"}, keys)
	w := f.(ConfigWarner).Warnings()
	if len(w) != 1 || !strings.Contains(w[0], "recipient.sec.asc") || !strings.Contains(w[0], "other users") {
		t.Fatalf("mode 0644 secret key: warnings %q, want one naming the file", w)
	}
	// Public keys are public.
	os.Chmod(filepath.Join(keys, "signer.pass"), 0o640)
	f = newFilter(t, "openpgp-encrypt", map[string]any{"recipients": []any{"recipient.pub.asc"}, "sign_with": "signer.sec.asc", "sign_passphrase_file": "signer.pass"}, keys)
	if w := f.(ConfigWarner).Warnings(); len(w) != 1 || !strings.Contains(w[0], "signer.pass") {
		t.Fatalf("mode 0640 passphrase file: warnings %q, want one naming it", w)
	}
}

// TestOpenPGPDecryptGarbageNeverPanics feeds truncated and mutated messages.
func TestOpenPGPDecryptGarbageNeverPanics(t *testing.T) {
	keys := testKeys(t)
	input := randomBytes(64<<10, 15)
	msgs := gpgMessages(t, keys, input)
	f := newFilter(t, "openpgp-decrypt", map[string]any{"secret_key": "recipient.sec.asc", "passphrase_file": "recipient.pass"}, keys)
	g := newFilter(t, "openpgp-decrypt", map[string]any{"passphrase_file": "symmetric.pass"}, keys)
	for i := range 150 {
		for _, name := range []string{"encrypt", "symmetric", "sign encrypt"} {
			data := append([]byte(nil), msgs[name]...)
			rng := randomBytes(16, uint64(i))
			switch i % 3 {
			case 0:
				data = data[:int(rng[0])*len(data)/256]
			case 1:
				for k := 0; k < 4; k++ {
					data[(int(rng[k])<<8|int(rng[k+8]))%len(data)] ^= rng[k] | 1
				}
			case 2:
				data = append([]byte{0x8c | rng[0]&3}, randomBytes(int(rng[1])*16, uint64(i))...)
			}
			filter := f
			if name == "symmetric" {
				filter = g
			}
			if err := filter.Run(t.Context(), bytes.NewReader(data), io.Discard); err == nil && i%3 != 1 {
				t.Fatalf("%s mutation %d: no error", name, i)
			}
		}
	}
}

func BenchmarkOpenPGPDecrypt(b *testing.B) {
	keys := testKeys(b)
	input := randomBytes(64<<20, 16)
	enc := newFilter(b, "openpgp-encrypt", map[string]any{"passphrase_file": "symmetric.pass"}, keys)
	var msg bytes.Buffer
	if err := enc.Run(b.Context(), bytes.NewReader(input), &msg); err != nil {
		b.Fatal(err)
	}
	dec := newFilter(b, "openpgp-decrypt", map[string]any{"passphrase_file": "symmetric.pass"}, keys)
	b.SetBytes(int64(len(input)))
	for b.Loop() {
		if err := dec.Run(b.Context(), bytes.NewReader(msg.Bytes()), discard{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpenPGPEncrypt(b *testing.B) {
	keys := testKeys(b)
	input := randomBytes(64<<20, 17)
	enc := newFilter(b, "openpgp-encrypt", map[string]any{"recipients": []any{"recipient.pub.asc"}}, keys)
	b.SetBytes(int64(len(input)))
	for b.Loop() {
		if err := enc.Run(b.Context(), bytes.NewReader(input), discard{}); err != nil {
			b.Fatal(err)
		}
	}
}

// The encrypter reads its input straight into the literal packet's
// partial bodies, and a full body goes out only once more data is known
// to follow. Every size around the body boundaries (the literal header
// takes 6 bytes of the first), read in pieces that do and do not divide
// the body, must decrypt with gpg, signed too (the signature hashes what
// is read).
func TestOpenPGPEncryptBodyBoundariesReadByGPG(t *testing.T) {
	keys := testKeys(t)
	home := newGPGHome(t, keys, "recipient.sec.asc", "signer.pub.asc")
	with := map[string]any{"recipients": []any{"recipient.pub.asc"}, "sign_with": "signer.sec.asc", "sign_passphrase_file": "signer.pass"}
	f := newFilter(t, "openpgp-encrypt", with, keys)
	for _, n := range []int{pgpChunk - 7, pgpChunk - 6, pgpChunk - 5, 2*pgpChunk - 6, 2*pgpChunk - 5, 3*pgpChunk + 100} {
		for _, piece := range []int{1000, 64 << 10, pgpChunk} {
			input := randomBytes(n, uint64(n+piece))
			var msg bytes.Buffer
			if err := f.Run(t.Context(), &pieceReader{data: input, size: piece}, &msg); err != nil {
				t.Fatalf("%d bytes in pieces of %d: %v", n, piece, err)
			}
			out, stderr, err := home.run(msg.Bytes(), "--passphrase-file", filepath.Join(keys, "recipient.pass"), "--status-fd", "2", "--decrypt")
			if err != nil {
				t.Fatalf("%d bytes in pieces of %d: gpg --decrypt: %v\n%s", n, piece, err, stderr)
			}
			if sum(out) != sum(input) || !strings.Contains(stderr, "[GNUPG:] GOODSIG") || !strings.Contains(stderr, "[GNUPG:] GOODMDC") {
				t.Fatalf("%d bytes in pieces of %d: gpg --decrypt: sha256 %s, want %s\n%s", n, piece, sum(out), sum(input), stderr)
			}
		}
	}
}
