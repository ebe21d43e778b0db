package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The NNCP tests run the commands docs/multi-host.md gives, with real NNCP
// nodes on this machine: the sender backs up a tree (tar -> zstd-compress),
// wraps it with `pipespool prepare`, seals the packet (openpgp-encrypt to
// the receiver, signed) and hands it to nncp-exec; NNCP carries it
// (nncp-xfer through a directory, nncp-daemon/nncp-call over TCP, or a
// relay); nncp-toss on the receiver runs the exec handler `pipespool
// queue-write -q QUEUE`; `pipespool queue-process -d openpgp --job
// restore.toml` verifies the signature, decrypts and restores. Nothing is
// mocked.

// nncpHandler is the exec handle the receiver's config gives the sender.
const nncpHandler = "pipespool-backup"

// nncpPair is a sender node and a receiver node that know each other; the
// receiver's config has the exec handler that writes into the queue.
type nncpPair struct {
	*multiHost
	sender, receiver *nncpNode
}

func newNNCPPair(t *testing.T) *nncpPair {
	t.Helper()
	needNNCP(t)
	root := t.TempDir()
	p := &nncpPair{multiHost: newMultiHost(t, root)}
	p.sender = newNNCPNode(t, p.senderDir, "backupsrc")
	p.receiver = newNNCPNode(t, p.receiverDir, "backuphost")
	p.sender.knows(t, p.receiver, nil)
	p.receiver.knows(t, p.sender, map[string]any{
		"exec": map[string][]string{nncpHandler: {pipespoolBin, "queue-write", "-q", p.queue}},
	})
	return p
}

// send backs up generation k and queues it in from's NNCP spool for dst,
// with the sender's script and nncp-exec as docs/multi-host.md give them.
func (h *multiHost) send(t *testing.T, k int, from *nncpNode, dst string) {
	t.Helper()
	code, out := h.sendWith(t, k, nncpSend(from, dst))
	if code != 0 {
		t.Fatalf("send-backup %d: exit %d\n%s", k, code, out)
	}
}

// nncpSend is the sender's transport command: the sealed packet on stdin
// becomes an exec packet for the receiver's handler. -nocompress: the
// packet is compressed and encrypted already.
func nncpSend(from *nncpNode, dst string) string {
	return fmt.Sprintf("nncp-exec -cfg %s -quiet -noprogress -nice B -nocompress %s %s", from.cfg, dst, nncpHandler)
}

