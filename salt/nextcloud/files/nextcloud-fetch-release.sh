#!/bin/sh
# Managed by Salt (nextcloud.application): edit salt/nextcloud/files/nextcloud-fetch-release.sh.
#
# Download a Nextcloud release, prove it, and only then unpack it:
#   1. the tarball, its published .sha512 and its detached signature (.asc), and the signing key;
#   2. the key must be the one whose fingerprint is pinned (--fingerprint);
#   3. the tarball's SHA-512 must equal the published one (and the pinned one, with --sha512);
#   4. the signature must be a good signature by that key (gpg's VALIDSIG primary fingerprint);
#   5. only then is it unpacked, into a fresh directory beside --into, and moved to --into.
# Any failure leaves --into as it was and says why on stderr (exit 1). Nothing is trusted from the
# download's own words: the key comes with it, and only its pinned fingerprint makes it count.
#
# usage: nextcloud-fetch-release --version V --base-url URL --key-url URL --fingerprint HEX
#                                [--sha512 HEX] --cache DIR --into DIR [--owner USER]
set -eu

fail() {
    echo "nextcloud-fetch-release: $*" >&2
    exit 1
}

version='' base_url='' key_url='' fingerprint='' pinned_sha512='' cache='' into='' owner=''
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || fail "$1 needs a value"
    case "$1" in
        --version) version=$2 ;;
        --base-url) base_url=$2 ;;
        --key-url) key_url=$2 ;;
        --fingerprint) fingerprint=$2 ;;
        --sha512) pinned_sha512=$2 ;;
        --cache) cache=$2 ;;
        --into) into=$2 ;;
        --owner) owner=$2 ;;
        *) fail "unknown option $1" ;;
    esac
    shift 2
done
for required in version base_url key_url fingerprint cache into; do
    eval "value=\${$required}"
    [ -n "$value" ] || fail "--$(echo "$required" | tr _ -) is required"
done
printf '%s' "$version" | grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+$' || fail "version '$version' is not X.Y.Z"
fingerprint=$(printf '%s' "$fingerprint" | tr -d ' ' | tr a-f A-F)
printf '%s' "$fingerprint" | grep -Eq '^[0-9A-F]{40}$' || fail "the fingerprint is not 40 hex digits"
[ ! -e "$into" ] || fail "$into exists; the release is unpacked only into a new directory"

tarball="nextcloud-$version.tar.bz2"
work="$cache/$version"
umask 022
mkdir -p "$work"
chmod 0700 "$cache" "$work"

fetch() {
    curl --fail --silent --show-error --location --retry 3 --max-time 1800 --output "$2" "$1" \
        || fail "cannot download $1"
}
fetch "$base_url/$tarball" "$work/$tarball"
fetch "$base_url/$tarball.sha512" "$work/$tarball.sha512"
fetch "$base_url/$tarball.asc" "$work/$tarball.asc"
fetch "$key_url" "$work/signing-key.asc"

GNUPGHOME=$(mktemp -d)
export GNUPGHOME
staging=''
cleanup() {
    gpgconf --kill all >/dev/null 2>&1 || true
    rm -rf "$GNUPGHOME"
    [ -z "$staging" ] || rm -rf "$staging"
}
trap cleanup EXIT

# 2. The signing key: only the pinned fingerprint counts, whatever else the file holds.
gpg --batch --quiet --import "$work/signing-key.asc" 2>/dev/null || fail "$key_url is not an OpenPGP key"
gpg --batch --with-colons --fingerprint "$fingerprint" 2>/dev/null | grep -q "^fpr:::::::::$fingerprint:" \
    || fail "the key at $key_url is not the pinned key $fingerprint; refusing the release"

# 3. The checksum: the published one, and the pinned one when there is one.
actual=$(sha512sum "$work/$tarball" | cut -d ' ' -f 1)
published=$(cut -d ' ' -f 1 "$work/$tarball.sha512" | head -n 1 | tr A-F a-f)
[ "$actual" = "$published" ] || fail "$tarball does not match its published SHA-512; refusing the release"
if [ -n "$pinned_sha512" ]; then
    pinned=$(printf '%s' "$pinned_sha512" | tr A-F a-f)
    [ "$actual" = "$pinned" ] || fail "$tarball does not match the pinned SHA-512; refusing the release"
fi

# 4. The signature: good, and made by the pinned key (VALIDSIG's last field is the primary key's
# fingerprint, so a subkey of that key counts and any other key does not).
status=$(gpg --batch --status-fd 1 --verify "$work/$tarball.asc" "$work/$tarball" 2>/dev/null) \
    || fail "the signature of $tarball does not verify; refusing the release"
printf '%s\n' "$status" | grep -q '^\[GNUPG:\] GOODSIG ' || fail "no good signature on $tarball"
signer=$(printf '%s\n' "$status" | awk '$2 == "VALIDSIG" { print $NF }' | tr a-f A-F)
[ "$signer" = "$fingerprint" ] || fail "$tarball is signed by ${signer:-nobody}, not by $fingerprint"

# 5. Unpacked only now, beside the target, then moved into place in one rename.
parent=$(dirname "$into")
mkdir -p "$parent"
staging=$(mktemp -d "$parent/.nextcloud-unpack.XXXXXX")
tar --extract --bzip2 --no-same-owner --file "$work/$tarball" --directory "$staging" \
    || fail "cannot unpack $tarball"
[ -f "$staging/nextcloud/version.php" ] || fail "$tarball holds no nextcloud/version.php"
if [ -n "$owner" ]; then
    chown -R "$owner:$owner" "$staging/nextcloud"
fi
mv "$staging/nextcloud" "$into"
echo "nextcloud-fetch-release: $tarball verified (SHA-512, signature by $fingerprint) and unpacked into $into"
