package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// builtinKeys copies the test keys into dir/keys, secret files mode 0600
// (git does not keep modes, and a readable key would add a warning to
// stderr), and returns that directory.
func builtinKeys(t *testing.T, dir string) string {
	t.Helper()
	src, err := filepath.Abs("../testdata/keys")
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "keys")
	if err := os.Mkdir(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// shell runs a /bin/sh script in dir and returns its stdout, failing the
// test with its stderr when it fails.
func shell(t *testing.T, dir, script string) []byte {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("sh -c %q: %v\n%s", script, err, errb.String())
	}
	return out.Bytes()
}

// backupInput writes a multi-MiB file that compresses like a backup: random
// blocks between repetitive text. It returns its path and sha256.
func backupInput(t *testing.T, dir string) (string, string) {
	t.Helper()
	rnd, _ := randomFile(t, dir, "rnd.bin", 3<<20, 41)
	rndData, err := os.ReadFile(rnd)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for i := 0; i < 3; i++ {
		b.Write(rndData[i<<20 : (i+1)<<20])
		for k := 0; k < 20000; k++ {
			fmt.Fprintf(&b, "%08d backup line for dataset tank/home/%d\n", k, i)
		}
	}
	p := filepath.Join(dir, "input.bin")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b.Bytes())
	return p, hex.EncodeToString(s[:])
}

// gpgCmd is gpg as the tests run it, in the test's GNUPGHOME.
const gpgCmd = "gpg -q --batch --pinentry-mode loopback --trust-model always"

// TestBuiltinRestoreMatchesShell: a restore job of built-ins
// (openpgp-decrypt, zstd-decompress) on a `zstd | gpg --encrypt` backup
// gives the bytes `gpg -d | zstd -d` gives, with and without a signature
// required.
func TestBuiltinRestoreMatchesShell(t *testing.T) {
	needTools(t, "gpg", "zstd")
	dir := t.TempDir()
	newGPGHome(t) // the recipient's secret key, for the shell oracle
	keys := builtinKeys(t, dir)
	shell(t, dir, fmt.Sprintf("%s --passphrase-file %s --import %s", gpgCmd,
		filepath.Join(keys, "signer.pass"), filepath.Join(keys, "signer.sec.asc")))
	in, want := backupInput(t, dir)
	shell(t, dir, fmt.Sprintf("zstd -q -T0 -c %s | %s --encrypt -r recipient@pipespool.invalid > backup.zst.gpg", in, gpgCmd))
	shell(t, dir, fmt.Sprintf("zstd -q -T0 -c %s | %s --passphrase-file %s -u signer@pipespool.invalid --sign --encrypt -r recipient@pipespool.invalid > signed.zst.gpg",
		in, gpgCmd, filepath.Join(keys, "signer.pass")))

	job := writeFile(t, dir, "restore.toml", `
[[stage]]
name = "decrypt"
builtin = "openpgp-decrypt"
[stage.with]
secret_key = "keys/recipient.sec.asc"
passphrase_file = "keys/recipient.pass"

[[stage]]
name = "unzstd"
builtin = "zstd-decompress"
`)
	signedJob := writeFile(t, dir, "restore-signed.toml", `
[[stage]]
name = "decrypt"
builtin = "openpgp-decrypt"
[stage.with]
secret_key = "keys/recipient.sec.asc"
passphrase_file = "keys/recipient.pass"
require_signed_by = "keys/signer.pub.asc"

[[stage]]
builtin = "zstd-decompress"

[[stage]]
builtin = "sha256"
[stage.with]
expect = "`+want+`"
`)
	for _, tc := range []struct{ job, backup string }{
		{job, "backup.zst.gpg"},
		{signedJob, "signed.zst.gpg"},
		{job, "signed.zst.gpg"},
	} {
		oracle := shell(t, dir, fmt.Sprintf("%s --passphrase-file %s -d %s | zstd -d | sha256sum",
			gpgCmd, filepath.Join(keys, "recipient.pass"), tc.backup))
		out := filepath.Join(dir, "restored.bin")
		res := runPipespool(t, runOpts{Dir: t.TempDir()}, "exec", tc.job, "-i", filepath.Join(dir, tc.backup), "-o", out)
		if res.Code != 0 {
			t.Fatalf("%s on %s: exit %d\n%s", filepath.Base(tc.job), tc.backup, res.Code, res.Stderr)
		}
		if len(res.Stderr) != 0 {
			t.Errorf("%s: a successful run wrote to stderr: %s", filepath.Base(tc.job), res.Stderr)
		}
		got := fileSHA256(t, out)
		if got != want || !strings.HasPrefix(string(oracle), want) {
			t.Fatalf("%s on %s: restored sha256 %s, gpg -d | zstd -d %s, input %s", filepath.Base(tc.job), tc.backup, got, oracle[:64], want)
		}
		os.Remove(out)
	}
}

