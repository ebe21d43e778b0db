#!/usr/bin/env bash
# Runs pipespool's whole test suite: the tools the tests drive for real
# (gpg, zstd, fspl, strace, nncp) are installed first when missing.
#   ./scripts/test.sh            full suite with the race detector
#   FUZZTIME=30s ./scripts/test.sh   longer fuzzing (default 15s per target)
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v gpg    >/dev/null 2>&1 || need+=(gnupg)
command -v zstd   >/dev/null 2>&1 || need+=(zstd)
command -v fspl   >/dev/null 2>&1 || need+=(filespooler)
command -v strace >/dev/null 2>&1 || need+=(strace)
command -v nncp-toss >/dev/null 2>&1 || need+=(nncp)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing test dependencies: ${need[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" </dev/null
fi

echo "== gofmt, go vet" >&2
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt needed on: $unformatted" >&2
  exit 1
fi
go vet ./...

echo "== go test -race ./..." >&2
go test -race -count=1 -timeout 40m ./...

# Fuzz the parsers for a bounded time (the seed corpora already ran above).
fuzztime=${FUZZTIME:-15s}
echo "== fuzzing ($fuzztime per target)" >&2
# fuzz TARGET PACKAGE fuzzes one target. Go's fuzzing engine now and then
# fails a run with only "context deadline exceeded" when -fuzztime ends
# while a worker is busy (no failing input, nothing written to
# testdata/fuzz): that run is made once more. A real failure names the
# input it wrote ("Failing input written to") and is never retried.
fuzz() {
  local out attempt
  for attempt in 1 2; do
    if out=$(go test -run '^$' -fuzz "^$1\$" -fuzztime "$fuzztime" "$2" 2>&1); then
      printf '%s\n' "$out"
      return 0
    fi
    printf '%s\n' "$out"
    if grep -q 'Failing input written to' <<<"$out" || ! grep -q 'context deadline exceeded' <<<"$out"; then
      return 1
    fi
    echo "fuzz $1: the fuzzing engine stopped at its deadline with no failing input; running it once more" >&2
  done
  return 1
}
fuzz FuzzLoadJob ./pipeline/
fuzz FuzzParseRate ./units/
if grep -q 'func FuzzDecodePacket' queue/*_test.go 2>/dev/null; then
  fuzz FuzzDecodePacket ./queue/
fi
fuzz FuzzZstdDecompress ./filter/
# OpenPGP input through the armor, KDF and session-key paths; the target
# fails an input that takes the heap past its bound (see the test).
fuzz FuzzOpenPGPDecrypt ./filter/
echo "== govulncheck" >&2
./scripts/vulncheck.sh
echo "all tests passed" >&2
