"""The ``local_pki`` states through Salt's loader (masterless), on real files, checked with the real
``openssl``: the vault role's CA and listener certificate (salt/vault/tls.sls) made, left alone
when nothing differs, issued again for exactly the reasons a user would expect, and never a key in
a return. Also: a certificate Salt's own ``x509_v2`` states made with the arguments this tree gave
them before is taken as it is (a site that converged before the change sees no new certificate)."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
from pathlib import Path

import pytest

from tests.states.conftest import converges
from tests.vault.conftest import SaltCaller

pytestmark = pytest.mark.functional

SANS = ["DNS:vault.example.org", "DNS:vault", "DNS:localhost", "IP:10.10.10.111", "IP:127.0.0.1"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return SaltCaller(tmp_path_factory.mktemp("pki-salt"), {})


def openssl(*args: str) -> str:
    out = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def serial(path: Path) -> str:
    return openssl("x509", "-in", str(path), "-noout", "-serial")


def ca_and_cert(pki: SaltCaller, d: Path, test=False, **leaf) -> tuple[dict, dict, dict, dict]:
    ca_key = pki.state("local_pki.private_key_managed", str(d / "ca.key"), test=test, curve="secp384r1")
    ca = pki.state("local_pki.certificate_managed", str(d / "ca.crt"), test=test, private_key=str(d / "ca.key"),
                   signing_private_key=str(d / "ca.key"), CN="vault internal CA", ca=True,
                   key_usage=["cRLSign", "keyCertSign"], days_valid=3650, days_remaining=30)
    key = pki.state("local_pki.private_key_managed", str(d / "server.key"), test=test, mode="0640")
    args = {"private_key": str(d / "server.key"), "signing_private_key": str(d / "ca.key"),
            "signing_cert": str(d / "ca.crt"), "CN": "vault.example.org", "subject_alt_names": SANS,
            "key_usage": ["digitalSignature", "keyEncipherment"], "extended_key_usage": ["serverAuth"],
            "days_valid": 365, "days_remaining": 30, **leaf}
    cert = pki.state("local_pki.certificate_managed", str(d / "server.crt"), test=test, **args)
    return ca_key, ca, key, cert


def test_a_key_is_made_once_on_its_curve_with_its_mode_and_never_shown(pki, tmp_path, testmode):
    target = tmp_path / "ca.key"
    run = lambda test: pki.state("local_pki.private_key_managed", str(target), test=test,  # noqa: E731
                                 curve="secp384r1", mode="0600")
    rets = converges(run, target.exists, {"private_key": {"old": None, "new": "new secp384r1 key"}}, testmode)
    text = openssl("pkey", "-in", str(target), "-noout", "-text")
    assert "NIST CURVE: P-384" in text or "secp384r1" in text, text
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    body = "".join(target.read_text().splitlines()[1:-1])
    assert body[:40] not in json.dumps(rets), "the key is in a return"


def test_the_ca_and_the_listener_certificate_verify_and_a_second_run_changes_nothing(pki, tmp_path):
    first = ca_and_cert(pki, tmp_path)
    assert all(r["result"] is True and r["changes"] for r in first), first
    assert openssl("verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "server.crt")).strip().endswith("OK")
    text = openssl("x509", "-in", str(tmp_path / "server.crt"), "-noout", "-text")
    assert "DNS:vault.example.org, DNS:vault, DNS:localhost, IP Address:10.10.10.111, IP Address:127.0.0.1" in text
    assert "TLS Web Server Authentication" in text and "CA:FALSE" in text
    ca_text = openssl("x509", "-in", str(tmp_path / "ca.crt"), "-noout", "-text")
    assert "CA:TRUE" in ca_text and "Certificate Sign, CRL Sign" in ca_text
    assert stat.S_IMODE((tmp_path / "server.key").stat().st_mode) == 0o640
    again = ca_and_cert(pki, tmp_path)
    assert all(r["result"] is True and r["changes"] == {} for r in again), again
    planned = ca_and_cert(pki, tmp_path, test=True)
    assert all(r["result"] is True and r["changes"] == {} for r in planned), planned


def test_a_new_name_issues_the_certificate_again_and_a_dry_run_only_says_so(pki, tmp_path):
    ca_and_cert(pki, tmp_path)
    before = serial(tmp_path / "server.crt")
    wider = [*SANS, "DNS:bao.example.org"]
    *_, planned = ca_and_cert(pki, tmp_path, test=True, subject_alt_names=wider)
    assert planned["result"] is None and planned["changes"] == {
        "subject_alt_names": {"old": sorted(SANS), "new": sorted(wider)}}
    assert serial(tmp_path / "server.crt") == before, "a dry run wrote a certificate"
    *_, cert = ca_and_cert(pki, tmp_path, subject_alt_names=wider)
    assert cert["result"] is True and "subject_alt_names" in cert["changes"]
    assert serial(tmp_path / "server.crt") != before
    assert "DNS:bao.example.org" in openssl("x509", "-in", str(tmp_path / "server.crt"), "-noout", "-ext",
                                             "subjectAltName")


def test_a_mode_drift_is_set_in_place_without_a_new_certificate(pki, tmp_path):
    ca_and_cert(pki, tmp_path)
    before = serial(tmp_path / "server.crt")
    os.chmod(tmp_path / "server.crt", 0o600)
    *_, cert = ca_and_cert(pki, tmp_path)
    assert cert["changes"] == {"mode": {"old": "0600", "new": "0644"}}, cert
    assert serial(tmp_path / "server.crt") == before
    assert stat.S_IMODE((tmp_path / "server.crt").stat().st_mode) == 0o644


def test_a_certificate_near_its_end_is_renewed_and_a_renewed_ca_keeps_the_leaf_valid(pki, tmp_path):
    ca_and_cert(pki, tmp_path)
    leaf = serial(tmp_path / "server.crt")
    # the CA renewed (fewer days left than asked): same key, so the leaf it signed stays valid
    ca = pki.state("local_pki.certificate_managed", str(tmp_path / "ca.crt"), private_key=str(tmp_path / "ca.key"),
                   signing_private_key=str(tmp_path / "ca.key"), CN="vault internal CA", ca=True,
                   key_usage=["cRLSign", "keyCertSign"], days_valid=3650, days_remaining=4000)
    assert ca["result"] is True and "not_after" in ca["changes"], ca
    *_, cert = ca_and_cert(pki, tmp_path)
    assert cert["changes"] == {}, "a renewed CA with the same key must not reissue the leaf"
    assert serial(tmp_path / "server.crt") == leaf
    assert openssl("verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "server.crt")).strip().endswith("OK")
    *_, cert = ca_and_cert(pki, tmp_path, days_valid=20)
    assert cert["changes"] == {}, "days_valid alone does not reissue"
    *_, cert = ca_and_cert(pki, tmp_path, days_remaining=400)
    assert "not_after" in cert["changes"] and serial(tmp_path / "server.crt") != leaf


def test_a_certificate_of_another_ca_or_key_is_issued_again(pki, tmp_path):
    ca_and_cert(pki, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    ca_and_cert(pki, other)
    (tmp_path / "server.crt").write_bytes((other / "server.crt").read_bytes())
    *_, cert = ca_and_cert(pki, tmp_path)
    assert set(cert["changes"]) == {"issuer", "private_key"}, cert
    assert openssl("verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "server.crt")).strip().endswith("OK")


def test_a_key_that_is_not_a_key_fails_and_stays(pki, tmp_path):
    target = tmp_path / "ca.key"  # a key under a passphrase (made here, thrown away): Salt cannot read it
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-aes256",
            "-pass", f"pass:{secrets.token_hex(16)}", "-out", str(target))
    before = target.read_bytes()
    ret = pki.state("local_pki.private_key_managed", str(target), curve="secp384r1")
    assert ret["result"] is False and "not an unencrypted PEM private key" in ret["comment"], ret
    assert ret["changes"] == {} and target.read_bytes() == before


def test_files_made_by_salts_x509_v2_with_this_trees_former_arguments_are_kept(pki, tmp_path):
    d = str(tmp_path)
    for sid, fun, name, args in (
        ("ca-key", "x509.private_key_managed", f"{d}/ca.key", {"algo": "ec", "keysize": 384, "mode": "0600"}),
        ("ca", "x509.certificate_managed", f"{d}/ca.crt", {
            "signing_private_key": f"{d}/ca.key", "CN": "vault internal CA",
            "basicConstraints": "critical, CA:true", "keyUsage": "critical, cRLSign, keyCertSign",
            "subjectKeyIdentifier": "hash", "days_valid": 3650, "mode": "0644"}),
        ("key", "x509.private_key_managed", f"{d}/server.key", {"algo": "ec", "keysize": 256, "mode": "0640"}),
        ("cert", "x509.certificate_managed", f"{d}/server.crt", {
            "private_key": f"{d}/server.key", "signing_private_key": f"{d}/ca.key", "signing_cert": f"{d}/ca.crt",
            "CN": "vault.example.org", "subjectAltName": ", ".join(SANS),
            "basicConstraints": "critical, CA:false", "keyUsage": "critical, digitalSignature, keyEncipherment",
            "extendedKeyUsage": "serverAuth", "days_valid": 365, "days_remaining": 30, "mode": "0644"}),
    ):
        ret = pki.state(fun, name, **args)
        assert ret["result"] is True, (sid, ret)
    serials = serial(tmp_path / "ca.crt"), serial(tmp_path / "server.crt")
    rets = ca_and_cert(pki, tmp_path)
    assert all(r["result"] is True and r["changes"] == {} for r in rets), rets
    assert (serial(tmp_path / "ca.crt"), serial(tmp_path / "server.crt")) == serials
