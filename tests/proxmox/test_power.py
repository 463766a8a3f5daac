"""salt-cloud -a start|stop|shutdown|reboot on the site's guests, each waiting for its PVE task."""

from __future__ import annotations

import pytest

from tests.proxmox.conftest import assert_tasks_awaited, guests, token_tasks

pytestmark = pytest.mark.functional


def test_power_actions_wait_for_their_tasks(pve, cloud):
    cloud.json("-p", "debian12-lxc", "vault")
    ct = guests(pve)[111]
    pve.time_scale = 0.05  # tasks take time: an answer before the task ended would show the old state
    ct.stop_secs = ct.shutdown_secs = ct.start_secs = 10
    steps = [("stop", "stopped", "vzstop"), ("start", "running", "vzstart"),
             ("shutdown", "stopped", "vzshutdown"), ("start", "running", "vzstart"),
             ("reboot", "running", "vzreboot")]
    for action, state, task in steps:
        before = len(token_tasks(pve, task))
        answer = cloud.action(action, "vault")["vault"]
        assert answer["state"] == state and answer["changed"] is True, (action, answer)
        assert ct.status == state, action
        assert len(token_tasks(pve, task)) == before + 1 and token_tasks(pve, task)[-1]["exitstatus"] == "OK"
    assert cloud.action("start", "vault")["vault"]["changed"] is False
    assert_tasks_awaited(pve)


def test_reboot_of_a_stopped_guest_is_refused(pve, cloud):
    cloud.json("-p", "debian12-lxc", "vault")
    cloud.action("stop", "vault")
    result = cloud.run("-a", "reboot", "vault")
    assert result.returncode != 0 and "vault: not rebooted: VMID 111 is stopped; start it with -a start" in \
        result.stdout + result.stderr
    assert guests(pve)[111].status == "stopped" and not token_tasks(pve, "vzreboot")
