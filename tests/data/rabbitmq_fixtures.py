"""A lab of its own for the rabbitmq role: two real LXC guests (the broker and a client) on a bridge
and nft table of this module's own, an OpenBao dev server on the bridge's gateway address, and the
role applied masterless inside the broker guest with Salt's real ``salt-call --local``.

The broker guest gets the state tree of this checkout (``salt/`` with ``_modules``/``_states``
dereferenced), a pillar built from the example site with its addresses moved to this lab's subnet
(validated, and the guest's view derived, by ``sitectl.site``), and a Vault token holding only the
role's policy. The root token is made per run and never leaves this process and the host.

Import the fixtures explicitly into a test module (``from tests.data.rabbitmq_fixtures import ...``).
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import shutil
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from sitectl import ROOT
from sitectl import site as site_model
from tests.data.conftest import BaoDev

LAB_DIR = "/var/lib/sitectl-lab-rmq"
BRIDGE = "sitelabr0"
TABLE = "sitectl_lab_rmq"
GATEWAY = "10.77.96.1"
SUBNET = ipaddress.ip_network("10.77.96.0/24")
BROKER = "rabbitmq"
CLIENT = "microservices"
VAULT_PORT = 8298
SALT_CALL = "/opt/saltstack/salt/bin/salt-call"
CONFIG_DIR = "/etc/salt-local"
BAO = str(Path(sys.executable).with_name("bao"))
ROLE_POLICY = """
path "secret/data/roles/rabbitmq/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/roles/rabbitmq/*" { capabilities = ["read", "list"] }
"""


def lab_address(address: str) -> str:
    """An example-site address moved to this lab's subnet (same last octet)."""
    iface = ipaddress.ip_interface(address)
    return f"{SUBNET.network_address + int(iface.ip) % 256}/{SUBNET.prefixlen}"


def lab_pillar(minion_id: str = BROKER) -> dict:
    """The example site on this lab's subnet, the role catalog and the guest's view, validated."""
    site = yaml.safe_load((ROOT / "pillar/site/example.sls").read_text())["site"]
    roles = yaml.safe_load((ROOT / "pillar/platform/roles.sls").read_text())["roles"]
    site["network"] = {"cidr": str(SUBNET), "gateway": GATEWAY, "admin_sources": [f"{GATEWAY}/32"]}
    site["salt"] = {"master": GATEWAY}
    for guest in site["guests"].values():
        guest["address"] = lab_address(guest["address"])
    pillar = {"site": site, "roles": roles}
    site_model.check(pillar)
    pillar.update(site_model.platform_pillar(pillar, minion_id))
    return pillar


class Bao(BaoDev):
    """The data tier's OpenBao dev server (tests/data/conftest.py) on this lab's gateway address."""

    def __init__(self, workdir: Path):
        super().__init__(workdir, host=GATEWAY, preferred_port=VAULT_PORT)

    def write(self, path: str, data: dict) -> None:
        self.client().secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="secret")

    def role_token(self, policies: list[str]) -> str:
        return self.client().auth.token.create(policies=policies, ttl="2h")["auth"]["client_token"]


@dataclass
class Apply:
    """One ``state.apply`` in the broker guest: its states by ID, its raw output, its duration."""

    states: dict
    raw: str
    seconds: float
    retcode: int
    failed: list = field(default_factory=list)
    changed: list = field(default_factory=list)


