"""A minion reads only its own roles' secrets (issue 5, item 4), end to end and for real.

A real Salt master configured from etc/master.j2 (its `vault:` block: master-issued per-minion
tokens with the policies salt_minion_<id> and salt_role_<role>), two real minions whose site gives
them different roles, and a real OpenBao dev server. Vault is bootstrapped as docs/vault.md says an
operator does it: the policies and the master's AppRole are the ones salt/vault/configure.sls
renders for this site, applied with the repository's own states; the master's role_id/secret_id
are created at run time and written only to a file of the master's temp config dir, which the
sdb profile of its master.d/vault.conf points at (etc/master.j2 holds only sdb:// references).

Secret values are never printed: they are compared by digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from sitectl.vaultctl import BOOTSTRAP_IDS
from tests.conftest import SITES, make_checkout
from tests.functional.conftest import FACTORY_KEYS
from tests.openbao import BaoServer
from tests.vault.conftest import Credentials, bootstrap_master_approle, give_master_vault

pytestmark = pytest.mark.functional

DB, MQ = "iso-db", "iso-mq"
ROLE = {DB: "postgresql", MQ: "rabbitmq"}
FIELDS = json.dumps({"password": {"length": 32, "alphabet": "urlsafe"}})


def digest(value) -> str:
    return hashlib.sha256(str(value).encode()).hexdigest()[:16]


def site_text() -> str:
    site = yaml.safe_load((SITES / "valid" / "small" / "site.sls").read_text())
    guests = site["site"]["guests"]
    db = guests.pop("db")
    guests.pop("web")
    guests.pop("cloud")
    site["site"].pop("routes", None)
    for number, (name, roles) in enumerate(((DB, ["postgresql"]), (MQ, ["rabbitmq"]), ("vault", ["vault"]))):
        guests[name] = {**db, "vmid": 110 + number, "address": f"192.168.50.{20 + number}/24", "roles": roles}
    return yaml.safe_dump(site, sort_keys=False)


@pytest.fixture(scope="module")
def iso_base(tmp_path_factory):
    return tmp_path_factory.mktemp("isolation")


@pytest.fixture(scope="module")
def iso_checkout(iso_base):
    source = iso_base / "site.sls"
    source.write_text(site_text())
    return make_checkout(iso_base, source, site_name="isolation")


@pytest.fixture(scope="module")
def iso_bao(iso_base):
    server = BaoServer(iso_base / "bao", dev=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def master_approle(iso_base, iso_bao, iso_checkout) -> Credentials:
    credentials, applied = bootstrap_master_approle(iso_base, iso_bao, iso_checkout[1])
    assert {"vault-configure-policy-salt-master-present", "vault-configure-policy-role-postgresql-present",
            "vault-configure-policy-role-rabbitmq-present", f"vault-configure-policy-minion-{DB}-present",
            *BOOTSTRAP_IDS} <= set(applied), applied
    return credentials


@pytest.fixture(scope="module")
def iso_master(salt_factories, iso_checkout, iso_bao, master_approle):
    _, conf = iso_checkout
    rendered = yaml.safe_load((conf / "master").read_text())
    overrides = {key: value for key, value in rendered.items() if key not in FACTORY_KEYS}
    factory = salt_factories.salt_master_daemon("iso-master", overrides=overrides)
    give_master_vault(factory, iso_bao, master_approle)
    etc = Path(factory.config_dir)
    try:
        with factory.started(start_timeout=120):
            yield factory
    finally:
        shutil.rmtree(etc.parent, ignore_errors=True)  # the factory's root, with the credentials


@pytest.fixture(scope="module")
def calls(iso_master):
    """salt-call on each of the two minions, with the repository's modules synced from the master."""
    with contextlib.ExitStack() as stack:
        clis = {}
        for minion_id in (DB, MQ):
            minion = iso_master.salt_minion_daemon(minion_id, overrides={"hash_type": "sha256"})
            stack.callback(shutil.rmtree, Path(minion.config_dir).parent, True)
            stack.enter_context(minion.started(start_timeout=120))
            clis[minion_id] = minion.salt_call_cli(timeout=120)
        for cli in clis.values():
            synced = cli.run("saltutil.sync_modules", "saltenv=base")  # top.sls would sync first
            assert synced.returncode == 0, synced.stderr
            assert "modules.vault_server" in synced.data, synced.data
        yield clis


