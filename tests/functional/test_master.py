"""The checkout's master, for real: what it serves, what it refuses, how it reacts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sitectl.config import SaltSettings, write_config
from tests.conftest import SITES
from tests.functional.conftest import MINION_ID

pytestmark = pytest.mark.functional


def test_pillar_files_are_never_served_to_minions(salt_call, checkout):
    listed = salt_call.run("cp.list_master").data
    assert "top.sls" in listed and "common/init.sls" in listed, "the state tree is served"
    assert not [f for f in listed if f.startswith(("site/", "platform/", "overlays/", "pillar/"))], listed
    for url in ("salt://site/functional.sls", "salt://platform/roles.sls", "salt://../pillar/top.sls",
                "salt://pillar/site/functional.sls", "salt://%2e%2e/pillar/top.sls"):
        assert not salt_call.run("cp.get_file_str", url).data, url
    served_top = salt_call.run("cp.get_file_str", "salt://top.sls").data
    assert "platform_site" not in served_top, "salt://top.sls must be the state top, not the pillar top"


def test_minion_gets_its_own_view_of_the_site(salt_call):
    guest = salt_call.run("pillar.get", "platform:guest", unmask=True).data
    assert guest["name"] == MINION_ID
    assert guest["roles"] == ["base", "reverse_proxy"]
    https = next(rule for rule in guest["firewall"] if rule["name"] == "https")
    assert https["from"] == "any"
    assert guest["master"] == "192.168.50.10"


def test_invalid_site_stops_state_apply_before_any_change(salt_call, checkout, marker_dir):
    root, _ = checkout
    site_file = root / "pillar" / "site" / "functional.sls"
    good = site_file.read_text()
    marker = marker_dir / f"{MINION_ID}-highstate"
    marker.unlink(missing_ok=True)
    shutil.copy(SITES / "invalid" / "duplicate-vmid" / "site.sls", site_file)
    try:
        result = salt_call.run("state.apply")
    finally:
        site_file.write_text(good)
    assert result.returncode != 0
    text = str(result.data) + result.stdout + result.stderr
    assert "Pillar failed to render" in text
    assert "site.guests.db.vmid: 100 is already used by site.guests.control" in text
    printed = result.stdout + result.stderr
    assert printed.count("site.guests.db.vmid: 100 is already used") == 1, "one message, printed once"
    assert "Traceback" not in printed
    assert not marker.exists(), "no state may run with an invalid site"
    assert salt_call.run("state.apply").returncode == 0
    assert marker.exists()


def test_provisioning_runner_refuses_a_name_outside_the_site(salt_run):
    result = salt_run.run("platform.provisioned", "stranger", timeout=4, interval=1)
    assert result.data["result"] is False
    assert "no minion that is the site's guest 'stranger' answered" in result.data["comment"]


def test_a_minion_that_is_not_a_guest_of_the_site_is_not_highstated(salt_minion, salt_call, salt_run, checkout,
                                                                     marker_dir):
    root, _ = checkout
    site_file = root / "pillar" / "site" / "functional.sls"
    good = site_file.read_text()
    marker = marker_dir / f"{MINION_ID}-highstate"
    marker.unlink(missing_ok=True)
    site_file.write_text(good.replace(f"    {MINION_ID}:\n", "    renamed-web:\n").replace(
        f"guest: {MINION_ID}", "guest: renamed-web"))
    try:
        assert salt_call.run("saltutil.refresh_pillar", wait=True).returncode == 0
        result = salt_run.run("platform.provisioned", MINION_ID, timeout=4, interval=1)
    finally:
        site_file.write_text(good)
        salt_call.run("saltutil.refresh_pillar", wait=True)
    assert result.data["result"] is False, "an accepted key alone must not be enough"
    assert not marker.exists()


def test_saltfile_points_the_salt_commands_at_the_checkout(checkout):
    root, _ = checkout
    write_config(SaltSettings(state_dir=root / ".salt", site="functional"), root=root)
    accepted = root / ".salt" / "pki" / "master" / "minions"
    accepted.mkdir(parents=True, exist_ok=True)
    (accepted / "saltfile-probe").write_text("not a real key\n")
    salt_key = Path(sys.executable).parent / "salt-key"
    out = subprocess.run([str(salt_key), "-L", "--out", "json"], cwd=root, capture_output=True, text=True,
                         check=True, env={"PATH": "/usr/bin:/bin", "HOME": str(root)})
    assert "saltfile-probe" in json.loads(out.stdout)["minions"]
