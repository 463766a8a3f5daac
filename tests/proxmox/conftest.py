"""A fake PVE (fakepve) over HTTPS on loopback and the real `salt-cloud` command configured against it.

fakepve serves PVE's own API schema: it validates every parameter with PVE's wording, keeps the state
of containers, VMs and tasks, and injects faults. It runs here in a thread of the test process, with
a certificate of its own that the driver is given as its CA bundle (TLS verification stays on).
salt-cloud runs as a separate process with a config rendered by sitectl.config.write_config
(provider proxmox, bootstrap none: fakepve has no guest to install Salt into).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from fakepve import FakePve
from fakepve import schema as pve_schema
from fakepve.certs import make_cert

from sitectl import ROOT
from sitectl.config import SaltSettings, write_config

TOKEN_ID = "salt@pve!platform"  # noqa: S105 - an id, not a secret
TOKEN_SECRET = "0b6a1c2e-fake-test-only-token-secret"  # noqa: S105 - fakepve's test token, not a secret
SECRET_ENV = "PVE_TOKEN_SECRET"  # noqa: S105 - a variable name
NODE = "pve"
TEMPLATE_NAME = "debian12-cloudinit"
TEMPLATE_VMID = 9000
OSTEMPLATE = "debian-12-standard_12.12-1_amd64.tar.zst"
SALT_CLOUD = Path(sys.executable).parent / "salt-cloud"
# The role the driver's token needs (docs/proxmox.md lists the same privileges, on /).
PRIVILEGES = (
    "VM.Allocate", "VM.Clone", "VM.Audit", "VM.PowerMgmt", "VM.Monitor", "VM.GuestAgent.Audit",
    "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Disk", "VM.Config.Network", "VM.Config.Options",
    "VM.Config.Cloudinit", "Datastore.AllocateSpace", "Datastore.Audit", "SDN.Use", "Sys.Audit",
)
# fakepve 0.5 checks VM.Config.HWType for the cloud-init keys (ciuser, sshkeys, nameserver, searchdomain) where
# PVE checks VM.Config.Cloudinit; the tests grant it on top of the documented role for that reason alone.
GRANTED = (*PRIVILEGES, "VM.Config.HWType")


class _Served:
    """A FakePve on its own event loop in a daemon thread."""

    def __init__(self, pve: FakePve, cert: str, key: str):
        self.pve = pve
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fakepve", daemon=True)
        self.thread.start()
        self.call(pve.start(cert, key))

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self):
        try:
            self.call(self.pve.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@pytest.fixture(scope="session")
def pve_pki(tmp_path_factory) -> tuple[str, str]:
    cert, key, _ = make_cert(str(tmp_path_factory.mktemp("pve-pki")), hosts=("127.0.0.1",))
    return cert, key


def _populate(pve: FakePve) -> None:
    pve.nodes = {NODE: {"online": True}}
    pve.apitokens[TOKEN_ID] = TOKEN_SECRET
    pve.store_file("local", OSTEMPLATE, 130 * 1024 ** 2, content="vztmpl")
    lvm = pve.storages["local-lvm"]
    lvm.setdefault("volumes", {})[f"base-{TEMPLATE_VMID}-disk-0"] = {
        "content": "images", "format": "raw", "size": 4 * 1024 ** 3, "vmid": TEMPLATE_VMID, "ctime": int(time.time())}
    pve.add_vm(TEMPLATE_VMID, TEMPLATE_NAME, node=NODE, template=True, config={
        "scsi0": f"local-lvm:base-{TEMPLATE_VMID}-disk-0,size=4G", "ide2": "local-lvm:cloudinit,media=cdrom",
        "net0": "virtio=BC:24:11:00:00:99,bridge=vmbr0", "scsihw": "virtio-scsi-single", "serial0": "socket",
        "boot": "order=scsi0", "agent": "1", "ostype": "l26", "template": 1, "cores": 1, "memory": 1024})


class GuestAgents:
    """Plays the QEMU guest agent of every started VM: it answers once the VM runs, with its cloud-init address."""

    def __init__(self, pve: FakePve):
        self.pve = pve
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="guest-agents", daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped.wait(0.05):
            for vm in list(self.pve.vms):
                if vm.status == "running" and vm.agent is None and "enabled=1" in str(vm.config.get("agent")):
                    ip = str(vm.config.get("ipconfig0", "")).partition("ip=")[2].split(",")[0]
                    if "/" in ip:
                        address, prefix = ip.split("/")
                        vm.agent = {"interfaces": [
                            {"name": "lo", "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "ipv4",
                                                             "prefix": 8}]},
                            {"name": "eth0", "hardware-address": "bc:24:11:00:00:01",
                             "ip-addresses": [{"ip-address": address, "ip-address-type": "ipv4",
                                               "prefix": int(prefix)}]}]}

    def stop(self):
        self.stopped.set()
        self.thread.join(5)


@pytest.fixture
def pve(pve_pki):
    """A fresh fake PVE for one test: node `pve`, the LXC OS template, the QEMU cloud-init template, the token."""
    fake = FakePve(host="127.0.0.1", port=0)
    fake.time_scale = 0
    _populate(fake)
    served = _Served(fake, *pve_pki)
    agents = GuestAgents(fake)
    fake.served = served
    try:
        yield fake
    finally:
        agents.stop()
        served.stop()


@dataclass
class Cloud:
    """The real salt-cloud command over a config rendered for the fake PVE."""

    conf: Path
    state: Path
    env: dict

    def _command(self, args, secret):
        env = dict(self.env)
        if secret is not None:
            env[SECRET_ENV] = secret
        else:
            env.pop(SECRET_ENV, None)
        return [str(SALT_CLOUD), "-c", str(self.conf), "--out", "json", "--log-level", "quiet", "-y", *args], env

    def run(self, *args: str, secret: str | None = TOKEN_SECRET, timeout: float = 150) -> subprocess.CompletedProcess:
        command, env = self._command(args, secret)
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT,
                              check=False)

    def spawn(self, *args: str) -> subprocess.Popen:
        """salt-cloud started in the background (read it with communicate())."""
        command, env = self._command(args, TOKEN_SECRET)
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)

    def json(self, *args: str, **kwargs) -> dict:
        result = self.run(*args, **kwargs)
        assert result.returncode == 0, f"salt-cloud {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return json.loads(result.stdout)

    def action(self, action: str, name: str) -> dict:
        """``salt-cloud -a ACTION NAME``: the answer of the driver, without salt-cloud's provider nesting."""
        return self.json("-a", action, name)["platform"]["proxmox_platform"]

    def accepted(self) -> set[str]:
        return {p.name for p in (self.state / "pki" / "master" / "minions").iterdir()}

    def map_file(self, site_description: dict | None = None) -> Path:
        from sitectl import site

        pillar = {"site": site_description or example_site(),
                  "roles": yaml.safe_load((ROOT / "pillar/platform/roles.sls").read_text())["roles"]}
        path = self.state / "example.map"
        path.write_text(yaml.safe_dump(site.cloud_map(pillar)))
        return path

    def use_site(self, edit) -> dict:
        """Make the master read a site of the test's own: the example site changed by ``edit(site)``, in a
        pillar root of the test's that comes before the checkout's. Returns that site."""
        description = example_site()
        edit(description)
        root = self.state.parent / "pillar"
        (root / "site").mkdir(parents=True, exist_ok=True)
        (root / "site" / "testsite.sls").write_text(yaml.safe_dump({"site": description}))
        if not (root / "platform").exists():
            (root / "platform").symlink_to(ROOT / "pillar" / "platform")  # the role catalog, as it is
        master = self.conf / "master"
        text = master.read_text()
        # The ext_pillar reads the site file and the catalog as data from platform_pillar_dir.
        changed = re.sub(r"^platform_pillar_dir: .*$", f"platform_pillar_dir: {root}", text, count=1, flags=re.M)
        changed = changed.replace("platform_site: example", "platform_site: testsite", 1)
        assert f"platform_pillar_dir: {root}" in changed and "platform_site: testsite" in changed, \
            "the master config changed shape"
        master.write_text(changed)
        return description

    def add_profiles(self, profiles: dict) -> None:
        """Profiles of the test's own beside the checkout's (the profile folder becomes a copy)."""
        folder = self.conf / "cloud.profiles.d"
        if folder.is_symlink():
            source = folder.resolve()
            folder.unlink()
            folder.mkdir()
            for path in source.glob("*.conf"):
                (folder / path.name).write_text(path.read_text())
        (folder / "test.conf").write_text(yaml.safe_dump(profiles))


