"""vault_server.secret_fingerprints, what the recovery drill compares before and after a restore: an
HMAC per secret under the mount, keyed per drill, never a value; only what the caller's token may
list and read; a changed value changes its fingerprint only."""

from __future__ import annotations

import pytest

from tests.vault.conftest import SaltCaller, dump, write_token

pytestmark = pytest.mark.functional

ROLE_A = '''path "secret/data/roles/a/*" { capabilities = ["read"] }
path "secret/metadata/roles/a/*" { capabilities = ["read", "list"] }
path "secret/metadata/roles/" { capabilities = ["list"] }
path "secret/metadata/" { capabilities = ["list"] }
'''


def test_every_secret_is_fingerprinted_without_its_value_and_a_change_shows(bao_dev_own, tmp_path):
    bao = bao_dev_own
    bao.write("roles/a/one", value="first-value-of-one")
    bao.write("roles/a/deep/two", value="value-of-two")
    bao.write("roles/b/three", value="value-of-three")
    root = SaltCaller(tmp_path / "root", {"url": bao.url, "token_file": str(write_token(tmp_path / "t",
                                                                                        bao.root_token))})
    before = root.cmd("vault_server.secret_fingerprints", "nonce-1")
    assert sorted(before) == ["roles/a/deep/two", "roles/a/one", "roles/b/three"]
    assert all(len(v) == 64 for v in before.values())
    assert "value" not in dump(before)
    assert root.cmd("vault_server.secret_fingerprints", "nonce-1") == before
    assert root.cmd("vault_server.secret_fingerprints", "nonce-2") != before  # keyed per drill

    bao.write("roles/a/one", value="second-value-of-one")
    after = root.cmd("vault_server.secret_fingerprints", "nonce-1")
    assert [p for p in before if before[p] != after[p]] == ["roles/a/one"]


def test_a_narrow_token_sees_only_what_its_policy_lists(bao_dev_own, tmp_path):
    bao = bao_dev_own
    bao.write("roles/a/one", value="value-of-one")
    bao.write("roles/b/three", value="value-of-three")
    bao.policy("role_a", ROLE_A)
    token = bao.token(["role_a"])
    narrow = SaltCaller(tmp_path / "narrow", {"url": bao.url, "token_file": str(write_token(tmp_path / "t", token))})
    prints = narrow.cmd("vault_server.secret_fingerprints", "nonce")
    assert prints.keys() == {"roles/a/one", "roles/b/"}
    assert prints["roles/b/"] == "unlistable" and len(prints["roles/a/one"]) == 64
