"""Nextcloud in the whole-site lab (the same `sitectl lab up` as test_site.py, shared through the
session's ``site_lab``): the role converges up to the download (the server's code and Collabora have no
build reachable here and the report says so), and is checked from outside through the reverse proxy
with the lab pebble's root, as a CalDAV client and a browser would: the .well-known redirects, the
security headers once each, PHP behind the route with the route's limits. Then the guest's grants
(its database credential and its admin password in Vault, metadata only) and the upgrade runner's
order: the database's backup on the postgresql guest before the Nextcloud guest applies."""

from __future__ import annotations

import io
import json
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from sitectl import labctl
from tests.lab.test_site import attach, connect_from, ip, salt_cmd

pytestmark = pytest.mark.lab

NAME = "nextcloud.your-domain.com"
HEADERS = {"referrer-policy": "no-referrer", "x-content-type-options": "nosniff", "x-frame-options": "SAMEORIGIN",
           "x-permitted-cross-domain-policies": "none", "x-robots-tag": "noindex, nofollow",
           "x-xss-protection": "1; mode=block"}
PROBE = ("<?php header('Content-Type: application/json'); echo json_encode(['upload' => ini_get('upload_max_filesize'),"
         " 'time' => ini_get('max_execution_time'), 'https' => $_SERVER['HTTPS'] ?? '',"
         " 'forwarded' => $_SERVER['HTTP_X_FORWARDED_PROTO'] ?? '']);\n")


def https(site_lab, path: str) -> tuple[int, list[tuple[str, str]], str]:
    """GET ``path`` of the Nextcloud route through the proxy, the chain verified against pebble's root:
    (status, headers as sent, in order and repeated as they came, body)."""
    context = ssl.create_default_context(cafile=str(site_lab.state / "lab-acme" / "pebble-root.pem"))
    with socket.create_connection((ip(site_lab, "reverse-proxy"), 443), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=NAME) as tls:
            tls.sendall(f"GET {path} HTTP/1.0\r\nHost: {NAME}\r\n\r\n".encode())  # 1.0: never chunked
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    return int(lines[0].split()[1]), headers, body


def test_the_nextcloud_guest_converges_up_to_the_download_and_the_report_says_what_it_does_not(site_lab):
    first, second = site_lab.report["first"]["nextcloud"], site_lab.report["second"]["nextcloud"]
    assert first["failed"] == 0 and second["failed"] == 0 and second["changed"] == 0
    out = io.StringIO()
    labctl.print_table(site_lab.lab, {}, {}, out=out)
    partly = out.getvalue().split("converged in part (")[1]
    assert "nextcloud.application" in partly and "nextcloud.collabora" in partly
    assert "download site is unreachable" in partly
    guest = attach(site_lab, "nextcloud", ["systemctl", "is-active", "php8.2-fpm", "nginx", "redis-server",
                                           "nextcloud-cron.timer"])
    assert guest.stdout.split() == ["active"] * 4, guest.stdout
    assert attach(site_lab, "nextcloud", ["test", "-e", "/var/www/nextcloud/version.php"]).returncode == 1, \
        "no Nextcloud code in the lab: the application is not claimed"


def test_caldav_and_carddav_clients_are_redirected_by_the_proxy(site_lab):
    for path in ("/.well-known/caldav", "/.well-known/carddav"):
        status, headers, _ = https(site_lab, path)
        assert status == 301 and dict(headers)["location"] == f"https://{NAME}/remote.php/dav/", path


def test_php_answers_behind_the_route_with_its_limits_and_each_security_header_once(site_lab):
    written = attach(site_lab, "nextcloud", ["sh", "-c", "mkdir -p /var/www/nextcloud && cat > "
                                             "/var/www/nextcloud/status.php"], data=PROBE)
    assert written.returncode == 0, written.stderr
    try:
        status, headers, body = https(site_lab, "/status.php")
    finally:
        attach(site_lab, "nextcloud", ["rm", "-f", "/var/www/nextcloud/status.php"])
    assert status == 200, body
    php = json.loads(body)
    assert php == {"upload": "16G", "time": "3600", "https": "on", "forwarded": "https"}
    names = [name for name, _ in headers]
    for header, value in HEADERS.items():
        assert names.count(header) == 1, f"{header} sent {names.count(header)} times"
        assert dict(headers)[header] == value
    assert dict(headers)["strict-transport-security"].startswith("max-age=")
    assert "x-powered-by" not in names


def test_the_nextcloud_guest_reaches_its_database_and_its_secrets_exist_in_vault(site_lab):
    assert connect_from(site_lab, "nextcloud", "postgresql", 5432) == "open"
    credential, code = salt_cmd(site_lab, "nextcloud", "vault_server.secret_version",
                                "roles/postgresql/users/nextcloud")
    assert code == 0 and credential["fields"] == ["password"], "the site's grant lets it read its database owner's"
    admin, code = salt_cmd(site_lab, "nextcloud", "vault_server.secret_version", "roles/nextcloud/admin")
    assert code == 0 and admin["fields"] == ["password"], "generated by the role, under its own policy"
    other, code = salt_cmd(site_lab, "nextcloud", "vault_server.secret_version", "roles/postgresql/users/chat")
    assert code != 0 and "permission denied" in str(other)


def test_the_upgrade_runner_backs_the_database_up_before_the_guest_applies(site_lab):
    def backups():
        listed = attach(site_lab, "postgresql", ["ls", "-1", "/var/backups/postgresql"])
        return set(listed.stdout.split())

    before = backups()
    salt_run = str(Path(sys.executable).parent / "salt-run")
    ran = subprocess.run([salt_run, "-c", str(site_lab.lab.conf), "nextcloud.upgrade", "--out", "json"],
                         capture_output=True, text=True, check=False, timeout=900)
    result = json.loads(ran.stdout)
    assert result["result"] is True, result
    assert result["upgraded"]["nextcloud"]["backup"] == {"guest": "postgresql", "unit": "postgresql-backup.service"}
    assert backups() - before, "a new backup of the database"
