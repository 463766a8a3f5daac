"""The docker state (Docker Engine on a guest whose roles have `nesting: true`): rendered for the
example site (no daemon), its production key check run against real OpenPGP keys, and converged in a
real nested LXC guest of the scratch lab with the base state: the daemon runs, an image built in the
guest (no registry) starts a container, a second apply changes nothing, and the firewall's forward
path lets a published port through only if the role catalog opens it (issue 13, part 6)."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest
import yaml

from sitectl import ROOT, render
from tests.conftest import state_args
from tests.scratchlab import LAB_DIR, guest_ip, guest_pillar, scratch_site

# The box runs Docker for two nesting roles: mailcow opens its mail ports to anyone, gitlab_runner its
# metrics port to the monitoring guest only. The outsider is any other guest of the site.
BOX, MONITORING, OUTSIDER = "box", "watcher", "outsider"
SITE = scratch_site({
    BOX: {"host": 104, "roles": ["mailcow", "gitlab_runner"]},
    MONITORING: {"host": 120, "roles": ["monitoring"]},
    OUTSIDER: {"host": 110, "roles": ["deploy_runner"]},
})
BOX_IP = guest_ip(SITE, BOX)
LAB_PILLAR = {"docker": {"flavor": "debian"}}  # as pillar/overlays/lab.sls says
IMAGE = "platform-test/busybox:local"
CONTAINER_PORT = 8000
# Published by one container: 587 (mailcow's, from anyone), 9252 (gitlab_runner's, from monitoring),
# 8080 (in no catalog entry). Served by the box itself (host network, the input path): 25 (mailcow's),
# 8081 (no entry).
PUBLISHED = {"submission": 587, "runner-metrics": 9252, "uncatalogued": 8080}
ON_THE_BOX = {"smtp": 25, "uncatalogued": 8081}


# ------------------------------------------------------------------ rendered, no daemon

def show(config, guest: str, pillar=None) -> dict:
    high = render.caller(config, guest).cmd("state.show_sls", "docker", pillar=pillar)
    assert isinstance(high, dict), high
    return high


def rendered(config, guest: str, high: dict, state_id: str) -> str:
    caller = render.caller(config, guest)
    args = state_args(high[state_id], "file")
    with open(caller.cmd("cp.cache_file", args["source"])) as fh:
        return caller.cmd("file.apply_template_on_contents", fh.read(), "jinja", args.get("context", {}), None, "base")


@pytest.mark.render
def test_production_installs_the_pinned_docker_ce_with_compose_from_a_fingerprinted_key(example_config):
    high = show(example_config, "mailcow")
    packages = state_args(high["docker-package-installed"], "pkg")["pkgs"]
    pins = {name: version for item in packages for name, version in item.items()}
    assert set(pins) == {"docker-ce", "docker-ce-cli", "containerd.io", "docker-compose-plugin"}
    assert all(pins.values()), "every package pinned"
    repo = state_args(high["docker-package-repo-managed"], "pkgrepo")
    assert "signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/debian bookworm stable" \
        in repo["name"]
    key = state_args(high["docker-package-repo-key-managed"], "file")
    assert key["check_cmd"] == "/usr/local/sbin/docker-check-repo-key"
    assert "9DC858229FC7DD38854AE2D88D81803C0EBFCD88" in rendered(
        example_config, "mailcow", high, "docker-package-key-check-script-managed")


@pytest.mark.render
def test_daemon_json_keeps_docker_s_dnat_with_rotation_live_restore_and_no_proxy(example_config):
    high = show(example_config, "git-lab-docker-runner")
    daemon = json.loads(rendered(example_config, "git-lab-docker-runner", high, "docker-config-file-managed"))
    assert daemon == {"log-driver": "json-file", "log-opts": {"max-size": "10m", "max-file": "3"},
                      "live-restore": True, "userland-proxy": False, "iptables": True, "ip6tables": False}
    assert state_args(high["docker-config-file-managed"], "file")["check_cmd"] == "/usr/local/sbin/docker-check-config"


def _requisites(high: dict, state_id: str) -> set[str]:
    """The state IDs ``state_id`` requires or watches, directly or through others."""
    found, todo = set(), [state_id]
    while todo:
        spec = high[todo.pop()]
        module = next(k for k in spec if not k.startswith("__"))
        for arg in spec[module]:
            for req in (arg.get("require", []) + arg.get("watch", [])) if isinstance(arg, dict) else []:
                ref = next(iter(req.values()))
                if ref not in found and ref in high:
                    found.add(ref)
                    todo.append(ref)
    return found


@pytest.mark.render
def test_a_guest_without_a_nesting_role_is_refused_before_anything_is_installed(example_config):
    refused, nested = show(example_config, "postgresql"), show(example_config, "mailcow")
    assert "fail_without_changes" in refused["docker-guest-nesting-checked"]["test"]
    assert "succeed_without_changes" in nested["docker-guest-nesting-checked"]["test"]
    ours = [i for i, spec in refused.items()
            if spec["__sls__"].startswith("docker") and i != "docker-guest-nesting-checked"]
    assert "docker-service-running" in ours
    for state_id in ours:
        assert "docker-guest-nesting-checked" in _requisites(refused, state_id), state_id


def _gpg(home, *args: str, input: str | None = None) -> str:
    return subprocess.run(["gpg", "--homedir", str(home), "--batch", *args], input=input, text=True,
                          capture_output=True, check=True).stdout


@pytest.fixture(scope="module")
def two_keys(tmp_path_factory):
    """Two throwaway OpenPGP keys (primary + signing subkey): (fingerprint, armored) each, and both in one file."""
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    keys = []
    for name in ("release", "other"):
        _gpg(home, "--passphrase", "", "--quick-gen-key", f"{name} <{name}@example.org>", "ed25519", "cert", "never")
        fpr = [line.split(":")[9] for line in _gpg(home, "--with-colons", "--list-keys", f"{name}@example.org")
               .splitlines() if line.startswith("fpr:")][0]
        _gpg(home, "--passphrase", "", "--quick-add-key", fpr, "ed25519", "sign", "never")
        keys.append((fpr, _gpg(home, "--armor", "--export", fpr)))
    return keys


@pytest.mark.render
def test_the_repository_key_is_installed_only_with_the_pinned_primary_fingerprint(example_config, two_keys,
                                                                                    tmp_path):
    high = show(example_config, "mailcow")
    (release_fpr, release), (other_fpr, other) = two_keys
    script = rendered(example_config, "mailcow", high, "docker-package-key-check-script-managed")
    script = script.replace("9DC858229FC7DD38854AE2D88D81803C0EBFCD88", release_fpr)
    (tmp_path / "check").write_text(script)
    cases = {"release": (release, 0), "other": (other, 1), "both": (release + other, 1), "junk": ("not a key\n", 1)}
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        cp = subprocess.run(["sh", str(tmp_path / "check"), str(tmp_path / name)], capture_output=True, text=True,
                            check=False)
        assert cp.returncode == expected, f"{name}: {cp.returncode} {cp.stderr}"
    assert other_fpr not in script


@pytest.mark.render
def test_on_guests_with_containers_stopping_the_firewall_keeps_docker_s_tables(example_config):
    def firewall(guest):
        high = render.caller(example_config, guest).cmd("state.show_sls", "common.firewall")
        assert isinstance(high, dict), high
        return high

    drop_in = state_args(firewall("mailcow")["common-firewall-stop-keeps-container-tables"], "file")
    assert drop_in["name"] == "/etc/systemd/system/nftables.service.d/platform.conf"
    assert drop_in["contents"].splitlines() == ["[Service]", "ExecStop=",
                                                "ExecStop=-/usr/sbin/nft delete table inet platform"]
    assert "common-firewall-stop-keeps-container-tables" not in firewall("postgresql")


@pytest.mark.render
def test_the_nested_profile_makes_a_nested_lab_guest_and_the_plain_one_does_not():
    from sitectl.lab import guests, host

    profiles = yaml.safe_load((ROOT / "cloud.profiles.d/platform.conf").read_text())
    assert host.nesting_requested(profiles["debian12-lxc-nested"]["features"])
    assert not host.nesting_requested(profiles["debian12-lxc"].get("features"))
    assert not host.nesting_requested("keyctl=1,nesting=0")
    args = ("box", "/lab", "/tpl", "10.0.0.4/24", "10.0.0.1", "br0")
    nested, plain = guests.render_config(*args, nesting=True), guests.render_config(*args)
    for data_dir in ("var/lib/docker", "var/lib/containerd", "var/lib/rancher"):
        assert f"lxc.mount.entry = /lab/box/nested/{data_dir.replace('/', '-')} {data_dir} none bind,create=dir 0 0" \
            in nested.splitlines()
    assert "devices.allow = c 10:200 rwm" in nested
    assert "nested" not in plain and "10:200" not in plain


# ------------------------------------------------------------------ a real nested guest

@pytest.fixture(scope="module")
def lab(scratch_lab):
    scratch_lab.start_guests(SITE, BOX, MONITORING, OUTSIDER)
    scratch_lab.push_salt(BOX, guest_pillar(SITE, BOX, LAB_PILLAR))
    return scratch_lab


@pytest.fixture(scope="module")
def converged(lab):
    first = lab.apply(BOX, "common,docker")
    second = lab.apply(BOX, "common,docker")
    return first, second


@pytest.fixture(scope="module")
def serving(lab, converged):
    """The image built in the box from busybox (no registry), one container publishing PUBLISHED, and
    the box itself serving ON_THE_BOX on its host network."""
    lab.apt_install(BOX, "busybox-static")
    lab.sh(BOX, f"""set -eu
        root=$(mktemp -d); mkdir -p "$root/bin" "$root/www"; cp /bin/busybox "$root/bin/"
        ln -s busybox "$root/bin/sh"; ln -s busybox "$root/bin/httpd"
        echo served-by-a-container > "$root/www/index.html"
        tar -C "$root" -c . | docker import -c 'CMD ["/bin/httpd", "-f", "-p", "{CONTAINER_PORT}", "-h", "/www"]' \
            - {IMAGE} >/dev/null
        rm -rf "$root"
        docker rm -f web >/dev/null 2>&1 || true
        docker run -d --restart unless-stopped --name web \
            {" ".join(f"-p {p}:{CONTAINER_PORT}" for p in PUBLISHED.values())} {IMAGE} >/dev/null
        mkdir -p /srv/www && echo served-by-the-box > /srv/www/index.html
        """)
    _serve_on_the_box(lab)
    return lab


def _serve_on_the_box(lab) -> None:
    for port in ON_THE_BOX.values():
        lab.attach(BOX, ["systemd-run", "--unit", f"box-httpd-{port}", "busybox", "httpd", "-f", "-p", str(port),
                         "-h", "/srv/www"])


def _wait_until_published(lab) -> None:
    deadline = time.monotonic() + 60
    while not _reaches(lab, "host", PUBLISHED["submission"]) and time.monotonic() < deadline:
        time.sleep(1)


def _reaches(lab, source: str, port: int) -> bool:
    """A TCP connection to the box's port from ``source`` (a guest, or "host") gets an HTTP answer."""
    probe = ("import socket, sys\n"
             "try:\n"
             f"    s = socket.create_connection(({BOX_IP!r}, {port}), timeout=3)\n"
             "    s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); sys.exit(0 if s.recv(64) else 1)\n"
             "except OSError:\n"
             "    sys.exit(1)\n")
    if source == "host":
        try:
            with socket.create_connection((BOX_IP, port), timeout=3) as conn:
                conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
                return bool(conn.recv(64))
        except OSError:
            return False
    return lab.attach(source, ["python3", "-c", probe], check=False).returncode == 0


