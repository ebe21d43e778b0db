package seipd

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// vector is a message of testdata (see generate.sh): gpg's encrypted data
// packet body after its version byte, and its session key.
type vector struct {
	name string
	key  []byte
	body []byte
}

func readVector(t *testing.T, name string) vector {
	t.Helper()
	sk, err := os.ReadFile(filepath.Join("testdata", name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := os.ReadFile(filepath.Join("testdata", name+".gpg"))
	if err != nil {
		t.Fatal(err)
	}
	return vector{name: name, key: parseSessionKey(t, string(sk)), body: seipdBody(t, msg)}
}

// parseSessionKey reads gpg's --show-session-key format, "9:HEX".
func parseSessionKey(t testing.TB, s string) []byte {
	t.Helper()
	_, k, ok := strings.Cut(strings.TrimSpace(s), ":")
	key, err := hex.DecodeString(k)
	if !ok || err != nil {
		t.Fatalf("session key %q: not gpg's CIPHER:HEX", s)
	}
	return key
}

// seipdBody returns the body after the version byte of the message's
// SEIPD v1 packet, through go-crypto's packet framing.
func seipdBody(t testing.TB, msg []byte) []byte {
	t.Helper()
	packets := packet.NewReader(bytes.NewReader(msg))
	for {
		p, err := packets.Next()
		if err != nil {
			t.Fatalf("no SEIPD packet: %v", err)
		}
		if se, ok := p.(*packet.SymmetricallyEncrypted); ok {
			if !se.IntegrityProtected || se.Version != 1 {
				t.Fatalf("encrypted data packet: integrity %v version %d, want SEIPD v1", se.IntegrityProtected, se.Version)
			}
			body, err := io.ReadAll(se.Contents)
			if err != nil {
				t.Fatal(err)
			}
			return body
		}
	}
}

// literalBody parses the packets inside the encrypted data: one literal
// data packet, whose contents it returns.
func literalBody(t testing.TB, inner []byte) []byte {
	t.Helper()
	p, err := packet.Read(bytes.NewReader(inner))
	if err != nil {
		t.Fatalf("inner packet: %v", err)
	}
	lit, ok := p.(*packet.LiteralData)
	if !ok {
		t.Fatalf("inner packet is a %T, want literal data", p)
	}
	b, err := io.ReadAll(lit.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decryptAll(body, key []byte) ([]byte, error) {
	r, err := NewReader(bytes.NewReader(body), key)
	if err != nil {
		return nil, err
	}
	defer r.Stop()
	out, err := io.ReadAll(r)
	if err != nil {
		return out, err
	}
	return out, r.Close()
}

var vectors = []string{"aes128", "aes192", "aes256", "empty"}

// TestReaderKnownAnswers decrypts what gpg encrypted, with the session key
// gpg printed: the literal data inside is the plaintext.
func TestReaderKnownAnswers(t *testing.T) {
	plain, err := os.ReadFile(filepath.Join("testdata", "plain.bin"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range vectors {
		v := readVector(t, name)
		inner, err := decryptAll(v.body, v.key)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := plain
		if name == "empty" {
			want = nil
		}
		if got := literalBody(t, inner); !bytes.Equal(got, want) {
			t.Fatalf("%s: decrypted %d bytes, not the %d of plain.bin", name, len(got), len(want))
		}
	}
}

// TestWriterKnownAnswers encrypts, with gpg's session key and gpg's random
// block, what gpg encrypted: the packet body must be gpg's to the byte
// (the CFB stream and the MDC; the partial-length framing is the
// writer's own and is read back through go-crypto).
func TestWriterKnownAnswers(t *testing.T) {
	for _, name := range vectors {
		v := readVector(t, name)
		inner, err := decryptAll(v.body, v.key)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		block, err := aes.NewCipher(v.key)
		if err != nil {
			t.Fatal(err)
		}
		random := make([]byte, aes.BlockSize)
		cipher.NewCFBDecrypter(block, make([]byte, aes.BlockSize)).XORKeyStream(random, v.body[:aes.BlockSize])
		var out bytes.Buffer
		w, err := newWriter(&out, block, random)
		if err != nil {
			t.Fatal(err)
		}
		// Writes of uneven sizes, as the encrypter's packet headers and
		// reads make them.
		for rest, k := inner, 1; len(rest) > 0; k = k*7%9001 + 1 {
			k = min(k, len(rest))
			if _, err := w.Write(rest[:k]); err != nil {
				t.Fatal(err)
			}
			rest = rest[k:]
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if got := seipdBody(t, out.Bytes()); !bytes.Equal(got, v.body) {
			t.Fatalf("%s: the writer's packet body differs from gpg's (%d bytes, gpg %d)", name, len(got), len(v.body))
		}
	}
}

// TestReaderRejectsWrongKeyAndModification: the quick check catches a
// wrong key, the MDC a flipped bit anywhere after the prefix, and a body
// cut short never passes.
func TestReaderRejectsWrongKeyAndModification(t *testing.T) {
	v := readVector(t, "aes256")
	wrong := append([]byte(nil), v.key...)
	wrong[0] ^= 1
	if _, err := decryptAll(v.body, wrong); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong key: %v, want ErrWrongKey", err)
	}
	for _, off := range []int{18, 19, 100, len(v.body) / 2, len(v.body) - 23, len(v.body) - 22, len(v.body) - 21, len(v.body) - 1} {
		mod := append([]byte(nil), v.body...)
		mod[off] ^= 0x04
		if _, err := decryptAll(mod, v.key); !errors.Is(err, ErrIntegrity) {
			t.Errorf("bit flipped at %d of %d: %v, want ErrIntegrity", off, len(v.body), err)
		}
	}
	for _, n := range []int{0, 10, 17, 18, 30, len(v.body) / 2, len(v.body) - 22, len(v.body) - 1} {
		_, err := decryptAll(v.body[:n], v.key)
		if !errors.Is(err, ErrIntegrity) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("body cut to %d of %d bytes: %v, want ErrIntegrity or io.ErrUnexpectedEOF", n, len(v.body), err)
		}
	}
}

func randomBytes(n int, seed uint64) []byte {
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 7})
	b := make([]byte, n)
	rng.Read(b)
	return b
}

// gpg runs gpg in a throw-away GNUPGHOME and returns stdout and stderr.
func gpg(t *testing.T, stdin []byte, args ...string) ([]byte, string) {
	t.Helper()
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Fatal("gpg is not installed; the seipd interop tests need it: apt-get install -y gnupg")
	}
	home, err := os.MkdirTemp("", "gpg") // short: gpg-agent's socket path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		kill := exec.Command("gpgconf", "--kill", "all")
		kill.Env = append(os.Environ(), "GNUPGHOME="+home)
		kill.Run()
		os.RemoveAll(home)
	})
	cmd := exec.Command("gpg", append([]string{"--batch", "--quiet", "--pinentry-mode", "loopback"}, args...)...)
	cmd.Env = append(os.Environ(), "GNUPGHOME="+home)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("gpg %q: %v\n%s", args, err, errb.String())
	}
	return out.Bytes(), errb.String()
}

