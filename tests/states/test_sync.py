"""A minion gets the custom states and the skeleton they end through the way the site's guests do:
from the state tree (salt/_modules, salt/_states, salt/_utils) by ``saltutil.sync_all``, with no
module directory of the checkout configured."""

from __future__ import annotations

import pytest
import salt.client
import salt.config
import yaml

from sitectl import ROOT
from tests.states.conftest import unique

pytestmark = pytest.mark.functional


def test_sync_all_brings_the_skeleton_and_the_states_that_use_it(tmp_path, bao, bao_token_file):
    (tmp_path / "etc").mkdir()
    config = tmp_path / "etc" / "minion"
    config.write_text(yaml.safe_dump({
        "id": "sync-test",
        "file_client": "local",
        "root_dir": str(tmp_path),
        "cachedir": str(tmp_path / "cache"),
        "pki_dir": str(tmp_path / "pki"),
        "sock_dir": str(tmp_path / "run"),
        "log_file": str(tmp_path / "minion.log"),
        "hash_type": "sha256",
        "file_roots": {"base": [str(ROOT / "salt")]},
        "pillar_roots": {"base": [str(tmp_path / "pillar")]},
        "vault_server": {"url": bao.url, "token_file": str(bao_token_file)},
    }))
    caller = salt.client.Caller(mopts=salt.config.minion_config(str(config)))
    path = unique("kv")
    before = caller.cmd("state.single", "vault_server.secrets_engine_enabled", path, test=True)
    assert "'vault_server.secrets_engine_enabled' was not found" in str(before), "the states came from elsewhere"

    synced = caller.cmd("saltutil.sync_all", saltenv="base")
    assert "utils.platform_state" in synced["utils"]
    assert {"states.vault_server", "states.pg_role", "states.rabbitmq_access"} <= set(synced["states"])

    (ret,) = caller.cmd("state.single", "vault_server.secrets_engine_enabled", path, test=True).values()
    assert ret["result"] is None, ret["comment"]
    assert ret["comment"] == f"secrets engine {path}/ would be enabled (type kv, version 2)"
