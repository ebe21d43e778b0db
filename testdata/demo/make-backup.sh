#!/bin/sh
# Makes backup.tar.zst.gpg, the demo's encrypted backup, with the real tools:
#   tar | zstd | gpg --encrypt (to testdata/keys/recipient.pub.asc)
# Run once; the result is committed. Needs tar, zstd and gpg.
set -eu
cd "$(dirname "$0")"
GNUPGHOME=$(mktemp -d)
export GNUPGHOME
trap 'gpgconf --kill all >/dev/null 2>&1 || true; rm -rf "$GNUPGHOME"' EXIT
gpg --batch --quiet --import ../keys/recipient.pub.asc
fpr=$(gpg --batch --with-colons --list-keys | awk -F: '/^fpr/ {print $10; exit}')
tar --sort=name --mtime=2026-01-01 --owner=0 --group=0 --numeric-owner -cf - files |
  zstd -q -19 |
  gpg --batch --trust-model always --encrypt --recipient "$fpr" --output backup.tar.zst.gpg.tmp
mv backup.tar.zst.gpg.tmp backup.tar.zst.gpg
