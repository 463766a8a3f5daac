"""The custom states against real servers on loopback, through Salt's loader (masterless, as in
tests/vault): OpenBao for ``vault_server`` and for the passwords the other states read, a
PostgreSQL 15 cluster for ``pg_role``, a RabbitMQ node for ``rabbitmq_access``.

Each server is started here, in a temp dir, on free loopback ports, and stopped here by pid. The
execution modules are pointed at the test's own servers by minion config (``pg_role``'s socket
directory and port, ``rabbitmq_access``'s node environment), never at a system service.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from tests.openbao import BaoServer, free_port
from tests.vault.conftest import SaltCaller, write_token

PG_BIN = Path("/usr/lib/postgresql/15/bin")
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
EPMD = "/usr/lib/erlang/bin/epmd"


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: PID 1 here does not always reap daemons at once)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def unique(prefix: str) -> str:
    """A name no other test uses: the servers are shared by a module's tests."""
    return f"{prefix}_{secrets.token_hex(4)}"


@pytest.fixture(params=(False, True), ids=("apply", "test-mode"))
def testmode(request) -> bool:
    """Every state test runs twice: applied directly, and first with test=True."""
    return request.param


def converges(run: Callable[..., dict], on_server: Callable[[], bool], changes: dict, testmode: bool,
              secret_values: tuple[str, ...] = (), planned_changes: dict | None = None) -> list[dict]:
    """What a user of the state sees, end to end.

    With ``testmode``: a dry run reports ``planned_changes`` (default: ``changes``) with result None,
    and the server is untouched. Then the state is applied: it reports ``changes`` and the server
    has them (``on_server``). Run again (in the first run's mode) it reports nothing. No return
    shows one of ``secret_values``. Returns the returns, in that order.
    """
    rets = []
    assert not on_server(), "the server has it before the state ran: the test proves nothing"
    if testmode:
        planned = run(test=True)
        rets.append(planned)
        assert planned["result"] is None, planned["comment"]
        assert planned["changes"] == (changes if planned_changes is None else planned_changes)
        assert not on_server(), "a test-mode run changed the server"
    applied = run(test=False)
    rets.append(applied)
    assert applied["result"] is True, applied["comment"]
    assert applied["changes"] == changes
    assert on_server(), "the state reported success but the server does not have it"
    again = run(test=testmode)
    rets.append(again)
    assert again["result"] is True, again["comment"]
    assert again["changes"] == {}, "a second run changed something"
    shown = json.dumps(rets, default=str)
    for value in secret_values:
        assert value not in shown, "a secret value is in a state's return"
    return rets


@pytest.fixture(scope="session")
def states_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("states")


