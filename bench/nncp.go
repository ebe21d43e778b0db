package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// nncpGroup is a sealed backup packet carried from one NNCP node to
// another through a transfer directory and restored, end to end, as
// docs/multi-host.md gives it: nncp-exec on the sender, nncp-xfer out to a
// directory and in on the receiver, nncp-toss running the exec handler
// `pipespool queue-write`, then `pipespool queue-process -d openpgp` with
// the signature required and the restored bytes' sha256 checked. The
// baseline carries the same packet with cp through a directory and
// queue-write, and restores it the same way: the difference is NNCP's own
// cost (its packet encryption, its checksums, its copies through its
// spools), reported, with no target.
func (h *harness) nncpGroup() *group {
	size := int64(1 << 30)
	if h.cfg.short {
		size = 256 << 20
	}
	return &group{id: "nncp", section: "8. transport", needs: []string{"nncp-exec", "bash"}, amount: size, unit: "bytes", runs: 3,
		build: func(g *group) error {
			backup, err := h.randomFile(size)
			if err != nil {
				return err
			}
			sum, err := fileSHA256(backup)
			if err != nil {
				return err
			}
			dir := filepath.Join(h.dir, "nncp")
			queue := filepath.Join(dir, "queue")
			xfer := filepath.Join(dir, "usb")
			for _, d := range []string{dir, xfer} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					return err
				}
			}
			if _, err := h.rn.one(h.ctx, proc{argv: []string{h.pp, "queue-init", "-q", queue}}, stdio{}); err != nil {
				return err
			}
			sender, err := newBenchNNCPNode(dir, "sender")
			if err != nil {
				return err
			}
			receiver, err := newBenchNNCPNode(dir, "receiver")
			if err != nil {
				return err
			}
			if err := sender.knows(receiver, nil); err != nil {
				return err
			}
			if err := receiver.knows(sender, map[string]any{
				"exec": map[string][]string{"pipespool-backup": {h.pp, "queue-write", "-q", queue}},
			}); err != nil {
				return err
			}

			// The packet, sealed once (untimed): prepare, then encrypted to
			// the receiver and signed by the sender, as send-backup does.
			seal, err := h.job("nncp-seal", "[[stage]]\nbuiltin = \"openpgp-encrypt\"\n[stage.with]\nrecipients = ["+
				strconv.Quote(h.key("recipient.pub.asc"))+"]\nsign_with = "+strconv.Quote(h.key("signer.sec.asc"))+
				"\nsign_passphrase_file = "+strconv.Quote(h.key("signer.pass"))+"\n")
			if err != nil {
				return err
			}
			packet := filepath.Join(dir, "packet.fspl.gpg")
			if _, err := h.rn.chain(h.ctx, []proc{
				{argv: []string{h.pp, "prepare", "-s", filepath.Join(dir, "seq"), "-i", backup}}, seal,
			}, pipeSize, stdio{out: packet}); err != nil {
				return err
			}
			g.warm = append(g.warm, packet)
			restore, err := h.job("nncp-restore", "[output]\npath = \"none\"\n\n[decoder.openpgp]\nsecret_key = "+
				strconv.Quote(h.key("recipient.sec.asc"))+"\npassphrase_file = "+strconv.Quote(h.key("recipient.pass"))+
				"\nrequire_signed_by = "+strconv.Quote(h.key("signer.pub.asc"))+
				"\n\n[[stage]]\nbuiltin = \"sha256\"\n[stage.with]\nexpect = "+strconv.Quote(sum)+"\n")
			if err != nil {
				return err
			}
			process := shJoin([]string{h.pp, "queue-process", "-q", queue, "-d", "openpgp", "--job", restore.argv[2]})

			nncpOpts := "-quiet -noprogress"
			viaNNCP := fmt.Sprintf(`set -euo pipefail
nncp-exec -cfg %[1]s %[3]s -nice B -nocompress receiver pipespool-backup < %[4]s
nncp-xfer -cfg %[1]s %[3]s -mkdir -tx %[5]s
nncp-xfer -cfg %[2]s %[3]s -rx %[5]s
nncp-toss -cfg %[2]s %[3]s -seen
%[6]s
`, shQuote(sender.cfg), shQuote(receiver.cfg), nncpOpts, shQuote(packet), shQuote(xfer), process)
			viaCp := fmt.Sprintf(`set -euo pipefail
cp %[1]s %[2]s/packet
%[3]s queue-write -q %[4]s < %[2]s/packet
rm %[2]s/packet
%[5]s
`, shQuote(packet), shQuote(xfer), shQuote(h.pp), shQuote(queue), process)

			// Every run starts from an empty queue waiting for packet 1 and
			// an empty transfer directory, and must end with the packet
			// restored (the sha256 stage checks the bytes) and gone.
			setup := func() error {
				if err := os.WriteFile(filepath.Join(queue, "nextseq"), []byte("1\n"), 0o644); err != nil {
					return err
				}
				return emptyDir(xfer)
			}
			check := func() error {
				if err := expectNextseq(queue, 2); err != nil {
					return err
				}
				left, err := filepath.Glob(filepath.Join(queue, "jobs", "fspl-*.fspl"))
				if err != nil || len(left) != 0 {
					return fmt.Errorf("the queue still holds %v (%v)", left, err)
				}
				return nil
			}
			nncpName := fmt.Sprintf("NNCP: nncp-exec, nncp-xfer through a dir, nncp-toss -> queue-write; queue-process -d openpgp (%s)", fmtSize(size))
			cpName := "cp through a dir, queue-write; queue-process -d openpgp"
			for _, v := range []*variant{
				h.shellVariant(nncpName, viaNNCP),
				h.shellVariant(cpName, viaCp),
			} {
				v.setup, v.check = setup, check
				g.add(v)
			}
			g.compare(nncpName, cpName, target{desc: "reported: NNCP's own cost"})
			return nil
		}}
}

