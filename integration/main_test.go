package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// pipespoolBin is the binary built once by TestMain for every test.
var pipespoolBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pipespool-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pipespoolBin = filepath.Join(dir, "pipespool")
	// Built as docs/install.md says (static), to test what users install.
	build := exec.Command("go", "build", "-trimpath", "-o", pipespoolBin, "../cmd/pipespool")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building pipespool:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