def _reachability(lab) -> dict[str, dict[str, bool]]:
    sources = {"host (admin)": "host", "monitoring guest": MONITORING, "other guest": OUTSIDER}
    ports = {**{f"container {k} {v}": v for k, v in PUBLISHED.items()},
             **{f"box {k} {v}": v for k, v in ON_THE_BOX.items()}}
    return {label: {src: _reaches(lab, guest, port) for src, guest in sources.items()}
            for label, port in ports.items()}


EXPECTED = {
    "container submission 587": {"host (admin)": True, "monitoring guest": True, "other guest": True},
    "container runner-metrics 9252": {"host (admin)": False, "monitoring guest": True, "other guest": False},
    "container uncatalogued 8080": {"host (admin)": False, "monitoring guest": False, "other guest": False},
    "box smtp 25": {"host (admin)": True, "monitoring guest": True, "other guest": True},
    "box uncatalogued 8081": {"host (admin)": False, "monitoring guest": False, "other guest": False},
}


@pytest.mark.lab
def test_docker_converges_in_a_nested_guest_and_the_second_apply_changes_nothing(lab, converged):
    first, second = converged
    assert not first.failed, first.failed
    assert "docker-service-running" in first.states and "common-firewall-ruleset-managed" in first.states
    assert not second.failed and second.changed == {}, second.changed
    dry = lab.apply(BOX, "common,docker", test=True)
    assert not dry.failed and dry.changed == {}, "test mode on a converged guest: nothing to do"
    info = json.loads(lab.sh(BOX, "docker info --format '{{json .}}'").stdout)
    assert info["Driver"] == "overlay2" and info["LiveRestoreEnabled"] is True
    assert lab.sh(BOX, "systemctl is-enabled docker").stdout.strip() == "enabled"
    print(f"\ndocker: first apply (common + docker) {first.seconds} s, second {second.seconds} s")


