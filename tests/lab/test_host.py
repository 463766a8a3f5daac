"""The lab host layer against the real thing: template, bridge, nft table, two LXC guests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest
from conftest import BRIDGE, GATEWAY, GUESTS, LAB_DIR, TABLE

from sitectl.lab import host
from sitectl.lab.template import SALT_VERSION, VENV

pytestmark = pytest.mark.lab

A, B = list(GUESTS)

PROBE = r"""
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
t = time.monotonic()
try:
    socket.create_connection((host, port), timeout=3).close()
    print("CONNECTED", round(time.monotonic() - t, 2))
except OSError as exc:
    print("FAILED", type(exc).__name__, round(time.monotonic() - t, 2))
"""


def sh(argv):
    return subprocess.run(argv, check=False, capture_output=True, text=True)


def drop_counter() -> int:
    out = sh(["nft", "list", "chain", "inet", TABLE, "lab_forward"]).stdout
    m = re.search(r"counter packets (\d+) bytes \d+ drop", out)
    return int(m.group(1)) if m else -1


# ------------------------------------------------------------------------- template


def test_template_has_salt_and_no_compiler(lab_host):
    root = lab_host["template"]
    cp = sh(
        [
            "unshare",
            "--mount",
            "sh",
            "-c",
            'mount -t proc proc "$0/proc" && exec chroot "$0" env -i PATH=/usr/bin:/bin '
            f"{VENV}/bin/salt-call --version",
            root,
        ]
    )
    assert cp.returncode == 0, cp.stderr
    assert SALT_VERSION in cp.stdout
    assert not os.path.exists(os.path.join(root, "usr/bin/gcc"))
    assert os.readlink(os.path.join(root, "usr/bin/salt-call")) == f"{VENV}/bin/salt-call"
    assert os.path.islink(os.path.join(root, "etc/systemd/system/multi-user.target.wants/salt-minion.service"))
    lists = os.listdir(os.path.join(root, "var/lib/apt/lists"))
    assert any(n.endswith("_Packages") for n in lists), "apt lists must stay in the template"
    debs = [n for n in os.listdir(os.path.join(root, "var/cache/apt/archives")) if n.endswith(".deb")]
    assert debs == []
    freeze = open(os.path.join(root, VENV.lstrip("/"), "sitectl-freeze.txt")).read().lower()
    assert "jsonschema==" in freeze and "hvac==" in freeze
    assert os.path.getsize(os.path.join(root, "etc/machine-id")) == 0


def test_template_is_cached(lab_host):
    t0 = time.monotonic()
    again = host.build_template(cache_dir=lab_host["cache_dir"])
    assert again == lab_host["template"]
    assert time.monotonic() - t0 < 5
    info = host.template_info(again)
    assert info["key"] in again


# --------------------------------------------------------------------------- guests


def test_both_guests_reach_running(lab):
    for name in GUESTS:
        assert lab["guests"][name]["system_state"] == "running", lab["guests"][name]
        out = host.attach(name, ["systemctl", "is-system-running"], lab_dir=LAB_DIR).stdout
        assert out.strip() == "running"
        assert host.attach(name, ["hostname"], lab_dir=LAB_DIR).stdout.strip() == name
        assert (
            host.attach(name, ["systemctl", "is-enabled", "salt-minion"], lab_dir=LAB_DIR, check=False).stdout.strip()
            == "enabled"
        )


def test_list_and_info(lab):
    listed = {g["name"]: g for g in host.list_guests(LAB_DIR)}
    assert set(listed) == set(GUESTS)
    for name, addr in GUESTS.items():
        assert listed[name]["state"] == "RUNNING"
        assert listed[name]["address"] == addr.split("/")[0]
        assert host.guest_info(name, LAB_DIR)["pid"] > 1
    with pytest.raises(host.LabError, match="nope"):
        host.guest_info("nope", LAB_DIR)


def test_create_and_network_are_idempotent(lab):
    host.network_up(BRIDGE, GATEWAY + "/24", table=TABLE)
    info = host.create_guest(
        A,
        GUESTS[A],
        GATEWAY,
        lab["nameserver"],
        lab_dir=LAB_DIR,
        template=lab["template"],
        bridge=BRIDGE,
        memory_mib=512,
        cores=1,
    )
    assert info["state"] == "RUNNING"
    with pytest.raises(host.LabError, match="different configuration"):
        host.create_guest(
            A, "10.77.99.50/24", GATEWAY, lab["nameserver"], lab_dir=LAB_DIR, template=lab["template"], bridge=BRIDGE
        )
    assert host.start_guest(A, lab_dir=LAB_DIR)["system_state"] == "running"


def test_guest_a_pings_guest_b(lab):
    b_ip = GUESTS[B].split("/")[0]
    cp = host.attach(A, ["ping", "-c", "2", "-W", "2", b_ip], lab_dir=LAB_DIR, check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert " 0% packet loss" in cp.stdout


def test_guest_reaches_host_gateway(lab):
    cp = host.attach(B, ["ping", "-c", "1", "-W", "2", GATEWAY], lab_dir=LAB_DIR, check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr


def test_guest_uses_the_mirror(lab):
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    cp = host.attach(A, ["apt-get", "update"], lab_dir=LAB_DIR, check=False, timeout=300, env=env)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "Err:" not in cp.stdout
    cp = host.attach(A, ["apt-get", "install", "-y", "hello"], lab_dir=LAB_DIR, check=False, timeout=300, env=env)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "Hello, world!" in host.attach(A, ["hello"], lab_dir=LAB_DIR).stdout


@pytest.mark.parametrize("target", ["1.1.1.1:443", "RESOLVER:80", "MIRROR:22"])
def test_no_other_egress(lab, target):
    hostpart, port = target.split(":")
    if hostpart == "RESOLVER":
        hostpart = lab["nameserver"]
    if hostpart == "MIRROR":
        hostpart = lab["net"]["mirror_ips"][0]
    before = drop_counter()
    t0 = time.monotonic()
    cp = host.attach(B, ["python3", "-c", PROBE, hostpart, port], lab_dir=LAB_DIR, timeout=20)
    assert cp.stdout.startswith("FAILED"), cp.stdout
    assert time.monotonic() - t0 < 8
    assert drop_counter() > before, "the lab's own nft table must be what drops it"


def test_salt_call_local_in_guest(lab):
    cp = host.attach(A, ["salt-call", "--local", "--out=json", "test.ping"], lab_dir=LAB_DIR, check=False, timeout=120)
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout) == {"local": True}
    cp = host.attach(B, [f"{VENV}/bin/python", "-c", "import hvac, jsonschema; print('ok')"], lab_dir=LAB_DIR)
    assert cp.stdout.strip() == "ok"


def test_write_guest_file_running_and_stopped(lab):
    host.write_guest_file(B, "/etc/salt/minion.d/lab.conf", b"id: labb\n", 0o600, lab_dir=LAB_DIR)
    out = host.attach(B, ["stat", "-c", "%a %U %s", "/etc/salt/minion.d/lab.conf"], lab_dir=LAB_DIR).stdout.split()
    assert out == ["600", "root", "9"]
    host.stop_guest(B, LAB_DIR)
    assert host.guest_info(B, LAB_DIR)["state"] == "STOPPED"
    host.stop_guest(B, LAB_DIR)  # no-op
    # through the delta; /var/run is a symlink to /run in the template: must be followed
    host.write_guest_file(B, "/root/.ssh/authorized_keys", b"ssh-ed25519 AAAA test\n", 0o600, lab_dir=LAB_DIR)
    host.write_guest_file(B, "/var/tmp/x/y.txt", b"y\n", lab_dir=LAB_DIR)
    info = host.start_guest(B, timeout=90, lab_dir=LAB_DIR)
    assert info["system_state"] == "running"
    assert host.attach(B, ["cat", "/root/.ssh/authorized_keys"], lab_dir=LAB_DIR).stdout == "ssh-ed25519 AAAA test\n"
    assert host.attach(B, ["stat", "-c", "%a", "/root", "/var/tmp"], lab_dir=LAB_DIR).stdout.split() == ["700", "1777"]
    assert host.attach(B, ["cat", "/etc/salt/minion.d/lab.conf"], lab_dir=LAB_DIR).stdout == "id: labb\n"


def test_memory_and_cpu_limits(lab):
    cfg = open(os.path.join(LAB_DIR, A, "config")).read()
    if "memory" not in cfg:
        pytest.skip("no usable memory cgroup on this host")
    cp = host.attach(
        A,
        ["sh", "-c", "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes"],
        lab_dir=LAB_DIR,
    )
    assert cp.stdout.strip() == str(512 * 1024 * 1024)


def test_failed_command_raises_lab_error(lab):
    with pytest.raises(host.LabError) as err:
        host.attach(A, ["sh", "-c", "echo boom >&2; exit 3"], lab_dir=LAB_DIR)
    text = str(err.value)
    assert A in text and "boom" in text and "exit status: 3" in text


def test_degraded_boot_names_the_failed_unit(lab):
    name = "labc"
    host.create_guest(
        name, "10.77.99.13/24", GATEWAY, lab["nameserver"], lab_dir=LAB_DIR, template=lab["template"], bridge=BRIDGE
    )
    try:
        host.write_guest_file(
            name,
            "/etc/systemd/system/sitectl-fail.service",
            b"[Service]\nType=oneshot\nExecStart=/bin/false\n",
            lab_dir=LAB_DIR,
        )
        host.write_guest_file(
            name,
            "/etc/systemd/system/multi-user.target.d/fail.conf",
            b"[Unit]\nWants=sitectl-fail.service\n",
            lab_dir=LAB_DIR,
        )
        with pytest.raises(host.LabError, match="sitectl-fail.service") as err:
            host.start_guest(name, timeout=60, lab_dir=LAB_DIR)
        assert name in str(err.value)
        info = host.start_guest(name, timeout=60, lab_dir=LAB_DIR, allow_degraded=True)
        assert info["system_state"] == "degraded"
        assert info["failed_units"] == ["sitectl-fail.service"]
    finally:
        host.destroy_guest(name, LAB_DIR)
    host.destroy_guest(name, LAB_DIR)  # safe twice
    assert not os.path.exists(os.path.join(LAB_DIR, name))


def test_start_failure_names_guest_and_command(lab):
    name = "labd"
    host.create_guest(
        name,
        "10.77.99.14/24",
        GATEWAY,
        lab["nameserver"],
        lab_dir=LAB_DIR,
        template=lab["template"],
        bridge="nosuchbr0",
    )
    try:
        with pytest.raises(host.LabError) as err:
            host.start_guest(name, timeout=30, lab_dir=LAB_DIR)
        text = str(err.value)
        assert name in text and "lxc-start" in text and "nosuchbr0" in text, text
    finally:
        host.destroy_guest(name, LAB_DIR)


# ------------------------------------------------------------------------- teardown


def test_teardown_after_interrupted_run_and_twice(lab):
    # simulate an interrupted run: a half-created guest with a stale mount under the lab dir
    broken = os.path.join(LAB_DIR, "halfmade")
    os.makedirs(os.path.join(broken, "rootfs"))
    os.makedirs(os.path.join(broken, "delta", "etc"))
    subprocess.run(["mount", "-t", "tmpfs", "none", os.path.join(broken, "rootfs")], check=True)

    removed = host.teardown(LAB_DIR, BRIDGE, TABLE)
    assert set(removed["guests"]) == set(GUESTS) | {"halfmade"}
    assert set(removed["network"]) == {"bridge", "table"}

    assert not os.path.exists(f"/sys/class/net/{BRIDGE}")
    assert sh(["nft", "list", "table", "inet", TABLE]).returncode != 0
    assert LAB_DIR not in open("/proc/self/mountinfo").read()
    assert not os.path.exists(LAB_DIR)
    leftovers = sh(
        ["sh", "-c", "ls -d /sys/fs/cgroup/*/lxc.payload.lab* /sys/fs/cgroup/lxc.payload.lab* 2>/dev/null"]
    ).stdout
    assert leftovers == ""
    assert not any(
        f"[lxc monitor] {LAB_DIR}"
        in open(f"/proc/{p}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        for p in os.listdir("/proc")
        if p.isdigit() and os.path.exists(f"/proc/{p}/cmdline")
    )

    again = host.teardown(LAB_DIR, BRIDGE, TABLE)
    assert again == {"guests": [], "mounts": [], "network": []}
