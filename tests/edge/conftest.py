"""The edge lab fixture: guests, network and pebble for the module, torn down after it."""

from __future__ import annotations

import os
import shutil
import tarfile

import pytest

from sitectl import ROOT
from sitectl.lab.pebble import Pebble
from tests.edge.edgelab import (
    BRIDGE,
    ECHO_SERVER,
    GATEWAY,
    LAB_DIR,
    PROXY,
    PROXY_IP,
    SALT_CALL_RECORDER,
    SALT_CONFIG_DIR,
    TABLE,
    UPSTREAMS,
    EdgeLab,
    edge_pillar,
)

INOTIFY_ONLY_UNITS = {"systemd-ask-password-console.path", "systemd-ask-password-wall.path"}


@pytest.fixture(scope="module")
def edge_lab(tmp_path_factory):
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("the edge lab needs root on a Debian host")
    from sitectl.lab import host

    host.ensure_host_packages([*host.HOST_PACKAGES, "pebble", "openssl", "curl"])
    template = host.build_template()  # cached; a concurrent build is waited for (flock)
    workdir = tmp_path_factory.mktemp("edge-lab")
    host.teardown(LAB_DIR, BRIDGE, TABLE)  # leftovers of an interrupted run of this module
    net = host.network_up(BRIDGE, f"{GATEWAY}/24", table=TABLE)
    pebble = None
    try:
        for name, address in {PROXY: PROXY_IP, **{g: ip for g, (ip, _) in UPSTREAMS.items()}}.items():
            host.create_guest(name, f"{address}/24", GATEWAY, net["dns_ips"][0], lab_dir=LAB_DIR,
                              template=template, bridge=BRIDGE)
            info = host.start_guest(name, timeout=90, lab_dir=LAB_DIR, allow_degraded=True)
            # Path units need an inotify instance each; on a host busy with other labs the per-user limit
            # (fs.inotify.max_user_instances, host-wide) runs out and only these fail. Anything else fails.
            unexpected = [u for u in info["failed_units"] if u not in INOTIFY_ONLY_UNITS]
            assert not unexpected, f"{name} booted with failed units: {unexpected}"
        pebble = Pebble(workdir / "acme", GATEWAY, answer=PROXY_IP).start()
        lab = EdgeLab(host, pebble)
        for name, (address, port) in UPSTREAMS.items():
            host.write_guest_file(name, "/usr/local/bin/edge-echo", ECHO_SERVER.encode(), mode=0o755, lab_dir=LAB_DIR)
            host.attach(name, ["systemd-run", "--unit=edge-echo", "python3", "/usr/local/bin/edge-echo", address,
                               str(port)], lab_dir=LAB_DIR)
        tree = workdir / "salt.tar"
        with tarfile.open(tree, "w", dereference=True) as tar:
            tar.add(ROOT / "salt", arcname="salt")
        host.attach(PROXY, ["tar", "-x", "-C", "/srv"], input=tree.read_bytes(), lab_dir=LAB_DIR)
        host.write_guest_file(PROXY, f"{SALT_CONFIG_DIR}/minion", (
            b"id: reverse-proxy\nfile_client: local\nfile_roots: {base: [/srv/salt]}\n"
            b"pillar_roots: {base: [/srv/pillar]}\nstate_output: changes\n"), lab_dir=LAB_DIR)
        host.write_guest_file(PROXY, "/usr/local/bin/edge-salt-call", SALT_CALL_RECORDER.encode(), mode=0o755,
                              lab_dir=LAB_DIR)
        lab.ca_bundle = pebble.tls_cert.read_text()
        lab.write_pillar(edge_pillar(lab.ca_bundle))
        yield lab
    finally:
        if pebble is not None:
            pebble.stop()
        host.teardown(LAB_DIR, BRIDGE, TABLE)