@pytest.mark.lab
def test_an_image_built_in_the_guest_runs_a_container(serving):
    state = serving.sh(BOX, "docker inspect -f '{{.State.Running}} {{.NetworkSettings.IPAddress}}' web").stdout.split()
    assert state[0] == "true"
    # the container answers on its own address: whatever is refused below is the firewall's doing
    answer = serving.sh(BOX, f"busybox wget -qO- http://{state[1]}:{CONTAINER_PORT}/").stdout
    assert answer.strip() == "served-by-a-container"


@pytest.mark.lab
def test_published_ports_are_reachable_only_as_the_role_catalog_opens_them(serving):
    assert _reachability(serving) == EXPECTED


@pytest.mark.lab
def test_the_filter_holds_after_the_firewall_and_docker_restart(serving):
    # The control: without the platform's forward chain, Docker's own rules publish 8080 to anyone.
    serving.sh(BOX, "nft delete chain inet platform forward")
    assert _reaches(serving, OUTSIDER, PUBLISHED["uncatalogued"])
    # Restarting the firewall brings the chain back and leaves Docker's tables (its DNAT) in place.
    serving.sh(BOX, "systemctl restart nftables")
    assert _reachability(serving) == EXPECTED
    container = serving.sh(BOX, "docker inspect -f '{{.Id}}' web").stdout.strip()
    serving.sh(BOX, "systemctl restart docker")
    _wait_until_published(serving)
    assert _reachability(serving) == EXPECTED
    # live-restore: the same container ran through the engine's restart
    assert serving.sh(BOX, "docker inspect -f '{{.Id}} {{.RestartCount}}' web").stdout.split() == [container, "0"]


