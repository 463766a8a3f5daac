"""The host layer of the lab: real LXC guests with systemd on this machine.

This module is the public API; the work is split over template.py (the cached rootfs),
network.py (bridge + nft table) and guests.py (LXC guests).
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor

from ._util import LabError, host_env, mounts_under, run, unmount_under
from .guests import (
    _NAME_RE,
    DEFAULT_LAB_DIR,
    _monitor_pids,
    _remove_guest_dir,
    attach,
    create_guest,
    destroy_guest,
    guest_info,
    list_guests,
    nesting_requested,
    remove_cgroups,
    start_guest,
    stop_guest,
    write_guest_file,
)
from .network import DEFAULT_BRIDGE, DEFAULT_GATEWAY_CIDR, DEFAULT_TABLE, network_down, network_state, network_up
from .template import DEFAULT_CACHE_DIR, build_template, template_info, template_path

__all__ = [
    "LabError",
    "ensure_host_packages",
    "build_template",
    "template_path",
    "template_info",
    "network_up",
    "network_down",
    "network_state",
    "create_guest",
    "write_guest_file",
    "start_guest",
    "attach",
    "stop_guest",
    "destroy_guest",
    "list_guests",
    "guest_info",
    "nesting_requested",
    "teardown",
    "prune_templates",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_LAB_DIR",
    "DEFAULT_BRIDGE",
    "DEFAULT_GATEWAY_CIDR",
    "DEFAULT_TABLE",
]

HOST_PACKAGES = [
    "lxc",
    "debootstrap",
    "nftables",
    "bridge-utils",
    "rclone",  # the backup repository (sitectl.lab.backup_repo)
    "restic",  # the drill checks the repository from the master
    "rsync",
    "iproute2",
    "util-linux",
    "debian-archive-keyring",
    "ca-certificates",
    # The lab's ACME server (sitectl/lab/pebble.py) and its throwaway TLS certificate.
    "pebble",
    "openssl",
]


def _missing_packages(pkgs: list[str]) -> list[str]:
    cp = run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", *pkgs], check=False)
    installed = {
        line.split()[0] for line in cp.stdout.splitlines() if len(line.split()) >= 2 and line.split()[1] == "ii"
    }
    return [p for p in pkgs if p not in installed]


def ensure_host_packages(packages: list[str] | None = None) -> list[str]:
    """apt-get install whatever of the lab's host packages is missing; return what was installed."""
    pkgs = list(packages or HOST_PACKAGES)
    missing = _missing_packages(pkgs)
    if not missing:
        return []
    env = host_env({"DEBIAN_FRONTEND": "noninteractive"})
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "-o", "Dpkg::Options::=--force-confold", *missing]
    cp = run(cmd, check=False, env=env, timeout=1800)
    if cp.returncode != 0:  # stale or missing lists: update once and retry
        run(["apt-get", "update"], env=env, timeout=600, what="apt-get update (host)")
        run(cmd, env=env, timeout=1800, what="apt-get install (host)")
    still = _missing_packages(pkgs)
    if still:
        raise LabError(f"host packages still missing after apt-get install: {still}")
    return missing


def teardown(lab_dir: str = DEFAULT_LAB_DIR, bridge: str = DEFAULT_BRIDGE, table: str = DEFAULT_TABLE) -> dict:
    """Remove every guest of lab_dir, stale mounts, cgroup leftovers, the bridge and the table.

    Works after an interrupted run and is a no-op the second time. Returns what it removed.
    """
    lab_dir = os.path.realpath(lab_dir)
    removed: dict[str, list[str]] = {"guests": [], "mounts": [], "network": []}
    errors: list[str] = []
    names = set()
    if os.path.isdir(lab_dir):
        names.update(n for n in os.listdir(lab_dir) if os.path.isdir(os.path.join(lab_dir, n)))
    names.update(_monitor_pids(lab_dir).values())  # running although its dir is gone

    def _one(name: str) -> None:
        if _NAME_RE.match(name):
            destroy_guest(name, lab_dir)
        else:
            _remove_guest_dir(lab_dir, name)

    # guests shut down in parallel (a clean systemd poweroff takes a second or more each)
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = {name: pool.submit(_one, name) for name in sorted(names)}
    for name, fut in futures.items():
        try:
            fut.result()
            removed["guests"].append(name)
        except (LabError, OSError) as exc:
            errors.append(f"{name}: {exc}")
    mnts = mounts_under(lab_dir)
    if mnts:
        unmount_under(lab_dir)
        removed["mounts"] += mnts
    if os.path.isdir(lab_dir):
        for leftover in os.listdir(lab_dir):
            path = os.path.join(lab_dir, leftover)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
        os.rmdir(lab_dir)
    remove_cgroups(None)  # lxc.pivot, when no other container uses it
    state = network_state(bridge, table)
    network_down(bridge, table)
    removed["network"] = [k for k in ("bridge", "table") if state[k]]
    if errors:
        raise LabError("teardown incomplete:\n" + "\n".join(errors))
    return removed


def prune_templates(cache_dir: str = DEFAULT_CACHE_DIR, lab_dirs: tuple[str, ...] = (DEFAULT_LAB_DIR,)) -> list[str]:
    """Remove cached templates of older recipes that no guest in ``lab_dirs`` uses."""
    import glob
    import json

    current = os.path.dirname(template_path(cache_dir))
    used = set()
    for lab_dir in lab_dirs:
        for meta in glob.glob(os.path.join(lab_dir, "*", "lab.json")):
            try:
                with open(meta, encoding="utf-8") as fh:
                    used.add(os.path.dirname(os.path.realpath(json.load(fh)["template"])))
            except (OSError, ValueError, KeyError):
                continue
    removed = []
    for found in glob.glob(os.path.join(cache_dir, "bookworm-*")):
        tdir = os.path.realpath(found)
        if tdir != os.path.realpath(current) and tdir not in used:
            shutil.rmtree(tdir)
            removed.append(tdir)
    return removed