// TestBuiltinBackupReadByShell: a backup job of built-ins (zstd-compress,
// openpgp-encrypt signed, sha256 write_to) writes what `gpg -d | zstd -d`
// restores, and the digest of what it wrote.
func TestBuiltinBackupReadByShell(t *testing.T) {
	needTools(t, "gpg", "zstd")
	dir := t.TempDir()
	newGPGHome(t)
	keys := builtinKeys(t, dir)
	shell(t, dir, fmt.Sprintf("%s --import %s", gpgCmd, filepath.Join(keys, "signer.pub.asc")))
	in, want := backupInput(t, dir)
	job := writeFile(t, dir, "backup.toml", `
[[stage]]
builtin = "zstd-compress"
[stage.with]
level = 3

[[stage]]
name = "encrypt"
builtin = "openpgp-encrypt"
[stage.with]
recipients = ["keys/recipient.pub.asc"]
sign_with = "keys/signer.sec.asc"
sign_passphrase_file = "keys/signer.pass"

[[stage]]
builtin = "sha256"
[stage.with]
write_to = "backup.sha256"
`)
	out := filepath.Join(dir, "backup.zst.gpg")
	res := runPipespool(t, runOpts{}, "exec", job, "-i", in, "-o", out)
	if res.Code != 0 {
		t.Fatalf("exit %d\n%s", res.Code, res.Stderr)
	}
	status := shell(t, dir, fmt.Sprintf("%s --status-fd 1 --passphrase-file %s -o decrypted.zst -d %s",
		gpgCmd, filepath.Join(keys, "recipient.pass"), out))
	if !bytes.Contains(status, []byte("GOODSIG 271D2BA8598E17BE")) || !bytes.Contains(status, []byte("GOODMDC")) {
		t.Errorf("gpg status lacks a good signature by the signer and a good MDC:\n%s", status)
	}
	got := shell(t, dir, "zstd -d -c decrypted.zst | sha256sum")
	if !strings.HasPrefix(string(got), want) {
		t.Fatalf("gpg -d | zstd -d: sha256 %s, want %s", got[:64], want)
	}
	digest, err := os.ReadFile(filepath.Join(dir, "backup.sha256"))
	if err != nil {
		t.Fatal(err)
	}
	if string(digest) != fileSHA256(t, out)+"\n" {
		t.Fatalf("backup.sha256 holds %q, want the sha256 of the backup %s", digest, fileSHA256(t, out))
	}
}

// TestBuiltinFailuresLeaveNoOutput: each error of a built-in fails the run
// (exit 1) with the stage and the reason named, and no output file.
func TestBuiltinFailuresLeaveNoOutput(t *testing.T) {
	needTools(t, "gpg", "zstd")
	dir := t.TempDir()
	newGPGHome(t)
	keys := builtinKeys(t, dir)
	in, _ := backupInput(t, dir)
	shell(t, dir, fmt.Sprintf("%s --import %s", gpgCmd, filepath.Join(keys, "other.pub.asc")))
	shell(t, dir, fmt.Sprintf("zstd -q -c %s > good.zst && %s --encrypt -r recipient@pipespool.invalid < good.zst > good.zst.gpg", in, gpgCmd))
	shell(t, dir, fmt.Sprintf("%s --encrypt -r other@pipespool.invalid < good.zst > other.zst.gpg", gpgCmd))
	shell(t, dir, "head -c 100000 good.zst.gpg > truncated.zst.gpg")
	shell(t, dir, fmt.Sprintf("head -c 300000 good.zst | %s -z 0 --encrypt -r recipient@pipespool.invalid > short-zstd.gpg", gpgCmd))
	shell(t, dir, fmt.Sprintf("%s -z 0 --encrypt -r recipient@pipespool.invalid < %s > not-zstd.gpg", gpgCmd, in))
	os.WriteFile(filepath.Join(keys, "wrong.pass"), []byte("not it\n"), 0o600)
	// A modified message: one bit flipped in the middle of the data.
	msg, err := os.ReadFile(filepath.Join(dir, "good.zst.gpg"))
	if err != nil {
		t.Fatal(err)
	}
	msg[len(msg)/2] ^= 0x10
	os.WriteFile(filepath.Join(dir, "modified.zst.gpg"), msg, 0o644)

	restore := func(pass, extra string) string {
		return fmt.Sprintf(`
[[stage]]
name = "decrypt"
builtin = "openpgp-decrypt"
[stage.with]
secret_key = "keys/recipient.sec.asc"
passphrase_file = "keys/%s"
%s

[[stage]]
name = "unzstd"
builtin = "zstd-decompress"
`, pass, extra)
	}
	for _, tc := range []struct {
		name, job, input, stage, want string
	}{
		{"wrong key", restore("recipient.pass", ""), "other.zst.gpg", "decrypt", "no secret key for this message; it is encrypted to key IDs 0x69CE8645C5B4943E"},
		{"wrong passphrase", restore("wrong.pass", ""), "good.zst.gpg", "decrypt", "wrong passphrase in"},
		{"not OpenPGP", restore("recipient.pass", ""), "good.zst", "decrypt", "not an OpenPGP message"},
		{"truncated message", restore("recipient.pass", ""), "truncated.zst.gpg", "decrypt", "truncated message"},
		{"modified message", restore("recipient.pass", ""), "modified.zst.gpg", "decrypt", "integrity check failed"},
		{"signature missing", restore("recipient.pass", `require_signed_by = "keys/signer.pub.asc"`), "good.zst.gpg", "decrypt", "signature missing"},
		{"truncated zstd", restore("recipient.pass", ""), "short-zstd.gpg", "unzstd", "unexpected end of stream"},
		{"not zstd", restore("recipient.pass", ""), "not-zstd.gpg", "unzstd", "not a zstd frame"},
		{"sha256 mismatch", "[[stage]]\nname = \"check\"\nbuiltin = \"sha256\"\n[stage.with]\nexpect = \"" + strings.Repeat("ab", 32) + "\"\n",
			"good.zst", "check", "sha256 mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := writeFile(t, dir, "job.toml", tc.job)
			outDir := t.TempDir()
			out := filepath.Join(outDir, "restored.bin")
			res := runPipespool(t, runOpts{}, "exec", job, "-i", filepath.Join(dir, tc.input), "-o", out)
			if res.Code != 1 {
				t.Fatalf("exit %d, want 1\n%s", res.Code, res.Stderr)
			}
			stderr := string(res.Stderr)
			if !strings.Contains(stderr, fmt.Sprintf("stage %q", tc.stage)) || !strings.Contains(stderr, tc.want) {
				t.Fatalf("stderr does not name stage %q and %q:\n%s", tc.stage, tc.want, stderr)
			}
			if entries, _ := os.ReadDir(outDir); len(entries) != 0 {
				t.Fatalf("a failed run left %v in the output directory", entries)
			}
		})
	}
}

