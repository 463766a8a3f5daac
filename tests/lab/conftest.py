"""Fixtures for the lab host layer: a real template, bridge, nft table and two LXC guests.

The lab used here is separate from a user's default lab (own lab dir, bridge, nft table and
subnet); only the template cache is shared (building it takes minutes, reusing it seconds).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from types import SimpleNamespace

import pytest

LAB_DIR = os.environ.get("SITECTL_LAB_TEST_DIR", "/var/lib/sitectl-lab-test")
BRIDGE = "sitelabt0"
TABLE = "sitectl_lab_test"
GATEWAY_CIDR = "10.77.99.1/24"
GATEWAY = "10.77.99.1"
GUESTS = {"laba": "10.77.99.11/24", "labb": "10.77.99.12/24"}


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "lab: needs root, LXC and network access to the apt mirror; builds and boots real guests on this machine",
    )


def _can_run_lab() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root"
    if not shutil.which("apt-get"):
        return "the lab needs a Debian host"
    return None


@pytest.fixture(scope="session")
def lab_host():
    """The host prepared once per session: packages and the cached template."""
    from sitectl.lab import host

    reason = _can_run_lab()
    if reason:
        pytest.skip(reason)
    host.ensure_host_packages()
    cache_dir = os.environ.get("SITECTL_LAB_CACHE", host.DEFAULT_CACHE_DIR)
    t0 = time.monotonic()
    template = host.build_template(cache_dir=cache_dir)
    return {"template": template, "cache_dir": cache_dir, "template_seconds": round(time.monotonic() - t0, 1)}


@pytest.fixture(scope="module")
def lab(lab_host):
    """Network up and two running guests; torn down at the end of the module."""
    from sitectl.lab import host

    host.teardown(LAB_DIR, BRIDGE, TABLE)  # leftovers of an interrupted run
    net = host.network_up(BRIDGE, GATEWAY_CIDR, table=TABLE)
    nameserver = net["dns_ips"][0]
    started = {}
    for name, addr in GUESTS.items():
        t0 = time.monotonic()
        host.create_guest(
            name,
            addr,
            GATEWAY,
            nameserver,
            lab_dir=LAB_DIR,
            template=lab_host["template"],
            bridge=BRIDGE,
            memory_mib=512 if name == "laba" else None,
            cores=1 if name == "laba" else None,
        )
        info = host.start_guest(name, timeout=90, lab_dir=LAB_DIR)
        info["create_and_boot_seconds"] = round(time.monotonic() - t0, 2)
        started[name] = info
    yield {"net": net, "guests": started, "nameserver": nameserver, **lab_host}
    host.teardown(LAB_DIR, BRIDGE, TABLE)


def _why_the_lab_is_not_up(rc: int, report: dict, lab) -> str:
    """What the lab tests fail with when `lab up` did not bring the site up: its first line names each
    guest that failed and the last line of its first error (an exception's type and message), which
    is all a CI log's summary shows; then every error in full and the end of those guests' minion
    logs, read before the lab is torn down."""
    import subprocess

    failed = {name: run for kind in ("first", "second") for name, run in (report.get(kind) or {}).items()
              if run.get("failed")}
    heads = [f"{name}: {(run['errors'] or ['?'])[0].strip().splitlines()[-1][:300]}" for name, run in failed.items()]
    stopped = report.get("stopped") or {}
    stop = f"stopped at {stopped.get('step')} of {stopped.get('guest')}: " + \
        str(stopped.get("message", "")).strip().split("\n")[0][:300] if stopped else ""
    lines = [f"lab up exited {rc}: " + "; ".join(heads + ([stop] if stop else []))]
    for name, run in failed.items():
        lines += [f"--- {name}: every error", *run["errors"]]
        log = subprocess.run(["lxc-attach", "-P", str(lab.lab_dir), "-n", name, "--clear-env", "--",
                              "tail", "-n", "80", "/var/log/salt/minion"],
                             capture_output=True, text=True, check=False)
        lines += [f"--- {name}: the end of /var/log/salt/minion", log.stdout or log.stderr]
    return "\n".join(lines)


@pytest.fixture(scope="session")
def site_lab(tmp_path_factory):
    """The example site by `sitectl lab up` in a state dir of its own, once per session: test_site.py
    checks it, the test_site_<part>.py modules after it reuse it. Any lab already running on this
    machine is replaced; everything is torn down at the end."""
    from sitectl import labctl

    state = tmp_path_factory.mktemp("lab-state")
    labctl.down()  # a developer's lab (.salt): its master holds the lab address's ports
    labctl.down(state_dir=state)
    try:
        rc = labctl.up(state_dir=state)
        report = json.loads((state / labctl.REPORT).read_text())
        lab = labctl.Lab(state_dir=state)
        lab.configure()
        if rc != 0:
            pytest.fail(_why_the_lab_is_not_up(rc, report, lab), pytrace=False)
        yield SimpleNamespace(rc=rc, report=report, lab=lab, state=state)
    finally:  # a failed `lab up` leaves a master, pebble and guests: they go too
        labctl.down(state_dir=state)
