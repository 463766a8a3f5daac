"""What PVE answers under load (lock timeouts, held locks) is retried; a create does not undo itself for it."""

from __future__ import annotations

import pytest

from tests.proxmox.conftest import NODE, TEMPLATE_VMID, assert_tasks_awaited, guests, token_tasks

pytestmark = pytest.mark.functional


def posts(pve, suffix: str) -> int:
    return len([p for m, p, _ in pve.requests if m == "POST" and p.endswith(suffix)])


def test_a_lock_timeout_answered_to_the_start_is_retried(pve, cloud):
    pve.fail("POST", f"/nodes/{NODE}/lxc/111/status/start", error="config_lock_timeout", times=2)
    created = cloud.json("-p", "debian12-lxc", "vault")["vault"]
    assert created["state"] == "running" and guests(pve)[111].status == "running"
    assert posts(pve, "/lxc/111/status/start") == 3
    assert not token_tasks(pve, "vzdestroy") and "vault" in cloud.accepted()


def test_a_start_task_that_meets_a_held_lock_is_started_again(pve, cloud):
    pve.fail("POST", f"/nodes/{NODE}/lxc/111/status/start", error="locked", times=1)
    cloud.json("-p", "debian12-lxc", "vault")
    starts = token_tasks(pve, "vzstart")
    assert [t["exitstatus"] for t in starts] == ["CT is locked (backup)", "OK"]
    assert guests(pve)[111].status == "running" and not token_tasks(pve, "vzdestroy")
    assert_tasks_awaited(pve)


def test_a_template_locked_by_another_clone_is_retried(pve, cloud):
    pve.fail("POST", f"/nodes/{NODE}/qemu/{TEMPLATE_VMID}/clone", error="config_lock_timeout", times=2)
    cloud.json("-p", "debian12-vm", "monitoring")
    assert guests(pve)[120].status == "running" and posts(pve, f"/qemu/{TEMPLATE_VMID}/clone") == 3


def test_a_lock_that_never_clears_fails_after_the_retries_and_removes_only_this_runs_guest(pve, cloud):
    pve.fail("POST", f"/nodes/{NODE}/lxc/111/status/start", error="config_lock_timeout")
    result = cloud.run("-p", "debian12-lxc", "vault")
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "got timeout (tried 3 times)" in text and "was stopped and destroyed" in text
    assert posts(pve, "/lxc/111/status/start") == 3
    assert 111 not in guests(pve) and "vault" not in cloud.accepted()


def test_a_permanent_error_is_not_retried(pve, cloud):
    pve.fail("POST", f"/nodes/{NODE}/lxc/111/status/start", error="configuration_file_does_not_exist", times=1)
    result = cloud.run("-p", "debian12-lxc", "vault")
    assert result.returncode != 0
    assert len(token_tasks(pve, "vzstart")) == 1 and 111 not in guests(pve)
