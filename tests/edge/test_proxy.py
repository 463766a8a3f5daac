"""The reverse_proxy role in a real guest against a real ACME server (pebble), checked from the host.

The proxy guest applies the role masterless, twice; certificates come from pebble over http-01
(pebble's DNS answers every name with the proxy's address). Every HTTPS check verifies the served
chain against the root pebble generated for this run, as a browser would against Let's Encrypt's.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess

import pytest
from cryptography import x509

from tests.edge.edgelab import (
    DOMAIN,
    EVENT_LOG,
    PROXY,
    PROXY_IP,
    edge_pillar,
)

pytestmark = pytest.mark.lab

ROUTES = {"nextcloud": "nextcloud", "mail": "mailcow"}  # route -> the guest that must answer


def fqdn(route: str) -> str:
    return f"{route}.{DOMAIN}"


def curl(edge_lab, url: str, *extra: str) -> subprocess.CompletedProcess:
    host = url.split("/")[2]
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--resolve", f"{host}:443:{PROXY_IP}", "--resolve",
         f"{host}:80:{PROXY_IP}", "--cacert", str(edge_lab.pebble.root), "-D", "-", *extra, url],
        capture_output=True, text=True, check=False)


def split_response(out: str) -> tuple[int, dict, str]:
    head, _, body = out.partition("\n\n")  # text mode: curl's CRLFs arrive as newlines
    lines = head.splitlines()
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def served_certificate(edge_lab, name: str) -> x509.Certificate:
    context = ssl.create_default_context(cafile=str(edge_lab.pebble.root))
    with socket.create_connection((PROXY_IP, 443), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=name) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


@pytest.fixture(scope="module")
def converged(edge_lab):
    first = edge_lab.apply()
    second = edge_lab.apply()
    print(f"\nfirst apply {first.seconds}s ({len(first.changed)} changed), second {second.seconds}s")
    return first, second


def test_first_apply_converges_and_the_second_changes_nothing(converged):
    first, second = converged
    assert first.rc == 0 and not first.failed, first.failed
    for lineage in (fqdn("nextcloud"), fqdn("mail")):
        assert f"reverse-proxy-certificate-{lineage}-issued" in first.changed
    assert "reverse-proxy-nginx-tls-config-managed" in first.changed, "the HTTPS servers came after the certificates"
    assert second.rc == 0 and not second.failed, second.failed
    assert second.changed == {}, f"the second apply changed: {sorted(second.changed)}"


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_each_route_is_served_over_https_verified_against_pebbles_root(edge_lab, converged, route):
    cp = curl(edge_lab, f"https://{fqdn(route)}/some/path?q=1")
    assert cp.returncode == 0, cp.stderr
    status, headers, body = split_response(cp.stdout)
    assert status == 200
    assert headers["strict-transport-security"] == "max-age=63072000"
    echoed = json.loads(body)
    assert echoed["guest"] == ROUTES[route], "the route reaches its own guest"
    assert echoed["path"] == "/some/path?q=1"
    sent = {k.lower(): v for k, v in echoed["headers"].items()}
    assert sent["host"] == fqdn(route)
    assert sent["x-forwarded-host"] == fqdn(route)
    assert sent["x-forwarded-proto"] == "https"
    assert sent["x-real-ip"] == "10.77.95.1" and sent["x-forwarded-for"] == "10.77.95.1"
    cert = served_certificate(edge_lab, fqdn(route))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    assert names == [fqdn(route)], "one certificate (lineage) per route"


def test_websocket_upgrade_is_passed_only_where_the_route_asks_for_it(edge_lab, converged):
    upgrade = ("--http1.1", "-H", "Upgrade: websocket", "-H", "Connection: Upgrade")  # no Upgrade in HTTP/2
    mail = json.loads(split_response(curl(edge_lab, f"https://{fqdn('mail')}/ws", *upgrade).stdout)[2])
    sent = {k.lower(): v for k, v in mail["headers"].items()}
    assert sent["upgrade"] == "websocket" and sent["connection"] == "upgrade"
    cloud = json.loads(split_response(curl(edge_lab, f"https://{fqdn('nextcloud')}/ws", *upgrade).stdout)[2])
    assert "upgrade" not in {k.lower() for k in cloud["headers"]}


def test_max_body_is_per_route(edge_lab, converged):
    context = ssl.create_default_context(cafile=str(edge_lab.pebble.root))
    with socket.create_connection((PROXY_IP, 443), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=fqdn("mail")) as tls:
        tls.sendall(f"POST / HTTP/1.1\r\nHost: {fqdn('mail')}\r\nContent-Length: {65 * 2**20}\r\n\r\n".encode())
        assert tls.recv(64).startswith(b"HTTP/1.1 413"), "mail allows 64M"
    conf = edge_lab.sh(PROXY, "cat /etc/nginx/platform-tls.d/servers.conf").stdout
    assert "client_max_body_size 16G;" in conf and "proxy_read_timeout 3600s;" in conf


def test_http_redirects_to_https_except_the_acme_challenge(edge_lab, converged):
    status, headers, _ = split_response(curl(edge_lab, f"http://{fqdn('nextcloud')}/a?b=c").stdout)
    assert status == 301 and headers["location"] == f"https://{fqdn('nextcloud')}/a?b=c"
    edge_lab.sh(PROXY, "echo probe > /var/www/acme/.well-known/acme-challenge/probe")
    status, _, body = split_response(curl(edge_lab, f"http://{fqdn('nextcloud')}/.well-known/acme-challenge/probe").stdout)
    assert (status, body.strip()) == (200, "probe")


def test_unknown_names_get_no_answer_and_no_handshake(edge_lab, converged):
    http = curl(edge_lab, f"http://unknown.{DOMAIN}/")
    assert http.returncode == 52 and http.stdout == "", "444: the connection is closed without a response"
    https = curl(edge_lab, f"https://unknown.{DOMAIN}/")
    assert https.returncode == 35, f"the TLS handshake is refused: {https.stderr}"
    assert "unrecognized name" in https.stderr or "alert" in https.stderr


def test_modern_tls_only_and_no_ocsp_stapling_for_a_certificate_without_responder(edge_lab, converged):
    context = ssl.create_default_context(cafile=str(edge_lab.pebble.root))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((PROXY_IP, 443), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=fqdn("mail")) as tls:
        assert tls.version() == "TLSv1.2" and tls.cipher()[0].startswith("ECDHE-")
    cert = edge_lab.sh(PROXY, f"openssl x509 -noout -ocsp_uri -in /etc/letsencrypt/live/{fqdn('mail')}/cert.pem")
    assert cert.stdout.strip() == "", "pebble's certificates name no OCSP responder"
    assert "ssl_stapling" not in edge_lab.sh(PROXY, "cat /etc/nginx/nginx.conf /etc/nginx/platform-tls.d/*.conf").stdout


def test_stub_status_on_loopback_only_and_the_exporter_on_the_guest_address(edge_lab, converged):
    status = edge_lab.sh(PROXY, "python3 -c \"import urllib.request as u; "
                                "print(u.urlopen('http://127.0.0.1:8080/stub_status').read().decode())\"")
    assert "Active connections" in status.stdout
    with pytest.raises(OSError):
        socket.create_connection((PROXY_IP, 8080), timeout=3).close()
    metrics = subprocess.run(["curl", "-sS", "--max-time", "5", f"http://{PROXY_IP}:9113/metrics"],
                             capture_output=True, text=True, check=False).stdout
    assert "nginx_up 1" in metrics


def test_access_log_is_json(edge_lab, converged):
    curl(edge_lab, f"https://{fqdn('nextcloud')}/logged")
    last = edge_lab.sh(PROXY, "grep /logged /var/log/nginx/access.log | tail -n 1").stdout
    entry = json.loads(last)
    assert entry["host"] == fqdn("nextcloud") and entry["status"] == 200 and entry["tls"] == "TLSv1.3"
    assert entry["upstream_addr"] == "10.77.95.102:80"


def test_a_config_nginx_rejects_fails_the_state_and_the_old_one_keeps_serving(edge_lab, converged):
    files = "/etc/nginx/nginx.conf /etc/nginx/platform-tls.d/servers.conf"
    live = edge_lab.sh(PROXY, f"sha256sum {files}").stdout
    edge_lab.write_pillar(edge_pillar(edge_lab.ca_bundle, routes_override={"mail": {"max_body": "64 MB"}}))
    try:
        bad = edge_lab.apply()
    finally:
        edge_lab.write_pillar(edge_pillar(edge_lab.ca_bundle))
    assert bad.rc != 0
    failed = bad.failed[
        "file_|-reverse-proxy-nginx-tls-config-managed_|-/etc/nginx/platform-tls.d/servers.conf_|-managed"]
    assert failed.startswith("check_cmd execution failed"), failed
    assert 'arguments in "client_max_body_size" directive' in failed and "test failed" in failed, "nginx says why"
    assert edge_lab.sh(PROXY, f"sha256sum {files}").stdout == live, "the live config is untouched"
    cp = curl(edge_lab, f"https://{fqdn('mail')}/still")
    assert cp.returncode == 0 and split_response(cp.stdout)[0] == 200, "the running proxy keeps serving"
    again = edge_lab.apply()
    assert again.rc == 0 and again.changed == {}


def test_forced_renewal_runs_the_deploy_hook_and_nginx_serves_the_new_certificate(edge_lab, converged):
    unit = edge_lab.sh(PROXY, "systemctl show certbot.service -p Environment").stdout
    assert "REQUESTS_CA_BUNDLE=/etc/letsencrypt/platform-acme-ca.pem" in unit, "certbot.timer's renewals trust pebble"
    before = {r: served_certificate(edge_lab, fqdn(r)).serial_number for r in ROUTES}
    edge_lab.sh(PROXY, f"rm -f {EVENT_LOG}")
    renew = edge_lab.sh(PROXY, "certbot renew --force-renewal --no-random-sleep-on-renew", check=False, timeout=300,
                        env={"REQUESTS_CA_BUNDLE": "/etc/letsencrypt/platform-acme-ca.pem"})
    assert renew.returncode == 0, renew.stdout + renew.stderr
    after = {r: served_certificate(edge_lab, fqdn(r)).serial_number for r in ROUTES}
    for route in ROUTES:
        assert after[route] != before[route], f"{route}: nginx still serves the old certificate"
    events = edge_lab.sh(PROXY, f"cat {EVENT_LOG}").stdout.splitlines()
    for route in ROUTES:
        assert f'--retcode-passthrough event.send platform/acme/renewed {{"lineage": "{fqdn(route)}"}}' in events
    journal = edge_lab.sh(PROXY, "journalctl -t platform-acme --no-pager -o cat").stdout
    assert f"renewed {fqdn('mail')}: nginx reloaded" in journal
    assert f"renewed {fqdn('mail')}: event platform/acme/renewed NOT sent (master unreachable)" in journal, \
        "masterless: the event is attempted and its failure logged, the renewal still counts"
    assert "PRIVATE KEY" not in "\n".join(events)
    assert edge_lab.apply().changed == {}, "a renewal leaves nothing for Salt to change"


def test_expiry_check_fires_an_event_per_lineage_close_to_its_end(edge_lab, converged):
    edge_lab.sh(PROXY, f"rm -f {EVENT_LOG}")
    assert edge_lab.sh(PROXY, "systemctl is-enabled acme-expiry-check.timer").stdout.strip() == "enabled"
    edge_lab.sh(PROXY, "systemctl start acme-expiry-check.service", check=False, timeout=120)
    events = edge_lab.sh(PROXY, f"cat {EVENT_LOG}").stdout
    for route in ROUTES:
        assert f'event.send platform/acme/expiring {{"lineage": "{fqdn(route)}", "days_left": ' in events