// TestBuiltinBadParamsAreJobFileErrors: a missing key file or a wrong
// [stage.with] key is exit 2 before anything runs, naming file, line, key.
func TestBuiltinBadParamsAreJobFileErrors(t *testing.T) {
	dir := t.TempDir()
	builtinKeys(t, dir) // the jobs name keys/... relative to dir
	for _, tc := range []struct{ job, want string }{
		{"[[stage]]\nbuiltin = \"openpgp-decrypt\"\n[stage.with]\nsecret_key = \"keys/missing.sec.asc\"\n", "missing.sec.asc"},
		{"[[stage]]\nbuiltin = \"openpgp-decrypt\"\n[stage.with]\nsecret_key = \"keys/recipient.sec.asc\"\npassphrase_file = \"keys/recipient.pass\"\nrequir_signed_by = \"keys/signer.pub.asc\"\n", "requir_signed_by"},
		{"[[stage]]\nbuiltin = \"zstd-decompress\"\n[stage.with]\nmax_memory = \"lots\"\n", "max_memory"},
	} {
		job := writeFile(t, dir, "bad.toml", tc.job)
		out := filepath.Join(dir, "out.bin")
		res := runPipespool(t, runOpts{}, "exec", job, "-i", "/dev/null", "-o", out)
		if res.Code != 2 || !strings.Contains(string(res.Stderr), "bad.toml:") || !strings.Contains(string(res.Stderr), tc.want) {
			t.Fatalf("exit %d, stderr %q; want exit 2 naming bad.toml:LINE and %q", res.Code, res.Stderr, tc.want)
		}
		if _, err := os.Stat(out); err == nil {
			t.Fatal("an invalid job wrote its output")
		}
	}
}

// TestBuiltinWarnsAboutReadableSecretKey: a secret key other users can read
// works, with a warning naming the stage and the file.
func TestBuiltinWarnsAboutReadableSecretKey(t *testing.T) {
	dir := t.TempDir()
	keys := builtinKeys(t, dir)
	if err := os.Chmod(filepath.Join(keys, "plain.sec.asc"), 0o644); err != nil {
		t.Fatal(err)
	}
	in, want := randomFile(t, dir, "in.bin", 1<<20, 43)
	job := writeFile(t, dir, "roundtrip.toml", `
[[stage]]
builtin = "openpgp-encrypt"
[stage.with]
recipients = ["keys/plain.pub.asc"]

[[stage]]
name = "decrypt"
builtin = "openpgp-decrypt"
[stage.with]
secret_key = "keys/plain.sec.asc"
`)
	out := filepath.Join(dir, "out.bin")
	res := runPipespool(t, runOpts{}, "exec", job, "-i", in, "-o", out)
	if res.Code != 0 {
		t.Fatalf("exit %d\n%s", res.Code, res.Stderr)
	}
	if got := fileSHA256(t, out); got != want {
		t.Fatalf("round trip: sha256 %s, want %s", got, want)
	}
	if s := string(res.Stderr); !strings.Contains(s, "decrypt") || !strings.Contains(s, "plain.sec.asc") || !strings.Contains(s, "other users") {
		t.Fatalf("no warning naming the stage and the readable key:\n%s", s)
	}
}
