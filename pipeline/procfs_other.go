//go:build !amd64

package pipeline

// syscallTable is empty where the numbers are not written down yet: a
// diagnosis then prints "syscall_N(...)" and cannot tell a missed wake-up.
var syscallTable = map[int]syscallInfo{}