// emptyDir removes what dir holds, keeping dir.
func emptyDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := sha256.New()
	if _, err := io.Copy(s, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(s.Sum(nil)), nil
}

// benchNNCPNode is an NNCP node of the nncp group: keys from nncp-cfgnew,
// spool and log in the work directory, its config written as JSON.
type benchNNCPNode struct {
	name, dir, cfg string
	self           map[string]string
	neigh          map[string]map[string]any
}

func newBenchNNCPNode(root, name string) (*benchNNCPNode, error) {
	dir := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Join(dir, "spool"), 0o700); err != nil {
		return nil, err
	}
	out, err := exec.Command("nncp-cfgnew", "-nocomments").Output()
	if err != nil {
		return nil, fmt.Errorf("nncp-cfgnew: %w", err)
	}
	// The keys are the "key: VALUE" lines of the top-level self block.
	self := map[string]string{}
	in := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case !in && len(self) == 0 && line == "self: {":
			in = true
		case in && line == "}":
			in = false
		case in && !strings.HasPrefix(line, "#"):
			if k, v, ok := strings.Cut(line, ": "); ok {
				self[k] = v
			}
		}
	}
	for _, k := range []string{"id", "exchpub", "exchprv", "signpub", "signprv", "noisepub", "noiseprv"} {
		if self[k] == "" {
			return nil, fmt.Errorf("nncp-cfgnew output has no self.%s", k)
		}
	}
	n := &benchNNCPNode{name: name, dir: dir, cfg: filepath.Join(dir, "nncp.json"), self: self,
		neigh: map[string]map[string]any{}}
	n.neigh["self"] = n.public()
	return n, nil
}

func (n *benchNNCPNode) public() map[string]any {
	return map[string]any{"id": n.self["id"], "exchpub": n.self["exchpub"],
		"signpub": n.self["signpub"], "noisepub": n.self["noisepub"]}
}

// knows adds other to n's neighbours, with extra settings, and writes n's
// config.
func (n *benchNNCPNode) knows(other *benchNNCPNode, extra map[string]any) error {
	e := other.public()
	for k, v := range extra {
		e[k] = v
	}
	n.neigh[other.name] = e
	b, err := json.MarshalIndent(map[string]any{
		"spool": filepath.Join(n.dir, "spool"), "log": filepath.Join(n.dir, "log"),
		"self": n.self, "neigh": n.neigh,
	}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(n.cfg, b, 0o600)
}
