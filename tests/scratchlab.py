"""The scratch lab every role test uses: real LXC guests on a bridge of the harness's own, the
checkout's state tree pushed into a guest, the pillar the master would compile for it
(``sitectl.site.platform_pillar``), Salt masterless (``salt-call --local --out=json``) and, when a
role needs secrets, an OpenBao dev server on the bridge's gateway address.

A role's test module asks for the ``scratch_lab`` fixture (tests/conftest.py), describes its guests
as a site on this subnet (``scratch_site``), starts them, pushes Salt with ``push_salt`` and asserts
on ``apply``'s results. One lab dir, bridge, nft table and subnet for all role tests: the fixture is
per module and tears everything down before the next module sets it up again. Only the cached guest
template is shared with other labs. The dev server's root token is made at run time and never stored.

A role's lab test, whole::

    SITE = scratch_site({"monitoring": {"host": 120, "roles": ["monitoring"], "memory": 1024}})

    @pytest.fixture(scope="module")
    def lab(scratch_lab):
        scratch_lab.start_guests(SITE, "monitoring")
        bao = scratch_lab.start_vault()  # only if the role reads secrets
        scratch_lab.push_salt("monitoring", guest_pillar(SITE, "monitoring"), vault_token=bao.root_token)
        return scratch_lab

    @pytest.mark.lab
    def test_converges_and_the_second_apply_changes_nothing(lab):
        first, second = lab.apply("monitoring", "monitoring"), lab.apply("monitoring", "monitoring")
        assert not first.failed and not second.failed and second.changed == {}
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import subprocess
import tarfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sitectl import ROOT, site
from tests.openbao import BaoServer

# SITECTL_SCRATCH_SLOT (0-9, default 0) picks the scratch lab's bridge, subnet, lab dir and nft table,
# so checkouts side by side on one host can each run their role tests: slot N is sitelabs<N>,
# 10.77.<98-N>.0/24. A parallel run's worker N (pytest-xdist's gwN) takes the slot N above it: CI's
# `make test` uses slots 0 and 1.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
SLOT = int(os.environ.get("SITECTL_SCRATCH_SLOT", "0")) + int(_WORKER.removeprefix("gw") or 0)
if not 0 <= SLOT <= 9:
    raise ValueError(f"SITECTL_SCRATCH_SLOT plus the xdist worker's number must be 0-9, got {SLOT}")
_SUFFIX = "" if SLOT == 0 else f"-{SLOT}"
LAB_DIR = f"/var/lib/sitectl-lab-scratch{_SUFFIX}"
BRIDGE = f"sitelabs{SLOT}"
TABLE = f"sitectl_lab_scratch{_SUFFIX.replace('-', '_')}"
SUBNET = ipaddress.ip_network(f"10.77.{98 - SLOT}.0/24")
GATEWAY = str(SUBNET.network_address + 1)
SALT_CALL = "/opt/saltstack/salt/bin/salt-call"
# The masterless minion's own config, cache and log, apart from /etc/salt (whose config would start
# the template's enabled salt-minion unit).
SALT_CONFIG_DIR = "/etc/salt-local"
SALT_CACHE_DIR = "/var/cache/salt-local"
SALT_LOG = "/var/log/salt-local.log"
VAULT_TOKEN_FILE = "/root/vault-token"  # noqa: S105 (a path, not a token)
# Path units need an inotify instance each; on a host busy with other labs the per-user limit
# (fs.inotify.max_user_instances, host-wide) can run out and only these fail. Anything else fails.
INOTIFY_ONLY_UNITS = {"systemd-ask-password-console.path", "systemd-ask-password-wall.path"}


def address(host: int) -> str:
    """Host number ``host`` of the scratch subnet, with its prefix (``10.77.98.<host>/24`` in slot 0)."""
    return f"{SUBNET.network_address + host}/{SUBNET.prefixlen}"


def roles_catalog() -> dict:
    return yaml.safe_load((ROOT / "pillar/platform/roles.sls").read_text())["roles"]


def scratch_site(guests: dict[str, dict], network: dict | None = None, **sections) -> dict:
    """A site on the scratch subnet: ``guests`` name -> {host, roles, uses?, memory?, mounts?}; ``network``
    adds to the network section, ``sections`` are the site's other top-level keys (databases,
    routes, acme...). Memory defaults to 1024 MiB, the example site's smallest guest: the guest is
    limited to it, and apt in a 512 MiB guest took the postgresql test's setup from 56 s to 98 s."""
    described = {}
    for vmid, (name, spec) in enumerate(sorted(guests.items()), start=900):
        described[name] = {
            "kind": "lxc", "vmid": vmid, "cores": 1, "memory": spec.get("memory", 1024), "disk": 8,
            "address": address(spec["host"]), "roles": spec["roles"],
            **({"uses": spec["uses"]} if spec.get("uses") else {}),
            **({"mounts": spec["mounts"]} if spec.get("mounts") else {}),
        }
    return {
        "name": "scratch", "domain": "lab.example.org",
        "network": {"cidr": str(SUBNET), "gateway": GATEWAY, "admin_sources": [f"{GATEWAY}/32"], **(network or {})},
        "salt": {"master": GATEWAY},
        "guests": described,
        **sections,
    }


