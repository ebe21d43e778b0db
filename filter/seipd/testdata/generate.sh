#!/bin/sh
# Makes the known-answer vectors of the seipd tests with real gpg, once:
# the outputs are committed, and the tests read whatever is here. Run it
# again only to replace them all:
#
#     sh filter/seipd/testdata/generate.sh
#
# For each AES key size, a message gpg --symmetric writes from stdin (so
# the encrypted data packet has partial lengths), not compressed, and the
# session key gpg --show-session-key prints for it ("9:HEX": cipher
# number, key). plain.bin is the plaintext of all of them; empty.* is a
# message of 0 bytes. gpg 2.2.40 made the committed files.
#
# Uses a temporary GNUPGHOME: the user's keyring is never read or changed.
set -eu
cd "$(dirname "$0")"

GNUPGHOME=$(mktemp -d)
export GNUPGHOME
trap 'gpgconf --kill all >/dev/null 2>&1 || true; rm -rf "$GNUPGHOME"' EXIT

gpgq() { gpg --batch --quiet --pinentry-mode loopback --passphrase 'seipd known answers' "$@"; }

# 40000 bytes: several of gpg's partial bodies, not a multiple of 16.
head -c 40000 /dev/urandom > plain.bin
: > empty.bin
for c in AES AES192 AES256; do
	name=$(echo "$c" | tr 'A-Z' 'a-z')
	[ "$name" = aes ] && name=aes128
	gpgq -z 0 --cipher-algo "$c" --symmetric < plain.bin > "$name.gpg"
	gpgq --show-session-key --decrypt "$name.gpg" 2>&1 >/dev/null |
		sed -n "s/^gpg: session key: '\(.*\)'$/\1/p" > "$name.key"
done
gpgq -z 0 --cipher-algo AES256 --symmetric < empty.bin > empty.gpg
gpgq --show-session-key --decrypt empty.gpg 2>&1 >/dev/null |
	sed -n "s/^gpg: session key: '\(.*\)'$/\1/p" > empty.key
rm empty.bin
gpg --version | head -1
