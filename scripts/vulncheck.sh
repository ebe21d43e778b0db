#!/usr/bin/env bash
# Runs govulncheck on pipespool. It fails only when pipespool's code calls a
# known-vulnerable function (govulncheck's own rule); vulnerabilities in
# code it never calls are listed, not fatal.
#
# The vulnerability database comes from vuln.go.dev when that can be
# reached. Where it cannot (a machine that only reaches the Go module
# proxy), the database is built from the golang.org/x/vulndb module, which
# the proxy serves: its data/osv entries are what vuln.go.dev publishes.
# VULNDB_VERSION pins that module; raise it to take newer entries.
set -euo pipefail
cd "$(dirname "$0")/.."

GOVULNCHECK=golang.org/x/vuln/cmd/govulncheck@v1.9.0
VULNDB_VERSION=${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}

db=()
if ! curl -fsS --max-time 10 -o /dev/null https://vuln.go.dev/index/db.json 2>/dev/null; then
  cache=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/pipespool/vulndb-$VULNDB_VERSION
  if [ ! -f "$cache/index/db.json" ]; then
    echo "vuln.go.dev cannot be reached: building the database from golang.org/x/vulndb@$VULNDB_VERSION" >&2
    src=$(go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    if [ -z "$src" ]; then
      echo "cannot download golang.org/x/vulndb@$VULNDB_VERSION" >&2
      exit 1
    fi
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    cp -r "$src/." "$work/"
    chmod -R u+w "$work"
    # gendb reads the entries from a git repository.
    git -C "$work" init -q
    git -C "$work" add data
    git -C "$work" -c user.name=vulncheck -c user.email=vulncheck@localhost commit -qm data
    rm -rf "$cache.tmp"
    (cd "$work" && go run ./cmd/gendb -repo . -out "$cache.tmp")
    rm -rf "$cache"
    mv "$cache.tmp" "$cache"
  fi
  db=(-db "file://$cache")
fi
go run "$GOVULNCHECK" "${db[@]}" ./...