// TestGPGReadsWriter: gpg decrypts what the writer wrote around its chunk
// boundaries, given the session key (--override-session-key).
func TestGPGReadsWriter(t *testing.T) {
	key := randomBytes(32, 1)
	for _, n := range []int{0, 1, ChunkSize - 7, ChunkSize - 6, 2*ChunkSize + 100} {
		data := randomBytes(n, uint64(n))
		var msg bytes.Buffer
		w, err := NewWriter(&msg, key)
		if err != nil {
			t.Fatal(err)
		}
		lit := NewPartialWriter(w, TagLiteral, ChunkSize)
		lit.Write([]byte{'b', 0, 0, 0, 0, 0})
		lit.Write(data)
		if err := lit.Close(); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		out, stderr := gpg(t, msg.Bytes(), "--status-fd", "2", "--override-session-key", fmt.Sprintf("9:%X", key), "--decrypt")
		if !bytes.Equal(out, data) {
			t.Fatalf("%d bytes: gpg decrypted %d other bytes\n%s", n, len(out), stderr)
		}
		if !strings.Contains(stderr, "[GNUPG:] GOODMDC") {
			t.Fatalf("%d bytes: gpg status lacks GOODMDC:\n%s", n, stderr)
		}
	}
}

// TestReaderReadsGPG: gpg encrypts from a pipe (partial lengths) more
// than several of the reader's parallel chunks; the reader decrypts it with
// the session key gpg prints.
func TestReaderReadsGPG(t *testing.T) {
	data := randomBytes(3*ChunkSize+12345, 9)
	for _, c := range []string{"AES", "AES192", "AES256"} {
		msg, _ := gpg(t, data, "--passphrase", "p", "-z", "0", "--cipher-algo", c, "--symmetric")
		_, stderr := gpg(t, msg, "--passphrase", "p", "--show-session-key", "--decrypt")
		i := strings.Index(stderr, "session key: '")
		if i < 0 {
			t.Fatalf("gpg --show-session-key printed no key:\n%s", stderr)
		}
		sk, _, _ := strings.Cut(stderr[i+len("session key: '"):], "'")
		inner, err := decryptAll(seipdBody(t, msg), parseSessionKey(t, sk))
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		if !bytes.Equal(literalBody(t, inner), data) {
			t.Fatalf("%s: decrypted bytes differ", c)
		}
	}
}