def test_the_master_issues_each_minion_its_own_and_its_roles_policies(iso_master, iso_checkout):
    rendered = yaml.safe_load((iso_checkout[1] / "master").read_text())["vault"]
    assert rendered["auth"] == {"method": "approle", "role_id": "sdb://platform_vault/role_id",
                                "secret_id": "sdb://platform_vault/secret_id",
                                "token_lifecycle": {"minimum_ttl": 900}}, "no credential in the config"
    assert rendered["cache"] == {"backend": "disk"}, "a minion keeps its token for its lifetime"
    run = iso_master.salt_run_cli(timeout=120)
    for minion_id in (DB, MQ):
        ret = run.run("vault.show_policies", minion_id)
        assert ret.returncode == 0, ret.stderr
        assert sorted(ret.data) == sorted([f"salt_minion_{minion_id}", "salt_role_base",
                                           f"salt_role_{ROLE[minion_id]}"]), ret.data


@pytest.mark.parametrize(("me", "other"), [(DB, MQ), (MQ, DB)])
def test_a_minion_reads_its_roles_secret_and_is_refused_the_other_roles(calls, iso_bao, me, other):
    path = f"roles/{ROLE[me]}/admin"
    kv_path = f"secret/data/{path}"

    # Generated on first apply, by the guest itself with its master-issued token (no token file).
    generated = calls[me].run("vault_server.secret_generate", path, FIELDS)
    assert generated.returncode == 0, generated.stderr
    assert generated.data == {"created": ["password"], "rotated": [], "kept": [], "version": 1}
    stored = iso_bao.kv(path)
    expected = digest(stored["data"]["password"])

    # Read back through saltext-vault and through the project's module (what templates use).
    for fun, args in (("vault.read_secret", (f"secret/{path}", "password")),
                      ("vault_server.secret_read", (path, "password"))):
        ret = calls[me].run(fun, *args)
        assert ret.returncode == 0, f"{me} {fun}: {ret.stderr}"
        assert digest(ret.data) == expected, f"{me} {fun} read another value than the one generated"

    # The other role's guest is refused, reading and writing, and the secret stays as it was.
    refused = calls[other].run("vault.read_secret", f"secret/{path}", "password")
    assert refused.returncode != 0 and refused.data is None
    assert "VaultPermissionDeniedError" in refused.stderr and "permission denied" in refused.stderr, refused.stderr
    refused = calls[other].run("vault_server.secret_read", path, "password")
    assert refused.returncode != 0 and refused.data is None
    assert f"{kv_path}: permission denied: the token's policies do not allow this" in refused.stderr, refused.stderr
    refused = calls[other].run("vault_server.secret_generate", path, FIELDS, "rotate=True")
    assert refused.returncode != 0
    assert f"{kv_path}: permission denied" in refused.stderr, refused.stderr
    after = iso_bao.kv(path)
    assert after["metadata"]["version"] == 1 and digest(after["data"]["password"]) == expected



def minion_tokens(bao, minion_id: str) -> set[str]:
    """The accessors of the tokens Vault holds with ``minion_id``'s own policy (no token value seen)."""
    client = bao.client()
    accessors = client.adapter.list("/v1/auth/token/accessors")["data"]["keys"]
    held = set()
    for accessor in accessors:
        data = client.auth.token.lookup_accessor(accessor)["data"]
        if f"salt_minion_{minion_id}" in (data.get("policies") or []):
            held.add(accessor)
    return held


def test_a_minion_keeps_its_token_and_replaces_one_vault_no_longer_knows(calls, iso_bao):
    path = f"roles/{ROLE[DB]}/kept"
    assert calls[DB].run("vault_server.secret_generate", path, FIELDS).returncode == 0
    # (saltext-vault's own functions also get a new token after a refusal, as the earlier test had)
    held = minion_tokens(iso_bao, DB)
    assert held

    # Another job (another process): the token kept on the minion's disk, none issued.
    again = calls[DB].run("vault_server.secret_read", path, "password")
    assert again.returncode == 0, again.stderr
    assert minion_tokens(iso_bao, DB) == held

    # Revoked behind the minion's back (as a restored Vault forgets it): the next job gets a new one.
    for accessor in held:
        iso_bao.client().auth.token.revoke_accessor(accessor)
    assert minion_tokens(iso_bao, DB) == set()
    after = calls[DB].run("vault_server.secret_read", path, "password")
    assert after.returncode == 0, after.stderr
    assert digest(after.data) == digest(again.data)
    renewed = minion_tokens(iso_bao, DB)
    assert len(renewed) == 1 and not renewed & held
