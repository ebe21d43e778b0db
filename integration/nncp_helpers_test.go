package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The helpers of the NNCP tests: real NNCP nodes (nncp-cfgnew keys, JSON
// configs, spools and logs under the test's temp dir), and a sender and a
// receiver of backups around them, running the commands docs/multi-host.md
// gives.

// needNNCP fails the test, saying how to install it, when NNCP is missing.
func needNNCP(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"nncp-cfgnew", "nncp-exec", "nncp-xfer", "nncp-toss", "nncp-daemon", "nncp-call", "tar", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed by this test: apt-get update && apt-get install -y nncp (or run scripts/test.sh, which installs it)", tool)
		}
	}
}

// nncpNode is one NNCP node: its keys from nncp-cfgnew, its neighbours, and
// the config file written from them (JSON, which Hjson reads).
type nncpNode struct {
	name  string
	dir   string            // the node's own directory: config, spool, log
	cfg   string            // the config file, given to every command with -cfg
	self  map[string]string // id, exchpub, exchprv, signpub, signprv, noisepub, noiseprv
	neigh map[string]map[string]any
}

// newNNCPNode makes a node named name under root with fresh keys.
func newNNCPNode(t *testing.T, root, name string) *nncpNode {
	t.Helper()
	dir := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Join(dir, "spool"), 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nncp-cfgnew", "-nocomments").Output()
	if err != nil {
		t.Fatalf("nncp-cfgnew: %v", err)
	}
	n := &nncpNode{name: name, dir: dir, cfg: filepath.Join(dir, "nncp.json"),
		self: parseCfgnewSelf(t, out), neigh: map[string]map[string]any{}}
	n.neigh["self"] = n.public()
	return n
}

// parseCfgnewSelf reads the keys of the top-level self block of
// nncp-cfgnew's output: "key: VALUE" lines between "self: {" and "}".
func parseCfgnewSelf(t *testing.T, cfg []byte) map[string]string {
	t.Helper()
	keys := map[string]string{}
	in := false
	sc := bufio.NewScanner(bytes.NewReader(cfg))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case !in && line == "self: {":
			in = true
		case in && line == "}":
			in = false
		case in && !strings.HasPrefix(line, "#"):
			if k, v, ok := strings.Cut(line, ": "); ok {
				keys[k] = v
			}
		}
		if !in && len(keys) > 0 {
			break
		}
	}
	for _, k := range []string{"id", "exchpub", "exchprv", "signpub", "signprv", "noisepub", "noiseprv"} {
		if keys[k] == "" {
			t.Fatalf("nncp-cfgnew output has no self.%s:\n%s", k, cfg)
		}
	}
	return keys
}

// public is what a neighbour knows of n: its id and public keys.
func (n *nncpNode) public() map[string]any {
	return map[string]any{"id": n.self["id"], "exchpub": n.self["exchpub"],
		"signpub": n.self["signpub"], "noisepub": n.self["noisepub"]}
}

// knows adds other to n's neighbours with extra settings (exec, via,
// addrs, ...) and rewrites n's config.
func (n *nncpNode) knows(t *testing.T, other *nncpNode, extra map[string]any) {
	t.Helper()
	e := other.public()
	for k, v := range extra {
		e[k] = v
	}
	n.neigh[other.name] = e
	n.write(t)
}

// write writes n's config: spool and log in its directory, nothing of the
// system's.
func (n *nncpNode) write(t *testing.T) {
	t.Helper()
	cfg := map[string]any{
		"spool": filepath.Join(n.dir, "spool"),
		"log":   filepath.Join(n.dir, "log"),
		"self":  n.self,
		"neigh": n.neigh,
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.cfg, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// nncp runs an NNCP command with n's config and returns its exit status and
// combined output; the test fails only when it cannot run or hangs.
func (n *nncpNode) nncp(t *testing.T, name string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, append([]string{"-cfg", n.cfg, "-noprogress"}, args...)...)
	cmd.Dir = n.dir
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %s (node %s): still running after a minute\n%s", name, strings.Join(args, " "), n.name, out)
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return 0, string(out)
}

// must runs an NNCP command that must succeed.
func (n *nncpNode) must(t *testing.T, name string, args ...string) string {
	t.Helper()
	code, out := n.nncp(t, name, args...)
	if code != 0 {
		t.Fatalf("%s %s (node %s): exit %d\n%s", name, strings.Join(args, " "), n.name, code, out)
	}
	return out
}

// spoolPackets lists the packet files in n's spool for node peer in
// direction dir ("rx" or "tx"): names only, no hdr/ or seen/.
func (n *nncpNode) spoolPackets(t *testing.T, peer *nncpNode, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(n.dir, "spool", peer.self["id"], dir))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.Type().IsRegular() {
			out = append(out, e.Name())
		}
	}
	return out
}

