"""Listings never look like an empty cluster when PVE, a node or TLS fails: they say so and exit non-zero."""

from __future__ import annotations

import json

import pytest

from tests.proxmox.conftest import NODE, make_cloud

pytestmark = pytest.mark.functional

LISTINGS = (("-Q",), ("-F",), ("-S",))


def test_a_failing_api_fails_every_listing(pve, cloud):
    pve.add_ct(111, "vault", node=NODE, status="running")
    pve.fail("GET", "/cluster/resources", 500, "Internal Server Error")
    for args in (*LISTINGS, ("-a", "show_instance", "vault")):
        result = cloud.run(*args)
        assert result.returncode != 0, (args, result.stdout)
        assert "GET /cluster/resources: PVE answered 500: Internal Server Error (tried 3 times)" in result.stderr, args
        assert result.stdout.strip() == "", args


def test_a_bad_token_or_ca_fails_every_listing(tmp_path, pve, pve_pki):
    pve.add_ct(111, "vault", node=NODE, status="running")
    cloud = make_cloud(tmp_path / "token", pve, pve_pki[0])
    for args in LISTINGS:
        result = cloud.run(*args, secret="not-the-secret")  # noqa: S106 - a wrong one on purpose
        assert result.returncode != 0 and "PVE refused the API token" in result.stderr, args
    cloud = make_cloud(tmp_path / "ca", pve, "/etc/ssl/certs/ca-certificates.crt")
    for args in LISTINGS:
        result = cloud.run(*args)
        assert result.returncode != 0 and "TLS verification of https://127.0.0.1" in result.stderr, args


def test_with_one_node_down_the_others_are_listed_and_the_node_is_named(pve, cloud):
    pve.add_node("pve2")
    pve.add_ct(111, "vault", node=NODE, status="running",
               config={"net0": "name=eth0,bridge=vmbr0,ip=10.10.10.111/24,gw=10.10.10.1,type=veth"})
    pve.add_ct(200, "far-away", node="pve2", status="running")
    pve.set_node_offline("pve2")
    for args in LISTINGS:
        result = cloud.run(*args)
        assert result.returncode != 0, args
        listed = json.loads(result.stdout)["platform"]["proxmox_platform"]
        assert listed["vault"]["state"] == "running" and listed["vault"]["private_ips"] == ["10.10.10.111"], args
        assert listed["far-away"]["state"] == "unknown", args
        assert "node pve2 is offline" in result.stderr, args
    assert json.loads(cloud.run("-Q").stdout)["platform"]["proxmox_platform"]["far-away"]["error"] == \
        "node pve2 is offline"
    shown = cloud.run("-a", "show_instance", "far-away")
    assert shown.returncode != 0 and "far-away (VMID 200): node pve2 is offline (595: No route to host)" in shown.stderr
    assert cloud.action("show_instance", "vault")["vault"]["state"] == "running"

    pve.set_node_offline("pve2", offline=False)
    listed = cloud.json("-Q")["platform"]["proxmox_platform"]
    assert listed["far-away"]["state"] == "running"
