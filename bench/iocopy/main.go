// Command iocopy is the benchmark harness's plain io.Copy relay: stdin to
// stdout the way a Go program that takes no care of the kernel's zero-copy
// paths does it.
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	// The wrappers hide (*os.File).ReadFrom and WriteTo, which would splice:
	// what is measured is io.Copy's 32 KiB read/write loop.
	if _, err := io.Copy(struct{ io.Writer }{os.Stdout}, struct{ io.Reader }{os.Stdin}); err != nil {
		fmt.Fprintln(os.Stderr, "iocopy:", err)
		os.Exit(1)
	}
}
