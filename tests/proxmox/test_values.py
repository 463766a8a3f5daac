"""Profile and provider values are typed strictly, before the driver makes its first call to PVE."""

from __future__ import annotations

import pytest

from tests.proxmox.conftest import TEMPLATE_VMID, guests, make_cloud, writes

pytestmark = pytest.mark.functional


def profile(**settings) -> dict:
    return {"test-lxc": {"extends": "debian12-lxc", **settings}}


def test_yaml_booleans_given_as_strings_are_read_as_yaml_reads_them(pve, cloud):
    cloud.add_profiles(profile(unprivileged="True", onboot="no", swap="256"))
    cloud.json("-p", "test-lxc", "vault")
    cfg = guests(pve)[111].config
    assert int(cfg["unprivileged"]) == 1, "the string 'True' must never make a privileged container"
    assert int(cfg["onboot"]) == 0 and int(cfg["swap"]) == 256


REFUSED = {
    "a boolean that is not one": ({"unprivileged": "maybe"},
                                  "unprivileged: got 'maybe'; expected true or false (yes/no, on/off, 1/0)"),
    "a number as a boolean": ({"onboot": 2}, "onboot: got 2; expected true or false"),
    "cores in a profile": ({"cores": 0}, "cores: 0 is set in profile 'test-lxc', but a guest's cores comes from "
                                         "the site (site.guests.<name>.cores)"),
    "a word as a number": ({"swap": "lots"}, "swap: got 'lots'; expected an integer from 0"),
    "a choice outside the choices": ({"ip": "auto"}, "ip: got 'auto'; expected one of: static, dhcp"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_value_that_cannot_apply_is_refused_before_any_change(pve, cloud, case):
    settings, message = REFUSED[case]
    cloud.add_profiles(profile(**settings))
    result = cloud.run("-p", "test-lxc", "vault")
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    # salt-cloud itself lists the guests first; the driver sends nothing.
    assert writes(pve) == [] and {p.split("?")[0] for _, p, _ in pve.requests} <= {"/api2/json/cluster/resources"}
    assert set(guests(pve)) == {TEMPLATE_VMID} and "vault" not in cloud.accepted()


def test_a_provider_value_of_the_wrong_type_stops_every_command(tmp_path, pve, pve_pki):
    cloud = make_cloud(tmp_path, pve, pve_pki[0], verify_ssl="sometimes")
    for args in (("-p", "debian12-lxc", "vault"), ("-Q",)):
        result = cloud.run(*args)
        assert result.returncode != 0
        assert "verify_ssl: got 'sometimes'; expected true or false" in result.stdout + result.stderr
    assert pve.requests == []
