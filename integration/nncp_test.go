package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The NNCP tests run the commands docs/multi-host.md gives, with real NNCP
// nodes on this machine: the sender backs up a tree (tar -> zstd-compress ->
// openpgp-encrypt), wraps it with `pipespool prepare` and hands it to
// nncp-exec; NNCP carries it (nncp-xfer through a directory, or
// nncp-daemon/nncp-call over TCP); nncp-toss on the receiver runs the exec
// handler `pipespool queue-write -q QUEUE`; `pipespool queue-process --job
// restore.toml` restores. Nothing is mocked.

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

// send backs up generation k and queues it in the sender's NNCP spool for
// dst: prepare | nncp-exec, as docs/multi-host.md gives it.
func (h *multiHost) send(t *testing.T, k int, from *nncpNode, dst string) {
	t.Helper()
	h.generation(t, k)
	backup := h.backup(t)
	bashPipe(t, h.senderDir, fmt.Sprintf("%s prepare -s %s -i %s | nncp-exec -cfg %s -quiet -noprogress -nice B -nocompress %s %s",
		pipespoolBin, h.seqfile, backup, from.cfg, dst, nncpHandler))
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
	if r := p.process(t); r.Code != 0 {
		t.Fatalf("queue-process: exit %d\n%s", r.Code, r.Stderr)
	}
	if got := p.restored(t); got != "1" {
		t.Fatalf("restored %q, want packet 1", got)
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
	if r := runPipespool(t, runOpts{Dir: h.receiverDir}, "queue-process", "-q", h.queue, "--job", h.restoreJob); r.Code != 0 {
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
// copy would be a second job with the same number: processed already, it
// waits below nextseq and never runs; not yet processed, it stops the
// queue with exit 1 until one copy is removed (as fspl). Both are shown
// with queue-write directly.
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

	// The fspl packet itself written twice, as a transport without
	// duplicate suppression would: before processing, two jobs with one
	// number stop the queue (exit 1), and nothing runs.
	p.generation(t, 2)
	backup := p.backup(t)
	fsplPkt := filepath.Join(p.senderDir, "packet2.fspl")
	bashPipe(t, p.senderDir, fmt.Sprintf("%s prepare -s %s -i %s > %s", pipespoolBin, p.seqfile, backup, fsplPkt))
	for i := 0; i < 2; i++ {
		bashPipe(t, p.receiverDir, fmt.Sprintf("%s queue-write -q %s < %s", pipespoolBin, p.queue, fsplPkt))
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
	bashPipe(t, p.receiverDir, fmt.Sprintf("%s queue-write -q %s < %s", pipespoolBin, p.queue, fsplPkt))
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
