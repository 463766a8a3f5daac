"""A scratch lab for the data tier's roles: real LXC guests on a bridge of their own, an OpenBao dev
server on the bridge's gateway address, and Salt masterless inside the guests over this checkout.

Separate from every other lab on the machine (own lab dir, bridge, nft table and subnet); only the
cached template is shared. The dev server's root token is made at run time and never stored.
Guests reach the host (the dev server) and the Debian mirror, nothing else.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import hvac
import pytest
import requests
import yaml

from sitectl import ROOT, site

LAB_DIR = os.environ.get("SITECTL_LAB_DATA_DIR", "/var/lib/sitectl-lab-pg")
BRIDGE = "sitelabp0"
TABLE = "sitectl_lab_pg"
GATEWAY_CIDR = "10.77.97.1/24"
GATEWAY = "10.77.97.1"
NETWORK = "10.77.97.0/24"
BAO = str(Path(sys.executable).with_name("bao"))
SALT_CALL = "/opt/saltstack/salt/bin/salt-call"
GUEST_CONFIG_DIR = "/srv/salt-config"


def _free_port(host: str, preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError(f"no free port on {host}")


class BaoDev:
    """``bao server -dev`` on the lab's gateway address, so the guests can reach it."""

    def __init__(self, workdir: Path, host: str = GATEWAY, preferred_port: int = 8299):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = _free_port(host, preferred_port)
        self.url = f"http://{host}:{self.port}"
        self.root_token = f"dev-{secrets.token_hex(16)}"
        self.log = workdir / "bao.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> BaoDev:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir)}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [BAO, "server", "-dev", f"-dev-root-token-id={self.root_token}",
                 f"-dev-listen-address={self.host}:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bao server exited: {self.log.read_text()[-2000:]}")
            try:
                requests.get(f"{self.url}/v1/sys/seal-status", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"bao server did not answer on {self.url}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def client(self) -> hvac.Client:
        return hvac.Client(url=self.url, token=self.root_token)

    def read(self, path: str, field: str = "password") -> str:
        return self.client().secrets.kv.v2.read_secret_version(
            path=path, mount_point="secret", raise_on_deleted_version=True)["data"]["data"][field]

    def write(self, path: str, **fields) -> None:
        self.client().secrets.kv.v2.create_or_update_secret(path=path, secret=fields, mount_point="secret")


def lab_site(guests: dict[str, dict], databases: dict | None = None) -> dict:
    """A valid site on the scratch subnet: ``guests`` name -> {host, roles, uses, memory}."""
    network = ipaddress.ip_network(NETWORK)
    described = {}
    for vmid, (name, spec) in enumerate(sorted(guests.items()), start=900):
        described[name] = {
            "kind": "lxc", "vmid": vmid, "cores": 1, "memory": spec.get("memory", 512), "disk": 8,
            "address": f"{network.network_address + spec['host']}/{network.prefixlen}",
            "roles": spec["roles"],
            **({"uses": spec["uses"]} if spec.get("uses") else {}),
        }
    out = {
        "name": "scratch", "domain": "lab.example.org",
        "network": {"cidr": NETWORK, "gateway": GATEWAY, "admin_sources": [f"{GATEWAY}/32"]},
        "salt": {"master": GATEWAY},
        "guests": described,
    }
    if databases:
        out["databases"] = databases
    return out


def roles_catalog() -> dict:
    return yaml.safe_load((ROOT / "pillar/platform/roles.sls").read_text())["roles"]


def guest_pillar(site_data: dict, name: str, extra: dict | None = None) -> dict:
    """What the master's pillar gives guest ``name``: the site, the catalog and the guest's view."""
    pillar = {"site": site_data, "roles": roles_catalog(), **(extra or {})}
    site.check(pillar)
    return {**pillar, **site.platform_pillar(pillar, name)}


def _state_tree_tar() -> bytes:
    """salt/ with its _modules/_states links followed (as a minion's sync would see them)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", dereference=True) as tar:
        tar.add(ROOT / "salt", arcname="salt", filter=lambda info: None if "__pycache__" in info.name else info)
    return buf.getvalue()


class ScratchLab:
    """Guests of one test module; Salt masterless inside them, pointed at ``bao``."""

    def __init__(self, lab_host: dict, net: dict, bao: BaoDev):
        self.template = lab_host["template"]
        self.net = net
        self.bao = bao
        self.guests: dict[str, str] = {}

    def add(self, name: str, address_cidr: str, memory_mib: int | None = None) -> None:
        from sitectl.lab import host

        host.create_guest(name, address_cidr, GATEWAY, self.net["dns_ips"][0], lab_dir=LAB_DIR,
                          template=self.template, bridge=BRIDGE, memory_mib=memory_mib)
        host.start_guest(name, timeout=90, lab_dir=LAB_DIR)
        self.guests[name] = str(ipaddress.ip_interface(address_cidr).ip)

    def attach(self, name: str, argv: list[str], check: bool = True, input=None, timeout: float = 600,
               env: dict | None = None) -> subprocess.CompletedProcess:
        from sitectl.lab import host

        return host.attach(name, argv, input=input, check=check, lab_dir=LAB_DIR, timeout=timeout, env=env)

    def sh(self, name: str, script: str, check: bool = True, input=None, timeout: float = 600):
        return self.attach(name, ["bash", "-c", script], check=check, input=input, timeout=timeout)

    def attach_argv(self, name: str, argv: list[str], env: dict | None = None) -> list[str]:
        """The lxc-attach command line for a process the caller runs itself (Popen)."""
        from sitectl.lab.guests import GUEST_ENV

        cmd = ["lxc-attach", "-P", os.path.realpath(LAB_DIR), "-n", name, "--clear-env"]
        for key, value in {**GUEST_ENV, **(env or {})}.items():
            cmd += ["--set-var", f"{key}={value}"]
        return [*cmd, "--", *argv]

    def apt_install(self, name: str, *packages: str) -> None:
        self.sh(name, "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && "
                      f"apt-get install -y -qq --no-install-recommends {' '.join(packages)} >/dev/null")

    def prepare_salt(self, name: str, pillar: dict) -> None:
        """The checkout's state tree in /srv/salt, the pillar in /srv/pillar, a masterless minion
        config in /srv/salt-config whose vault_server is the dev server (token in a 0600 file)."""
        self.sh(name, "rm -rf /srv/salt && mkdir -p /srv && tar -x -C /srv", input=_state_tree_tar())
        self.set_pillar(name, pillar)
        minion = {
            "id": name,
            "file_client": "local",
            "file_roots": {"base": ["/srv/salt"]},
            "pillar_roots": {"base": ["/srv/pillar"]},
            "vault_server": {"url": self.bao.url, "token_file": "/root/vault-token"},
            "log_level_logfile": "info",
        }
        self.sh(name, f"mkdir -p {GUEST_CONFIG_DIR} && cat > {GUEST_CONFIG_DIR}/minion",
                input=yaml.safe_dump(minion))
        self.sh(name, "umask 077 && cat > /root/vault-token", input=self.bao.root_token + "\n")
        self.salt(name, "saltutil.sync_all")

    def set_pillar(self, name: str, pillar: dict) -> None:
        self.sh(name, "mkdir -p /srv/pillar && printf 'base:\\n  \"*\":\\n    - lab\\n' > /srv/pillar/top.sls "
                      "&& cat > /srv/pillar/lab.sls", input=json.dumps(pillar))

    def salt(self, name: str, *args: str, check: bool = True) -> dict:
        out = self.attach(name, [SALT_CALL, "-c", GUEST_CONFIG_DIR, "--local", "--out=json", *args],
                          check=False, timeout=900)
        try:
            data = json.loads(out.stdout)["local"]
        except (ValueError, KeyError):
            raise AssertionError(f"salt-call {' '.join(args)} on {name}: rc {out.returncode}\n"
                                 f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}") from None
        if check and out.returncode != 0 and not isinstance(data, dict):
            raise AssertionError(f"salt-call {' '.join(args)} on {name}: {data}")
        return data

    def apply(self, name: str, sls: str) -> tuple[dict, float]:
        """state.apply: ({state id: result}, seconds)."""
        t0 = time.monotonic()
        data = self.salt(name, "state.apply", sls, check=False)
        seconds = round(time.monotonic() - t0, 1)
        assert isinstance(data, dict), data
        return {ret["__id__"]: ret for ret in data.values()}, seconds


@pytest.fixture(scope="session")
def data_lab_host():
    """Packages and the cached template (built by `make lab` or the lab tier; reused here)."""
    from sitectl.lab import host

    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    if not shutil.which("lxc-start"):
        host.ensure_host_packages()
    cache_dir = os.environ.get("SITECTL_LAB_CACHE", host.DEFAULT_CACHE_DIR)
    return {"template": host.build_template(cache_dir=cache_dir)}


@pytest.fixture(scope="module")
def scratch_lab(data_lab_host, tmp_path_factory):
    """A factory: ``scratch_lab({name: address_cidr | (address_cidr, memory_mib)})`` creates and
    starts those guests on the scratch bridge with a dev OpenBao on the gateway; all of it is torn
    down at the end of the module."""
    from sitectl.lab import host

    host.teardown(LAB_DIR, BRIDGE, TABLE)  # leftovers of an interrupted run of this module
    net = host.network_up(BRIDGE, GATEWAY_CIDR, table=TABLE)
    bao = BaoDev(tmp_path_factory.mktemp("bao")).start()
    lab = ScratchLab(data_lab_host, net, bao)

    def make(guests: dict) -> ScratchLab:
        for name, spec in guests.items():
            address, memory = spec if isinstance(spec, tuple) else (spec, None)
            lab.add(name, address, memory)
        return lab

    try:
        yield make
    finally:
        bao.stop()
        host.teardown(LAB_DIR, BRIDGE, TABLE)
