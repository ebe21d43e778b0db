package pump

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestNewPipeAbovePipeMax: above pipe-max-size a process without
// CAP_SYS_RESOURCE is refused, and the pipe kept its 64 KiB; it now gets
// pipe-max-size, the most it may have. The size NewPipe returns is the
// pipe's.
func TestNewPipeAbovePipeMax(t *testing.T) {
	most := PipeMaxSize()
	if most <= 0 {
		t.Skip("no /proc/sys/fs/pipe-max-size")
	}
	for _, ask := range []int{2 * most, 4 * most} {
		want := most
		if BeyondPipeMax() {
			want = ask
		}
		p, got, err := NewPipe(ask)
		if err != nil {
			t.Fatal(err)
		}
		real, err := unix.FcntlInt(uintptr(p.W), unix.F_GETPIPE_SZ, 0)
		unix.Close(p.R)
		unix.Close(p.W)
		if err != nil {
			t.Fatal(err)
		}
		if real != got {
			t.Errorf("asked %d: NewPipe says %d, the pipe holds %d", ask, got, real)
		}
		if real != want {
			t.Errorf("asked %d: got %d, want %d (beyond pipe-max-size: %v)", ask, real, want, BeyondPipeMax())
		}
	}
}