def example_site() -> dict:
    """The example site with every guest moved to the scratch subnet (same last octet). A scratch lab
    has no backup server: the site's off-guest repository is left out (the whole-site lab, which
    serves one, tests the backups)."""
    data = yaml.safe_load((ROOT / "pillar/site/example.sls").read_text())["site"]
    data.pop("backup", None)
    data["network"] = {"cidr": str(SUBNET), "gateway": GATEWAY, "admin_sources": [f"{GATEWAY}/32"]}
    data["salt"] = {"master": GATEWAY}
    for guest in data["guests"].values():
        guest["address"] = address(int(ipaddress.ip_interface(guest["address"]).ip) % 256)
    return data


# Parts with no build reachable from any lab, switched off as pillar/overlays/lab.sls does: the log shipper
# of every guest (Grafana's apt repository) would otherwise be installed wherever the site has a
# monitoring guest. A test's ``extra`` may say otherwise.
UNREACHABLE = {"monitoring": {"alloy": {"converge": False, "reason": "Grafana's apt repository is unreachable here"}}}


def guest_pillar(site_data: dict, name: str, extra: dict | None = None, validate: bool = True) -> dict:
    """What the master's pillar gives guest ``name``: the site, the role catalog, ``extra`` (a role's
    own pillar keys, over ``UNREACHABLE``) and the guest's view. ``validate=False`` is for a site a test
    breaks on purpose past the validator, to see what the role itself refuses."""
    from sitectl.roles import merge

    pillar = {"site": site_data, "roles": roles_catalog(), **merge(UNREACHABLE, extra)}
    if validate:
        site.check(pillar)  # what the master's ext_pillar would refuse never reaches the guest
    return {**pillar, **site.platform_pillar(pillar, name)}


@contextmanager
def pebble(lab: ScratchLab, answer: str):
    """pebble, the ACME server of a scratch lab's certificates, on the gateway: its http-01 and
    tls-alpn challenges go to ``answer`` (the proxy guest's address); stopped on the way out."""
    from sitectl.lab import host
    from sitectl.lab.pebble import Pebble

    host.ensure_host_packages([*host.HOST_PACKAGES, "pebble", "openssl", "curl"])
    acme = Pebble(lab.workdir / "acme", GATEWAY, answer=answer).start()
    try:
        yield acme
    finally:
        acme.stop()


def wait_for_minion_restart(lab, name: str, timeout: float = 180) -> None:
    """common.minion restarts a minion once a highstate that changed what it runs is over (its restart
    unit is started inside that highstate); a publication sent while it restarts is lost. Asked inside
    the guest, not through Salt: until the unit is gone."""
    from sitectl import bringup

    deadline = time.monotonic() + timeout
    while lab.sh(name, f"{bringup.MINION_RESTART_CHECK} || true").stdout.strip() in ("active", "activating"):
        assert time.monotonic() < deadline, f"{name}: the minion restart common.minion scheduled never ended"
        time.sleep(2)


def guest_ip(site_data: dict, name: str) -> str:
    return str(ipaddress.ip_interface(site_data["guests"][name]["address"]).ip)


