#!/bin/sh
# Managed by Salt (nextcloud.collabora): edit salt/nextcloud/files/fetch-signing-key.sh.
#
# Fetch a repository's signing key and keep it only if it is the pinned one: the key file is
# imported into a throwaway keyring, and only the key with the pinned fingerprint is exported
# (binary, as apt's signed-by wants it) to OUT, in one rename.
# usage: fetch-signing-key URL FINGERPRINT OUT
set -eu
fail() {
    echo "fetch-signing-key: $*" >&2
    exit 1
}
[ $# -eq 3 ] || fail "usage: fetch-signing-key URL FINGERPRINT OUT"
url=$1
fingerprint=$(printf '%s' "$2" | tr -d ' ' | tr a-f A-F)
out=$3
printf '%s' "$fingerprint" | grep -Eq '^[0-9A-F]{40}$' || fail "the fingerprint is not 40 hex digits"
GNUPGHOME=$(mktemp -d)
export GNUPGHOME
trap 'gpgconf --kill all >/dev/null 2>&1 || true; rm -rf "$GNUPGHOME"' EXIT
curl --fail --silent --show-error --location --retry 3 --output "$GNUPGHOME/key" "$url" || fail "cannot download $url"
gpg --batch --quiet --import "$GNUPGHOME/key" 2>/dev/null || fail "$url is not an OpenPGP key"
gpg --batch --with-colons --fingerprint "$fingerprint" 2>/dev/null | grep -q "^fpr:::::::::$fingerprint:" \
    || fail "the key at $url is not the pinned key $fingerprint"
gpg --batch --export "$fingerprint" > "$GNUPGHOME/pinned.gpg"
install -m 0644 "$GNUPGHOME/pinned.gpg" "$out.tmp"
mv "$out.tmp" "$out"
