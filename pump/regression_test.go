package pump

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRegressionEOFAfterConsumerGoneIsEOF: found by the torture harness
// (integration/torture_test.go, TORTURE_SEED=1 run 16: gen | burst |
// exitafter N 54 | closein). The producer wrote nothing and exited 54 on
// its own after its consumer had closed its stdin; splice reported EPIPE
// for the source's EOF (it checks for a reader before it looks for EOF),
// the pump said "consumer gone", and pipespool called the producer's own
// failure a consequence: the run succeeded. A drained, hung-up source is
// EOF whatever the destination.
func TestRegressionEOFAfterConsumerGoneIsEOF(t *testing.T) {
	var src, dst [2]int
	for _, p := range []*[2]int{&src, &dst} {
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
			t.Fatal(err)
		}
	}
	unix.Close(dst[0]) // the consumer has gone
	unix.Close(src[1]) // the producer ended without writing
	p := mustNew(t, End{FD: src[0], Own: true, Name: "src"}, End{FD: dst[1], Own: true, Name: "dst"})
	res := waitFor(t, start(p), 10*time.Second, "pump result")
	if !res.EOF || res.ConsumerGone || res.Err != nil {
		t.Fatalf("result %+v, want EOF and no consumer gone", res)
	}

	// Bytes the producer wrote and the consumer refused are still a
	// consumer gone.
	for _, p := range []*[2]int{&src, &dst} {
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
			t.Fatal(err)
		}
	}
	unix.Close(dst[0])
	unix.Write(src[1], []byte("refused"))
	unix.Close(src[1])
	p = mustNew(t, End{FD: src[0], Own: true, Name: "src"}, End{FD: dst[1], Own: true, Name: "dst"})
	res = waitFor(t, start(p), 10*time.Second, "pump result")
	if !res.ConsumerGone || res.EOF || res.Undelivered != 7 {
		t.Fatalf("result %+v, want consumer gone with 7 bytes undelivered", res)
	}
}