@dataclass
class Apply:
    """One ``state.apply`` in a guest: its states by ID (a state with ``names`` merged into one),
    salt-call's exit code, the time it took and its whole output (for "no secret in output")."""

    states: dict[str, dict]
    retcode: int
    seconds: float
    raw: str

    @property
    def failed(self) -> dict[str, str]:
        """State ID -> comment, for every state whose result is not True."""
        return {i: r["comment"] for i, r in sorted(self.states.items()) if r["result"] is not True}

    @property
    def changed(self) -> dict[str, dict]:
        """State ID -> changes, for every state that changed something."""
        return {i: r["changes"] for i, r in sorted(self.states.items()) if r["changes"]}


def _by_state_id(returns: dict) -> dict[str, dict]:
    by_id: dict[str, dict] = {}
    for key, ret in returns.items():
        merged = by_id.setdefault(ret.get("__id__") or key.split("_|-")[1],
                                  {"result": True, "changes": {}, "comment": ""})
        if ret["result"] is not True and merged["result"] is not False:
            merged["result"] = ret["result"]
        merged["changes"].update(ret["changes"])
        merged["comment"] = "\n".join(c for c in (merged["comment"], ret["comment"]) if c)
    return by_id


def _state_tree_tar() -> bytes:
    """salt/ with its _modules/_states links followed (as a minion's sync would see them)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", dereference=True) as tar:
        tar.add(ROOT / "salt", arcname="salt", filter=lambda info: None if "__pycache__" in info.name else info)
    return buf.getvalue()


@dataclass
class ScratchLab:
    """The guests of one test module, Salt masterless inside them, and the optional dev OpenBao."""

    template: str
    nameserver: str
    workdir: Path
    guests: dict[str, str] = field(default_factory=dict)  # name -> address
    bao: BaoServer | None = None
    applies: list[Apply] = field(default_factory=list)  # every apply of the module, in order

    def start_guests(self, site_data: dict, *names: str) -> None:
        """Create and start guests ``names`` of ``site_data`` at their addresses, with their memory; a
        guest with a role that has ``nesting`` is a nested guest (it can run Docker)."""
        from sitectl.lab import host

        catalog = roles_catalog()
        for name in names:
            spec = site_data["guests"][name]
            # nested as the lab's driver makes it from the profile a nesting role gives (Docker, k3s)
            nesting = any(catalog[role].get("nesting") for role in spec["roles"])
            host.create_guest(name, spec["address"], GATEWAY, self.nameserver, lab_dir=LAB_DIR,
                              template=self.template, bridge=BRIDGE, memory_mib=spec["memory"], nesting=nesting,
                              mounts=tuple(m["path"] for m in spec.get("mounts", [])))
            info = host.start_guest(name, timeout=90, lab_dir=LAB_DIR, allow_degraded=True)
            unexpected = [u for u in info["failed_units"] if u not in INOTIFY_ONLY_UNITS]
            assert not unexpected, f"{name} booted with failed units: {unexpected}"
            self.guests[name] = guest_ip(site_data, name)

    def start_vault(self) -> BaoServer:
        self.bao = BaoServer(self.workdir / "bao", dev=True, host=GATEWAY).start()
        return self.bao

    def stop(self) -> None:
        if self.bao is not None:
            self.bao.stop()

    # ------------------------------------------------------------------ commands in a guest

    def attach(self, name: str, argv: list[str], check: bool = True, input=None, timeout: float = 600,
               env: dict | None = None) -> subprocess.CompletedProcess:
        from sitectl.lab import host

        return host.attach(name, argv, input=input, check=check, lab_dir=LAB_DIR, timeout=timeout, env=env)

    def sh(self, name: str, script: str, check: bool = True, input=None, timeout: float = 600,
           env: dict | None = None) -> subprocess.CompletedProcess:
        return self.attach(name, ["bash", "-c", script], check=check, input=input, timeout=timeout, env=env)

    def attach_argv(self, name: str, argv: list[str], env: dict | None = None) -> list[str]:
        """The lxc-attach command line for a process the caller runs itself (Popen)."""
        from sitectl.lab.guests import GUEST_ENV

        cmd = ["lxc-attach", "-P", os.path.realpath(LAB_DIR), "-n", name, "--clear-env"]
        for key, value in {**GUEST_ENV, **(env or {})}.items():
            cmd += ["--set-var", f"{key}={value}"]
        return [*cmd, "--", *argv]

    def write_file(self, name: str, path: str, content: str | bytes, mode: int = 0o644) -> None:
        from sitectl.lab import host

        host.write_guest_file(name, path, content, mode=mode, lab_dir=LAB_DIR)

    def apt_install(self, name: str, *packages: str) -> None:
        self.sh(name, "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && "
                      f"apt-get install -y -qq --no-install-recommends {' '.join(packages)} >/dev/null")

    # ------------------------------------------------------------------ Salt masterless

    def push_salt(self, name: str, pillar: dict, vault_token: str | None = None) -> None:
        """The checkout's state tree in /srv/salt, ``pillar`` in /srv/pillar and a masterless minion
        config; with ``vault_token``, the minion's vault_server is the lab's dev OpenBao and the token
        sits in a 0600 file. Custom modules are synced (a minion does it at start; salt-call must ask)."""
        self.sh(name, f"rm -rf /srv/salt /srv/pillar && mkdir -p /srv {SALT_CONFIG_DIR} && tar -x -C /srv",
                input=_state_tree_tar())
        self.set_pillar(name, pillar)
        minion = {
            "id": name,
            "file_client": "local",
            "file_roots": {"base": ["/srv/salt"]},
            "pillar_roots": {"base": ["/srv/pillar"]},
            "cachedir": SALT_CACHE_DIR,
            "log_file": SALT_LOG,
            "log_level_logfile": "info",
        }
        if vault_token is not None:
            minion["vault_server"] = {"url": self.bao.url, "token_file": VAULT_TOKEN_FILE}
            self.set_vault_token(name, vault_token)
        self.write_file(name, f"{SALT_CONFIG_DIR}/minion", yaml.safe_dump(minion))
        self.salt(name, "saltutil.sync_all")

    def set_pillar(self, name: str, pillar: dict) -> None:
        self.write_file(name, "/srv/pillar/top.sls", "base:\n  '*':\n    - lab\n")
        self.write_file(name, "/srv/pillar/lab.sls", "#!json\n" + json.dumps(pillar), mode=0o600)

    def set_vault_token(self, name: str, token: str) -> None:
        self.sh(name, f"umask 077 && cat > {VAULT_TOKEN_FILE}", input=token + "\n")

    def salt(self, name: str, *args: str) -> object:
        """``salt-call --local --out=json ARGS`` in guest ``name``: what it returned; raises if it failed."""
        returned, cp = self._salt_call(name, *args)
        if cp.returncode != 0:
            raise AssertionError(f"salt-call {' '.join(args)} on {name}: rc {cp.returncode}: {returned}")
        return returned

    def apply(self, name: str, sls: str, test: bool = False) -> Apply:
        """``state.apply sls`` (``test=True`` with ``test``) in guest ``name``, recorded in ``applies``."""
        t0 = time.monotonic()
        returns, cp = self._salt_call(name, "--retcode-passthrough", "state.apply", sls,
                                      *(["test=True"] if test else []))
        seconds = round(time.monotonic() - t0, 1)
        if not isinstance(returns, dict):
            raise AssertionError(f"state.apply {sls} on {name} did not run: {returns}")
        result = Apply(states=_by_state_id(returns), retcode=cp.returncode, seconds=seconds,
                       raw=cp.stdout + cp.stderr)
        self.applies.append(result)
        return result

    def _salt_call(self, name: str, *args: str) -> tuple[object, subprocess.CompletedProcess]:
        cp = self.attach(name, [SALT_CALL, "-c", SALT_CONFIG_DIR, "--local", "--out=json", *args],
                         check=False, timeout=900)
        try:
            return json.loads(cp.stdout)["local"], cp
        except (ValueError, KeyError):
            raise AssertionError(f"salt-call {' '.join(args)} on {name} printed no result (rc {cp.returncode}):\n"
                                 f"{cp.stdout[-3000:]}\n{cp.stderr[-3000:]}") from None
