"""Vault configured as code against a real OpenBao dev server: each state in test mode (nothing
changes), applied (changes without values), and applied again (no changes)."""

from __future__ import annotations

import pytest

from tests.vault.conftest import dump, unique

pytestmark = pytest.mark.functional


def throwaway_ca_pem() -> str:
    """A self-signed CA certificate standing in for the k3s cluster's CA."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k3s-server-ca")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def converge(caller, fun, name, **kwargs):
    """test=True, then apply, then apply again; returns the three results."""
    planned = caller.state(fun, name, test=True, **kwargs)
    applied = caller.state(fun, name, **kwargs)
    again = caller.state(fun, name, **kwargs)
    assert planned["result"] is None, planned
    assert planned["changes"], planned
    assert applied["result"] is True, applied["comment"]
    assert applied["changes"], applied
    assert again["result"] is True, again["comment"]
    assert again["changes"] == {}, again
    return planned, applied, again


def test_kv2_engine_is_enabled_once_and_a_conflicting_engine_is_never_replaced(caller, bao_dev):
    path = unique("kv")
    converge(caller, "vault_server.secrets_engine_enabled", path)
    assert bao_dev.client().sys.list_mounted_secrets_engines()[f"{path}/"]["options"]["version"] == "2"

    kv1 = unique("kv1")
    bao_dev.client().sys.enable_secrets_engine("kv", path=kv1, options={"version": "1"})
    ret = caller.state("vault_server.secrets_engine_enabled", kv1)
    assert ret["result"] is False
    assert f"secrets engine {kv1}/ exists with type kv, version 1; expected type kv, version 2" in ret["comment"]


def test_approle_and_kubernetes_auth_with_roles(caller, bao_dev):
    approle = unique("approle")
    converge(caller, "vault_server.auth_method_enabled", approle, method_type="approle")
    settings = {"token_policies": ["salt-master"], "token_ttl": "1h", "secret_id_ttl": "24h"}
    converge(caller, "vault_server.approle_role_present", "salt-master", mount=approle, **settings)
    role = bao_dev.client().read(f"auth/{approle}/role/salt-master")["data"]
    assert role["token_policies"] == ["salt-master"] and role["token_ttl"] == 3600
    changed = caller.state("vault_server.approle_role_present", "salt-master", mount=approle,
                           **{**settings, "token_ttl": "2h"})
    assert changed["result"] is True and changed["changes"] == {"token_ttl": {"old": 3600, "new": "2h"}}

    k8s = unique("kubernetes")
    converge(caller, "vault_server.auth_method_enabled", k8s, method_type="kubernetes")
    reviewer = unique("reviewer-jwt-value")
    _, applied, _ = converge(caller, "vault_server.kubernetes_config_present", k8s,
                             kubernetes_host="https://10.10.10.112:6443", kubernetes_ca_cert=throwaway_ca_pem(),
                             disable_local_ca_jwt=True,
                             token_reviewer_jwt=reviewer)
    assert reviewer not in dump(applied), "a reviewer JWT is written, never shown"
    assert bao_dev.client().read(f"auth/{k8s}/config")["data"]["kubernetes_host"] == "https://10.10.10.112:6443"
    role = {"bound_service_account_names": ["external-secrets"],
            "bound_service_account_namespaces": ["external-secrets"],
            "token_policies": ["k3s-external-secrets"], "token_ttl": "15m"}
    converge(caller, "vault_server.kubernetes_role_present", "external-secrets", mount=k8s, **role)
    assert bao_dev.client().read(f"auth/{k8s}/role/external-secrets")["data"]["token_ttl"] == 900


def test_policy_and_file_audit_device(caller, bao_dev, tmp_path):
    name = unique("role-postgresql")
    rules = 'path "secret/data/roles/postgresql/*" {\n  capabilities = ["create", "read", "update"]\n}\n'
    _, applied, _ = converge(caller, "vault_server.policy_present", name, rules=rules)
    assert "+path \"secret/data/roles/postgresql/*\"" in applied["changes"]["rules"]
    assert bao_dev.client().sys.read_acl_policy(name)["data"]["policy"].strip() == rules.strip()

    # OpenBao refuses audit devices through the API (they belong in its server configuration, as
    # the vault role writes them); the state fails with the server's own words and the path.
    refused = caller.state("vault_server.audit_device_enabled", "file", device_type="file",
                           options={"file_path": str(tmp_path / "audit.log")})
    assert refused["result"] is False
    assert refused["comment"].startswith("sys/audit/file: cannot enable audit device via API")


@pytest.mark.parametrize("alphabet", ["alphanumeric", "hex", "urlsafe"])
def test_secret_generated_once_with_declared_length_and_alphabet(caller, bao_dev, caplog, alphabet):
    caplog.set_level(1)
    mount = "secret"  # the dev server's own KV v2
    path = unique("roles/postgresql/admin")
    fields = {"password": {"length": 40, "alphabet": alphabet}, "api_key": {"length": 24, "alphabet": alphabet}}
    planned, applied, again = converge(caller, "vault_server.secret_generated", path, fields=fields)
    stored = bao_dev.kv(path, mount)
    values = stored["data"]
    allowed = set(caller.cmd("vault_server.generate_value", 8, alphabet)) | set(
        {"alphanumeric": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
         "hex": "0123456789abcdef",
         "urlsafe": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"}[alphabet])
    assert len(values["password"]) == 40 and len(values["api_key"]) == 24
    assert set(values["password"]) <= allowed and set(values["api_key"]) <= allowed
    assert stored["metadata"]["version"] == 1, "written once"
    assert applied["changes"] == {"api_key": {"old": None, "new": "(generated)"},
                                  "password": {"old": None, "new": "(generated)"}}
    for value in values.values():
        for ret in (planned, applied, again):
            assert value not in dump(ret)
        assert value not in caplog.text

    # A field added later is generated; the existing one is kept as it is.
    more = {**fields, "salt": {"length": 16, "alphabet": "hex"}}
    added = caller.state("vault_server.secret_generated", path, fields=more)
    assert added["changes"] == {"salt": {"old": None, "new": "(generated)"}}
    after = bao_dev.kv(path, mount)["data"]
    assert after["password"] == values["password"] and after["api_key"] == values["api_key"]


def test_rotation_only_with_the_explicit_option(caller, bao_dev):
    path = unique("roles/rabbitmq/admin")
    fields = {"password": {"length": 32}}
    caller.state("vault_server.secret_generated", path, fields=fields)

    def read():
        return bao_dev.kv(path)

    first = read()["data"]["password"]
    assert caller.state("vault_server.secret_generated", path, fields=fields)["changes"] == {}
    planned = caller.state("vault_server.secret_generated", path, fields=fields, rotate=True, test=True)
    assert planned["result"] is None and read()["data"]["password"] == first
    rotated = caller.state("vault_server.secret_generated", path, fields=fields, rotate=True)
    assert rotated["changes"] == {"password": {"old": "(set)", "new": "(rotated)"}}
    assert read()["data"]["password"] != first and read()["metadata"]["version"] == 2
    assert first not in dump(rotated)


def test_a_secret_written_by_someone_else_is_never_overwritten(caller, bao_dev):
    path = unique("roles/chat/session")
    bao_dev.client().secrets.kv.v2.create_or_update_secret(path=path, secret={"key": "set-by-an-operator"},
                                                           mount_point="secret")
    ret = caller.state("vault_server.secret_generated", path, fields={"key": {"length": 64}})
    assert ret["result"] is True and ret["changes"] == {}
    assert caller.cmd("vault_server.secret_read", path, "key") == "set-by-an-operator"


def test_concurrent_runs_write_the_secret_exactly_once(caller, bao_dev):
    """Three salt-call processes generate the same secret at once: check-and-set lets one write."""
    import concurrent.futures
    import json

    path = unique("roles/k3s/token")
    arg = json.dumps({"token": {"length": 48, "alphabet": "hex"}})
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        runs = list(pool.map(lambda _: caller.salt_call("vault_server.secret_generate", path, arg), range(3)))
    for run in runs:
        assert run.returncode == 0, run.stderr
    results = [json.loads(run.stdout)["local"] for run in runs]
    assert sorted(len(r["created"]) for r in results) == [0, 0, 1], results
    meta = bao_dev.kv(path)
    assert meta["metadata"]["version"] == 1
    value = meta["data"]["token"]
    for run in runs:
        assert value not in run.stdout and value not in run.stderr
    assert value not in caller.log_file.read_text()
