"""The bring-up runner (_runners/bringup.py) on the checkout's real master: its phases from the site, one
phase after the other, stopping at the first failed state, and stopping for the Vault operators with
what they must run, against a real OpenBao.

The site here has two guests whose minions run on this machine (``db``, then ``fn-web``, which uses it);
both exist at salt-cloud's provider (fakepve) before the bring-up, so it converges them rather than
creating them (creation and its reactor are the lab's: tests/lab/test_site.py).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import yaml

from tests.functional.conftest import MINION_ID, OTHER_ID
from tests.openbao import BaoServer
from tests.proxmox.conftest import SECRET_ENV, TOKEN_SECRET

pytestmark = pytest.mark.functional

SITE = {
    "name": "bringup",
    "domain": "example.org",
    "network": {"cidr": "192.168.50.0/24", "gateway": "192.168.50.1"},
    "salt": {"master": "192.168.50.10"},
    "guests": {
        OTHER_ID: {"kind": "lxc", "vmid": 101, "cores": 1, "memory": 1024, "disk": 8,
                   "address": "192.168.50.11/24", "roles": ["postgresql"]},
        MINION_ID: {"kind": "vm", "vmid": 102, "cores": 1, "memory": 1024, "disk": 8,
                    "address": "192.168.50.12/24", "roles": ["nextcloud"], "uses": [OTHER_ID]},
    },
}


@contextlib.contextmanager
def replaced(path: Path, text: str):
    old = path.read_text() if path.exists() else None
    path.write_text(text)
    try:
        yield
    finally:
        if old is None:
            path.unlink()
        else:
            path.write_text(old)


@pytest.fixture(scope="module", autouse=True)
def nothing_left_behind(pve, salt_master):
    """After this module, the package's provider and master are as the next module expects them (the
    conftest's promise: nothing created yet): the guests made here are gone from fakepve, and the
    master's record of their first highstate with them (the reactor's tests in test_forged_events.py
    create fn-web anew and expect its first highstate)."""
    yield
    names = set(SITE["guests"])
    pve.vms[:] = [g for g in pve.vms if g.name not in names]
    pve.cts[:] = [g for g in pve.cts if g.name not in names]
    records = Path(salt_master.config["cachedir"]) / "platform" / "provisioned"
    for name in names:
        for record in records.glob(f"{name}.*"):
            record.unlink()


@pytest.fixture
def site(checkout, salt_run, salt_minion, other_minion, pve, salt_cloud):
    """The two-guest site in the checkout, both guests at the provider; the old site back afterwards."""
    root, _ = checkout
    for name, profile in ((OTHER_ID, "debian12-lxc"), (MINION_ID, "debian12-vm")):
        if not any(g.name == name for g in [*pve.vms, *pve.cts]):
            made = salt_cloud("-p", profile, name)
            assert made.returncode == 0, made.stderr
    with replaced(root / "pillar" / "site" / "functional.sls", yaml.safe_dump({"site": SITE})):
        yield SITE


def bring_up(salt_run, **kwargs):
    """`salt-run bringup.up` as the operator runs it: with the Proxmox token's secret in the environment."""
    return salt_run.run("bringup.up", "answer_timeout=30", *(f"{k}={v}" for k, v in kwargs.items()),
                        env={SECRET_ENV: TOKEN_SECRET}, _timeout=600)


def markers(marker_dir: Path) -> dict[str, float]:
    return {p.name.removesuffix("-highstate"): p.stat().st_mtime_ns for p in marker_dir.glob("*-highstate")}


def test_the_plan_is_read_from_the_site_on_the_master(site, salt_run):
    ret = salt_run.run("bringup.plan")
    assert ret.data == {"result": True, "phases": [[OTHER_ID], [MINION_ID]]}


def test_the_bring_up_converges_phase_by_phase_and_a_second_one_changes_nothing(site, salt_run, marker_dir):
    for marker in marker_dir.glob("*-highstate"):
        marker.unlink()
    ret = bring_up(salt_run)
    assert ret.data["result"] is True, ret.data.get("stopped")
    assert ret.data["phases"] == [[OTHER_ID], [MINION_ID]]
    assert {n: g["action"] for n, g in ret.data["guests"].items()} == {OTHER_ID: "converged", MINION_ID: "converged"}
    first = markers(marker_dir)
    assert first[OTHER_ID] < first[MINION_ID], "the guest that is used converged before its consumer"
    assert "bring-up phase 1/2: db (postgresql): started" in ret.stderr
    assert "bring-up phase 2/2: fn-web (nextcloud): done in" in ret.stderr

    again = bring_up(salt_run)
    assert again.data["result"] is True
    assert {n: (g["action"], g["changed"], g["failed"]) for n, g in again.data["guests"].items()} == {
        OTHER_ID: ("unchanged", 0, 0), MINION_ID: ("unchanged", 0, 0)}
    assert markers(marker_dir) == first, "a converged guest is not highstated again"


