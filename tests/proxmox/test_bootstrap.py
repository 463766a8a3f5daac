"""`sitectl bootstrap`: the control node created through the project's own Proxmox driver (fakepve),
up to the guest's creation and its first boot task; the setup it then sends over SSH is recorded by a
stand-in for ssh and checked (sh -n, pins, the site). Re-running creates nothing."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from sitectl import ROOT, bootstrap
from tests.proxmox.conftest import (
    GRANTED,
    NODE,
    SECRET_ENV,
    TOKEN_ID,
    TOKEN_SECRET,
    assert_schema_clean,
    assert_tasks_awaited,
    guests,
    token_tasks,
    writes,
)

pytestmark = pytest.mark.functional

CONTROL_VMID = 110  # site.guests.control.vmid of the example site


@pytest.fixture
def fake_ssh(tmp_path) -> Path:
    """Records each call (its arguments, and what came on stdin) instead of reaching a guest."""
    script = tmp_path / "fake-ssh"
    script.write_text(
        "#!/bin/sh\n"
        f"n=$(ls '{tmp_path}' | grep -c '^call-.*args$' || true)\n"
        f"echo \"$*\" > '{tmp_path}/call-'$n.args\n"
        f"cat > '{tmp_path}/call-'$n.stdin\n"
        "echo 'control node ready'\n"
    )
    script.chmod(0o755)
    return script


def boot(tmp_path, pve, pve_pki, fake_ssh) -> tuple[int, str]:
    out = io.StringIO()
    job = bootstrap.Bootstrap(
        site="example", state_dir=tmp_path / "state", ssh=f"{fake_ssh} {{ip}}",
        repo_url="git@gitlab.example.org:owner/salt-platform.git",
        proxmox={"url": pve.url, "ca_bundle": pve_pki[0], "node": NODE, "timeout": 5, "retries": 2, "backoff": 0.05,
                 "task_timeout": 30, "ip_timeout": 20},
        out=out)
    return bootstrap.run(job), out.getvalue()


def test_bootstrap_creates_the_control_node_once_and_sets_it_up(tmp_path, pve, pve_pki, fake_ssh, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, TOKEN_SECRET)
    pve.grant(TOKEN_ID, "/", *GRANTED)
    code, out = boot(tmp_path, pve, pve_pki, fake_ssh)
    assert code == 0, out
    control = guests(pve)[CONTROL_VMID]
    assert control.name == "control" and control.status == "running"
    assert "ip=10.10.10.110/24" in control.config["net0"]
    assert [t["id"] for t in token_tasks(pve, "vzcreate")] == [str(CONTROL_VMID)]
    started = token_tasks(pve, "vzstart")
    assert [t["id"] for t in started] == [str(CONTROL_VMID)] and started[0]["exitstatus"] == "OK", \
        "the first boot task ran and succeeded"
    assert_tasks_awaited(pve)
    assert_schema_clean(pve)
    assert len([p for p in pve.vms + pve.cts if not getattr(p, "template", False)]) == 1, "only the control node"

    # What went over SSH: the checkout's bundle, then the setup script for the site.
    args = sorted(tmp_path.glob("call-*.args"))
    assert [a.read_text().split(" ", 1)[0] for a in args] == ["10.10.10.110", "10.10.10.110"]
    assert (tmp_path / "call-0.stdin").read_bytes().startswith(b"# v2 git bundle"), "the repository's bundle"
    script = (tmp_path / "call-1.stdin").read_text()
    assert subprocess.run(["sh", "-n"], input=script, text=True, check=False).returncode == 0
    assert f"SALT_VERSION={bootstrap.salt_version()}" in script and bootstrap.salt_version() == "3008.4"
    assert "SITE=example" in script and "INTERFACE=10.10.10.110" in script
    assert "REPO_URL=git@gitlab.example.org:owner/salt-platform.git" in script
    assert 'master-config --interface "$INTERFACE"' in script, "the master is configured by the lab's code"
    assert TOKEN_SECRET not in script and TOKEN_SECRET not in out
    assert "docs/vault.md" in out and out.count("salt-run bringup.up") == 2, "the next steps: the bring-up, twice"

    before = writes(pve)
    code, again = boot(tmp_path, pve, pve_pki, fake_ssh)
    assert code == 0, again
    assert "control: exists on Proxmox (the site's); not created again" in again
    assert writes(pve) == before, "a second bootstrap changes nothing on Proxmox"


def test_bootstrap_refuses_a_foreign_guest_of_the_same_name(tmp_path, pve, pve_pki, fake_ssh, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, TOKEN_SECRET)
    pve.grant(TOKEN_ID, "/", *GRANTED)
    pve.add_ct(CONTROL_VMID, "control", node=NODE)
    before = writes(pve)
    code, out = boot(tmp_path, pve, pve_pki, fake_ssh)
    assert code == 1
    assert writes(pve) == before and not list(tmp_path.glob("call-*")), "nothing created, nothing sent"


def test_bootstrap_script_renders_for_the_example_site():
    job = bootstrap.Bootstrap(site="example", state_dir=ROOT / ".salt", repo_url="https://gitlab.example.org/o/r.git")
    guest = {"name": "control", "ip": "10.10.10.110"}
    script = job.script(guest, "/root/x.bundle")
    assert subprocess.run(["sh", "-n"], input=script, text=True, check=False).returncode == 0