func TestCFBDecryptMatchesCryptoCipher(t *testing.T) {
	block, _ := aes.NewCipher(randomBytes(32, 1))
	var iv [aes.BlockSize]byte
	copy(iv[:], randomBytes(16, 2))
	for _, n := range []int{0, 1, 15, 16, 17, 31, 32, 33, 1000, 4096, 4099} {
		ct := randomBytes(n, uint64(n))
		want := make([]byte, n)
		cipher.NewCFBDecrypter(block, iv[:]).XORKeyStream(want, ct)
		got := append([]byte(nil), ct...)
		cfbDecrypt(block, iv, got, make([]byte, n+16))
		if !bytes.Equal(got, want) {
			t.Fatalf("%d bytes: cfbDecrypt differs from crypto/cipher's CFB", n)
		}
	}
}

func TestCFBEncrypterMatchesCryptoCipher(t *testing.T) {
	block, _ := aes.NewCipher(randomBytes(32, 3))
	data := randomBytes(70000, 4)
	want := make([]byte, len(data))
	cipher.NewCFBEncrypter(block, make([]byte, aes.BlockSize)).XORKeyStream(want, data)
	// Writes of every alignment, as packet headers make them.
	x := cfbEncrypter{b: block}
	block.Encrypt(x.out[:], x.out[:])
	got := make([]byte, len(data))
	for off, k := 0, 1; off < len(data); k = k*7%5003 + 1 {
		k = min(k, len(data)-off)
		x.XORKeyStream(got[off:off+k], data[off:off+k])
		off += k
	}
	if !bytes.Equal(got, want) {
		t.Fatal("cfbEncrypter differs from crypto/cipher's CFB")
	}
}

// TestPartialWriterLengths: every length encoding of the last body (1, 2
// and 5 octets), after zero, one and several partial bodies, reads back
// through go-crypto's framing.
func TestPartialWriterLengths(t *testing.T) {
	for _, n := range []int{0, 1, 185, 186, 8377, 8378, 506, 507, 1018, 1019, 100000} {
		data := randomBytes(n, uint64(n))
		var buf bytes.Buffer
		p := NewPartialWriter(&buf, TagLiteral, 512)
		p.Write([]byte{'b', 0, 0, 0, 0, 0}) // literal data header: 6 bytes
		for rest, k := data, 1; len(rest) > 0; k = k*5%777 + 1 {
			k = min(k, len(rest))
			p.Write(rest[:k])
			rest = rest[k:]
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if got := literalBody(t, buf.Bytes()); !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: read back %d other bytes", n, len(got))
		}
	}
}

// BenchmarkWriter is the encrypter's cost per byte, the MDC's SHA-1
// included (see Writer for why the two are interleaved).
func BenchmarkWriter(b *testing.B) {
	w, err := NewWriter(io.Discard, bytes.Repeat([]byte{7}, 32))
	if err != nil {
		b.Fatal(err)
	}
	p := make([]byte, ChunkSize)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if _, err := w.Write(p); err != nil {
			b.Fatal(err)
		}
	}
}