@pytest.fixture(scope="session")
def bao(states_tmp):
    server = BaoServer(states_tmp / "bao", dev=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def bao_token_file(states_tmp, bao) -> Path:
    return write_token(states_tmp / "bao-token", bao.root_token)


def make_caller(base: Path, bao: BaoServer, token_file: Path, config: dict | None = None) -> SaltCaller:
    return SaltCaller(base, {"url": bao.url, "token_file": str(token_file)}, config=config)


class PostgresCluster:
    """A PostgreSQL 15 cluster of its own: initdb and pg_ctl as the ``postgres`` user, TCP on
    127.0.0.1 with scram-sha-256, peer authentication on a socket in its own directory.

    The directory is made with mkdtemp in /tmp, not under pytest's tmp_path: those are root-only
    (0700), and the server runs as ``postgres``.
    """

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="pg-state-test-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.port = free_port()

    def _as_postgres(self, *argv: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", "postgres", "--", *argv], cwd="/", capture_output=True,
                              text=True, check=check, timeout=120, **kwargs)

    def start(self) -> PostgresCluster:
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth-local=peer",
                          "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.dir} -c fsync=off"
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"),
                          "-w", "-o", options, "start")
        return self

    @property
    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        pid = self.pid
        stopped = self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop",
                                    check=False)
        if running(pid):
            os.kill(pid, signal.SIGQUIT)  # PostgreSQL's immediate shutdown
        shutil.rmtree(self.dir)
        assert stopped.returncode == 0, stopped.stderr

    def sql(self, query: str, **variables: str) -> str:
        """``query`` (on stdin, psql ``variables`` quoted as :'name') as the superuser over the socket."""
        return self._as_postgres(str(PG_BIN / "psql"), "--no-psqlrc", "-XAtq", "--set=ON_ERROR_STOP=1",
                                 f"--host={self.dir}", f"--port={self.port}", "--dbname=postgres",
                                 *(f"--set={k}={v}" for k, v in variables.items()), input=query).stdout.strip()

    def logs_in(self, role: str, password: str) -> bool:
        """Whether ``role`` logs in over TCP with ``password``, as an application would."""
        out = subprocess.run(
            [str(PG_BIN / "psql"), "--no-psqlrc", "-XAtq", "-c", "SELECT current_user",
             f"host=127.0.0.1 port={self.port} dbname=postgres user={role}"],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"},
            capture_output=True, text=True, check=False, timeout=30)
        return out.returncode == 0 and out.stdout.strip() == role

    def role(self, name: str) -> dict | None:
        """The role as the server has it: login attribute and groups, or None."""
        row = self.sql("SELECT r.rolcanlogin, coalesce((SELECT string_agg(g.rolname, ',' ORDER BY g.rolname) "
                       "FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid), '') "
                       "FROM pg_roles r WHERE r.rolname = :'role_name';", role_name=name)
        if not row:
            return None
        login, groups = row.split("|")
        return {"login": login == "t", "member_of": [g for g in groups.split(",") if g]}


@pytest.fixture(scope="module")
def postgres():
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def pg_caller(states_tmp, bao, bao_token_file, postgres) -> SaltCaller:
    return make_caller(states_tmp / "salt-pg", bao, bao_token_file,
                       {"pg_role": {"host": str(postgres.dir), "port": postgres.port}})


