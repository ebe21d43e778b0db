package integration

import (
	"strings"
	"testing"
)

func TestCompactStacks(t *testing.T) {
	dump := "log line\nSIGABRT: abort\nPC=0x48bce1 m=0 sigcode=0\n\n" +
		"goroutine 0 gp=0xbadf00 m=0 mp=0xbaef00 [idle]:\nruntime.futex(0xbaf058, 0x80)\n\truntime/sys_linux_amd64.s:569 +0x21 fp=0x7ffc sp=0x7ffc pc=0x48bce1\n\n" +
		"goroutine 1 gp=0x18da995c21e0 m=nil [select]:\nruntime.gopark(0x18da99715378?, 0x5?)\n\truntime/proc.go:462 +0xce fp=0x1 sp=0x2 pc=0x3\n" +
		"github.com/pipespool/pipespool/pipeline.(*running).run(0x18da99724200, {0x893930, 0x18da9964a0f0})\n\tgithub.com/pipespool/pipespool/pipeline/supervise.go:115 +0xace fp=0x1 sp=0x2 pc=0x3\n" +
		"created by main.main in goroutine 1\n\tgithub.com/pipespool/pipespool/cmd/pipespool/main.go:19 +0x92\n\n" +
		"rax    0xca\nrbx    0x0\n"
	got := compactStacks(dump)
	want := "log line\nSIGABRT: abort (goroutines with pipespool's frames, compacted)\n" +
		"goroutine 1 [select]:\nruntime.gopark(...)\n\truntime/proc.go:462\n" +
		"github.com/pipespool/pipespool/pipeline.(*running).run(...)\n\tgithub.com/pipespool/pipespool/pipeline/supervise.go:115\n" +
		"created by main.main in goroutine 1\n\tgithub.com/pipespool/pipespool/cmd/pipespool/main.go:19\n" +
		"(1 goroutines of the runtime only left out)\n"
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if s := "no dump\n"; compactStacks(s) != s {
		t.Errorf("text without a dump changed: %q", compactStacks(s))
	}
	if strings.Contains(got, "rax") {
		t.Error("registers kept")
	}
}