def example_site() -> dict:
    return yaml.safe_load((ROOT / "pillar/site/example.sls").read_text())["site"]


def make_cloud(base: Path, pve: FakePve, cafile: str, **options) -> Cloud:
    proxmox = {"url": pve.url, "ca_bundle": cafile, "bootstrap": "none", "node": NODE, "timeout": 5, "retries": 2,
               "backoff": 0.05, "task_timeout": 30, "ip_timeout": 20, "shutdown_timeout": 30}
    proxmox.update(options)
    state = base / "state"
    conf = write_config(SaltSettings(state_dir=state, site="example", provider="proxmox", proxmox=proxmox))
    (state / "pki" / "master" / "minions").mkdir(parents=True, exist_ok=True)
    with (conf / "cloud").open("a") as fh:  # what `salt-cloud -S` shows
        fh.write("query.selection: [id, state, private_ips]\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(base), "LANG": "C.UTF-8"}
    return Cloud(conf=conf, state=state, env=env)


@pytest.fixture
def cloud(tmp_path, pve, pve_pki) -> Cloud:
    return make_cloud(tmp_path, pve, pve_pki[0])


# -- what the driver sent ---------------------------------------------------------------------------


def schema_violations(requests) -> list[str]:
    """Requests whose path/method is not in PVE's schema, or whose body breaks the method's parameters."""
    load = pve_schema.load()
    out = []
    for method, path, body in requests:
        rel = path.split("/api2/json", 1)[-1]
        match = load.match(urllib.parse.unquote(rel))
        if match is None or method not in match.methods:
            out.append(f"{method} {rel}: not a method of PVE's API")
            continue
        spec = match.methods[method].get("parameters")
        values = dict(urllib.parse.parse_qsl(body.decode())) if body else {}
        declared = (spec or {}).get("properties", {})
        values.update({k: v for k, v in match.params.items() if k in declared})
        if method == "GET":
            continue  # the query string is not recorded; fakepve itself refuses a bad one with a 400
        _, errors = pve_schema.validate(spec, values)
        if errors:
            out.append(f"{method} {rel}: {errors}")
    return out


def assert_schema_clean(pve: FakePve) -> None:
    bad = schema_violations(pve.requests)
    assert not bad, "requests outside PVE's schema:\n" + "\n".join(bad)


def assert_tasks_awaited(pve: FakePve) -> None:
    """Every task the driver's token started ended, and its status was read by its UPID."""
    polled = {urllib.parse.unquote(p.split("/tasks/", 1)[1].rsplit("/status", 1)[0])
              for m, p, _ in pve.requests if m == "GET" and p.endswith("/status") and "/tasks/" in p}
    for task in pve.tasklog:
        if task["user"] != TOKEN_ID:
            continue
        assert task["status"] == "stopped", f"a task still runs: {task['upid']}"
        assert task["upid"] in polled, f"task {task['type']} {task['id']} was never awaited: {task['upid']}"


def token_tasks(pve: FakePve, kind: str | None = None) -> list[dict]:
    """The tasks the driver's token started (of one type, e.g. vzshutdown), oldest first."""
    return [t for t in pve.tasklog if t["user"] == TOKEN_ID and (kind is None or t["type"] == kind)]


def writes(pve: FakePve) -> list[tuple[str, str]]:
    """(method, path) of every request that could change the cluster."""
    return [(m, p) for m, p, _ in pve.requests if m != "GET"]


def guests(pve: FakePve) -> dict[int, object]:
    """Every guest the fake holds (containers and VMs, templates included) by VMID."""
    return {**{vm.vmid: vm for vm in pve.vms}, **{ct.vmid: ct for ct in pve.cts}}
