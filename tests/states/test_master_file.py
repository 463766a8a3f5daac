"""The ``master_file`` state through Salt's loader (masterless: the file server is the test's own
state tree), on real files: the vault role's ``bao`` binary from the master's file server, put in
place once, left alone when its content is the source's, replaced when it differs (never half
written), its mode set in place, and a missing source failing with the target untouched."""

from __future__ import annotations

import os
import stat

import pytest

from tests.vault.conftest import SaltCaller

pytestmark = pytest.mark.functional

CONTENT = os.urandom(3 << 20)  # a few MiB of a binary


@pytest.fixture(scope="module")
def caller(tmp_path_factory):
    base = tmp_path_factory.mktemp("master-file-salt")
    salt = SaltCaller(base, {})
    (salt.tree / "lab").mkdir()
    (salt.tree / "lab" / "bao").write_bytes(CONTENT)
    return salt


def managed(caller, target, test=False, source="salt://lab/bao", mode="0755"):
    return caller.state("master_file.managed", str(target), test=test, source=source, mode=mode)


def test_the_binary_is_put_in_place_once(caller, tmp_path, testmode):
    target = tmp_path / "bao"
    if testmode:
        planned = managed(caller, target, test=True)
        assert planned["result"] is None and not target.exists(), planned
    applied = managed(caller, target)
    assert applied["result"] is True and set(applied["changes"]) == {"sha256"}, applied
    assert applied["changes"]["sha256"]["old"] is None
    assert target.read_bytes() == CONTENT and stat.S_IMODE(target.stat().st_mode) == 0o755
    again = managed(caller, target, test=testmode)
    assert again["result"] is True and again["changes"] == {}, again
    assert [p.name for p in tmp_path.iterdir()] == ["bao"], "a temporary file was left behind"


def test_a_changed_binary_is_replaced_and_a_mode_drift_is_set_in_place(caller, tmp_path):
    target = tmp_path / "bao"
    managed(caller, target)
    target.write_bytes(CONTENT[:-1] + b"\0")
    inode = target.stat().st_ino
    ret = managed(caller, target)
    assert ret["result"] is True and "sha256" in ret["changes"], ret
    assert target.read_bytes() == CONTENT and target.stat().st_ino != inode, "replaced by a rename, not in place"
    os.chmod(target, 0o700)
    ret = managed(caller, target)
    assert ret["changes"] == {"mode": {"old": "0700", "new": "0755"}}, ret
    assert stat.S_IMODE(target.stat().st_mode) == 0o755


def test_a_source_not_on_the_file_server_fails_and_leaves_the_binary(caller, tmp_path):
    target = tmp_path / "bao"
    managed(caller, target)
    ret = managed(caller, target, source="salt://lab/missing")
    assert ret["result"] is False and "is not on the master's file server" in ret["comment"], ret
    assert ret["changes"] == {} and target.read_bytes() == CONTENT
