"""The full lifecycle of a container and a VM through the real salt-cloud command against fakepve."""

from __future__ import annotations

import pytest

from tests.proxmox.conftest import (
    GRANTED,
    NODE,
    TOKEN_ID,
    assert_schema_clean,
    assert_tasks_awaited,
    guests,
)

pytestmark = pytest.mark.functional


def test_lxc_lifecycle(pve, cloud):
    pve.grant(TOKEN_ID, "/", *GRANTED)
    created = cloud.json("-p", "debian12-lxc", "reverse-proxy")["reverse-proxy"]
    assert created["vmid"] == 100 and created["node"] == NODE and created["state"] == "running"
    assert created["private_ips"][0] == "10.10.10.100"
    ct = guests(pve)[100]
    assert ct.status == "running" and ct.name == "reverse-proxy"
    cfg = ct.config
    assert cfg["cores"] == 2 and int(cfg["memory"]) == 1024 and cfg["unprivileged"] == 1
    assert "size=8G" in cfg["rootfs"] and cfg["rootfs"].startswith("local-lvm:")
    assert "ip=10.10.10.100/24" in cfg["net0"] and "gw=10.10.10.1" in cfg["net0"]
    assert "reverse-proxy" in cloud.accepted()

    shown = cloud.action("show_instance", "reverse-proxy")
    assert shown["reverse-proxy"]["vmid"] == 100
    listed = cloud.json("-Q")["platform"]["proxmox_platform"]
    assert listed["reverse-proxy"]["state"] == "running"
    assert listed["reverse-proxy"]["private_ips"] == ["10.10.10.100"]
    full = cloud.json("-F")["platform"]["proxmox_platform"]
    assert full["reverse-proxy"]["config"]["hostname"] == "reverse-proxy"
    selected = cloud.json("-S")["platform"]["proxmox_platform"]
    assert selected["reverse-proxy"] == {"id": 100, "state": "running", "private_ips": ["10.10.10.100"]}
    images = cloud.json("--list-images", "platform")["platform"]["proxmox_platform"]
    assert "local:vztmpl/debian-12-standard_12.12-1_amd64.tar.zst" in images and "debian12-cloudinit" in images
    assert NODE in cloud.json("--list-locations", "platform")["platform"]["proxmox_platform"]

    cloud.json("-d", "reverse-proxy")
    assert 100 not in guests(pve)
    assert "reverse-proxy" not in cloud.accepted()
    assert_tasks_awaited(pve)
    assert_schema_clean(pve)


def test_qemu_lifecycle(pve, cloud):
    pve.grant(TOKEN_ID, "/", *GRANTED)
    created = cloud.json("-p", "debian12-vm", "monitoring")["monitoring"]
    assert created["vmid"] == 120 and created["state"] == "running"
    assert created["ip_source"] == "guest agent" and created["private_ips"][0] == "10.10.10.120"
    vm = guests(pve)[120]
    cfg = vm.config
    assert vm.status == "running" and vm.name == "monitoring" and not vm.template
    assert cfg["ipconfig0"] == "ip=10.10.10.120/24,gw=10.10.10.1" and cfg["ciuser"] == "platform"
    assert "ssh-ed25519" in __import__("urllib.parse").parse.unquote(cfg["sshkeys"])
    assert cfg["agent"] == "enabled=1" and int(cfg["cores"]) == 2 and int(cfg["memory"]) == 4096
    # fakepve answers a QEMU resize from the schema without storing it: check the request itself.
    assert ("PUT", "/api2/json/nodes/pve/qemu/120/resize", b"disk=scsi0&size=64G") in pve.requests
    assert "monitoring" in cloud.accepted()

    assert cloud.action("show_instance", "monitoring")["monitoring"]["private_ips"] == ["10.10.10.120"]
    cloud.json("-d", "monitoring")
    assert 120 not in guests(pve) and 9000 in guests(pve)
    assert "monitoring" not in cloud.accepted()
    assert_tasks_awaited(pve)
    assert_schema_clean(pve)