// xferFiles lists the packet files a sender's nncp-xfer -tx left in dir.
func xferFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// startNNCPDaemon starts nncp-daemon for n on a free port of 127.0.0.1 and
// returns the address once it accepts connections; t.Cleanup kills it and
// waits for it.
func startNNCPDaemon(t *testing.T, n *nncpNode) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command("nncp-daemon", "-cfg", n.cfg, "-quiet", "-bind", addr)
	cmd.Dir = n.dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	// Wait for the listening socket: a connection accepted, or the daemon
	// gone (a port taken meanwhile), with a deadline.
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr
		}
		select {
		case err := <-exited:
			t.Fatalf("nncp-daemon exited before listening on %s: %v\n%s", addr, err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nncp-daemon does not listen on %s after 20 s\n%s", addr, out.String())
		}
	}
}

// bashPipe runs a bash pipeline with pipefail in dir and fails the test
// with its stderr when it fails.
func bashPipe(t *testing.T, dir, script string) {
	t.Helper()
	cmd := exec.Command("bash", "-o", "pipefail", "-c", script)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bash -c %q: %v\n%s", script, err, out)
	}
}

// multiHost is a backup sender and a backup receiver with their keys, each
// in its own directory, as on two machines: the sender holds the
// recipient's public key and its own signing key; the receiver its
// decryption key and the sender's public key.
type multiHost struct {
	root                    string
	senderDir, receiverDir  string
	tree                    string // what the sender backs up
	sendScript              string // back up, prepare, seal, hand to the transport
	restoreJob              string
	seqfile, queue, restore string
	order                   string // the receiver appends each restored FSPL_SEQ here
}

// The sender's script, as docs/multi-host.md gives it: the backup is made
// (and committed) first, then wrapped in a packet, sealed (encrypted to the
// receiver and signed: the whole packet, header included) and handed to
// the transport, the command in $SEND. A packet number that did not reach
// the transport is given back, so that the receiver's queue never waits
// for a number that was never sent.
const sendScriptText = `#!/bin/bash
set -euo pipefail
pipespool exec backup.toml
n=$(pipespool prepare-get-next -s backup.seq)
if ! pipespool prepare -s backup.seq -i backup.tar.zst \
    | pipespool exec seal.toml \
    | eval "$SEND"; then
  pipespool prepare-set-next -s backup.seq "$n"
  echo "send-backup: packet $n not sent; it will be sent again" >&2
  exit 1
fi
`

func newMultiHost(t *testing.T, root string) *multiHost {
	t.Helper()
	h := &multiHost{root: root,
		senderDir:   filepath.Join(root, "sender"),
		receiverDir: filepath.Join(root, "receiver")}
	keys := builtinKeys(t, root)
	for dir, files := range map[string][]string{
		h.senderDir:   {"recipient.pub.asc", "signer.sec.asc", "signer.pass"},
		h.receiverDir: {"recipient.sec.asc", "recipient.pass", "signer.pub.asc"},
	} {
		if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o700); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if err := os.Rename(filepath.Join(keys, f), filepath.Join(dir, "keys", f)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.RemoveAll(keys); err != nil {
		t.Fatal(err)
	}
	h.tree = filepath.Join(h.senderDir, "data")
	h.seqfile = filepath.Join(h.senderDir, "backup.seq")
	h.queue = filepath.Join(h.receiverDir, "queue")
	h.restore = filepath.Join(h.receiverDir, "restored")
	h.order = filepath.Join(h.receiverDir, "order")
	for _, d := range []string{h.tree, h.restore} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, h.senderDir, "backup.toml", fmt.Sprintf(`
[input]
path = "none"

[output]
path = "backup.tar.zst"

[[stage]]
command = ["tar", "-c", "-C", %q, "."]

[[stage]]
builtin = "zstd-compress"
`, h.tree))
	writeFile(t, h.senderDir, "seal.toml", `
[[stage]]
builtin = "openpgp-encrypt"
[stage.with]
recipients = ["keys/recipient.pub.asc"]
sign_with = "keys/signer.sec.asc"
sign_passphrase_file = "keys/signer.pass"
`)
	h.sendScript = writeFile(t, h.senderDir, "send-backup", sendScriptText)
	if err := os.Chmod(h.sendScript, 0o755); err != nil {
		t.Fatal(err)
	}
	// The key is the decoder's (queue-process -d openpgp): with
	// require_signed_by there, a packet is verified in full before
	// anything of it reaches tar, and one that is not (truncated, forged)
	// is no job at all.
	h.restoreJob = writeFile(t, h.receiverDir, "restore.toml", fmt.Sprintf(`
[decoder.openpgp]
secret_key = "keys/recipient.sec.asc"
passphrase_file = "keys/recipient.pass"
require_signed_by = "keys/signer.pub.asc"

[[stage]]
builtin = "zstd-decompress"

[[stage]]
name = "untar"
shell = 'tar -x -C %s && echo "$FSPL_SEQ" >> %s'
`, h.restore, h.order))
	if r := runPipespool(t, runOpts{}, "queue-init", h.queue); r.Code != 0 {
		t.Fatalf("queue-init: exit %d\n%s", r.Code, r.Stderr)
	}
	return h
}

