package filter

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: every
// filter must stop its helpers (zstd coders, OpenPGP workers) on every path.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
