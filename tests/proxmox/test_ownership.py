"""The driver harms no guest it cannot prove it made: marks, -d refusals, protection, and the cleanup of a
failed create. Each test reads the fake cluster afterwards, not only the exit code."""

from __future__ import annotations

import re

import pytest

from tests.proxmox.conftest import NODE, TEMPLATE_VMID, guests, token_tasks, writes

pytestmark = pytest.mark.functional

MARK = re.compile(r"^salt-platform: site=example guest=vault vmid=111 run=[0-9a-f]{12}$", re.MULTILINE)


def failed(cloud, *args) -> str:
    result = cloud.run(*args)
    assert result.returncode != 0, f"salt-cloud {' '.join(args)} should have failed:\n{result.stdout}"
    return result.stdout + result.stderr


def seed_key(cloud, name: str) -> str:
    """An accepted minion key that must survive whatever the driver refuses to do."""
    key = f"-----BEGIN PUBLIC KEY-----\nkey of the real {name}\n-----END PUBLIC KEY-----\n"
    (cloud.state / "pki" / "master" / "minions" / name).write_text(key)
    return key


def test_a_created_guest_carries_the_mark_and_the_tag(pve, cloud):
    cloud.json("-p", "debian12-lxc", "vault")
    cfg = guests(pve)[111].config
    assert MARK.search(cfg["description"]), cfg["description"]
    assert cfg["tags"] == "salt-platform"
    shown = cloud.action("show_instance", "vault")["vault"]
    assert shown["managed_by"] == "salt-platform site example"


FOREIGN = {
    # what differs: (VMID, node, description)
    "mark": (111, NODE, "made by hand"),
    "VMID": (150, NODE, "salt-platform: site=example guest=vault vmid=150 run=0123456789ab"),
    "node": (111, "pve2", "salt-platform: site=example guest=vault vmid=111 run=0123456789ab"),
    "site": (111, NODE, "salt-platform: site=elsewhere guest=vault vmid=111 run=0123456789ab"),
}


@pytest.mark.parametrize("differs", sorted(FOREIGN))
def test_destroy_and_power_actions_refuse_a_guest_that_is_not_provably_the_sites(pve, cloud, differs):
    vmid, node, description = FOREIGN[differs]
    other = pve.add_ct(vmid, "vault", node=node, status="running", config={"description": description})
    key = seed_key(cloud, "vault")
    text = failed(cloud, "-d", "vault")
    assert f"vault: refused: VMID {vmid} on {node} is not provably the site's guest vault" in text
    assert "nothing was stopped or changed" in text
    label = "mark" if differs == "site" else differs
    assert f"  - {label}: " in text, text
    for action in ("stop", "shutdown", "reboot"):
        assert f"  - {label}: " in failed(cloud, "-a", action, "vault")
    assert guests(pve)[vmid] is other and other.status == "running" and other.config["description"] == description
    assert writes(pve) == [] and token_tasks(pve) == []
    assert (cloud.state / "pki" / "master" / "minions" / "vault").read_text() == key


def test_a_guest_outside_the_site_is_never_destroyed(pve, cloud):
    other = pve.add_ct(300, "someone-else", node=NODE, status="running")
    text = failed(cloud, "-d", "someone-else")
    assert "'someone-else' is not a guest of the site" in text
    assert guests(pve)[300] is other and other.status == "running" and writes(pve) == []


def test_a_protected_guest_is_refused_before_it_is_touched(pve, cloud):
    def protect(site):
        site["guests"]["vault"].update(protection=True, tags=["db", "prod"])

    cloud.use_site(protect)
    cloud.json("-p", "debian12-lxc", "vault")
    ct = guests(pve)[111]
    assert int(ct.config["protection"]) == 1 and ct.config["tags"] == "db;prod;salt-platform"
    before = writes(pve)
    text = failed(cloud, "-d", "vault")
    assert "vault: refused: VMID 111 on pve is protected" in text and "pct set 111 --protection 0" in text
    assert ct.status == "running" and guests(pve)[111] is ct
    assert writes(pve) == before, "nothing may be sent to a protected guest"
    assert not token_tasks(pve, "vzshutdown") and not token_tasks(pve, "vzdestroy")
    assert "vault" in cloud.accepted()


def test_a_guest_that_appears_between_the_check_and_the_create_is_left_alone(pve, cloud):
    unused = pve._check_vmid_unused
    appeared = []

    def someone_else_first(vmid):
        if vmid == 111 and not appeared:
            appeared.append(None)  # add_ct checks the VMID through this very function
            appeared[0] = pve.add_ct(111, "someone-else", node=NODE, status="running")
        return unused(vmid)

    pve._check_vmid_unused = someone_else_first
    text = failed(cloud, "-p", "debian12-lxc", "vault")
    assert "VMID 111 was taken by another guest between the check and the create" in text
    assert "left alone, nothing was created" in text
    assert guests(pve)[111] is appeared[0] and appeared[0].status == "running"
    assert appeared[0].name == "someone-else"
    assert [w for w in writes(pve) if w[0] == "DELETE" or "/status/" in w[1]] == []
    assert "vault" not in cloud.accepted()


def test_the_cleanup_leaves_a_guest_without_this_runs_mark(pve, cloud):
    # PVE accepts the create, the task fails, and meanwhile another guest takes the VMID.
    pve.fail("POST", f"/nodes/{NODE}/lxc", error="no_lock_found_trying_remove", times=1)
    failed_task = pve._failed_task
    appeared = []

    async def failed_and_taken(*args):
        upid = await failed_task(*args)
        appeared.append(pve.add_ct(111, "someone-else", node=NODE, status="running"))
        return upid

    pve._failed_task = failed_and_taken
    text = failed(cloud, "-p", "debian12-lxc", "vault")
    assert "REMAINS: VMID 111 ('someone-else' on pve) does not carry this run's mark" in text
    assert "so it was left alone" in text
    assert guests(pve)[111] is appeared[0] and appeared[0].status == "running"
    assert [w for w in writes(pve) if w[0] == "DELETE" or "/status/" in w[1]] == []
    assert "vault" not in cloud.accepted()
    assert set(guests(pve)) == {111, TEMPLATE_VMID}
