package queue

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pipespool/pipespool/filter"
)

// logTo returns a queue logger writing text to b.
func logTo(b *strings.Builder) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, nil))
}

// withDeadline runs f and fails the test when it does not return within d:
// what these tests guard against is a hang.
func withDeadline(t *testing.T, d time.Duration, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("still running after %s: blocked", d)
	}
}

// TestScanSkipsWhatIsNotARegularFile: a FIFO (or a link to one) named like
// a job once blocked the scan in open(2) forever; a link was followed out
// of the queue. Each is skipped with one warning naming it and its type,
// and the job beside them runs.
func TestScanSkipsWhatIsNotARegularFile(t *testing.T) {
	q := newTestQueue(t, &Header{Seq: 1})
	var log strings.Builder
	q.Logger = logTo(&log)
	jobs := q.JobsDir()
	outside := filepath.Join(t.TempDir(), "outside.fspl")
	if err := os.WriteFile(outside, Encode(&Header{Seq: 2}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(jobs, "fspl-fifo.fspl"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"fspl-to-fifo.fspl": "fspl-fifo.fspl", "fspl-to-null.fspl": "/dev/null",
		"fspl-to-outside.fspl": outside} {
		if err := os.Symlink(target, filepath.Join(jobs, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(jobs, "fspl-dir.fspl"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := &fakeRunner{}
	withDeadline(t, 10*time.Second, func() {
		if err := q.Process(context.Background(), ProcessOptions{Runner: r}); err != nil {
			t.Error(err)
		}
	})
	if len(r.ran) != 1 || r.ran[0] != 1 {
		t.Fatalf("ran %v, want [1]: a link out of the queue is not a job", r.ran)
	}
	for name, kind := range map[string]string{"fspl-fifo.fspl": "FIFO", "fspl-to-fifo.fspl": "symbolic link",
		"fspl-to-null.fspl": "symbolic link", "fspl-to-outside.fspl": "symbolic link", "fspl-dir.fspl": "directory"} {
		if n := strings.Count(log.String(), "file="+filepath.Join(jobs, name)+" "); n != 1 {
			t.Errorf("%s: warned %d times, want once:\n%s", name, n, log.String())
		}
		if !strings.Contains(log.String(), name+" type="+quoteIfSpace(kind)) {
			t.Errorf("%s: the warning does not say it is a %s:\n%s", name, kind, log.String())
		}
	}
}

func quoteIfSpace(s string) string {
	if strings.Contains(s, " ") {
		return `"` + s + `"`
	}
	return s
}

// TestProcessReadsJunkOncePerRun: a run lists jobs/ again after its jobs
// (for jobs that arrived meanwhile); junk files were read, and warned
// about, again each time. They are read once per run; a file that changed
// is read again.
func TestProcessReadsJunkOncePerRun(t *testing.T) {
	q := newTestQueue(t, &Header{Seq: 1}, &Header{Seq: 2})
	var log strings.Builder
	q.Logger = logTo(&log)
	for _, name := range []string{"fspl-junk1.fspl", "fspl-junk2.fspl"} {
		if err := os.WriteFile(filepath.Join(q.JobsDir(), name), []byte("junk"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Job 3 arrives while job 1 runs: the run lists jobs/ again for it.
	r := &arrivingRunner{q: q, at: 1, h: &Header{Seq: 3}}
	if err := q.Process(context.Background(), ProcessOptions{Runner: r}); err != nil {
		t.Fatal(err)
	}
	if len(r.ran) != 3 {
		t.Fatalf("ran %v, want [1 2 3]", r.ran)
	}
	if n := strings.Count(log.String(), "fspl-junk1.fspl"); n != 1 {
		t.Errorf("a junk file was read and warned about %d times in one run, want once:\n%s", n, log.String())
	}
}

// arrivingRunner is fakeRunner that writes packet h into the queue while
// job at runs.
type arrivingRunner struct {
	fakeRunner
	q  *Queue
	at uint64
	h  *Header
}

func (a *arrivingRunner) RunJob(ctx context.Context, r *Run) error {
	if r.Header.Seq == a.at {
		if _, err := a.q.Write(bytes.NewReader(Encode(a.h))); err != nil {
			return err
		}
	}
	return a.fakeRunner.RunJob(ctx, r)
}

// TestSaveBothReplacesAPlantedLink: jobs/<file>.out planted as a link to
// a file outside the queue made --output-to SaveBoth overwrite that file.
func TestSaveBothReplacesAPlantedLink(t *testing.T) {
	q := newTestQueue(t, &Header{Seq: 1})
	jobs, err := q.Scan(context.Background(), nil)
	if err != nil || len(jobs) != 1 {
		t.Fatal(jobs, err)
	}
	outside := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(outside, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(q.JobsDir(), jobs[0].Name+".out")
	if err := os.Symlink(outside, out); err != nil {
		t.Fatal(err)
	}
	err = q.Process(context.Background(), ProcessOptions{Runner: writingRunner("job output"), OutputTo: SaveBoth, NeverDelete: true})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(outside); string(b) != "precious" {
		t.Errorf("the file the link pointed to was written: %q", b)
	}
	fi, err := os.Lstat(out)
	if b, _ := os.ReadFile(out); err != nil || !fi.Mode().IsRegular() || string(b) != "job output" {
		t.Errorf(".out is %v (%v), %q; want a regular file with the output", fi.Mode(), err, b)
	}
}

// writingRunner writes s to the job's output.
type writingRunner string

func (w writingRunner) RunJob(ctx context.Context, r *Run) error {
	_, err := io.WriteString(r.Output, string(w))
	return err
}

// TestSeqFileReadsOnlyARegularFile: nextseq as a link was read through, and
// as a FIFO blocked the run holding the lock.
func TestSeqFileReadsOnlyARegularFile(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(dir, "outside")
	os.WriteFile(outside, []byte("7\n"), 0o644)
	link := SeqFile{Path: filepath.Join(dir, "link")}
	os.Symlink(outside, link.Path)
	fifo := SeqFile{Path: filepath.Join(dir, "fifo")}
	syscall.Mkfifo(fifo.Path, 0o644)
	big := SeqFile{Path: filepath.Join(dir, "big")}
	os.WriteFile(big.Path, bytes.Repeat([]byte("1"), 1<<20), 0o644)
	withDeadline(t, 10*time.Second, func() {
		for _, sf := range []SeqFile{link, fifo, big} {
			if n, err := sf.Read(); err == nil {
				t.Errorf("%s: read %d, want an error", sf.Path, n)
			}
		}
	})
	if _, err := link.Read(); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("link: %v, want it named a symbolic link", err)
	}
}

// TestProcessRefusesTheLargestSeq: after job 2^64-1, nextseq wrapped to 0.
func TestProcessRefusesTheLargestSeq(t *testing.T) {
	const max = 1<<64 - 1
	q := newTestQueue(t, &Header{Seq: max - 1}, &Header{Seq: max})
	if err := q.NextSeqFile().Write(max - 1); err != nil {
		t.Fatal(err)
	}
	r := &fakeRunner{}
	err := q.Process(context.Background(), ProcessOptions{Runner: r})
	var se *SeqExhaustedError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "largest sequence number") {
		t.Fatalf("err %v, want a *SeqExhaustedError", err)
	}
	if len(r.ran) != 1 || r.ran[0] != max-1 || nextSeq(t, q) != max || jobCount(t, q) != 1 {
		t.Fatalf("ran %v, nextseq %d, %d jobs left; want job 2^64-2 run, nextseq 2^64-1, its job kept", r.ran, nextSeq(t, q), jobCount(t, q))
	}
	if _, err := os.Lstat(q.NextSeqFile().Path + ".temp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("nextseq.temp left behind: %v", err)
	}
}

// manyParams is a packet of n params of size bytes each.
func manyParams(n, size int) []byte {
	h := &Header{Seq: 1, CTimeSecs: 1}
	p := bytes.Repeat([]byte("x"), size)
	for range n {
		h.Params = append(h.Params, p)
	}
	return append(Encode(h), "payload"...)
}

// TestScanCostsNoMemoryPerParam: listing a header of a million params
// cost hundreds of MB (each param its own allocation, every header kept).
func TestScanCostsNoMemoryPerParam(t *testing.T) {
	b := manyParams(1_000_000, 0)
	var hs headerScanner
	var before, after runtimeMem
	before.read()
	h, err := hs.summary(bytes.NewReader(b))
	after.read()
	if err != nil || h.Seq != 1 || h.Size.Params != 1_000_000 || h.Params != nil {
		t.Fatalf("summary %+v, %v", h, err)
	}
	if got := after.total - before.total; got > 1<<20 {
		t.Errorf("the summary of a 1M-param header allocated %d bytes, want under 1 MiB", got)
	}
	// A full decode costs one block and one slice header per param.
	before.read()
	full, err := ReadHeader(bytes.NewReader(b))
	after.read()
	if err != nil || len(full.Params) != 1_000_000 {
		t.Fatal(err)
	}
	if got := after.total - before.total; got > 40<<20 {
		t.Errorf("decoding a 1M-param header allocated %d bytes, want under 40 MiB", got)
	}
}

// TestHeaderEntriesAreBounded: a header of more params than fspl can write
// is refused, naming the limit, before anything is allocated for them.
func TestHeaderEntriesAreBounded(t *testing.T) {
	b := manyParams(MaxHeaderEntries+1, 0)
	var hs headerScanner
	_, err := hs.summary(bytes.NewReader(b))
	var pe *PacketError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "more than the limit of 1048576") {
		t.Fatalf("err %v", err)
	}
	if _, err := ReadHeader(bytes.NewReader(b)); !errors.As(err, &pe) {
		t.Fatalf("ReadHeader: %v", err)
	}
	if _, err := ReadHeader(bytes.NewReader(manyParams(MaxHeaderEntries, 0))); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
}

// TestExecSpaceIsCheckedBeforeTheRun: a packet whose params or environment
// exec(2) cannot take failed in the kernel, after the runner was started
// (and with --allow-job-params, after gigabytes were built for it). It is
// a failed job now, refused before the runner is called.
func TestExecSpaceIsCheckedBeforeTheRun(t *testing.T) {
	big := bytes.Repeat([]byte("p"), maxArgStrlen)
	for name, h := range map[string]*Header{
		"one huge param":  {Seq: 1, Params: [][]byte{big}},
		"one huge env":    {Seq: 1, Env: []EnvVar{{Name: []byte("X"), Value: big}}},
		"too many params": {Seq: 1, Params: make([][]byte, 300_000)},
	} {
		t.Run(name, func(t *testing.T) {
			q := newTestQueue(t, h)
			r := &fakeRunner{}
			err := q.Process(context.Background(), ProcessOptions{Runner: r, AllowJobParams: true})
			var le *ExecLimitError
			if !errors.As(err, &le) || !strings.Contains(err.Error(), "argument list too long") {
				t.Fatalf("err %v, want an *ExecLimitError", err)
			}
			if len(r.ran) != 0 || jobCount(t, q) != 1 {
				t.Fatalf("ran %v, %d jobs left", r.ran, jobCount(t, q))
			}
		})
	}
	// What fits runs.
	q := newTestQueue(t, &Header{Seq: 1, Params: [][]byte{big[:maxArgStrlen-200]}})
	r := &fakeRunner{}
	if err := q.Process(context.Background(), ProcessOptions{Runner: r, AllowJobParams: true}); err != nil || len(r.ran) != 1 {
		t.Fatalf("ran %v, err %v", r.ran, err)
	}
}

func TestCheckExecSpaceCountsLikeTheKernel(t *testing.T) {
	if got := decimalLens(9); got != 9 {
		t.Errorf("decimalLens(9) = %d", got)
	}
	if got := decimalLens(1234); got != 9+90*2+900*3+235*4 {
		t.Errorf("decimalLens(1234) = %d", got)
	}
	// The string FSPL_PARAM_1=<p> with its NUL is exactly MAX_ARG_STRLEN.
	h := &Header{Params: [][]byte{bytes.Repeat([]byte("p"), maxArgStrlen-len("FSPL_PARAM_1=")-1)}}
	sized, _ := DecodeBody(EncodeBody(h))
	if err := checkExecSpace(sized.Size, nil, nil, false); err != nil {
		t.Errorf("at the limit: %v", err)
	}
	h.Params[0] = append(h.Params[0], 'p')
	sized, _ = DecodeBody(EncodeBody(h))
	if err := checkExecSpace(sized.Size, nil, nil, false); err == nil {
		t.Errorf("one byte over the limit: no error")
	}
}

// signingFilter stands for a decoder that requires a signature: it passes
// its input through and fails, at the end, when the input holds
// "UNSIGNED".
func signingFilter() filter.Filter {
	return filter.Func(func(ctx context.Context, r io.Reader, w io.Writer) error {
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		if bytes.Contains(b, []byte("UNSIGNED")) {
			return errors.New("signature missing")
		}
		return nil
	})
}

func verifyingDecoder(t *testing.T) *Decoder {
	t.Helper()
	d, err := ParseDecoders([]string{"openpgp"}, func() (OpenPGP, error) {
		return OpenPGP{Filter: signingFilter(), RequireSigned: true}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestVerifyFirstCopiesAFileOthersCanWrite: a job file its owner (not
// pipespool's user) could rewrite between the verification and the run is
// verified and run from a private copy.
func TestVerifyFirstCopiesAFileOthersCanWrite(t *testing.T) {
	q := newTestQueue(t, &Header{Seq: 1})
	jobs, _ := q.Scan(context.Background(), nil)
	f, err := os.Open(filepath.Join(q.JobsDir(), jobs[0].Name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if othersMayWrite(f) {
		t.Fatalf("a file of ours, mode 0644, counted as writable by others")
	}
	os.Chmod(f.Name(), 0o666)
	if !othersMayWrite(f) {
		t.Fatalf("a world-writable file counted as ours alone")
	}
	src, err := verifiedJob(context.Background(), verifyingDecoder(t), q.Dir, f)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if src == f {
		t.Fatalf("verified in place, where another user could rewrite it")
	}
	// The copy has no name, and is what the file held.
	var st syscall.Stat_t
	syscall.Fstat(int(src.Fd()), &st)
	b, _ := io.ReadAll(src)
	want, _ := os.ReadFile(f.Name())
	if st.Nlink != 0 || st.Mode&0o077 != 0 || !bytes.Equal(b, want) {
		t.Errorf("copy: %d links, mode %o, %d bytes of %d", st.Nlink, st.Mode&0o777, len(b), len(want))
	}
}

// TestStreamNamesTheStepThatMadeBadDataFirst: a step that fails at its end
// (an integrity check) behind one that failed early on its output is named
// first, and got to finish its check.
func TestStreamNamesTheStepThatMadeBadDataFirst(t *testing.T) {
	checking := filter.Func(func(ctx context.Context, r io.Reader, w io.Writer) error {
		if _, err := io.Copy(w, r); err != nil {
			return err
		}
		return errors.New("integrity check failed")
	})
	early := filter.Func(func(ctx context.Context, r io.Reader, w io.Writer) error {
		io.ReadFull(r, make([]byte, 10))
		return errors.New("checksum mismatch")
	})
	d := &Decoder{Steps: []DecodeStep{{Builtin: "first", filter: checking}, {Builtin: "second", filter: early}}}
	in := filepath.Join(t.TempDir(), "in")
	os.WriteFile(in, bytes.Repeat([]byte("x"), 4<<20), 0o644)
	f, _ := os.Open(in)
	defer f.Close()
	s, err := d.Start(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Wait()
	if err == nil || !strings.HasPrefix(err.Error(), `decoder "first": integrity check failed`) || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("err %v: want the first step named first, then the second", err)
	}
}

func TestQuoteName(t *testing.T) {
	for in, want := range map[string]string{
		"fspl-1.fspl":          "fspl-1.fspl",
		"fspl-a b é.fspl":      "fspl-a b é.fspl",
		"fspl-\x1b[2J.fspl":    `"fspl-\x1b[2J.fspl"`,
		"fspl-\n1 forged.fspl": `"fspl-\n1 forged.fspl"`,
		"fspl-\xff.fspl":       `"fspl-\xff.fspl"`,
		"fspl-\u202eevil.fspl": `"fspl-\u202eevil.fspl"`,
		"fspl-\u0085next.fspl": `"fspl-\u0085next.fspl"`,
	} {
		if got := QuoteName(in); got != want {
			t.Errorf("QuoteName(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestSizeCountsTheDigitsOfEachParamNumber: FSPL_PARAM_100=... is one byte
// longer than FSPL_PARAM_99=...; the summary (which takes short params in
// batches) and the full decode agree on it.
func TestSizeCountsTheDigitsOfEachParamNumber(t *testing.T) {
	for _, n := range []int{9, 10, 99, 100, 1000, 12345} {
		h := &Header{Seq: 1, Params: make([][]byte, n)}
		h.Params[n-1] = []byte("abcde")
		b := Encode(h)
		var hs headerScanner
		sum, err := hs.summary(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		full, _, err := DecodeHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		want := len("FSPL_PARAM_" + strconv.Itoa(n) + "=abcde")
		if sum.Size.LongestParamVar != want || full.Size != sum.Size {
			t.Errorf("%d params: summary %+v, full %+v, want LongestParamVar %d", n, sum.Size, full.Size, want)
		}
	}
}

// TestScanStopsTheDecoderAfterTheHeader: a built-in decoder whose output
// fails reads the rest of its input to check it (to be named when it made
// bad data); after the scan has read a header, nobody wants that, and the
// scan of a queue through -d openpgp read and decrypted every job file in
// full. The decoder is cancelled instead.
func TestScanStopsTheDecoderAfterTheHeader(t *testing.T) {
	q := newTestQueue(t)
	big := bytes.Repeat([]byte("payload!"), 8<<20) // 64 MiB
	if _, err := q.Write(bytes.NewReader(append(Encode(&Header{Seq: 1}), big...))); err != nil {
		t.Fatal(err)
	}
	var read atomic.Int64
	checking := filter.Func(func(ctx context.Context, r io.Reader, w io.Writer) error {
		buf := make([]byte, 64<<10)
		var werr error
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			n, err := r.Read(buf)
			read.Add(int64(n))
			if werr == nil && n > 0 {
				_, werr = w.Write(buf[:n]) // on failure, go on reading: the check
			}
			if err == io.EOF {
				return werr
			}
			if err != nil {
				return err
			}
		}
	})
	d := &Decoder{Steps: []DecodeStep{{Builtin: "checking", filter: checking}}}
	jobs, err := q.Scan(context.Background(), d)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("jobs %v, err %v", jobs, err)
	}
	if n := read.Load(); n > 16<<20 {
		t.Errorf("the decoder read %d bytes of a 64 MiB job file to give its header", n)
	}
}
