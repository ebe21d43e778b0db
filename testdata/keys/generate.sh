#!/bin/sh
# Generates the OpenPGP test keys of the built-in stages, once: the keys are
# committed, and tests never touch a real keyring. Run it again only to
# replace them all (the tests read whatever is here):
#
#     sh testdata/keys/generate.sh
#
# Every key is Ed25519 (signing) with a Cv25519 encryption subkey: small,
# fast, and read by gpg 2.2. Secret key files are armored; public keys are
# armored, and recipient's also binary (recipient.pub.gpg), because the
# built-ins accept both. Key files:
#
#   recipient.{pub.asc,pub.gpg,sec.asc}  protected with recipient.pass
#   plain.{pub.asc,sec.asc}              secret key not protected
#   signer.{pub.asc,sec.asc}             protected with signer.pass
#   other.{pub.asc,sec.asc}              unrelated key, not protected
#   symmetric.pass                       passphrase for symmetric encryption
#
# Uses a temporary GNUPGHOME, so the user's keyring is never read or changed.
set -eu
cd "$(dirname "$0")"
umask 077

GNUPGHOME=$(mktemp -d)
export GNUPGHOME
trap 'gpgconf --kill all >/dev/null 2>&1 || true; rm -rf "$GNUPGHOME"' EXIT

printf 'correct horse battery staple\n' > recipient.pass
printf 'signer passphrase with spaces\n' > signer.pass
printf 'symmetric backup passphrase\n' > symmetric.pass

gen() { # name passfile-or-empty
	name=$1 pass=$2
	uid="pipespool test $name <$name@pipespool.invalid>"
	if [ -n "$pass" ]; then
		set -- --pinentry-mode loopback --passphrase-file "$pass"
	else
		set -- --pinentry-mode loopback --passphrase ''
	fi
	gpg --batch "$@" --quick-gen-key "$uid" ed25519 sign,cert never
	fpr=$(gpg --batch --with-colons --list-keys "$uid" | awk -F: '/^fpr:/ {print $10; exit}')
	gpg --batch "$@" --quick-add-key "$fpr" cv25519 encr never
	gpg --batch --armor --export "$fpr" > "$name.pub.asc"
	gpg --batch "$@" --armor --export-secret-keys "$fpr" > "$name.sec.asc"
}

gen recipient recipient.pass
gen plain ''
gen signer signer.pass
gen other ''
gpg --batch --export "pipespool test recipient" > recipient.pub.gpg

chmod 600 ./*.sec.asc ./*.pass
chmod 644 ./*.pub.asc ./*.pub.gpg
gpg --batch --list-keys --keyid-format 0xlong
