"""Initialise and unseal a real (non-dev) OpenBao through the vault_server states.

The unseal key shares and the root token leave the server only as ciphertext to the operators'
PGP keys; the test decrypts them as operators would and proves they unseal the server and that
the root token works.
"""

from __future__ import annotations

import json

import pytest

from tests.vault.conftest import SaltCaller, dump

pytestmark = pytest.mark.functional


@pytest.fixture
def real_caller(tmp_path, bao_real) -> SaltCaller:
    return SaltCaller(tmp_path / "salt", {"url": bao_real.url})


def test_initialise_once_to_pgp_ciphertext_then_unseal_from_operator_shares(
    bao_real, real_caller, operators, tmp_path, caplog
):
    caplog.set_level(1)  # every record, Salt's TRACE included
    output = tmp_path / "master-side" / "vault-init.json"
    keys = [operators.public_key(name) for name in operators.names]
    init_args = {"pgp_keys": keys, "root_token_pgp_key": operators.public_key("alice"), "secret_threshold": 2}

    planned = real_caller.state("vault_server.initialized", str(output), test=True, **init_args)
    assert planned["result"] is None
    assert "would be initialised with 3" in planned["comment"]
    assert not output.exists()
    assert real_caller.cmd("vault_server.status")["initialized"] is False

    done = real_caller.state("vault_server.initialized", str(output), **init_args)
    assert done["result"] is True, done["comment"]
    assert done["changes"]["initialized"] == {"old": False, "new": True}
    assert oct(output.stat().st_mode & 0o777) == "0o600"
    written = json.loads(output.read_text())
    assert written["shares"] == 3 and written["threshold"] == 2
    assert len(written["unseal_keys_pgp"]) == 3

    shares = [operators.decrypt(c) for c in written["unseal_keys_pgp"]]
    root_token = operators.decrypt(written["root_token_pgp"])
    assert len(set(shares)) == 3
    for plain in [*shares, root_token]:
        assert plain not in output.read_text(), "only ciphertext is written"
        assert plain not in dump(done) and plain not in caplog.text

    again = real_caller.state("vault_server.initialized", str(output), **init_args)
    assert again["result"] is True and again["changes"] == {}
    assert "already initialised" in again["comment"]
    assert json.loads(output.read_text()) == written, "a second run never rewrites the ciphertext"

    # Sealed after init: without shares the state fails loudly, and says so in test mode too.
    sealed = real_caller.state("vault_server.unsealed", "vault")
    assert sealed["result"] is False
    assert "SEALED" in sealed["comment"] and "0/2" in sealed["comment"]
    assert real_caller.state("vault_server.unsealed", "vault", test=True)["result"] is False

    # Two operators write their decrypted share into a file each (a tmpfs in production).
    share_files = []
    for name, share in zip(operators.names[:2], shares[:2], strict=True):
        path = tmp_path / "unseal" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(share + "\n")
        share_files.append(str(path))
    would = real_caller.state("vault_server.unsealed", "vault", key_files=share_files, test=True)
    assert would["result"] is None and real_caller.cmd("vault_server.status")["sealed"] is True

    opened = real_caller.state("vault_server.unsealed", "vault", key_files=share_files)
    assert opened["result"] is True, opened["comment"]
    assert opened["changes"] == {"sealed": {"old": True, "new": False}}
    for share in shares:
        assert share not in dump(opened) and share not in caplog.text
    assert bao_real.client(root_token).is_authenticated(), "the decrypted root token works"

    steady = real_caller.state("vault_server.unsealed", "vault", key_files=share_files)
    assert steady["result"] is True and steady["changes"] == {}

    # A restart seals the server again; the same shares recover it.
    bao_real.restart()
    assert real_caller.state("vault_server.unsealed", "vault")["result"] is False
    recovered = real_caller.state("vault_server.unsealed", "vault", key_files=share_files)
    assert recovered["result"] is True, recovered["comment"]
    assert real_caller.cmd("vault_server.status")["sealed"] is False


def test_one_share_below_the_threshold_leaves_it_sealed_and_fails(bao_real, real_caller, operators, tmp_path):
    output = tmp_path / "init.json"
    keys = [operators.public_key(name) for name in operators.names]
    done = real_caller.state("vault_server.initialized", str(output), pgp_keys=keys,
                             root_token_pgp_key=keys[0], secret_threshold=2)
    assert done["result"] is True, done["comment"]
    share = tmp_path / "bob"
    share.write_text(operators.decrypt(json.loads(output.read_text())["unseal_keys_pgp"][1]))

    ret = real_caller.state("vault_server.unsealed", "vault", key_files=[str(share)])
    assert ret["result"] is False
    assert "still SEALED after 1 key share(s): progress 1/2" in ret["comment"]


def test_initialise_refuses_to_overwrite_earlier_ciphertext_and_leaves_vault_untouched(
    bao_real, real_caller, operators, tmp_path
):
    output = tmp_path / "init.json"
    output.write_text("earlier ciphertext\n")
    ret = real_caller.state("vault_server.initialized", str(output),
                            pgp_keys=[operators.public_key("alice")], root_token_pgp_key=operators.public_key("alice"))
    assert ret["result"] is False
    assert str(output) in ret["comment"] and "File exists" in ret["comment"]
    assert output.read_text() == "earlier ciphertext\n"
    assert real_caller.cmd("vault_server.status")["initialized"] is False


def test_unreachable_vault_fails_naming_the_address(tmp_path):
    from tests.openbao import free_port

    url = f"http://127.0.0.1:{free_port()}"
    caller = SaltCaller(tmp_path / "salt", {"url": url})
    ret = caller.state("vault_server.unsealed", "vault")
    assert ret["result"] is False
    assert "sys/seal-status" in ret["comment"] and f"Vault at {url} is unreachable" in ret["comment"]