// xferOut moves everything the sender has queued into a fresh transfer
// directory (the USB stick) and returns it.
func (p *nncpPair) xferOut(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join(p.root, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p.sender.must(t, "nncp-xfer", "-mkdir", "-tx", dir)
	if got := xferFiles(t, dir); len(got) == 0 {
		t.Fatalf("nncp-xfer -tx put no packet into %s", dir)
	}
	return dir
}

// deliver reads a transfer directory on the receiver and tosses.
func (p *nncpPair) deliver(t *testing.T, dir string) {
	t.Helper()
	p.receiver.must(t, "nncp-xfer", "-rx", dir)
	p.receiver.must(t, "nncp-toss", "-seen")
}

// TestNNCPSneakernet: one backup goes through an NNCP transfer directory
// and is restored byte for byte.
func TestNNCPSneakernet(t *testing.T) {
	p := newNNCPPair(t)
	p.send(t, 1, p.sender, p.receiver.name)
	if len(p.sender.spoolPackets(t, p.receiver, "tx")) != 1 {
		t.Fatalf("nncp-exec queued %v, want one packet", p.sender.spoolPackets(t, p.receiver, "tx"))
	}
	dir := p.xferOut(t, "usb")
	p.deliver(t, dir)
	if n := len(p.jobFiles(t)); n != 1 {
		t.Fatalf("after nncp-toss the queue holds %d job files, want 1", n)
	}
	r := p.process(t)
	if r.Code != 0 {
		t.Fatalf("queue-process: exit %d\n%s", r.Code, r.Stderr)
	}
	if got := p.restored(t); got != "1" {
		t.Fatalf("restored %q, want packet 1\n%s", got, r.Stderr)
	}
	p.assertRestoredMatches(t)
	if n := len(p.jobFiles(t)); n != 0 {
		t.Errorf("the queue still holds %d job files after the restore", n)
	}
}

// TestNNCPDaemonCall: backups go to the receiver's nncp-daemon over
// localhost TCP with nncp-call, and are restored.
func TestNNCPDaemonCall(t *testing.T) {
	p := newNNCPPair(t)
	addr := startNNCPDaemon(t, p.receiver)
	p.sender.knows(t, p.receiver, map[string]any{"addrs": map[string]string{"lan": addr}})
	for k := 1; k <= 2; k++ {
		p.send(t, k, p.sender, p.receiver.name)
	}
	// -onlinedeadline 1: hang up a second after the last packet instead of
	// the default 10 s of idling for more.
	p.sender.must(t, "nncp-call", "-onlinedeadline", "1", p.receiver.name)
	// The sender removes a packet only when the daemon has told it the
	// packet arrived whole and checksummed, so an empty tx means delivered.
	if left := p.sender.spoolPackets(t, p.receiver, "tx"); len(left) != 0 {
		t.Fatalf("after nncp-call the sender still holds %v", left)
	}
	if got := p.receiver.spoolPackets(t, p.sender, "rx"); len(got) != 2 {
		t.Fatalf("the receiver's spool holds %v, want 2 packets", got)
	}
	p.receiver.must(t, "nncp-toss", "-seen")
	if r := p.process(t); r.Code != 0 {
		t.Fatalf("queue-process: exit %d\n%s", r.Code, r.Stderr)
	}
	if got := p.restored(t); got != "1 2" {
		t.Fatalf("restored %q, want 1 2", got)
	}
	p.assertRestoredMatches(t)
}

// TestNNCPRelayVia: sender -> relay -> receiver. The sender knows the
// receiver only through the relay (`via`); the relay cannot read the
// packets, its nncp-toss only forwards them; each hop is a transfer
// directory.
func TestNNCPRelayVia(t *testing.T) {
	needNNCP(t)
	root := t.TempDir()
	h := newMultiHost(t, root)
	sender := newNNCPNode(t, h.senderDir, "backupsrc")
	relay := newNNCPNode(t, filepath.Join(root, "relayhost"), "relay")
	receiver := newNNCPNode(t, h.receiverDir, "backuphost")
	sender.knows(t, relay, nil)
	sender.knows(t, receiver, map[string]any{"via": []string{"relay"}})
	relay.knows(t, sender, nil)
	relay.knows(t, receiver, nil)
	receiver.knows(t, relay, nil)
	receiver.knows(t, sender, map[string]any{
		"exec": map[string][]string{nncpHandler: {pipespoolBin, "queue-write", "-q", h.queue}},
	})

	h.send(t, 1, sender, receiver.name)
	if got := sender.spoolPackets(t, relay, "tx"); len(got) != 1 {
		t.Fatalf("the sender queued %v for the relay, want the packet wrapped for it", got)
	}
	hop1, hop2 := filepath.Join(root, "hop1"), filepath.Join(root, "hop2")
	for _, d := range []string{hop1, hop2} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sender.must(t, "nncp-xfer", "-mkdir", "-tx", hop1)
	relay.must(t, "nncp-xfer", "-rx", hop1)
	relay.must(t, "nncp-toss", "-seen")
	if got := relay.spoolPackets(t, receiver, "tx"); len(got) != 1 {
		t.Fatalf("the relay's toss queued %v for the receiver, want the packet", got)
	}
	relay.must(t, "nncp-xfer", "-mkdir", "-tx", hop2)
	receiver.must(t, "nncp-xfer", "-rx", hop2)
	receiver.must(t, "nncp-toss", "-seen")
	if r := h.process(t); r.Code != 0 {
		t.Fatalf("queue-process: exit %d\n%s", r.Code, r.Stderr)
	}
	if got := h.restored(t); got != "1" {
		t.Fatalf("restored %q, want 1", got)
	}
	h.assertRestoredMatches(t)
}

// TestNNCPOutOfOrderAndHeldBack: four backups, each on its own transfer
// directory, delivered 4, 3, 1 with 2 held back: the queue restores 1,
// stops at the gap (exit 0, nextseq 2, the debug log names it) and runs
// nothing more; once 2 arrives, 2, 3, 4 run in order and the last tree is
// restored.
func TestNNCPOutOfOrderAndHeldBack(t *testing.T) {
	p := newNNCPPair(t)
	dirs := map[int]string{}
	for k := 1; k <= 4; k++ {
		p.send(t, k, p.sender, p.receiver.name)
		dirs[k] = p.xferOut(t, fmt.Sprintf("usb%d", k))
	}
	// 4 and 3 first: nothing can run, seq 1 is missing.
	for _, k := range []int{4, 3} {
		p.deliver(t, dirs[k])
	}
	r := p.process(t)
	if r.Code != 0 || p.restored(t) != "" || p.nextSeq(t) != "1" {
		t.Fatalf("with 3 and 4 only: exit %d, restored %q, nextseq %s; want exit 0, nothing, 1\n%s", r.Code, p.restored(t), p.nextSeq(t), r.Stderr)
	}
	p.deliver(t, dirs[1])
	r = p.process(t)
	if r.Code != 0 {
		t.Fatalf("queue-process with 2 held back: exit %d, want 0 (as fspl: waiting for a packet is no failure)\n%s", r.Code, r.Stderr)
	}
	if got := p.restored(t); got != "1" {
		t.Fatalf("with 2 held back restored %q, want 1 only", got)
	}
	if got := p.nextSeq(t); got != "2" {
		t.Fatalf("nextseq %s, want 2", got)
	}
	if !strings.Contains(string(r.Stderr), `msg="no job with the next sequence number" seq=2`) {
		t.Errorf("the debug log does not name the gap at 2:\n%s", r.Stderr)
	}
	if n := len(p.jobFiles(t)); n != 2 {
		t.Errorf("the queue holds %d job files while waiting for 2, want 3 and 4", n)
	}
	p.deliver(t, dirs[2])
	if r := p.process(t); r.Code != 0 {
		t.Fatalf("queue-process once 2 arrived: exit %d\n%s", r.Code, r.Stderr)
	}
	if got := p.restored(t); got != "1 2 3 4" {
		t.Fatalf("restored in the order %q, want 1 2 3 4", got)
	}
	p.assertRestoredMatches(t)
	if n := len(p.jobFiles(t)); n != 0 {
		t.Errorf("the queue still holds %d job files", n)
	}
}

// flipByte flips one bit of the byte at offset off of the file at path.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestNNCPCorruptPacketRefused: a packet corrupted in transit never
// reaches the queue. NNCP refuses it itself, twice over: nncp-xfer -rx
// checks the packet's checksum (its name is the hash of its bytes) and
// leaves a bad one where it is; a bad packet put into the spool by other
// means is refused by nncp-toss, whose decryption authenticates every
// block. The handler never runs, the queue stays empty; the intact copy,
// delivered afterwards, is restored.
func TestNNCPCorruptPacketRefused(t *testing.T) {
	p := newNNCPPair(t)
	p.send(t, 1, p.sender, p.receiver.name)
	dir := p.xferOut(t, "usb")
	files := xferFiles(t, dir)
	if len(files) != 1 {
		t.Fatalf("transfer directory holds %v, want one packet", files)
	}
	pkt := files[0]
	good, err := os.ReadFile(pkt)
	if err != nil {
		t.Fatal(err)
	}
	// A byte in the middle: inside the encrypted payload, past NNCP's
	// header.
	flipByte(t, pkt, int64(len(good)/2))

	code, out := p.receiver.nncp(t, "nncp-xfer", "-rx", dir)
	if code == 0 || !strings.Contains(out, "checksum mismatch") {
		t.Fatalf("nncp-xfer -rx of a corrupted packet: exit %d, want a checksum mismatch\n%s", code, out)
	}
	if got := p.receiver.spoolPackets(t, p.sender, "rx"); len(got) != 0 {
		t.Fatalf("nncp-xfer took the corrupted packet into the spool: %v", got)
	}

	// Past the transfer's check (copied into the spool by hand, a disk
	// error after it): nncp-toss refuses it and keeps it.
	rx := filepath.Join(p.receiver.dir, "spool", p.sender.self["id"], "rx")
	if err := os.MkdirAll(rx, 0o700); err != nil {
		t.Fatal(err)
	}
	bad, err := os.ReadFile(pkt)
	if err != nil {
		t.Fatal(err)
	}
	spooled := filepath.Join(rx, filepath.Base(pkt))
	if err := os.WriteFile(spooled, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out = p.receiver.nncp(t, "nncp-toss", "-seen")
	if code == 0 || !strings.Contains(out, "message authentication failed") {
		t.Fatalf("nncp-toss of a corrupted packet: exit %d, want an authentication failure\n%s", code, out)
	}
	if n := len(p.jobFiles(t)); n != 0 {
		t.Fatalf("the handler ran on a corrupted packet: %d job files in the queue", n)
	}
	if r := p.process(t); r.Code != 0 || p.restored(t) != "" {
		t.Fatalf("queue-process with nothing delivered: exit %d, restored %q\n%s", r.Code, p.restored(t), r.Stderr)
	}

	// The intact copy: the bad one is removed from the spool, the good one
	// transferred, tossed, restored.
	if err := os.Remove(spooled); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pkt, good, 0o644); err != nil {
		t.Fatal(err)
	}
	p.deliver(t, dir)
	if r := p.process(t); r.Code != 0 {
		t.Fatalf("queue-process: exit %d\n%s", r.Code, r.Stderr)
	}
	if got := p.restored(t); got != "1" {
		t.Fatalf("restored %q, want 1", got)
	}
	p.assertRestoredMatches(t)
}

// TestNNCPDuplicateDelivery: the same NNCP packet delivered twice (two
// copies of the USB stick) runs the handler once: nncp-toss -seen records
// it, and nncp-xfer skips a packet it has seen. Without -seen, the second
// copy is a second job with the same number: not yet processed, it stops
// the queue with exit 1 until one copy is removed (as fspl); processed
// already, it waits below nextseq and never runs.
func TestNNCPDuplicateDelivery(t *testing.T) {
	p := newNNCPPair(t)
	p.send(t, 1, p.sender, p.receiver.name)
	dir := p.xferOut(t, "usb")
	files := xferFiles(t, dir)
	if len(files) != 1 {
		t.Fatalf("transfer directory holds %v, want one packet", files)
	}
	pkt, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	p.deliver(t, dir)
	// The second copy.
	if err := os.WriteFile(files[0], pkt, 0o644); err != nil {
		t.Fatal(err)
	}
	p.deliver(t, dir)
	if n := len(p.jobFiles(t)); n != 1 {
		t.Fatalf("after two deliveries of one packet the queue holds %d job files, want 1", n)
	}
	if r := p.process(t); r.Code != 0 {
		t.Fatalf("queue-process: exit %d\n%s", r.Code, r.Stderr)
	}
	if got := p.restored(t); got != "1" {
		t.Fatalf("restored %q, want 1", got)
	}

	// Without -seen NNCP runs the handler for each copy: two jobs with one
	// number. Before processing they stop the queue (exit 1, as fspl), and
	// nothing runs until one copy is removed.
	p.send(t, 2, p.sender, p.receiver.name)
	dir2 := p.xferOut(t, "usb2")
	files = xferFiles(t, dir2)
	if len(files) != 1 {
		t.Fatalf("transfer directory holds %v, want one packet", files)
	}
	pkt2, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	deliverUnseen := func() {
		t.Helper()
		if err := os.WriteFile(files[0], pkt2, 0o644); err != nil {
			t.Fatal(err)
		}
		p.receiver.must(t, "nncp-xfer", "-rx", dir2)
		p.receiver.must(t, "nncp-toss")
	}
	deliverUnseen()
	deliverUnseen()
	if n := len(p.jobFiles(t)); n != 2 {
		t.Fatalf("two deliveries without -seen left %d job files, want 2", n)
	}
	r := p.process(t)
	if r.Code != 1 || !strings.Contains(string(r.Stderr), "two jobs have sequence number 2") {
		t.Fatalf("two copies of packet 2: exit %d, want 1 naming both\n%s", r.Code, r.Stderr)
	}
	if got := p.restored(t); got != "1" {
		t.Fatalf("restored %q with packet 2 twice in the queue, want 1 only", got)
	}
	if err := os.Remove(p.jobFiles(t)[0]); err != nil {
		t.Fatal(err)
	}
	if r := p.process(t); r.Code != 0 {
		t.Fatalf("queue-process once one copy is removed: exit %d\n%s", r.Code, r.Stderr)
	}
	// After processing, a late copy waits below nextseq and never runs.
	deliverUnseen()
	if r := p.process(t); r.Code != 0 {
		t.Fatalf("queue-process with a late copy of 2: exit %d\n%s", r.Code, r.Stderr)
	}
	if got := p.restored(t); got != "1 2" {
		t.Fatalf("restored %q, want 1 2 (the late copy not run)", got)
	}
	if n := len(p.jobFiles(t)); n != 1 {
		t.Errorf("the late copy should stay in the queue, unrun: %d job files", n)
	}
	p.assertRestoredMatches(t)
}

// TestNNCPSendFailureGivesNumberBack: when the transport command fails
// (here nncp-exec to a node the sender does not know), the sender's script
// gives the packet's number back; the next run sends the next backup under
// it, and the receiver's queue sees no gap.
func TestNNCPSendFailureGivesNumberBack(t *testing.T) {
	p := newNNCPPair(t)
	code, out := p.sendWith(t, 1, nncpSend(p.sender, "nosuchnode"))
	if code == 0 || !strings.Contains(out, "packet 1 not sent") {
		t.Fatalf("send-backup to an unknown node: exit %d, want a failure that gives 1 back\n%s", code, out)
	}
	p.send(t, 2, p.sender, p.receiver.name)
	p.deliver(t, p.xferOut(t, "usb"))
	if r := p.process(t); r.Code != 0 {
		t.Fatalf("queue-process: exit %d\n%s", r.Code, r.Stderr)
	}
	if got := p.restored(t); got != "1" {
		t.Fatalf("restored %q, want 1 (the second backup, sent under the number given back)", got)
	}
	p.assertRestoredMatches(t)
}

// TestMultiHostTruncatedPipe: a packet cut off in a pipe transport (ssh
// dropped mid-packet: the remote queue-write sees an early EOF and keeps
// what came). The sealing stage fails on the broken pipe, so the sender
// gives the number back and sends the packet again; the receiver then
// holds two packets with that number; the cut one does not decrypt (its
// header is inside the encryption) and is no job (skipped with a warning
// naming it, left in jobs/), the whole one runs.
func TestMultiHostTruncatedPipe(t *testing.T) {
	needTools(t, "tar", "bash", "head")
	h := newMultiHost(t, t.TempDir())
	writeQueue := fmt.Sprintf("pipespool queue-write -q %s", h.queue)
	code, out := h.sendWith(t, 1, "head -c 50000 | "+writeQueue)
	if code == 0 {
		t.Fatalf("send-backup through a pipe cut at 50000 bytes: exit 0, want a failure\n%s", out)
	}
	if n := len(h.jobFiles(t)); n != 1 {
		t.Fatalf("the cut packet should be in the queue (queue-write cannot know it is cut): %d job files", n)
	}
	if code, out := h.sendWith(t, 1, writeQueue); code != 0 {
		t.Fatalf("send-backup: exit %d\n%s", code, out)
	}
	r := h.process(t)
	if r.Code != 0 {
		t.Fatalf("queue-process: exit %d\n%s", r.Code, r.Stderr)
	}
	if got := h.restored(t); got != "1" {
		t.Fatalf("restored %q, want 1\n%s", got, r.Stderr)
	}
	if !strings.Contains(string(r.Stderr), "skipping job file") || !strings.Contains(string(r.Stderr), "truncated message") {
		t.Errorf("no warning about the cut packet:\n%s", r.Stderr)
	}
	h.assertRestoredMatches(t)
	if n := len(h.jobFiles(t)); n != 1 {
		t.Errorf("the cut packet should stay in jobs/ for a human: %d job files", n)
	}
}

// TestNNCPHandlerFailureKeepsPacket: when the handler fails (here the
// queue directory is missing: a disk not mounted), nncp-toss reports it,
// exits non-zero and keeps the packet; the next toss, once the queue is
// back, delivers it.
func TestNNCPHandlerFailureKeepsPacket(t *testing.T) {
	p := newNNCPPair(t)
	p.send(t, 1, p.sender, p.receiver.name)
	dir := p.xferOut(t, "usb")
	p.receiver.must(t, "nncp-xfer", "-rx", dir)
	away := p.queue + ".unmounted"
	if err := os.Rename(p.queue, away); err != nil {
		t.Fatal(err)
	}
	code, out := p.receiver.nncp(t, "nncp-toss", "-seen")
	if code == 0 || !strings.Contains(out, "exit status") {
		t.Fatalf("nncp-toss with a failing handler: exit %d, want a failure naming the handler's exit\n%s", code, out)
	}
	if got := p.receiver.spoolPackets(t, p.sender, "rx"); len(got) != 1 {
		t.Fatalf("after the handler failed the spool holds %v, want the packet kept", got)
	}
	if err := os.Rename(away, p.queue); err != nil {
		t.Fatal(err)
	}
	p.receiver.must(t, "nncp-toss", "-seen")
	if got := p.receiver.spoolPackets(t, p.sender, "rx"); len(got) != 0 {
		t.Fatalf("after a successful toss the spool still holds %v", got)
	}
	if r := p.process(t); r.Code != 0 {
		t.Fatalf("queue-process: exit %d\n%s", r.Code, r.Stderr)
	}
	if got := p.restored(t); got != "1" {
		t.Fatalf("restored %q, want 1", got)
	}
	p.assertRestoredMatches(t)
}

// TestMultiHostSyncedDir: the synced-directory commands of
// docs/multi-host.md, with a plain copy standing in for rsync or
// Syncthing: packets written under a temporary name and renamed, copied
// into an incoming directory in reverse order, moved into the queue with
// queue-write and restored in the sender's order. A packet damaged on the
// way is refused by the queue's signature check (no job: skipped with a
// warning, nothing runs on it, the queue waits for its number) until a
// good copy arrives.
func TestMultiHostSyncedDir(t *testing.T) {
	needTools(t, "tar", "bash")
	h := newMultiHost(t, t.TempDir())
	outgoing := filepath.Join(h.senderDir, "outgoing")
	incoming := filepath.Join(h.receiverDir, "incoming")
	for _, d := range []string{outgoing, incoming} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	send := fmt.Sprintf("f=$(pipespool gen-filename); cat > %[1]s/.tmp-$f && mv %[1]s/.tmp-$f %[1]s/$f", outgoing)
	var sent []string
	for k := 1; k <= 3; k++ {
		if code, out := h.sendWith(t, k, send); code != 0 {
			t.Fatalf("send-backup %d: exit %d\n%s", k, code, out)
		}
		m, err := filepath.Glob(filepath.Join(outgoing, "fspl-*.fspl"))
		if err != nil || len(m) != k {
			t.Fatalf("outgoing holds %v after %d sends", m, k)
		}
		for _, f := range m {
			if !slices.Contains(sent, f) {
				sent = append(sent, f)
			}
		}
	}
	if left, _ := filepath.Glob(filepath.Join(outgoing, ".tmp-*")); len(left) != 0 {
		t.Fatalf("temporary files left in outgoing: %v", left)
	}
	intoQueue := func() {
		t.Helper()
		bashPipe(t, h.receiverDir, fmt.Sprintf(`PATH=%s:$PATH
for f in %s/fspl-*.fspl; do
  [ -e "$f" ] || continue
  pipespool queue-write -q %s < "$f" && rm -- "$f"
done`, filepath.Dir(pipespoolBin), incoming, h.queue))
		if left, _ := os.ReadDir(incoming); len(left) != 0 {
			t.Fatalf("incoming still holds %d files", len(left))
		}
	}
	// The "sync": newest first, and packet 2 damaged on the way (one bit
	// in the middle): nothing but the seal can tell.
	var damaged []byte
	for i := len(sent) - 1; i >= 0; i-- {
		data, err := os.ReadFile(sent[i])
		if err != nil {
			t.Fatal(err)
		}
		p := writeFile(t, incoming, filepath.Base(sent[i]), string(data))
		if i == 1 {
			flipByte(t, p, int64(len(data)/2))
			if damaged, err = os.ReadFile(p); err != nil {
				t.Fatal(err)
			}
		}
	}
	intoQueue()
	r := h.process(t)
	if r.Code != 0 {
		t.Fatalf("queue-process: exit %d\n%s", r.Code, r.Stderr)
	}
	if got := h.restored(t); got != "1" {
		t.Fatalf("with packet 2 damaged restored %q, want 1 only\n%s", got, r.Stderr)
	}
	if got := h.nextSeq(t); got != "2" {
		t.Fatalf("nextseq %s after the damaged packet, want 2 (waiting for it)", got)
	}
	// The damaged file (queue-write named it afresh) is found by its
	// bytes, named by the warning, removed by hand; the packet is synced
	// again.
	var bad string
	for _, f := range h.jobFiles(t) {
		if b, err := os.ReadFile(f); err == nil && bytes.Equal(b, damaged) {
			bad = f
		}
	}
	if bad == "" {
		t.Fatal("the damaged packet is not in jobs/: it must stay there for a human")
	}
	if !strings.Contains(string(r.Stderr), "not verified, so it is no job") || !strings.Contains(string(r.Stderr), "file="+bad) {
		t.Errorf("no warning naming the damaged packet %s:\n%s", bad, r.Stderr)
	}
	if err := os.Remove(bad); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(sent[1])
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, incoming, filepath.Base(sent[1]), string(data))
	intoQueue()
	if r := h.process(t); r.Code != 0 {
		t.Fatalf("queue-process: exit %d\n%s", r.Code, r.Stderr)
	}
	if got := h.restored(t); got != "1 2 3" {
		t.Fatalf("restored %q, want 1 2 3", got)
	}
	h.assertRestoredMatches(t)
}

