"""``sitectl bootstrap --site <name>``: from a bare Proxmox to a running control node, from an admin machine.

1. Renders this checkout's salt-cloud config for the site (provider: the project's Proxmox driver,
   ``_clouds/proxmox_platform.py``; the token's secret from ``PVE_TOKEN_SECRET``, never a file) and
   validates the site;
2. asks the provider whether the guest with the role ``salt_master`` exists; if not, creates it with
   ``salt-cloud -p <its profile> <name>`` (the driver waits for the create and the start tasks and
   checks their exit status; Salt's own bootstrap is not used: the control node gets the pinned Salt
   below);
3. over SSH as root (the site's admin keys are root's on a new container), sends a bundle of this
   checkout's HEAD and runs ``etc/bootstrap-control.sh.j2``: packages, the checkout at main with the
   owner's repository as origin, Salt at the pinned version in the checkout's venv, the master's
   config by ``sitectl master-config`` (the lab's code), its own minion, the systemd units;
4. prints what the operator does next (docs/vault.md, docs/control.md).

Every step checks before it acts: on a site whose control node exists and is set up, a second run
creates nothing and the script reports no change.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from sitectl import ROOT
from sitectl.config import SaltSettings, write_config

CHECKOUT = "/srv/salt-platform"
PACKAGES = ("git", "python3-venv", "python3-dev", "gcc", "ca-certificates")

NEXT_STEPS = """
Next steps (docs/control.md, docs/vault.md):
  1. ssh root@{ip}; cd {checkout}; export PVE_TOKEN_SECRET=...   (the Proxmox token's secret, this shell only)
  2. salt-run bringup.up    (the site's bring-up, docs/control.md: it creates the vault guest
     ({vault}, profile {vault_profile}) first, highstates it and stops with the Vault operators' steps)
  3. initialise and unseal Vault as its operators, give the master its AppRole (docs/vault.md,
     "Bootstrap of a new site"; the bring-up printed the exact commands), then put into Vault what
     the control node reads at run time: the deploy key (secret/roles/salt_master/deploy_key), the
     Proxmox token's secret (secret/platform/proxmox) and the runners' authentication tokens
     (docs/gitlab_runner.md).
  4. salt-run bringup.up    (again: it goes on from Vault, phase by phase, {master_id} and
     {site}'s other guests included; run it again after any failure or a new guest)
     and, from then on, a push to main deploys (.gitlab-ci.yml, docs/ci.md).
"""


class BootstrapError(RuntimeError):
    pass


@dataclass
class Bootstrap:
    site: str
    state_dir: Path
    proxmox: dict = field(default_factory=dict)
    ssh: str = "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new root@{ip}"
    repo_url: str | None = None
    root: Path = ROOT
    out: object = sys.stdout
    # What the guest installs: the Debian packages (git, and what building Salt from PyPI needs) and
    # pip's options (none: PyPI; a wheelhouse with --no-index --find-links where PyPI is not reachable).
    packages: tuple[str, ...] = PACKAGES
    pip_options: tuple[str, ...] = ()

    def config(self) -> Path:
        options = {**self.proxmox, "bootstrap": "none"}
        return write_config(SaltSettings(state_dir=self.state_dir, site=self.site, provider="proxmox",
                                         proxmox=options), root=self.root)

    def salt_cloud(self, conf: Path, *args: str) -> subprocess.CompletedProcess:
        command = Path(sys.executable).parent / "salt-cloud"
        return subprocess.run([str(command), "-c", str(conf), "--out", "json", "--log-level", "quiet", "-y", *args],
                              capture_output=True, text=True, check=False, timeout=1800)

    def control_guest(self, conf: Path) -> tuple[dict, dict]:
        from sitectl import render, site

        pillar = render.pillar(conf, "sitectl-bootstrap")
        if pillar.get("_errors"):
            raise BootstrapError("the site is invalid:\n" + "\n".join(pillar["_errors"]))
        masters = [n for n, g in sorted(pillar["site"]["guests"].items()) if "salt_master" in g["roles"]]
        if len(masters) != 1:
            raise BootstrapError(f"the site needs exactly one guest with the role salt_master; it has "
                                 f"{masters or 'none'}")
        return site.guest_view(pillar, masters[0]), pillar

    def exists(self, conf: Path, name: str) -> bool:
        """Whether the provider has ``name`` (salt-cloud -a show_instance); a guest of that name that
        is not the site's (no salt-platform mark) stops the bootstrap."""
        shown = self.salt_cloud(conf, "-a", "show_instance", name)
        try:
            data = json.loads(shown.stdout or "null")
        except json.JSONDecodeError:
            data = None
        if shown.returncode != 0 or not isinstance(data, dict):
            raise BootstrapError(f"asking Proxmox for {name} failed:\n{shown.stdout[-2000:]}\n{shown.stderr[-2000:]}")
        if name in (data.get("Not Actioned/Not Running") or []):
            return False
        instance = _instance(data, name)
        if instance is None:
            raise BootstrapError(f"salt-cloud's answer about {name} is not understood:\n{shown.stdout[-2000:]}")
        if not str(instance.get("managed_by") or "").startswith("salt-platform"):
            raise BootstrapError(f"{name} exists on Proxmox but is not the site's (no salt-platform mark); "
                                 f"nothing was changed")
        return True

    def create(self, conf: Path, guest: dict) -> None:
        made = self.salt_cloud(conf, "-p", guest["profile"], guest["name"])
        if made.returncode != 0 or '"Error"' in made.stdout or "Error" in made.stderr:
            raise BootstrapError(f"creating {guest['name']} failed:\n{made.stdout[-3000:]}\n{made.stderr[-3000:]}")

    def script(self, guest: dict, bundle: str, with_proxmox: bool = True) -> str:
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(self.root / "etc")),
                                 undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                 autoescape=False)  # noqa: S701 - a shell script
        env.filters["quote"] = shlex.quote
        return env.get_template("bootstrap-control.sh.j2").render(
            checkout=CHECKOUT, bundle=bundle, repo_url=self.origin_url(), site=self.site, interface=guest["ip"],
            master_id=guest["name"], salt_version=salt_version(self.root), packages=self.packages,
            pip_options=self.pip_options,
            provider_args=["--provider", "proxmox", "--proxmox", "bootstrap=none"] if with_proxmox else [])

    def origin_url(self) -> str:
        if self.repo_url:
            return self.repo_url
        found = subprocess.run(["git", "-C", str(self.root), "remote", "get-url", "origin"], capture_output=True,
                               text=True, check=False)
        if found.returncode != 0 or not found.stdout.strip():
            raise BootstrapError("this checkout has no origin: pass --repo-url (the owner's repository, as the "
                                 "control node will fetch it)")
        return found.stdout.strip()

    def converge(self, guest: dict, with_proxmox: bool = True) -> str:
        """Send the bundle and run the script on the guest; the script's output."""
        ssh = shlex.split(self.ssh.format(ip=guest["ip"]))
        bundle = f"/root/salt-platform-{os.getpid()}.bundle"
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "checkout.bundle"
            subprocess.run(["git", "-C", str(self.root), "bundle", "create", "--quiet", str(local), "HEAD"],
                           check=True, capture_output=True)
            with local.open("rb") as fh:
                sent = subprocess.run([*ssh, f"cat > {shlex.quote(bundle)}"], stdin=fh, capture_output=True,
                                      check=False, timeout=600)
            if sent.returncode != 0:
                raise BootstrapError(f"sending the repository to {guest['ip']} failed: {sent.stderr.decode()[-1000:]}")
        ran = subprocess.run([*ssh, "sh -s"], input=self.script(guest, bundle, with_proxmox), capture_output=True,
                             text=True,
                             check=False, timeout=3600)
        if ran.returncode != 0:
            raise BootstrapError(f"setting up {guest['name']} failed:\n{ran.stdout[-3000:]}\n{ran.stderr[-3000:]}")
        return ran.stdout


def _instance(data, name: str) -> dict | None:
    """The description of ``name`` in salt-cloud's answer (provider -> driver -> name -> data)."""
    if isinstance(data, dict):
        if isinstance(data.get(name), dict) and "vmid" in data[name]:
            return data[name]
        for value in data.values():
            found = _instance(value, name)
            if found is not None:
                return found
    return None


def salt_version(root: Path = ROOT) -> str:
    found = re.search(r'"salt==([0-9.]+)"', (root / "pyproject.toml").read_text())
    if not found:
        raise BootstrapError("pyproject.toml pins no salt version")
    return found.group(1)


def run(boot: Bootstrap, converge: bool = True) -> int:
    out = boot.out
    try:
        conf = boot.config()
        guest, pillar = boot.control_guest(conf)
        name = guest["name"]
        if boot.exists(conf, name):
            print(f"{name}: exists on Proxmox (the site's); not created again", file=out)
        else:
            print(f"{name}: creating ({guest['profile']}, {guest['ip']})", file=out)
            boot.create(conf, guest)
            print(f"{name}: created and started", file=out)
        if not converge:
            return 0
        report = boot.converge(guest)
    except (BootstrapError, ValueError, FileNotFoundError) as exc:
        print(f"bootstrap: {exc}", file=sys.stderr)
        return 1
    print(report, end="", file=out)
    changes = [line for line in report.splitlines() if line.startswith("changed:")]
    print(f"{name}: {len(changes)} change(s)", file=out)
    vaults = [n for n, g in sorted(pillar["site"]["guests"].items()) if "vault" in g["roles"]]
    from sitectl import site

    vault = vaults[0] if vaults else "<the vault guest>"
    vault_profile = site.guest_view(pillar, vaults[0])["profile"] if vaults else "debian12-lxc"
    print(NEXT_STEPS.format(ip=guest["ip"], checkout=CHECKOUT, vault=vault, vault_profile=vault_profile,
                            master_id=name, site=boot.site), file=out)
    return 0