@pytest.mark.lab
def test_the_filter_holds_after_the_guest_restarts(serving):
    from sitectl.lab import host

    host.stop_guest(BOX, lab_dir=LAB_DIR)
    host.start_guest(BOX, timeout=90, lab_dir=LAB_DIR, allow_degraded=True)
    _serve_on_the_box(serving)
    _wait_until_published(serving)
    assert _reachability(serving) == EXPECTED


@pytest.mark.lab
def test_a_daemon_json_the_engine_cannot_read_is_refused_by_the_check(serving):
    serving.write_file(BOX, "/root/broken.json", '{"log-driver": "json-file",')
    serving.write_file(BOX, "/root/fine.json", '{"live-restore": true}')
    assert serving.attach(BOX, ["/usr/local/sbin/docker-check-config", "/root/broken.json"], check=False).returncode
    serving.attach(BOX, ["/usr/local/sbin/docker-check-config", "/root/fine.json"])


@pytest.mark.lab
def test_a_service_port_dnatted_to_a_pod_on_cni0_is_filtered_the_same(serving):
    """k3s publishes service ports the way Docker does, by DNAT in iptables' nat table (kube-proxy's
    KUBE-SERVICES, the CNI portmap plugin's hostPorts), to pods behind the `cni0` bridge. No k3s build
    is reachable here: this is that path built by hand in the box (a pod network namespace on cni0,
    DNAT rules and FORWARD accepts as kube-proxy writes them), not k3s itself. 465 is a catalog port
    of the box (mailcow's smtps, from anyone) that nothing on the box serves; 30080 a NodePort the
    catalog does not open."""
    serving.sh(BOX, """set -eu
        ip netns add pod
        ip link add cni0 type bridge && ip addr add 10.42.0.1/24 dev cni0 && ip link set cni0 up
        ip link add vethpod type veth peer name eth0 netns pod && ip link set vethpod master cni0 up
        ip -n pod addr add 10.42.0.10/24 dev eth0 && ip -n pod link set eth0 up && ip -n pod link set lo up
        ip -n pod route add default via 10.42.0.1
        systemd-run --unit pod-httpd ip netns exec pod busybox httpd -f -p 8000 -h /srv/www
        iptables -t nat -N TEST-SERVICES
        iptables -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j TEST-SERVICES
        for port in 465 30080; do
            iptables -t nat -A TEST-SERVICES -p tcp --dport "$port" -j DNAT --to-destination 10.42.0.10:8000
        done
        iptables -I FORWARD -s 10.42.0.0/24 -j ACCEPT && iptables -I FORWARD -d 10.42.0.0/24 -j ACCEPT
        """)
    deadline = time.monotonic() + 20
    while serving.sh(BOX, "busybox wget -qO- http://10.42.0.10:8000/", check=False).returncode and \
            time.monotonic() < deadline:
        time.sleep(0.5)
    assert serving.sh(BOX, "busybox wget -qO- http://10.42.0.10:8000/").stdout.strip() == "served-by-the-box"
    sources = {"host (admin)": "host", "monitoring guest": MONITORING, "other guest": OUTSIDER}
    seen = {port: {label: _reaches(serving, src, port) for label, src in sources.items()} for port in (465, 30080)}
    assert seen == {465: dict.fromkeys(sources, True), 30080: dict.fromkeys(sources, False)}
