"""The receiving side of the certificate hand-over as a state (``certificate_handover.installed``), against
a real OpenBao: saltext-vault configured locally with a token (as a master-issued one would be), the
secret written as the proxy's ``publish`` writes it. Nothing published is not a failure; a published
version is installed with its modes and the reload runs; a second run changes nothing; a new version
replaces the files. No return shows the key."""

from __future__ import annotations

import secrets

import pytest

from tests.states.conftest import converges, make_caller, unique

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def handover_caller(states_tmp, bao, bao_token_file):
    return make_caller(states_tmp / "salt-handover", bao, bao_token_file, {
        "vault": {"config_location": "local", "auth": {"method": "token", "token": bao.root_token},
                  "server": {"url": bao.url}, "cache": {"backend": "disk"}},
    })


def pem(kind: str) -> str:
    return f"-----BEGIN {kind}-----\n{secrets.token_hex(48)}\n-----END {kind}-----\n"


def publish(bao, path: str) -> dict:
    content = {"cert": pem("CERTIFICATE"), "key": pem("PRIVATE KEY")}
    bao.client().secrets.kv.v2.create_or_update_secret(path=path, secret=content)
    return content


def test_nothing_published_yet_is_not_a_failure(handover_caller, tmp_path):
    path = f"roles/reverse_proxy/certificates/{unique('none')}.example.org"
    ret = handover_caller.state("certificate_handover.installed", path,
                                destinations={"cert": {"path": str(tmp_path / "cert.pem"), "mode": "0644"}})
    assert ret["result"] is True and ret["changes"] == {}
    assert "nothing published" in ret["comment"]


def test_the_published_version_is_installed_and_the_services_reloaded(handover_caller, bao, tmp_path, testmode):
    path = f"roles/reverse_proxy/certificates/{unique('mail')}.example.org"
    content = publish(bao, path)
    cert, key, marker = tmp_path / "ssl" / "cert.pem", tmp_path / "ssl" / "key.pem", tmp_path / "reloaded"
    destinations = {"cert": {"path": str(cert), "mode": "0644"}, "key": {"path": str(key), "mode": "0600"}}
    reload_cmd = ["touch", str(marker)]

    def run(test):
        return handover_caller.state("certificate_handover.installed", path, test=test, destinations=destinations,
                                     reload_cmd=reload_cmd)

    where = f"version 1 of secret/{path}"
    converges(run, lambda: cert.is_file() and key.is_file(),
              {str(cert): {"old": None, "new": where}, str(key): {"old": None, "new": where},
               "reload": {"old": None, "new": f"touch {marker}"}},
              testmode, secret_values=(content["key"],))
    assert key.read_text() == content["key"] and (key.stat().st_mode & 0o777) == 0o600
    assert (cert.stat().st_mode & 0o777) == 0o644
    assert marker.exists(), "the reload did not run"

    marker.unlink()
    renewed = publish(bao, path)
    again = run(test=False)
    assert again["result"] is True and set(again["changes"]) == {str(cert), str(key), "reload"}
    assert cert.read_text() == renewed["cert"] and marker.exists()
