"""The nextcloud role in a real LXC guest of the scratch lab, as the lab converges it: everything up to
the download (the server's code has no build reachable here, so `application` and `collabora` are
switched off as the lab overlay does), applied twice, and checked from the host as the proxy would
reach it: nginx answers with Nextcloud's redirects, denied paths and headers; PHP-FPM's pool runs PHP
with the route's limits, OPcache, APCu and the Redis extension; Redis answers on its socket to the
Nextcloud account only; the cron timer is active; the admin's password is in Vault, never in output.
A reverse proxy guest (the reverse_proxy role, certificates from this run's pebble) is put in front:
through it, over verified HTTPS from the host, the CalDAV/CardDAV redirects, each security header
once, and PHP with the route's limits."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

from sitectl import ROOT
from tests.scratchlab import GATEWAY, LAB_DIR, guest_ip, guest_pillar, scratch_site
from tests.scratchlab import pebble as scratch_pebble

pytestmark = pytest.mark.lab

GUEST, PROXY = "nextcloud", "proxy"
DOMAIN = "your-domain.com"
NAME = f"cloud.{DOMAIN}"
SITE = scratch_site(
    {
        # The data directory on a volume of its own, as the example site declares it (PVE's mp0; here the
        # lab's bind mount of a host folder).
        GUEST: {"host": 102, "roles": ["nextcloud"], "uses": ["db"], "memory": 1024,
                "mounts": [{"path": "/srv/nextcloud-data", "size": 8}]},
        # The database guest the role needs in the site; never started (nothing reaches it before install).
        "db": {"host": 103, "roles": ["postgresql"]},
        PROXY: {"host": 100, "roles": ["reverse_proxy"]},
    },
    network={"nameservers": [GATEWAY]},
    domain=DOMAIN,
    databases={"nextcloud": {"clients": [GUEST]}},
    routes={"cloud": {"guest": GUEST, "port": 80, "max_body": "2G", "timeout": 1800}},
)
IP, PROXY_IP = guest_ip(SITE, GUEST), guest_ip(SITE, PROXY)
# As pillar/overlays/lab.sls switches them off.
LAB_PARTS = {key: value for key, value in
             yaml.safe_load((ROOT / "pillar/overlays/lab.sls").read_text())["nextcloud"].items()}
PROBE = """<?php
header('Content-Type: application/json');
echo json_encode([
    'user' => posix_getpwuid(posix_geteuid())['name'],
    'upload_max_filesize' => ini_get('upload_max_filesize'),
    'post_max_size' => ini_get('post_max_size'),
    'max_execution_time' => ini_get('max_execution_time'),
    'memory_limit' => ini_get('memory_limit'),
    'opcache' => function_exists('opcache_get_status') && opcache_get_status(false)['opcache_enabled'],
    'apcu' => function_exists('apcu_enabled') && apcu_enabled(),
    'redis' => class_exists('Redis'),
    'pgsql' => extension_loaded('pdo_pgsql'),
    'extensions' => array_map('strtolower', get_loaded_extensions()),
    'path' => getenv('PATH'),
]);
"""


@pytest.fixture(scope="module")
def pebble(scratch_lab):
    """The ACME server of the route's certificate, on the gateway."""
    with scratch_pebble(scratch_lab, PROXY_IP) as acme:
        yield acme


@pytest.fixture(scope="module")
def backup_repository(scratch_lab):
    """A restic REST repository on the scratch lab's gateway (the lab's own kind: rclone serve restic):
    off the guest, as the site's backup plan wants."""
    from sitectl.lab.backup_repo import BackupRepository

    repo = BackupRepository(scratch_lab.workdir / "backup", GATEWAY, 8008).ensure()
    try:
        yield repo
    finally:
        repo.stop()


@pytest.fixture(scope="module")
def lab(scratch_lab, pebble, backup_repository):
    """The Nextcloud guest applied twice as the lab applies it, and a reverse proxy in front of it with
    certificates from this run's pebble."""
    site_data = {**SITE, "acme": {"directory": pebble.directory, "email": f"hostmaster@{DOMAIN}",
                                  "ca_bundle": pebble.tls_cert.read_text()},
                 "backup": {"repository": backup_repository.url}}
    scratch_lab.start_guests(site_data, GUEST, PROXY)
    bao = scratch_lab.start_vault()
    scratch_lab.push_salt(GUEST, guest_pillar(site_data, GUEST, {"nextcloud": LAB_PARTS}), vault_token=bao.root_token)
    scratch_lab.push_salt(PROXY, guest_pillar(site_data, PROXY))
    first = scratch_lab.apply(GUEST, "nextcloud")
    second = scratch_lab.apply(GUEST, "nextcloud")
    proxy = scratch_lab.apply(PROXY, "reverse_proxy")
    assert proxy.failed == {}, proxy.failed
    # A stand-in front controller (status.php is one) that reports what PHP runs with.
    scratch_lab.write_file(GUEST, "/var/www/nextcloud/status.php", PROBE)
    yield scratch_lab, first, second
    scratch_lab.sh(GUEST, "rm -f /var/www/nextcloud/status.php", check=False)


