"""Failure modes against a real OpenBao: sealed, unreachable, a token whose policy does not cover
the path, a secret that was never generated. The states that need the secret fail with an error
naming the path and the cause, and a config file rendered from the secret keeps its old content."""

from __future__ import annotations

import pytest

from tests.vault.conftest import SaltCaller, write_token

pytestmark = pytest.mark.functional

APP_PATH = "apps/demo"
STATES = {
    "app/init.sls": (
        "demo-app-secret-generated:\n"
        "  vault_server.secret_generated:\n"
        f"    - name: {APP_PATH}\n"
        "    - fields:\n"
        "        password: {length: 32, alphabet: urlsafe}\n"
        "\n"
        "demo-app-config-managed:\n"
        "  file.managed:\n"
        "    - name: {{ pillar.get('config_path', '/nonexistent') }}\n"
        "    - source: salt://app/app.conf.j2\n"
        "    - template: jinja\n"
        "    - mode: '0600'\n"
        "    - require:\n"
        "      - vault_server: demo-app-secret-generated\n"
    ),
    "app/app.conf.j2": "password={{ salt['vault_server.secret_read']('" + APP_PATH + "', 'password') }}\n",
}


def apply_app(caller: SaltCaller, config_path) -> dict:
    out = caller.cmd("state.apply", "app", pillar={"config_path": str(config_path)})
    assert isinstance(out, dict), out
    return {ret["__id__"]: ret for ret in out.values()}


@pytest.mark.parametrize("cause", ["sealed", "unreachable", "missing policy"])
def test_the_states_needing_the_secret_fail_naming_path_and_cause_and_the_config_keeps_its_content(
    bao_dev_own, tmp_path, cause
):
    token_file = write_token(tmp_path / "token", bao_dev_own.root_token)
    caller = SaltCaller(tmp_path / "salt", {"url": bao_dev_own.url, "token_file": str(token_file)}, STATES)
    config = tmp_path / "app.conf"

    first = apply_app(caller, config)
    assert all(ret["result"] for ret in first.values()), first
    value = bao_dev_own.kv(APP_PATH)["data"]["password"]
    assert config.read_text() == f"password={value}\n"
    assert value not in str(first)
    config.write_text("password=the-old-content\n")  # what the service runs with now

    if cause == "sealed":
        bao_dev_own.client().sys.seal()
        expected = f"secret/data/{APP_PATH}: Vault is sealed"
    elif cause == "unreachable":
        bao_dev_own.stop()
        expected = f"secret/data/{APP_PATH}: Vault at {bao_dev_own.url} is unreachable"
    else:
        limited = bao_dev_own.client().auth.token.create(policies=["default"], ttl="10m")["auth"]["client_token"]
        write_token(token_file, limited)
        expected = f"secret/data/{APP_PATH}: permission denied"

    second = apply_app(caller, config)
    generated, managed = second["demo-app-secret-generated"], second["demo-app-config-managed"]
    assert generated["result"] is False
    assert generated["comment"].startswith(expected), generated["comment"]
    assert managed["result"] is False
    assert config.read_text() == "password=the-old-content\n", "no empty or placeholder value"


def test_a_secret_never_generated_fails_the_render_instead_of_writing_an_empty_value(bao_dev_own, tmp_path):
    token_file = write_token(tmp_path / "token", bao_dev_own.root_token)
    states = {
        "only/init.sls": (
            "demo-app-config-managed:\n  file.managed:\n    - name: {{ pillar['config_path'] }}\n"
            "    - source: salt://app/app.conf.j2\n    - template: jinja\n"
        ),
        "app/app.conf.j2": STATES["app/app.conf.j2"],
    }
    caller = SaltCaller(tmp_path / "salt", {"url": bao_dev_own.url, "token_file": str(token_file)}, states)
    config = tmp_path / "app.conf"
    config.write_text("password=the-old-content\n")
    out = caller.cmd("state.apply", "only", pillar={"config_path": str(config)})
    (ret,) = out.values()
    assert ret["result"] is False
    assert f"secret/data/{APP_PATH}: no such secret" in ret["comment"]
    assert config.read_text() == "password=the-old-content\n"
