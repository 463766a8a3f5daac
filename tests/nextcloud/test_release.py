"""The release download's proof, run for real: ``nextcloud-fetch-release`` (the script the role installs)
against releases made here, signed with keys made here (nextcloud.com is unreachable from this
machine, and nothing fetched from it is in the repository). A release is unpacked only when its key
has the pinned fingerprint, its SHA-512 matches the published one (and the pinned one), and its
signature is a good one by that key; otherwise nothing is unpacked and the reason is said."""

from __future__ import annotations

import bz2
import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from sitectl import ROOT

pytestmark = pytest.mark.render

SCRIPT = ROOT / "salt/nextcloud/files/nextcloud-fetch-release.sh"
VERSION = "31.0.9"


def gpg(home: Path, *args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--quiet", *args], input=data,
                          capture_output=True, check=True).stdout


def make_key(home: Path, name: str) -> tuple[str, bytes]:
    """A signing key of its own (no passphrase): its fingerprint and armored public key."""
    home.mkdir(mode=0o700)
    gpg(home, "--passphrase", "", "--quick-gen-key", f"{name} <{name}@example.org>", "ed25519", "sign", "never")
    fpr = next(line.split(":")[9] for line in gpg(home, "--with-colons", "--fingerprint").decode().splitlines()
               if line.startswith("fpr:"))
    return fpr, gpg(home, "--armor", "--export", fpr)


def release_tarball(marker: str = "genuine") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, content in {"nextcloud/version.php": f"<?php $OC_VersionString = '{VERSION}'; // {marker}\n",
                              "nextcloud/occ": "#!/usr/bin/env php\n"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content.encode()))
    return bz2.compress(buf.getvalue())


class Mirror:
    """A release server in a folder (file:// URLs): the tarball, its .sha512, its .asc, the key."""

    def __init__(self, root: Path, signer_home: Path, key: bytes):
        self.root = root
        root.mkdir()
        self.signer_home = signer_home
        (root / "nextcloud.asc").write_bytes(key)
        self.publish(release_tarball())

    @property
    def tarball(self) -> Path:
        return self.root / f"nextcloud-{VERSION}.tar.bz2"

    def publish(self, data: bytes, sign: bool = True, checksum: bool = True) -> None:
        self.tarball.write_bytes(data)
        if checksum:
            digest = hashlib.sha512(data).hexdigest()
            Path(f"{self.tarball}.sha512").write_text(f"{digest}  {self.tarball.name}\n")
        if sign:
            Path(f"{self.tarball}.asc").write_bytes(gpg(self.signer_home, "--armor", "--detach-sign", data=data))


@pytest.fixture
def keys(tmp_path):
    nextcloud = make_key(tmp_path / "gpg-nextcloud", "nextcloud")
    other = make_key(tmp_path / "gpg-other", "mallory")
    return {"nextcloud": nextcloud, "other": other}


@pytest.fixture
def mirror(tmp_path, keys):
    return Mirror(tmp_path / "mirror", tmp_path / "gpg-nextcloud", keys["nextcloud"][1])


def fetch(tmp_path, mirror, fingerprint, sha512="", key_url=None) -> subprocess.CompletedProcess:
    args = ["sh", str(SCRIPT), "--version", VERSION, "--base-url", f"file://{mirror.root}",
            "--key-url", key_url or f"file://{mirror.root}/nextcloud.asc", "--fingerprint", fingerprint,
            "--cache", str(tmp_path / "cache"), "--into", str(tmp_path / "www" / "nextcloud")]
    if sha512:
        args += ["--sha512", sha512]
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    return subprocess.run(args, capture_output=True, text=True, check=False, env=env, timeout=120)


def unpacked(tmp_path) -> bool:
    www = tmp_path / "www"
    return www.exists() and any(www.iterdir())


def test_a_genuine_release_is_verified_and_unpacked(tmp_path, mirror, keys):
    fpr = keys["nextcloud"][0]
    done = fetch(tmp_path, mirror, fpr.lower(), sha512=hashlib.sha512(mirror.tarball.read_bytes()).hexdigest())
    assert done.returncode == 0, done.stderr
    assert "genuine" in (tmp_path / "www/nextcloud/version.php").read_text()
    assert f"signature by {fpr}" in done.stdout
    assert [p.name for p in (tmp_path / "www").iterdir()] == ["nextcloud"], "no staging folder is left behind"


def test_a_tampered_tarball_with_a_matching_checksum_is_refused_by_its_signature(tmp_path, mirror, keys):
    mirror.publish(release_tarball("tampered"), sign=False)  # the attacker can rewrite the .sha512, not sign
    refused = fetch(tmp_path, mirror, keys["nextcloud"][0])
    assert refused.returncode == 1 and "signature" in refused.stderr and "does not verify" in refused.stderr
    assert not unpacked(tmp_path)


def test_a_tarball_that_does_not_match_its_published_checksum_is_refused(tmp_path, mirror, keys):
    Path(f"{mirror.tarball}.sha512").write_text(f"{'0' * 128}  {mirror.tarball.name}\n")
    refused = fetch(tmp_path, mirror, keys["nextcloud"][0])
    assert refused.returncode == 1 and "does not match its published SHA-512" in refused.stderr
    assert not unpacked(tmp_path)


def test_a_release_that_does_not_match_the_pinned_checksum_is_refused(tmp_path, mirror, keys):
    refused = fetch(tmp_path, mirror, keys["nextcloud"][0], sha512="ab" * 64)
    assert refused.returncode == 1 and "does not match the pinned SHA-512" in refused.stderr
    assert not unpacked(tmp_path)


def test_a_release_signed_by_another_key_served_as_the_signing_key_is_refused(tmp_path, keys):
    """The download's key and signature both come from the attacker: only the pinned fingerprint
    stands between them and the guest."""
    forged = Mirror(tmp_path / "forged", tmp_path / "gpg-other", keys["other"][1])
    refused = fetch(tmp_path, forged, keys["nextcloud"][0])
    assert refused.returncode == 1 and f"not the pinned key {keys['nextcloud'][0]}" in refused.stderr
    assert not unpacked(tmp_path)


def test_a_signature_by_another_key_beside_the_pinned_one_is_refused(tmp_path, mirror, keys):
    """The key file holds the pinned key and another; the signature is the other's."""
    both = keys["nextcloud"][1] + keys["other"][1]
    (mirror.root / "nextcloud.asc").write_bytes(both)
    data = release_tarball("by mallory")
    mirror.tarball.write_bytes(data)
    Path(f"{mirror.tarball}.sha512").write_text(f"{hashlib.sha512(data).hexdigest()}  {mirror.tarball.name}\n")
    Path(f"{mirror.tarball}.asc").write_bytes(gpg(tmp_path / "gpg-other", "--armor", "--detach-sign", data=data))
    refused = fetch(tmp_path, mirror, keys["nextcloud"][0])
    assert refused.returncode == 1 and f"not by {keys['nextcloud'][0]}" in refused.stderr
    assert not unpacked(tmp_path)


def test_an_existing_web_root_is_never_unpacked_over(tmp_path, mirror, keys):
    (tmp_path / "www" / "nextcloud").mkdir(parents=True)
    refused = fetch(tmp_path, mirror, keys["nextcloud"][0])
    assert refused.returncode == 1 and "exists" in refused.stderr


def test_the_script_is_valid_posix_shell():
    assert subprocess.run(["sh", "-n", str(SCRIPT)], check=False).returncode == 0