// sendWith backs up generation k and runs the sender's script with send
// as its transport command; it returns the script's exit status and
// output.
func (h *multiHost) sendWith(t *testing.T, k int, send string) (int, string) {
	t.Helper()
	h.generation(t, k)
	cmd := exec.Command("bash", h.sendScript)
	cmd.Dir = h.senderDir
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(pipespoolBin)+":"+os.Getenv("PATH"), "SEND="+send)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// generation writes the sender's tree as it is at backup k: a few files of
// text and random bytes, a subdirectory, an executable, all changing with
// k (the same names each time, so that the last restore gives the last
// tree whatever came before).
func (h *multiHost) generation(t *testing.T, k int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(h.tree, "etc", "conf.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, h.tree, "generation", fmt.Sprintf("%d\n", k))
	var b strings.Builder
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&b, "generation %d line %d of the backed-up log\n", k, i)
	}
	writeFile(t, filepath.Join(h.tree, "etc"), "app.log", b.String())
	randomFile(t, filepath.Join(h.tree, "etc", "conf.d"), "blob.bin", 200<<10+int64(k), uint64(k))
	p := writeFile(t, h.tree, "run.sh", fmt.Sprintf("#!/bin/sh\necho %d\n", k))
	if err := os.Chmod(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

// process runs queue-process with the restore job and returns the result
// (debug log, so that a gap shows in stderr).
func (h *multiHost) process(t *testing.T) runResult {
	t.Helper()
	return runPipespool(t, runOpts{Dir: h.receiverDir}, "queue-process", "-q", h.queue,
		"-d", "openpgp", "--job", h.restoreJob, "--log-level", "debug")
}

// restored returns the order the receiver restored packets in.
func (h *multiHost) restored(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(h.order)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

// jobFiles lists the receiver's queued job files.
func (h *multiHost) jobFiles(t *testing.T) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(h.queue, "jobs", "fspl-*.fspl"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// nextSeq is the receiver queue's next sequence number.
func (h *multiHost) nextSeq(t *testing.T) string {
	t.Helper()
	r := runPipespool(t, runOpts{}, "queue-get-next", "-q", h.queue)
	if r.Code != 0 {
		t.Fatalf("queue-get-next: exit %d\n%s", r.Code, r.Stderr)
	}
	return strings.TrimSpace(string(r.Stdout))
}

// assertRestoredMatches fails unless the receiver's restored tree is the
// sender's tree: the same paths, types, modes and bytes.
func (h *multiHost) assertRestoredMatches(t *testing.T) {
	t.Helper()
	want, got := treeDigest(t, h.tree), treeDigest(t, h.restore)
	if len(want) == 0 {
		t.Fatal("the sender's tree is empty")
	}
	for p, w := range want {
		if got[p] != w {
			t.Errorf("restored %s: %q, sent %q", p, got[p], w)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("restored %s, which was not sent", p)
		}
	}
}

// treeDigest maps each path under root to its type, mode and content's
// sha256.
func treeDigest(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		v := info.Mode().String()
		if info.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(data)
			v += " " + hex.EncodeToString(s[:])
		}
		out[rel] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
