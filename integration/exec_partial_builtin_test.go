package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestExecHeadAfterDecrypterDoesNotWaitForTheWholeMessage: a consumer that
// may stop reading (head -c, allow_partial_read) after openpgp-decrypt ends
// the run once it has what it wants. The decrypter, whose output then
// fails, reads the rest of its input to check its integrity, which is what
// names it as the root cause when its consumer failed on corrupt data; when
// the consumer succeeded that check is not wanted, and the run once waited
// for the whole message to be decrypted (a 1 TB restore for 100 bytes).
func TestExecHeadAfterDecrypterDoesNotWaitForTheWholeMessage(t *testing.T) {
	needTools(t, "gpg")
	dir := t.TempDir()
	const size = 256 << 20
	plain, _ := randomFile(t, dir, "plain.bin", size, 9)
	pass, _ := filepath.Abs("../testdata/keys/symmetric.pass")
	msg := filepath.Join(dir, "plain.gpg")
	gpg := exec.Command("gpg", "--batch", "--homedir", dir, "--pinentry-mode", "loopback", "--passphrase-file", pass,
		"--compress-algo", "none", "-c", "-o", msg, plain)
	if out, err := gpg.CombinedOutput(); err != nil {
		t.Fatalf("gpg -c: %v\n%s", err, out)
	}
	for _, between := range []string{"", "[[stage]]\ncommand = [\"cat\"]\n"} {
		job := writeFile(t, dir, "job.toml", `
[[stage]]
name = "decrypt"
builtin = "openpgp-decrypt"
[stage.with]
passphrase_file = "`+pass+`"
`+between+`
[[stage]]
command = ["head", "-c", "100"]
allow_partial_read = true
`)
		report := filepath.Join(dir, "report.json")
		res := runPipespool(t, runOpts{}, "exec", job, "-i", msg, "-o", "none", "--report", report)
		if res.Code != 0 {
			t.Fatalf("exit %d: %s", res.Code, res.Stderr)
		}
		var rep struct {
			Stages []struct {
				Name    string `json:"name"`
				BytesIn int64  `json:"bytes_in"`
				Status  string `json:"status"`
			} `json:"stages"`
		}
		b, _ := os.ReadFile(report)
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatal(err)
		}
		d := rep.Stages[0]
		if d.BytesIn > size/2 {
			t.Errorf("with %q between: the decrypter read %d of %d bytes after head had what it wanted (status %s)", between, d.BytesIn, size, d.Status)
		}
	}
}
