"""Runs at the same time: one guest per name, unique VMIDs from /cluster/nextid under -P, keys only with guests."""

from __future__ import annotations

import json
import re

import pytest

from tests.proxmox.conftest import (
    NODE,
    TEMPLATE_VMID,
    assert_schema_clean,
    assert_tasks_awaited,
    guests,
)

pytestmark = pytest.mark.functional

MARK_VMID = re.compile(r"^salt-platform: site=example guest=(\S+) vmid=(\d+) ", re.MULTILINE)


def without_vmid(*names):
    def edit(site):
        for name in names or site["guests"]:
            site["guests"][name].pop("vmid")

    return edit


@pytest.mark.parametrize("vmid_from", ["site", "nextid"])
def test_two_runs_creating_the_same_guest_end_with_one_guest(pve, cloud, vmid_from):
    if vmid_from == "nextid":
        cloud.use_site(without_vmid("vault"))
    pve.time_scale = 1.0  # the create task takes real time, so both runs are past salt-cloud's own check
    pve.ct_secs["create"] = 1.5
    runs = [cloud.spawn("-p", "debian12-lxc", "vault") for _ in range(2)]
    results = [(run.wait(150), *run.communicate()) for run in runs]
    made = [g for g in guests(pve).values() if g.name == "vault"]
    assert len(made) == 1 and made[0].status == "running", results
    created = [json.loads(out) for code, out, _ in results if code == 0 and '"vmid"' in out]
    assert len(created) == 1 and created[0]["vault"]["vmid"] == made[0].vmid, results
    other = next(out + err for code, out, err in results if not (code == 0 and '"vmid"' in out))
    assert "vault: exists: PVE already has a guest of this name" in other or \
        "vault already exists under platform" in other, other
    assert cloud.accepted() == {"vault"}
    if vmid_from == "site":
        assert made[0].vmid == 111
    assert set(guests(pve)) == {made[0].vmid, TEMPLATE_VMID}


def test_parallel_map_with_vmids_from_nextid(pve, cloud):
    # Two guests keep the site's VMIDs (100, 101, the first ones /cluster/nextid would hand out); the rest ask PVE.
    names = ("control", "git-lab-docker-runner", "k3s", "mailcow", "monitoring", "nextcloud", "postgresql",
             "rabbitmq", "vault")
    site = cloud.use_site(without_vmid(*names))
    out = cloud.json("-m", str(cloud.map_file(site)), "-P")
    assert not [n for n, r in out.items() if "Error" in r], out
    made = {g.vmid: g for g in guests(pve).values() if g.vmid != TEMPLATE_VMID}
    assert sorted(g.name for g in made.values()) == sorted(site["guests"]), made
    assert made[100].name == "reverse-proxy" and made[101].name == "microservices"
    for vmid, guest in made.items():
        assert guest.status == "running", guest.name
        assert MARK_VMID.search(guest.config["description"]).groups() == (guest.name, str(vmid))
        assert out[guest.name]["vmid"] == vmid
    assert cloud.accepted() == set(site["guests"])
    creates = [p for m, p, _ in pve.requests if m == "POST" and (p.endswith(f"/nodes/{NODE}/lxc") or "/clone" in p)]
    print(f"{len(creates)} create/clone requests for {len(made)} guests")
    assert_tasks_awaited(pve)
    assert_schema_clean(pve)
