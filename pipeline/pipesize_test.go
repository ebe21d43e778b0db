package pipeline

import "testing"

func TestPipeSizeWithinTheUsersBudget(t *testing.T) {
	const soft = 16384 // pages: the kernel's default pipe-user-pages-soft
	for _, tt := range []struct {
		want, n int
		pages   int64
		size    int
	}{
		{1 << 20, 4, soft, 1 << 20},      // 4 MiB of 32 MiB: as asked
		{1 << 20, 32, soft, 1 << 20},     // exactly half the limit
		{1 << 20, 33, soft, 512 << 10},   // just over: the next power of two down
		{1 << 20, 99, soft, 256 << 10},   // 50 stages: 32 MiB / 99 = 331 KiB
		{1 << 20, 2000, soft, 64 << 10},  // never below a pipe's own size
		{256 << 10, 99, soft, 256 << 10}, // never above pipe_size
		{1 << 20, 99, 0, 1 << 20},        // no limit
		{1 << 30, 1, soft, 32 << 20},     // one huge pipe: half the limit
	} {
		got, why := pipeSizeWithin(tt.want, tt.n, tt.pages, 4096)
		if got != tt.size {
			t.Errorf("want %d for %d pipes within %d pages: %d (%s), expected %d", tt.want, tt.n, tt.pages, got, why, tt.size)
		}
		if int64(got)*int64(tt.n) > tt.pages*4096/2 && got > defaultPipeBytes && tt.pages > 0 {
			t.Errorf("%d pipes of %d bytes exceed half the budget", tt.n, got)
		}
	}
}
