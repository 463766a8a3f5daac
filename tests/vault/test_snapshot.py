"""Backup of the raft storage with a tested restore (issue 5, item 7), against real non-dev OpenBao
servers with raft storage in temp dirs, initialised and unsealed with the repository's modules and
the operators' PGP-encrypted shares.

The snapshot is taken by the script the vault role ships (salt/vault/files/raft-snapshot.sh.j2,
run by a systemd timer on the guest) with a token that has only the shipped raft_snapshot policy;
the restores are the commands docs/vault.md gives. Secret values are compared by digest only.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import hvac.exceptions
import pytest
import requests
from salt.exceptions import CommandExecutionError

from sitectl import render
from tests.conftest import state_args
from tests.openbao import BAO, BaoServer
from tests.vault.conftest import SaltCaller, write_token

pytestmark = pytest.mark.functional

OPENBAO = {"vault": {"server": {"flavor": "openbao", "binary_source": "salt://lab/openbao/bao"}}}
FIELDS = {"password": {"length": 32, "alphabet": "urlsafe"}}


def digest(value) -> str:
    return hashlib.sha256(str(value).encode()).hexdigest()[:16]


@dataclass
class Cluster:
    server: BaoServer
    root: SaltCaller  # the vault_server modules with the root token (from a file)
    root_token: str
    share_files: list[str]

    def __repr__(self) -> str:  # never a token in a traceback
        return f"<Cluster {self.server.url}>"

    def bao(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.server.workdir),
               "BAO_ADDR": self.server.url, "BAO_TOKEN": token or self.root_token}
        return subprocess.run([BAO, *args], env=env, capture_output=True, text=True, check=False, timeout=60)

    def password(self, path: str) -> str:
        return digest(self.server.client(self.root_token).secrets.kv.v2.read_secret_version(
            path=path, raise_on_deleted_version=True)["data"]["data"]["password"])


def wait_active(server: BaoServer, timeout: float = 30) -> None:
    """Until the raft node has been elected leader and serves requests (sys/health 200)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if requests.get(f"{server.url}/v1/sys/health", timeout=2).status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"{server.url} did not become active: {server.log.read_text()[-1500:]}")


