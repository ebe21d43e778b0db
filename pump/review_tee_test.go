package pump

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"
)

// prefixDigest is the digest of the first n bytes of a producer's stream
// of the given seed (what a destination dropped after n bytes must have).
func prefixDigest(seed uint64, n int64) digest {
	h := sha256.New()
	io.CopyN(h, newPRNG(seed), n)
	return digest{n: n, sum: hex.EncodeToString(h.Sum(nil))}
}

// TestReviewTeeRandomTopologies: random trees of a pump into a tee, as the
// pipeline wires a fan-out (the trunk's pump splices into the fan-out's
// pipe, the tee copies it into each branch's pipe), with random pipe sizes,
// random write and read patterns, and now and then a destination dropped
// half way (its Stop) or a reader that leaves. Every destination that is
// kept must read every byte once, in order (its hash); one dropped must
// read a prefix of the stream, exactly as many bytes as its Result says.
func TestReviewTeeRandomTopologies(t *testing.T) {
	sizes := []int{smallPipe, 2 * smallPipe, 64 << 10, DefaultPipeSize}
	runs := 40
	if testing.Short() {
		runs = 8
	}
	if v, err := strconv.Atoi(os.Getenv("REVIEW_TEE_RUNS")); err == nil {
		runs = v
	}
	for seed := range uint64(runs) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			checkFDs(t)
			rnd := rand.New(rand.NewPCG(seed, 77))
			total := int64(rnd.IntN(3<<20) + 1)
			prod := producer{total: total, chunk: 1 + rnd.IntN(100000), seed: seed + 1000}
			if rnd.IntN(3) == 0 {
				prod.every, prod.pause = 1+rnd.IntN(16), time.Millisecond
			}
			// producer -> pipe -> pump -> pipe -> tee
			in, w := pipeFor(t, sizes[rnd.IntN(len(sizes))], true)
			produced := goProduce(prod, w)
			mid, _, err := NewPipe(sizes[rnd.IntN(len(sizes))])
			if err != nil {
				t.Fatal(err)
			}
			if err := SetNonblock(mid.R); err != nil {
				t.Fatal(err)
			}
			if err := SetNonblock(mid.W); err != nil {
				t.Fatal(err)
			}
			p := mustNew(t, in, End{FD: mid.W, Own: true, Name: "mid"})
			pumped := start(p)
			n := 2 + rnd.IntN(3)
			var dsts []End
			var readers []*os.File
			for range n {
				e, r := pipeFor(t, sizes[rnd.IntN(len(sizes))], false)
				dsts, readers = append(dsts, e), append(readers, r)
			}
			tee := mustNewTee(t, End{FD: mid.R, Own: true, Name: "fan-out"}, dsts)
			done := startTee(tee)
			// At most one destination is dropped (Stop) or left (its
			// reader closes), after a random number of bytes.
			odd, how := -1, rnd.IntN(3) // 0: none, 1: Stop, 2: reader leaves
			var after int64
			if how > 0 {
				odd, after = rnd.IntN(n), rnd.Int64N(total+1)
			}
			outs := make([]chan digest, n)
			for i, r := range readers {
				c := consumer{chunk: 1 + rnd.IntN(70000)}
				if rnd.IntN(3) == 0 {
					c.every, c.pause = 1+rnd.IntN(8), time.Millisecond
				}
				outs[i] = make(chan digest, 1)
				go func() {
					if i == odd && how == 2 {
						d := c.consume(io.LimitReader(r, after))
						r.Close()
						outs[i] <- d
						return
					}
					outs[i] <- c.consume(r)
				}()
			}
			if how == 1 {
				b := tee.Branch(odd)
				eventually(t, time.Minute, "bytes before the drop", func() bool {
					select {
					case <-b.Done():
						return true
					default:
					}
					return b.Bytes() >= after
				})
				b.Stop()
			}
			res := waitFor(t, done, 2*time.Minute, "tee")
			pr := waitFor(t, pumped, time.Minute, "pump")
			inD := waitFor(t, produced, time.Minute, "producer")
			if inD.err != nil || inD.n != total || !pr.EOF {
				t.Fatalf("producer %v, pump %+v", inD, pr)
			}
			for i := range n {
				out := waitFor(t, outs[i], time.Minute, "reader")
				r := res[i]
				if i == odd && (how == 1 && !r.EOF || how == 2 && r.ConsumerGone) {
					if how == 1 && out != prefixDigest(prod.seed, r.Bytes) {
						t.Errorf("dropped destination %d: read %v, result %+v: not the stream's first %d bytes", i, out, r, r.Bytes)
					}
					if how == 2 && out != prefixDigest(prod.seed, out.n) {
						t.Errorf("left destination %d: read %v: not a prefix of the stream", i, out)
					}
					continue
				}
				if i == odd && how == 2 {
					// Its reader left after reading all: it may have
					// got EOF first.
					if out != prefixDigest(prod.seed, out.n) {
						t.Errorf("destination %d: read %v, not a prefix", i, out)
					}
					continue
				}
				if out != inD || !r.EOF || r.Bytes != total || r.Err != nil {
					t.Errorf("destination %d of %d: written %v, read %v, result %+v", i, n, inD, out, r)
				}
			}
		})
	}
}
