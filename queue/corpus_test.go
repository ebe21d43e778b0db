package queue

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzDecodePacket from testdata/packets and the hostile variants")

// TestWriteFuzzCorpus regenerates the checked-in seed corpus of
// FuzzDecodePacket: go test ./queue -run TestWriteFuzzCorpus -update-corpus
func TestWriteFuzzCorpus(t *testing.T) {
	if !*updateCorpus {
		t.Skip("run with -update-corpus to regenerate the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodePacket")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) {
		data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pk := realPackets(t)
	for name, b := range pk {
		write("fspl-"+name, b)
	}
	for name, b := range hostile(pk["command-params-env.fspl"]) {
		write("hostile-"+name, b)
	}
}