def through_proxy(pebble, path: str) -> tuple[int, list[tuple[str, str]], str]:
    """GET https://cloud.<domain><path> from the host through the proxy, verified against pebble's
    root: (status, headers as sent, repeated ones repeated, body)."""
    cp = subprocess.run(["curl", "-sS", "--max-time", "10", "--resolve", f"{NAME}:443:{PROXY_IP}", "--cacert",
                         str(pebble.root), "-D", "-", f"https://{NAME}{path}"],
                        capture_output=True, text=True, check=True)
    head, _, body = cp.stdout.partition("\n\n")
    lines = head.splitlines()
    return (int(lines[0].split()[1]), [(k.strip().lower(), v.strip()) for k, _, v in
                                       (line.partition(":") for line in lines[1:])], body)


def test_converges_up_to_the_download_and_the_second_apply_changes_nothing(lab):
    scratch, first, second = lab
    assert first.failed == {}, first.failed
    assert second.failed == {} and second.changed == {}, second.changed
    assert "nextcloud-nginx-running" in first.states and "nextcloud-release-present" not in first.states
    print(f"\nnextcloud role: first apply {first.seconds} s, second {second.seconds} s")


def test_nginx_answers_with_nextclouds_redirects_denied_paths_and_headers(lab):
    redirect = requests.get(f"http://{IP}/.well-known/caldav", allow_redirects=False, timeout=10,
                            headers={"Host": "cloud.your-domain.com"})
    assert redirect.status_code == 301 and redirect.headers["Location"] == "/remote.php/dav/", \
        "relative: the proxy's https and name stay the client's"
    carddav = requests.get(f"http://{IP}/.well-known/carddav", allow_redirects=False, timeout=10)
    assert carddav.status_code == 301 and carddav.headers["Location"] == "/remote.php/dav/"
    other = requests.get(f"http://{IP}/.well-known/webfinger", allow_redirects=False, timeout=10)
    assert other.status_code == 301 and other.headers["Location"] == "/index.php/.well-known/webfinger"
    for denied in ("/config/config.php", "/data/", "/occ", "/.htaccess", "/3rdparty/x", "/lib/base.php"):
        assert requests.get(f"http://{IP}{denied}", timeout=10).status_code == 404, denied
    answer = requests.get(f"http://{IP}/status.php", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["X-Robots-Tag"] == "noindex, nofollow"
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    assert answer.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert "X-Powered-By" not in answer.headers and "nginx/" not in answer.headers.get("Server", "")


def test_php_fpm_runs_the_pool_with_the_routes_limits_and_the_caches(lab):
    scratch, _, _ = lab
    php = requests.get(f"http://{IP}/status.php", timeout=10).json()
    assert php["user"] == "nextcloud"
    assert php["upload_max_filesize"] == php["post_max_size"] == "2G", "the route's max_body"
    assert php["max_execution_time"] == "1800", "the route's timeout"
    assert php["memory_limit"] == "512M" and php["opcache"] is True and php["apcu"] is True
    assert php["redis"] is True and php["pgsql"] is True
    assert {"intl", "gd", "imagick", "bcmath", "gmp", "zip", "curl", "mbstring", "xml"} <= set(php["extensions"])
    assert php["path"] == "/usr/local/bin:/usr/bin:/bin"
    ping = scratch.sh(GUEST, "curl -fsS http://127.0.0.1/fpm-ping").stdout.strip()
    assert ping == "pong"
    assert requests.get(f"http://{IP}/fpm-ping", timeout=10).status_code == 403, "the ping is for this guest only"
    pool = scratch.sh(GUEST, "grep -E '^pm\\.max_children' /etc/php/8.2/fpm/pool.d/nextcloud.conf").stdout.strip()
    assert pool == "pm.max_children = 8", "1024 MiB, half for PHP, 64 MB a child"
    assert scratch.sh(GUEST, "test -e /etc/php/8.2/fpm/pool.d/www.conf", check=False).returncode == 1


def test_a_pool_php_fpm_rejects_never_replaces_the_running_one(lab):
    scratch, _, _ = lab
    before = scratch.sh(GUEST, "sha256sum /etc/php/8.2/fpm/pool.d/nextcloud.conf").stdout
    bad = scratch.sh(GUEST, "printf '[x]\\npm = sometimes\\n' > /tmp/bad.conf && "
                            "/usr/local/sbin/nextcloud-fpm-check /tmp/bad.conf", check=False)
    assert bad.returncode != 0, "the check refuses a pool php-fpm cannot load"
    good = scratch.sh(GUEST, "/usr/local/sbin/nextcloud-fpm-check /etc/php/8.2/fpm/pool.d/nextcloud.conf", check=False)
    assert good.returncode == 0, good.stderr
    assert scratch.sh(GUEST, "sha256sum /etc/php/8.2/fpm/pool.d/nextcloud.conf").stdout == before


def test_redis_answers_on_its_socket_to_nextcloud_only_and_the_cron_timer_is_active(lab):
    scratch, _, _ = lab
    pong = scratch.sh(GUEST, "runuser -u nextcloud -- redis-cli -s /run/redis/redis-server.sock ping").stdout.strip()
    assert pong == "PONG"
    refused = scratch.sh(GUEST, "runuser -u nobody -- redis-cli -s /run/redis/redis-server.sock ping", check=False)
    assert "PONG" not in refused.stdout, "only redis's group reaches the socket"
    tcp = scratch.sh(GUEST, "ss -Hltn", check=False).stdout
    assert ":6379" not in tcp, "no TCP port"
    timer = scratch.sh(GUEST, "systemctl is-active nextcloud-cron.timer; systemctl is-enabled nextcloud-cron.timer")
    assert timer.stdout.split() == ["active", "enabled"]
    data = scratch.sh(GUEST, "stat -c '%U %a' /srv/nextcloud-data").stdout.strip()
    assert data == "nextcloud 750"


def test_the_data_directory_is_the_guests_own_volume_not_its_root_disk(lab):
    scratch, first, _ = lab
    assert first.states["nextcloud-data-volume-mounted"]["result"] is True
    assert scratch.sh(GUEST, "mountpoint -q /srv/nextcloud-data", check=False).returncode == 0
    scratch.sh(GUEST, "runuser -u nextcloud -- sh -c 'echo kept > /srv/nextcloud-data/probe.txt'")
    try:
        on_host = Path(LAB_DIR) / GUEST / "mounts" / "mp0" / "probe.txt"
        assert on_host.read_text() == "kept\n", "written to the volume, not to the guest's root"
    finally:
        scratch.sh(GUEST, "rm -f /srv/nextcloud-data/probe.txt", check=False)
    assert scratch.sh(GUEST, "mountpoint -q /var/www", check=False).returncode != 0, "the code stays on the root"


def test_the_backup_job_ships_the_data_directory_and_config_php_off_the_guest(lab, backup_repository):
    scratch, _, _ = lab
    scratch.sh(GUEST, "runuser -u nextcloud -- sh -c 'echo a file > /srv/nextcloud-data/users-file.txt' && "
                      "install -d -o nextcloud /var/www/nextcloud/config && "
                      "echo \"<?php \\$CONFIG = ['instanceid' => 'ocprobe'];\" > /var/www/nextcloud/config/config.php")
    try:
        ran = scratch.sh(GUEST, "systemctl start platform-backup@nextcloud.service; rc=$?; "
                                "journalctl -u platform-backup@nextcloud.service -n 20 --no-pager -o cat; exit $rc",
                         check=False)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert list((backup_repository.data / f"{GUEST}-nextcloud" / "snapshots").iterdir()), "a snapshot off the guest"
        listed = scratch.sh(GUEST, "set -a; . /etc/platform-backup/nextcloud.conf; restic ls --quiet latest").stdout
        assert "/srv/nextcloud-data/users-file.txt" in listed.splitlines()
        assert "/var/backups/nextcloud/config.php" in listed.splitlines()
        mode = scratch.sh(GUEST, "stat -c '%U %a' /var/backups/nextcloud/config.php").stdout.strip()
        assert mode == "root 600"
        metrics = scratch.sh(GUEST, "cat /var/lib/prometheus/node-exporter/platform_backup_nextcloud.prom").stdout
        assert 'platform_backup_last_success_timestamp_seconds{job="nextcloud"}' in metrics
    finally:
        scratch.sh(GUEST, "rm -rf /srv/nextcloud-data/users-file.txt /var/www/nextcloud/config "
                          "/var/backups/nextcloud/config.php", check=False)


def test_the_admin_password_is_generated_into_vault_and_never_shown(lab):
    scratch, first, second = lab
    password = scratch.bao.read("roles/nextcloud/admin")
    assert len(password) >= 32
    assert all(password not in run.raw for run in (first, second))
    assert json.dumps(first.states).find(password) == -1


def test_the_proxys_route_redirects_caldav_and_carddav_and_sends_each_header_once(lab, pebble):
    for path in ("/.well-known/caldav", "/.well-known/carddav"):
        status, headers, _ = through_proxy(pebble, path)
        assert status == 301 and dict(headers)["location"] == f"https://{NAME}/remote.php/dav/", path
    status, headers, body = through_proxy(pebble, "/status.php")
    assert status == 200, body
    php = json.loads(body)
    assert php["upload_max_filesize"] == "2G" and php["max_execution_time"] == "1800"
    names = [name for name, _ in headers]
    for header, value in {"x-robots-tag": "noindex, nofollow", "x-frame-options": "SAMEORIGIN",
                          "referrer-policy": "no-referrer", "x-content-type-options": "nosniff"}.items():
        assert names.count(header) == 1, f"{header} sent {names.count(header)} times"
        assert dict(headers)[header] == value
    assert dict(headers)["strict-transport-security"].startswith("max-age=")