def test_a_guest_added_to_the_site_is_the_only_one_converged(site, salt_run, marker_dir, checkout):
    root, _ = checkout
    for marker in marker_dir.glob("*-highstate"):
        marker.unlink()
    without_web = {**SITE, "guests": {OTHER_ID: SITE["guests"][OTHER_ID]}}
    with replaced(root / "pillar" / "site" / "functional.sls", yaml.safe_dump({"site": without_web})):
        ret = bring_up(salt_run)
    assert ret.data["result"] is True and ret.data["phases"] == [[OTHER_ID]]
    before = markers(marker_dir)
    assert set(before) == {OTHER_ID}

    ret = bring_up(salt_run)  # the site with fn-web added
    assert ret.data["result"] is True
    assert {n: g["action"] for n, g in ret.data["guests"].items()} == {OTHER_ID: "unchanged", MINION_ID: "converged"}
    after = markers(marker_dir)
    assert after[OTHER_ID] == before[OTHER_ID] and MINION_ID in after


def test_the_bring_up_stops_at_the_first_failed_state_naming_guest_and_state(site, salt_run, marker_dir, test_states):
    for marker in marker_dir.glob("*-highstate"):
        marker.unlink()
    failing = (test_states / "marker.sls").read_text() + (
        "{% if grains['id'] == '" + OTHER_ID + "' %}\n"
        "functional-database-ready:\n"
        "  test.fail_without_changes:\n"
        "    - comment: the database is not ready\n"
        "{% endif %}\n")
    with replaced(test_states / "marker.sls", failing):
        ret = bring_up(salt_run)
    assert ret.data["result"] is False
    stopped = ret.data["stopped"]
    assert (stopped["phase"], stopped["step"], stopped["guest"]) == (1, "highstate", OTHER_ID)
    assert stopped["message"].startswith(f"bring-up stopped in phase 1/2: the highstate of {OTHER_ID} failed")
    assert "functional-database-ready (sls marker): the database is not ready" in stopped["message"]
    assert "functional-database-ready" in ret.stderr
    assert MINION_ID not in markers(marker_dir), "nothing after the failed phase ran"
    assert MINION_ID not in ret.data["guests"]


@pytest.fixture
def vault_site(site, checkout, test_states, tmp_path):
    """db also has the role vault; its vault.unseal (shadowed by the test tree) names a real OpenBao,
    started uninitialised, as a new site's Vault is."""
    root, _ = checkout
    bao = BaoServer(tmp_path / "bao", dev=False).start()
    (test_states / "vault").mkdir(exist_ok=True)
    unseal = ("vault-unseal-unsealed:\n  vault_server.unsealed:\n    - name: vault\n"
              f"    - url: {bao.url}\n    - verify: false\n")
    with_vault = {**SITE, "guests": {**SITE["guests"], OTHER_ID: {**SITE["guests"][OTHER_ID],
                                                                  "roles": ["vault", "postgresql"]}}}
    try:
        with replaced(test_states / "vault" / "unseal.sls", unseal), \
                replaced(root / "pillar" / "site" / "functional.sls", yaml.safe_dump({"site": with_vault})):
            yield bao
    finally:
        bao.stop()


def test_the_bring_up_stops_for_the_vault_operators_with_what_to_run(vault_site, salt_run, marker_dir):
    bao = vault_site
    ret = bring_up(salt_run)
    stopped = ret.data["stopped"]
    assert (stopped["phase"], stopped["step"], stopped["guest"]) == (1, "initialise", OTHER_ID)
    assert f"Vault on {OTHER_ID} (https://192.168.50.11:{bao.port}) is not initialised" in stopped["message"]
    assert "salt-run salt.cmd vault_server.initialize" in stopped["message"]
    assert f"salt {OTHER_ID} state.apply vault.unseal" in stopped["message"]
    assert "/root/vault-init/bringup.json" in stopped["message"]
    assert MINION_ID not in ret.data["guests"], "no consumer before Vault is ready"

    client = bao.client()
    keys = client.sys.initialize(secret_shares=1, secret_threshold=1)["keys"]
    ret = bring_up(salt_run)
    assert (ret.data["stopped"]["step"], ret.data["stopped"]["guest"]) == ("unseal", OTHER_ID)
    assert "is sealed" in ret.data["stopped"]["message"]
    assert "vault_server.initialize" not in ret.data["stopped"]["message"]

    client.sys.submit_unseal_key(keys[0])
    ret = bring_up(salt_run)
    assert ret.data["stopped"]["step"] == "master-credentials", "this master has no AppRole credentials"
    assert "vault-master.yaml" in ret.data["stopped"]["message"]
    assert MINION_ID not in ret.data["guests"]