def amqp_logs_in(port: int, user: str, password: str) -> bool:
    """Whether ``user`` logs in to the broker on 127.0.0.1:``port`` with ``password``, as an
    application does: AMQP 0-9-1 up to the broker's answer to the PLAIN credentials (Connection.Tune
    when they are accepted, Connection.Close when refused)."""

    def frame(sock) -> tuple[int, bytes]:
        header = sock.recv(7, socket.MSG_WAITALL)
        if len(header) < 7:
            raise ConnectionError("closed by the broker")
        kind, _, size = struct.unpack(">BHI", header)
        body = sock.recv(size + 1, socket.MSG_WAITALL)
        return kind, body[:size]

    def shortstr(raw: bytes) -> bytes:
        return struct.pack(">B", len(raw)) + raw

    def table(fields: bytes) -> bytes:
        return struct.pack(">I", len(fields)) + fields

    # Asks to be told of refused credentials (Connection.Close) at once, rather than the broker
    # closing the socket silently after its 3 s delay.
    properties = table(shortstr(b"capabilities") + b"F" + table(shortstr(b"authentication_failure_close") + b"t\x01"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        frame(sock)  # Connection.Start
        credentials = b"\x00" + user.encode() + b"\x00" + password.encode()
        start_ok = (struct.pack(">HH", 10, 11) + properties + shortstr(b"PLAIN")
                    + struct.pack(">I", len(credentials)) + credentials + shortstr(b"en_US"))
        sock.sendall(struct.pack(">BHI", 1, 0, len(start_ok)) + start_ok + b"\xce")
        try:
            kind, body = frame(sock)
        except (ConnectionError, TimeoutError):
            return False
        return kind == 1 and struct.unpack(">HH", body[:4]) == (10, 30)


class RabbitNode:
    """Debian's rabbitmq-server as a node of its own: node name, AMQP/distribution/epmd/HTTP ports
    on 127.0.0.1, cookie, mnesia and logs in ``workdir``. Its epmd is started here first (on its
    own port), so both are processes of this fixture and stopped by pid.

    The states go through erl_call to this node (its cookie in ``home``, its epmd port in
    ERL_EPMD_PORT); the test reads the broker back through the management API and logs in over
    AMQP, independently of the module under test."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.home = workdir / "home"
        self.home.mkdir(parents=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        self.amqp_port, self.http_port = free_port(), free_port()
        (workdir / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (workdir / "rabbitmq.conf").write_text(f"management.tcp.ip = 127.0.0.1\n"
                                               f"management.tcp.port = {self.http_port}\n")
        self.node = f"{unique('state-test')}@localhost"
        self.epmd_port = free_port()
        self.pid_file = workdir / "beam.pid"
        self.admin = (unique("test-admin"), secrets.token_urlsafe(16))
        # What rabbitmqctl needs to reach this node; also the rabbitmq_access module's config.
        self.ctl_env = {"HOME": str(self.home), "RABBITMQ_NODENAME": self.node, "ERL_EPMD_PORT": str(self.epmd_port)}
        self.server_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            **self.ctl_env,
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(workdir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(workdir / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(workdir / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
        }
        self.epmd: subprocess.Popen | None = None
        self.server: subprocess.Popen | None = None

    def start(self) -> RabbitNode:
        with (self.workdir / "epmd.log").open("ab") as log:
            self.epmd = subprocess.Popen([EPMD, "-address", "127.0.0.1", "-port", str(self.epmd_port)],
                                         stdout=log, stderr=subprocess.STDOUT, env=self.server_env)
        with (self.workdir / "server.out").open("ab") as log:
            self.server = subprocess.Popen([str(RABBITMQ_BIN / "rabbitmq-server")], stdout=log,
                                           stderr=subprocess.STDOUT, env=self.server_env, cwd=self.workdir)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited: {(self.workdir / 'server.out').read_text()[-2000:]}")
            if self.ctl("await_startup", "--timeout", "5", check=False).returncode == 0:
                name, password = self.admin
                self.ctl("add_user", name, stdin=password)
                self.ctl("set_user_tags", name, "administrator")
                return self
            time.sleep(0.5)
        raise RuntimeError(f"RabbitMQ node {self.node} did not start")

    def ctl(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(RABBITMQ_BIN / "rabbitmqctl"), "-q", *args], input=stdin,
                              env={"PATH": self.server_env["PATH"], **self.ctl_env}, cwd=self.workdir,
                              capture_output=True, text=True, check=check, timeout=120)

    def _api(self, path: str) -> list:
        got = requests.get(f"http://127.0.0.1:{self.http_port}/api/{path}", auth=self.admin, timeout=10)
        got.raise_for_status()
        return got.json()

    def users(self) -> dict[str, list[str]]:
        return {u["name"]: sorted(u["tags"]) for u in self._api("users")}

    def vhosts(self) -> list[str]:
        return [v["name"] for v in self._api("vhosts")]

    def permissions(self, user: str) -> dict[str, dict]:
        return {p["vhost"]: {k: p[k] for k in ("configure", "write", "read")}
                for p in self._api(f"users/{quote(user, safe='')}/permissions")}

    def logs_in(self, user: str, password: str) -> bool:
        return amqp_logs_in(self.amqp_port, user, password)

    def stop(self) -> None:
        """The server script forwards TERM to its Erlang VM and waits for it; then the epmd."""
        beam = int(self.pid_file.read_text()) if self.pid_file.is_file() else None
        for proc in (self.server, self.epmd):
            if proc and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if beam:
            assert not running(beam), f"the Erlang VM of {self.node} (pid {beam}) still runs"


@pytest.fixture(scope="module")
def rabbitmq(tmp_path_factory):
    node = RabbitNode(tmp_path_factory.mktemp("rabbitmq"))
    try:
        yield node.start()
    finally:
        node.stop()


@pytest.fixture(scope="module")
def rabbit_caller(states_tmp, bao, bao_token_file, rabbitmq) -> SaltCaller:
    return make_caller(states_tmp / "salt-rabbitmq", bao, bao_token_file,
                       {"rabbitmq_access": {"env": rabbitmq.ctl_env}})


@pytest.fixture(scope="module")
def vault_caller(states_tmp, bao, bao_token_file) -> SaltCaller:
    return make_caller(states_tmp / "salt-vault", bao, bao_token_file)