def wait_sealed(server: BaoServer, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if requests.get(f"{server.url}/v1/sys/health", timeout=2).status_code == 503:
            return
        time.sleep(0.2)
    raise AssertionError(f"{server.url} did not seal")


KV_UPGRADING = "Upgrading from non-versioned to versioned data"


def settled(call, timeout: float = 60):
    """``call()`` once a KV v2 mount is ready: right after it is mounted or restored, Vault answers
    "Upgrading from non-versioned to versioned data ... resume service shortly" for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except CommandExecutionError as exc:
            if KV_UPGRADING not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def bootstrap(server: BaoServer, operators, base: Path) -> Cluster:
    """docs/vault.md, bootstrap: initialise to PGP ciphertext, two operators unseal, KV v2 at secret/."""
    base.mkdir(parents=True, exist_ok=True)
    unauthenticated = SaltCaller(base / "salt", {"url": server.url})
    keys = [operators.public_key(name) for name in operators.names]
    init = base / "init.json"
    unauthenticated.cmd("vault_server.initialize", keys, keys[0], str(init), secret_threshold=2)
    written = json.loads(init.read_text())
    share_files = []
    for name, ciphertext in zip(operators.names[:2], written["unseal_keys_pgp"][:2], strict=True):
        share_files.append(str(write_token(base / f"share-{name}", operators.decrypt(ciphertext))))
    state = unauthenticated.cmd("vault_server.unseal", key_files=share_files)
    assert state["sealed"] is False, state
    wait_active(server)
    root_token = operators.decrypt(written["root_token_pgp"])
    token_file = write_token(base / "root-token", root_token)
    root = SaltCaller(base / "root", {"url": server.url, "token_file": str(token_file)})
    assert root.cmd("vault_server.mount_enable", "secret", "kv", options={"version": "2"}) is True
    settled(lambda: root.cmd("vault_server.secret_version", "probe/mount-ready"))
    return Cluster(server, root, root_token, share_files)


def generate(cluster: Cluster, path: str, rotate: bool = False) -> dict:
    out = cluster.root.cmd("vault_server.secret_generate", path, FIELDS, rotate=rotate)
    assert isinstance(out, dict), out
    return out


@pytest.fixture(scope="module")
def vault_high(example_config) -> dict:
    high = render.caller(example_config, "vault").cmd("state.show_sls", "vault", pillar=OPENBAO)
    assert isinstance(high, dict), high
    return high


def render_file(example_config, source: str, context: dict) -> str:
    caller = render.caller(example_config, "vault")
    with open(caller.cmd("cp.cache_file", source), encoding="utf-8") as fh:
        return caller.cmd("file.apply_template_on_contents", fh.read(), "jinja", context, None, "base")


@pytest.mark.render
def test_the_role_ships_a_snapshot_timer_with_retention_to_a_backup_folder(vault_high, example_config):
    script = state_args(vault_high["vault-backup-script-managed"], "file")
    assert script["name"] == "/usr/local/sbin/vault-raft-snapshot" and script["mode"] == "0750"
    assert script["context"] == {
        "binary": "/usr/local/bin/bao", "env_prefix": "BAO", "addr": "https://127.0.0.1:8200",
        "cacert": "/etc/openbao/tls/ca.crt", "token_file": "/etc/openbao/snapshot.token",
        "dir": "/var/backups/vault", "keep": 14,
    }
    folder = state_args(vault_high["vault-backup-dir-managed"], "file")
    assert folder["name"] == "/var/backups/vault" and folder["mode"] == "0700"
    text = render_file(example_config, script["source"], script["context"])
    assert subprocess.run(["sh", "-n"], input=text, text=True, check=False).returncode == 0, text
    assert "prefix=BAO\n" in text and 'export "${prefix}_CACERT="/etc/openbao/tls/ca.crt' in text
    assert "keep=14\n" in text and "tail -n +$((keep + 1))" in text

    unit = state_args(vault_high["vault-backup-service-managed"], "file")
    service = render_file(example_config, unit["source"], unit["context"])
    assert "Type=oneshot" in service and "ExecStart=/usr/local/sbin/vault-raft-snapshot" in service
    assert "After=openbao.service" in service
    timer_file = state_args(vault_high["vault-backup-timer-managed"], "file")
    timer = render_file(example_config, timer_file["source"], timer_file["context"])
    assert "OnCalendar=*-*-* 03:15:00" in timer and "Persistent=true" in timer
    running = state_args(vault_high["vault-backup-timer-running"], "unit")
    assert running["name"] == "vault-raft-snapshot.timer" and running["enable"] is True
    assert {"file": "vault-backup-timer-managed"} in running["watch"]
    policy = state_args(vault_high["vault-configure-policy-raft-snapshot-present"], "vault_server")
    assert policy["name"] == "raft_snapshot"
    assert 'path "sys/storage/raft/snapshot" { capabilities = ["read"] }' in policy["rules"]


def test_a_snapshot_taken_by_the_shipped_script_restores_the_data_as_it_was(
    bao_raft_servers, operators, tmp_path, vault_high, example_config
):
    cluster = bootstrap(bao_raft_servers("a"), operators, tmp_path / "a")
    generate(cluster, "roles/postgresql/admin")
    generate(cluster, "roles/rabbitmq/admin")
    before = {path: cluster.password(path) for path in ("roles/postgresql/admin", "roles/rabbitmq/admin")}

    # The root-token holder, once: the shipped policy, and a periodic token with only that policy.
    policy = state_args(vault_high["vault-configure-policy-raft-snapshot-present"], "vault_server")
    assert cluster.root.cmd("vault_server.policy_write", policy["name"], policy["rules"]) is True
    created = cluster.bao("token", "create", "-orphan", "-policy=raft_snapshot", "-period=72h",
                          "-display-name=raft-snapshot", "-field=token")
    assert created.returncode == 0, created.stderr
    snapshot_token = write_token(tmp_path / "snapshot.token", created.stdout.strip())
    with pytest.raises(hvac.exceptions.Forbidden):  # it can take snapshots, and read nothing
        cluster.server.client(created.stdout.strip()).secrets.kv.v2.read_secret_version(
            path="roles/postgresql/admin", raise_on_deleted_version=True)

    # The shipped script, rendered for this server, keeping 2: an older snapshot goes, others stay.
    backups = tmp_path / "backups"
    backups.mkdir()
    for old in ("vault-raft-20200101T000000Z.snap", "vault-raft-20200102T000000Z.snap", "notes.txt"):
        (backups / old).write_text("older\n")
    script_state = state_args(vault_high["vault-backup-script-managed"], "file")
    context = {**script_state["context"], "binary": BAO, "addr": cluster.server.url, "cacert": "",
               "token_file": str(snapshot_token), "dir": str(backups), "keep": 2}
    script = tmp_path / "vault-raft-snapshot"
    script.write_text(render_file(example_config, script_state["source"], context))
    ran = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=False, timeout=60,
                         env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)})
    assert ran.returncode == 0, ran.stderr
    snapshots = sorted(p.name for p in backups.iterdir())
    assert len(snapshots) == 3 and snapshots[0] == "notes.txt", snapshots
    assert snapshots[1] == "vault-raft-20200102T000000Z.snap", "the oldest beyond `keep` was removed"
    taken = backups / snapshots[2]
    assert taken.stat().st_size > 1000 and oct(taken.stat().st_mode & 0o777) == "0o600"
    assert f"removed {backups}/vault-raft-20200101T000000Z.snap" in ran.stdout

    # Damage: a secret rotated, one destroyed with all its versions, one added after the snapshot.
    generate(cluster, "roles/postgresql/admin", rotate=True)
    assert cluster.password("roles/postgresql/admin") != before["roles/postgresql/admin"]
    cluster.server.client(cluster.root_token).secrets.kv.v2.delete_metadata_and_all_versions("roles/rabbitmq/admin")
    generate(cluster, "roles/chat/late")

    restored = cluster.bao("operator", "raft", "snapshot", "restore", str(taken))
    assert restored.returncode == 0, restored.stderr
    wait_active(cluster.server)
    assert {path: cluster.password(path) for path in before} == before
    assert cluster.root.cmd("vault_server.secret_version", "roles/postgresql/admin")["version"] == 1
    assert cluster.root.cmd("vault_server.secret_version", "roles/chat/late") is None, "written after the snapshot"


def test_a_snapshot_restores_onto_a_new_server_only_with_the_original_unseal_shares(
    bao_raft_servers, operators, tmp_path
):
    """The guest is lost: a new server, initialised with throwaway keys, takes the snapshot with
    -force and is then unsealed with the original operators' shares; the original root token works."""
    original = bootstrap(bao_raft_servers("original"), operators, tmp_path / "original")
    generate(original, "roles/postgresql/admin")
    kept = original.password("roles/postgresql/admin")
    snap = tmp_path / "original.snap"
    saved = original.bao("operator", "raft", "snapshot", "save", str(snap))
    assert saved.returncode == 0, saved.stderr
    original.server.stop()

    new = bootstrap(bao_raft_servers("new"), operators, tmp_path / "new")
    refused = new.bao("operator", "raft", "snapshot", "restore", str(snap))
    assert refused.returncode != 0
    assert "different set of unseal keys" in refused.stderr and "snapshot-force" in refused.stderr, refused.stderr
    assert new.root.cmd("vault_server.secret_version", "roles/postgresql/admin") is None, "untouched"

    forced = new.bao("operator", "raft", "snapshot", "restore", "-force", str(snap))
    assert forced.returncode == 0, forced.stderr
    wait_sealed(new.server)
    status = new.root.cmd("vault_server.unseal", key_files=original.share_files)
    assert status["sealed"] is False, status
    wait_active(new.server)
    recovered = Cluster(new.server, SaltCaller(tmp_path / "recovered", {
        "url": new.server.url, "token_file": str(write_token(tmp_path / "original-root", original.root_token))}),
        original.root_token, original.share_files)
    assert settled(lambda: recovered.password("roles/postgresql/admin")) == kept
    assert settled(lambda: recovered.root.cmd("vault_server.secret_version", "roles/postgresql/admin"))["version"] == 1
    with pytest.raises(hvac.exceptions.Forbidden):
        new.server.client(new.root_token).sys.list_mounted_secrets_engines()
