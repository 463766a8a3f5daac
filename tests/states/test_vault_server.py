"""The ``vault_server`` configuration states against a real OpenBao dev server on loopback: applied
directly and after a dry run, the server read back each time. (Initialising and unsealing need a
non-dev server: tests/vault/test_lifecycle.py runs them in test mode and applied.)"""

from __future__ import annotations

import json

import hvac.exceptions
import pytest

from tests.states.conftest import converges, unique
from tests.vault.test_config import throwaway_ca_pem

pytestmark = pytest.mark.functional


def state(caller, fun: str, name: str, **kwargs):
    return lambda test: caller.state(f"vault_server.{fun}", name, test=test, **kwargs)


def read(bao, path: str) -> dict | None:
    """The data at ``path`` as the server has it, or None."""
    found = bao.client().read(path)
    return found["data"] if found else None


def test_a_kv2_secrets_engine_is_enabled(vault_caller, bao, testmode):
    path = unique("kv")

    def on_server():
        mount = bao.client().sys.list_mounted_secrets_engines()["data"].get(f"{path}/")
        return mount is not None and mount["type"] == "kv" and mount["options"]["version"] == "2"

    converges(state(vault_caller, "secrets_engine_enabled", path), on_server,
              {f"{path}/": {"old": None, "new": "type kv, version 2"}}, testmode)


def test_an_auth_method_is_enabled(vault_caller, bao, testmode):
    path = unique("approle")

    def on_server():
        method = bao.client().sys.list_auth_methods()["data"].get(f"{path}/")
        return method is not None and method["type"] == "approle"

    converges(state(vault_caller, "auth_method_enabled", path, method_type="approle"), on_server,
              {f"{path}/": {"old": None, "new": "type approle"}}, testmode)


def test_a_policy_is_written_then_brought_back_to_its_rules(vault_caller, bao, testmode):
    name = unique("role-app")
    rules = 'path "secret/data/roles/app/*" {\n  capabilities = ["read"]\n}\n'

    def has(expected):
        def on_server():
            try:
                return bao.client().sys.read_acl_policy(name)["data"]["policy"].strip() == expected.strip()
            except hvac.exceptions.InvalidPath:  # no such policy
                return False
        return on_server

    converges(state(vault_caller, "policy_present", name, rules=rules), has(rules),
              {"rules": '--- current\n+++ declared\n@@ -0,0 +1,3 @@\n+path "secret/data/roles/app/*" {\n'
                        '+  capabilities = ["read"]\n+}\n'}, testmode)

    wider = rules.replace('["read"]', '["read", "list"]')
    converges(state(vault_caller, "policy_present", name, rules=wider), has(wider),
              {"rules": '--- current\n+++ declared\n@@ -1,3 +1,3 @@\n path "secret/data/roles/app/*" {\n'
                        '-  capabilities = ["read"]\n+  capabilities = ["read", "list"]\n }\n'}, testmode)


def test_an_approle_role_is_created_then_updated(vault_caller, bao, testmode):
    mount = unique("approle")
    bao.client().sys.enable_auth_method("approle", path=mount)
    path = f"auth/{mount}/role/salt-master"
    settings = {"token_policies": ["salt-master"], "token_ttl": "1h"}

    def role():
        return read(bao, path)

    converges(state(vault_caller, "approle_role_present", "salt-master", mount=mount, **settings),
              lambda: (role() or {}).get("token_ttl") == 3600, {path: {"old": None, "new": settings}}, testmode)
    converges(state(vault_caller, "approle_role_present", "salt-master", mount=mount,
                    **{**settings, "token_ttl": "2h"}),
              lambda: role()["token_ttl"] == 7200, {"token_ttl": {"old": 3600, "new": "2h"}}, testmode)
    assert role()["token_policies"] == ["salt-master"]


def test_the_kubernetes_reviewer_jwt_is_written_and_never_shown(vault_caller, bao, testmode):
    mount = unique("kubernetes")
    bao.client().sys.enable_auth_method("kubernetes", path=mount)
    path = f"auth/{mount}/config"
    reviewer = unique("reviewer-jwt-value")
    host = "https://127.0.0.1:6443"

    settings = {"kubernetes_host": host, "kubernetes_ca_cert": throwaway_ca_pem(), "disable_local_ca_jwt": True}

    converges(state(vault_caller, "kubernetes_config_present", mount, token_reviewer_jwt=reviewer, **settings),
              lambda: (read(bao, path) or {}).get("kubernetes_host") == host,
              {path: {"old": None, "new": {**settings, "token_reviewer_jwt": "(secret)"}}},
              testmode, secret_values=(reviewer,))


def test_a_generated_secret_is_written_once_and_never_shown(vault_caller, bao, testmode):
    name = unique("roles/app/admin")
    fields = {"password": {"length": 40, "alphabet": "alphanumeric"}}

    def stored():
        return (read(bao, f"secret/data/{name}") or {}).get("data")

    rets = converges(state(vault_caller, "secret_generated", name, fields=fields),
                     lambda: len((stored() or {}).get("password", "")) == 40,
                     {"password": {"old": None, "new": "(generated)"}}, testmode,
                     planned_changes={"password": {"old": None, "new": "(new generated value)"}})
    value = stored()["password"]
    assert value not in json.dumps(rets), "a generated value is in a state's return"
    assert rets[-1]["comment"] == f"secret/data/{name} has its generated field(s) password (kept)"
