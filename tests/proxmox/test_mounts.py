"""A guest's mount points (site.guests.<name>.mounts) reach PVE as the LXC create call's ``mpN``, in PVE's
own format, and PVE (fakepve, with PVE's schema) allocates each as a volume of its own."""

from __future__ import annotations

import urllib.parse

import pytest

from tests.proxmox.conftest import GRANTED, NODE, TOKEN_ID, assert_schema_clean, guests

pytestmark = pytest.mark.functional


def create_call(pve) -> dict:
    """The parameters of the driver's one LXC create call."""
    bodies = [body for method, path, body in pve.requests
              if method == "POST" and path.endswith(f"/nodes/{NODE}/lxc")]
    assert len(bodies) == 1, bodies
    return dict(urllib.parse.parse_qsl(bodies[0].decode()))


def mount_options(value: str) -> dict:
    volume, *options = value.split(",")
    return {"volume": volume, **dict(option.split("=", 1) for option in options)}


def test_the_example_sites_nextcloud_data_volume_is_mp0(pve, cloud):
    pve.grant(TOKEN_ID, "/", *GRANTED)
    cloud.json("-p", "debian12-lxc", "nextcloud")
    sent = create_call(pve)
    assert sent["mp0"] == "local-lvm:256,mp=/srv/nextcloud-data,backup=1"
    assert not any(key.startswith("mp") and key != "mp0" for key in sent)
    mp0 = mount_options(guests(pve)[102].config["mp0"])
    assert mp0["mp"] == "/srv/nextcloud-data" and mp0["size"] == "256G" and mp0["backup"] == "1"
    assert mp0["volume"].startswith("local-lvm:") and mp0["volume"] != \
        mount_options(guests(pve)[102].config["rootfs"])["volume"], "a volume of its own, not the root disk"
    assert_schema_clean(pve)


def test_mounts_keep_their_order_storage_and_backup_flag(pve, cloud):
    pve.grant(TOKEN_ID, "/", *GRANTED)
    pve.storages["tank"] = {"type": "lvmthin", "active": 1, "content": "images,rootdir", "files": set(),
                            "vgname": "tank", "thinpool": "data"}

    def two_volumes(site):
        site["guests"]["nextcloud"]["mounts"] = [
            {"path": "/srv/nextcloud-data", "size": 100, "storage": "tank"},
            {"path": "/var/cache/previews", "size": 8, "backup": False}]

    cloud.use_site(two_volumes)
    cloud.json("-p", "debian12-lxc", "nextcloud")
    sent = create_call(pve)
    assert sent["mp0"] == "tank:100,mp=/srv/nextcloud-data,backup=1", "the mount's own storage"
    assert sent["mp1"] == "local-lvm:8,mp=/var/cache/previews,backup=0", "the profile's storage"
    config = guests(pve)[102].config
    assert mount_options(config["mp0"])["volume"].startswith("tank:")
    assert mount_options(config["mp1"])["backup"] == "0", "vzdump leaves the cache volume out"
    assert_schema_clean(pve)


def test_a_guest_without_mounts_sends_no_mount_point(pve, cloud):
    pve.grant(TOKEN_ID, "/", *GRANTED)
    cloud.json("-p", "debian12-lxc", "vault")
    assert not [key for key in create_call(pve) if key.startswith("mp")]
    assert_schema_clean(pve)