@dataclass
class RabbitLab:
    host: object
    bao: Bao
    pillar: dict
    applies: list = field(default_factory=list)

    def attach(self, guest: str, argv: list[str], input: str | bytes | None = None, check: bool = True,
               timeout: float = 300):
        return self.host.attach(guest, argv, input=input, check=check, lab_dir=LAB_DIR, timeout=timeout)

    def sh(self, guest: str, script: str, check: bool = True, input: str | None = None) -> str:
        return self.attach(guest, ["sh", "-c", script], input=input, check=check).stdout

    def ip(self, guest: str) -> str:
        return str(ipaddress.ip_interface(self.pillar["site"]["guests"][guest]["address"]).ip)

    def write_token(self, token: str) -> None:
        self.attach(BROKER, ["sh", "-c", "umask 077 && cat > /root/vault-token"], input=token + "\n")

    def apply(self, sls: str = "rabbitmq", test: bool = False) -> Apply:
        t0 = time.monotonic()
        cp = self.attach(BROKER, [SALT_CALL, "--local", "-c", CONFIG_DIR, "--out=json", "--log-level=quiet",
                                  "state.apply", sls, *(["test=True"] if test else [])], check=False, timeout=900)
        seconds = round(time.monotonic() - t0, 1)
        try:
            states = json.loads(cp.stdout)["local"]
        except (ValueError, KeyError) as exc:
            raise AssertionError(f"state.apply printed no state results ({exc}): {cp.stdout[-3000:]} "
                                 f"{cp.stderr[-3000:]}") from None
        assert isinstance(states, dict), states
        by_id: dict[str, dict] = {}
        for key, ret in states.items():  # a state with `names` has one result per name
            merged = by_id.setdefault(ret.get("__id__") or key.split("_|-")[1],
                                      {"result": True, "changes": {}, "comment": ""})
            if ret["result"] is not True:
                merged["result"] = ret["result"] if merged["result"] is not False else False
            merged["changes"].update(ret["changes"])
            merged["comment"] = "\n".join(c for c in (merged["comment"], ret["comment"]) if c)
        result = Apply(states=by_id, raw=cp.stdout + cp.stderr, seconds=seconds, retcode=cp.returncode,
                       failed=sorted(i for i, r in by_id.items() if r["result"] is False),
                       changed=sorted(i for i, r in by_id.items() if r["changes"]))
        self.applies.append(result)
        return result

    def rabbitmqctl(self, *args: str, input: str | None = None) -> str:
        return self.attach(BROKER, ["env", "HOME=/var/lib/rabbitmq", "/usr/lib/rabbitmq/bin/rabbitmqctl", "-q",
                                    *args], input=input).stdout

    def broker_pid(self) -> str:
        return self.sh(BROKER, "systemctl show -p MainPID --value rabbitmq-server").strip()

    def amqp(self, user: str, password: str, vhost: str, queue: str = "probe") -> dict:
        """Publish one message and get it back from the client guest; the password goes on stdin."""
        cp = self.attach(CLIENT, ["python3", "/root/amqp_probe.py", self.ip(BROKER), vhost, user, queue],
                         input=password, check=False, timeout=60)
        try:
            return json.loads(cp.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise AssertionError(f"amqp probe printed no result: {cp.stdout} {cp.stderr}") from None


AMQP_PROBE = r'''
import json, sys, uuid
import pika
host, vhost, user, queue = sys.argv[1:5]
password = sys.stdin.read()
try:
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        host=host, virtual_host=vhost, credentials=pika.PlainCredentials(user, password),
        connection_attempts=1, socket_timeout=10, blocked_connection_timeout=10))
    ch = conn.channel()
    ch.queue_declare(queue=queue)
    body = uuid.uuid4().hex
    ch.basic_publish(exchange="", routing_key=queue, body=body)
    got = None
    for _ in range(50):
        method, _props, got = ch.basic_get(queue=queue, auto_ack=True)
        if method:
            break
        conn.sleep(0.1)
    conn.close()
    print(json.dumps({"ok": got is not None and got.decode() == body}))
except Exception as exc:
    print(json.dumps({"ok": False, "error": type(exc).__name__, "detail": repr(exc)}))
'''

# A client that stays connected: publishes and gets once, waits for /root/hold.go while serving
# heartbeats, then does it again on the same connection and reports.
AMQP_HOLD = r'''
import json, os, sys, time, uuid
import pika
host, vhost, user, queue = sys.argv[1:5]
password = sys.stdin.read()
conn = pika.BlockingConnection(pika.ConnectionParameters(
    host=host, virtual_host=vhost, credentials=pika.PlainCredentials(user, password), heartbeat=10))
ch = conn.channel()
ch.queue_declare(queue=queue)

def roundtrip():
    body = uuid.uuid4().hex
    ch.basic_publish(exchange="", routing_key=queue, body=body)
    for _ in range(50):
        method, _props, got = ch.basic_get(queue=queue, auto_ack=True)
        if method:
            return got.decode() == body
        conn.sleep(0.1)
    return False

first = roundtrip()
open("/root/hold.ready", "w").close()
deadline = time.monotonic() + 240
while not os.path.exists("/root/hold.go") and time.monotonic() < deadline:
    conn.process_data_events(time_limit=0.5)
try:
    second = roundtrip()
    conn.close()
    print(json.dumps({"first": first, "second": second}))
except Exception as exc:
    print(json.dumps({"first": first, "second": False, "error": repr(exc)}))
'''


def _tree_tar() -> bytes:
    """salt/ of this checkout with its _modules/_states links followed, as a tar stream."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", dereference=True) as tar:
        tar.add(str(ROOT / "salt"), arcname="salt", filter=lambda ti: None if "__pycache__" in ti.name else ti)
    return buf.getvalue()


def _push_salt(lab: RabbitLab) -> None:
    minion = {
        "id": BROKER,
        "file_client": "local",
        "file_roots": {"base": ["/srv/salt"]},
        "pillar_roots": {"base": ["/srv/pillar"]},
        "cachedir": "/var/cache/salt-local",
        "log_file": "/var/log/salt-local.log",
        "vault_server": {"url": lab.bao.url, "token_file": "/root/vault-token"},
    }
    lab.sh(BROKER, f"rm -rf /srv/salt /srv/pillar && mkdir -p /srv/pillar {CONFIG_DIR}")
    lab.attach(BROKER, ["tar", "-x", "-C", "/srv"], input=_tree_tar())
    lab.attach(BROKER, ["sh", "-c", f"cat > {CONFIG_DIR}/minion"], input=yaml.safe_dump(minion))
    lab.attach(BROKER, ["sh", "-c", "cat > /srv/pillar/top.sls"], input="base:\n  '*':\n    - lab\n")
    lab.attach(BROKER, ["sh", "-c", "cat > /srv/pillar/lab.sls"], input=yaml.safe_dump(lab.pillar))
    # A minion syncs salt://_modules and _states at start; salt-call --local needs it asked.
    lab.attach(BROKER, [SALT_CALL, "--local", "-c", CONFIG_DIR, "--log-level=quiet", "saltutil.sync_all"])


def _can_run() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root"
    if not shutil.which("lxc-start"):
        return "the lab needs LXC (apt-get install lxc)"
    return None


@pytest.fixture(scope="module")
def rabbit_lab(tmp_path_factory):
    """The broker and client guests up, Vault on the gateway, Salt and the pillar in the broker."""
    from sitectl.lab import host

    reason = _can_run()
    if reason:
        pytest.skip(reason)
    host.ensure_host_packages()
    template = host.build_template(cache_dir=os.environ.get("SITECTL_LAB_CACHE", host.DEFAULT_CACHE_DIR))
    host.teardown(LAB_DIR, BRIDGE, TABLE)  # leftovers of an interrupted run
    bao = None
    try:
        net = host.network_up(BRIDGE, f"{GATEWAY}/{SUBNET.prefixlen}", table=TABLE)
        pillar = lab_pillar()
        for name in (BROKER, CLIENT):
            host.create_guest(name, pillar["site"]["guests"][name]["address"], GATEWAY, net["dns_ips"][0],
                              lab_dir=LAB_DIR, template=template, bridge=BRIDGE)
            host.start_guest(name, timeout=90, lab_dir=LAB_DIR)
        bao = Bao(tmp_path_factory.mktemp("rabbitmq-bao")).start()
        bao.client().sys.create_or_update_policy(name="salt_role_rabbitmq", policy=ROLE_POLICY)
        lab = RabbitLab(host=host, bao=bao, pillar=pillar)
        lab.write_token(bao.role_token(["salt_role_rabbitmq"]))
        _push_salt(lab)
        lab.attach(CLIENT, ["sh", "-c", "cat > /root/amqp_probe.py"], input=AMQP_PROBE)
        lab.attach(CLIENT, ["sh", "-c", "cat > /root/amqp_hold.py"], input=AMQP_HOLD)
        lab.sh(CLIENT, "DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-pika >/dev/null")
        yield lab
    finally:
        if bao is not None:
            bao.stop()
        host.teardown(LAB_DIR, BRIDGE, TABLE)