// TestNNCPFileIntoJobs: the other NNCP way, nncp-file, with the sender's
// `incoming` directory on the receiver set to the queue's jobs/: nncp-toss
// writes each file under a temporary name (nncpfile...), fsyncs it and
// renames it to the name the sender chose, a fresh `pipespool
// gen-filename`; no handler runs. Two packets delivered in reverse order
// are restored in order.
func TestNNCPFileIntoJobs(t *testing.T) {
	needNNCP(t)
	h := newMultiHost(t, t.TempDir())
	sender := newNNCPNode(t, h.senderDir, "backupsrc")
	receiver := newNNCPNode(t, h.receiverDir, "backuphost")
	sender.knows(t, receiver, nil)
	receiver.knows(t, sender, map[string]any{"incoming": filepath.Join(h.queue, "jobs")})
	send := fmt.Sprintf("nncp-file -cfg %s -quiet -noprogress -nice B - %s:$(pipespool gen-filename)", sender.cfg, receiver.name)
	p := &nncpPair{multiHost: h, sender: sender, receiver: receiver}
	var dirs []string
	for k := 1; k <= 2; k++ {
		if code, out := h.sendWith(t, k, send); code != 0 {
			t.Fatalf("send-backup %d: exit %d\n%s", k, code, out)
		}
		dirs = append(dirs, p.xferOut(t, fmt.Sprintf("usb%d", k)))
	}
	p.deliver(t, dirs[1])
	p.deliver(t, dirs[0])
	jobs := h.jobFiles(t)
	if len(jobs) != 2 {
		t.Fatalf("after nncp-toss jobs/ holds %v, want the two packets", jobs)
	}
	if r := h.process(t); r.Code != 0 {
		t.Fatalf("queue-process: exit %d\n%s", r.Code, r.Stderr)
	}
	if got := h.restored(t); got != "1 2" {
		t.Fatalf("restored %q, want 1 2", got)
	}
	h.assertRestoredMatches(t)
}
