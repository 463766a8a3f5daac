"""The reverse_proxy role in a real guest against a real ACME server (pebble), checked from the host.

The proxy guest applies the role masterless in the scratch lab (tests/scratchlab.py), twice, with two
upstream guests answering on their routes' ports; certificates come from pebble over http-01 (pebble
and its DNS, pebble-challtestsrv, listen on the lab's gateway address and answer every name with the
proxy's address). Every HTTPS check verifies the served chain against the root pebble generated for
this run, as a browser would against Let's Encrypt's.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess

import pytest
from cryptography import x509

from sitectl.lab.pebble import Pebble
from tests.scratchlab import GATEWAY, guest_ip, guest_pillar, scratch_site
from tests.scratchlab import pebble as scratch_pebble

pytestmark = pytest.mark.lab

DOMAIN = "your-domain.com"
PROXY = "reverse-proxy"
ROUTES = {"nextcloud": "nextcloud", "mail": "mailcow"}  # route -> the guest that must answer
SITE = scratch_site(
    {
        PROXY: {"host": 100, "roles": ["reverse_proxy"]},
        # nextcloud needs its database guest in the site; this test never starts it.
        "nextcloud": {"host": 102, "roles": ["nextcloud"], "uses": ["db"]},
        "db": {"host": 103, "roles": ["postgresql"]},
        "mailcow": {"host": 104, "roles": ["mailcow"]},
    },
    network={"nameservers": [GATEWAY]},
    domain=DOMAIN,
    routes={
        "nextcloud": {"guest": "nextcloud", "port": 80, "max_body": "16G", "timeout": 3600},
        "mail": {"guest": "mailcow", "port": 8080, "max_body": "64M", "websocket": True},
    },
)
PROXY_IP = guest_ip(SITE, PROXY)
EVENT_LOG = "/var/log/acme-salt-call.log"

# Each upstream guest answers on its route's port with an echo of what it got.
ECHO_SERVER = r"""
import json, socket, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
name = socket.gethostname()
class Echo(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"guest": name, "path": self.path, "headers": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
HTTPServer((sys.argv[1], int(sys.argv[2])), Echo).serve_forever()
"""

# Records the hook's salt-call arguments, then runs the real salt-call (which, masterless here,
# finds no master and gives up after the hook's timeout).
SALT_CALL_RECORDER = f"""#!/bin/sh
printf '%s\\n' "$*" >> {EVENT_LOG}
exec /usr/bin/salt-call "$@"
"""


def proxy_pillar(pebble: Pebble, routes_override: dict | None = None) -> dict:
    """The pillar the master would compile for the proxy guest, trusting this run's pebble.
    ``routes_override`` changes routes past the site's validation: what nginx itself must refuse."""
    site_data = {**SITE, "acme": {"directory": pebble.directory, "email": f"hostmaster@{DOMAIN}",
                                  "ca_bundle": pebble.tls_cert.read_text()}}
    extra = {"reverse_proxy": {"renewal": {"event_timeout": 5, "salt_call": "/usr/local/bin/acme-salt-call",
                                           "expiry_warn_days": 36500}}}
    pillar = guest_pillar(site_data, PROXY, extra)
    if not routes_override:
        return pillar
    routes = {name: {**route, **routes_override.get(name, {})} for name, route in SITE["routes"].items()}
    return guest_pillar({**site_data, "routes": routes}, PROXY, extra, validate=False)


@pytest.fixture(scope="module")
def pebble(scratch_lab):
    """The ACME server of the route's certificate, on the gateway."""
    with scratch_pebble(scratch_lab, PROXY_IP) as acme:
        yield acme


@pytest.fixture(scope="module")
def lab(scratch_lab, pebble):
    """The proxy and its upstreams up, each upstream serving its echo, Salt pushed into the proxy."""
    scratch_lab.start_guests(SITE, PROXY, *ROUTES.values())
    for route in SITE["routes"].values():
        upstream = route["guest"]
        scratch_lab.write_file(upstream, "/usr/local/bin/echo-server", ECHO_SERVER, mode=0o755)
        scratch_lab.attach(upstream, ["systemd-run", "--unit=echo-server", "python3", "/usr/local/bin/echo-server",
                                      guest_ip(SITE, upstream), str(route["port"])])
    scratch_lab.write_file(PROXY, "/usr/local/bin/acme-salt-call", SALT_CALL_RECORDER, mode=0o755)
    scratch_lab.push_salt(PROXY, proxy_pillar(pebble))
    return scratch_lab


def apply(lab):
    return lab.apply(PROXY, "reverse_proxy")


def fqdn(route: str) -> str:
    return f"{route}.{DOMAIN}"


def curl(pebble, url: str, *extra: str) -> subprocess.CompletedProcess:
    host = url.split("/")[2]
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--resolve", f"{host}:443:{PROXY_IP}", "--resolve",
         f"{host}:80:{PROXY_IP}", "--cacert", str(pebble.root), "-D", "-", *extra, url],
        capture_output=True, text=True, check=False)


def split_response(out: str) -> tuple[int, dict, str]:
    head, _, body = out.partition("\n\n")  # text mode: curl's CRLFs arrive as newlines
    lines = head.splitlines()
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def served_certificate(pebble, name: str) -> x509.Certificate:
    context = ssl.create_default_context(cafile=str(pebble.root))
    with socket.create_connection((PROXY_IP, 443), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=name) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


@pytest.fixture(scope="module")
def converged(lab):
    first = apply(lab)
    second = apply(lab)
    print(f"\nfirst apply {first.seconds}s ({len(first.changed)} changed), second {second.seconds}s")
    return first, second


def test_first_apply_converges_and_the_second_changes_nothing(converged):
    first, second = converged
    assert first.retcode == 0 and not first.failed, first.failed
    for lineage in (fqdn("nextcloud"), fqdn("mail")):
        assert f"reverse-proxy-certificate-{lineage}-issued" in first.changed
    assert "reverse-proxy-nginx-tls-config-managed" in first.changed, "the HTTPS servers came after the certificates"
    assert second.retcode == 0 and not second.failed, second.failed
    assert second.changed == {}, f"the second apply changed: {sorted(second.changed)}"


def test_a_first_issuance_runs_the_deploy_hook_as_a_renewal_does(lab, converged):
    """certbot runs deploy hooks on renewals only: the state that first issued a lineage runs the hook
    itself, so the master hears of it (and hands the mail certificate over) from the first day."""
    first, second = converged
    events = lab.sh(PROXY, f"cat {EVENT_LOG}").stdout.splitlines()
    for route in ROUTES:
        assert f"reverse-proxy-certificate-{fqdn(route)}-first-issuance-announced" in first.changed
        assert f'--retcode-passthrough event.send platform/acme/renewed {{"lineage": "{fqdn(route)}"}}' in events
    assert len(events) == len(ROUTES), "announced once per lineage, not again on the second apply"


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_each_route_is_served_over_https_verified_against_pebbles_root(pebble, converged, route):
    cp = curl(pebble, f"https://{fqdn(route)}/some/path?q=1")
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
    assert sent["x-real-ip"] == GATEWAY and sent["x-forwarded-for"] == GATEWAY
    cert = served_certificate(pebble, fqdn(route))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    assert names == [fqdn(route)], "one certificate (lineage) per route"


def test_websocket_upgrade_is_passed_only_where_the_route_asks_for_it(pebble, converged):
    upgrade = ("--http1.1", "-H", "Upgrade: websocket", "-H", "Connection: Upgrade")  # no Upgrade in HTTP/2
    mail = json.loads(split_response(curl(pebble, f"https://{fqdn('mail')}/ws", *upgrade).stdout)[2])
    sent = {k.lower(): v for k, v in mail["headers"].items()}
    assert sent["upgrade"] == "websocket" and sent["connection"] == "upgrade"
    cloud = json.loads(split_response(curl(pebble, f"https://{fqdn('nextcloud')}/ws", *upgrade).stdout)[2])
    assert "upgrade" not in {k.lower() for k in cloud["headers"]}


def test_max_body_is_per_route(lab, pebble, converged):
    context = ssl.create_default_context(cafile=str(pebble.root))
    with socket.create_connection((PROXY_IP, 443), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=fqdn("mail")) as tls:
        tls.sendall(f"POST / HTTP/1.1\r\nHost: {fqdn('mail')}\r\nContent-Length: {65 * 2**20}\r\n\r\n".encode())
        assert tls.recv(64).startswith(b"HTTP/1.1 413"), "mail allows 64M"
    conf = lab.sh(PROXY, "cat /etc/nginx/platform-tls.d/servers.conf").stdout
    assert "client_max_body_size 16G;" in conf and "proxy_read_timeout 3600s;" in conf


def test_http_redirects_to_https_except_the_acme_challenge(lab, pebble, converged):
    status, headers, _ = split_response(curl(pebble, f"http://{fqdn('nextcloud')}/a?b=c").stdout)
    assert status == 301 and headers["location"] == f"https://{fqdn('nextcloud')}/a?b=c"
    lab.sh(PROXY, "echo probe > /var/www/acme/.well-known/acme-challenge/probe")
    status, _, body = split_response(curl(pebble, f"http://{fqdn('nextcloud')}/.well-known/acme-challenge/probe").stdout)
    assert (status, body.strip()) == (200, "probe")


def test_unknown_names_get_no_answer_and_no_handshake(pebble, converged):
    http = curl(pebble, f"http://unknown.{DOMAIN}/")
    assert http.returncode == 52 and http.stdout == "", "444: the connection is closed without a response"
    https = curl(pebble, f"https://unknown.{DOMAIN}/")
    assert https.returncode == 35, f"the TLS handshake is refused: {https.stderr}"
    assert "unrecognized name" in https.stderr or "alert" in https.stderr


def test_modern_tls_only_and_no_ocsp_stapling_for_a_certificate_without_responder(lab, pebble, converged):
    context = ssl.create_default_context(cafile=str(pebble.root))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((PROXY_IP, 443), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=fqdn("mail")) as tls:
        assert tls.version() == "TLSv1.2" and tls.cipher()[0].startswith("ECDHE-")
    cert = lab.sh(PROXY, f"openssl x509 -noout -ocsp_uri -in /etc/letsencrypt/live/{fqdn('mail')}/cert.pem")
    assert cert.stdout.strip() == "", "pebble's certificates name no OCSP responder"
    assert "ssl_stapling" not in lab.sh(PROXY, "cat /etc/nginx/nginx.conf /etc/nginx/platform-tls.d/*.conf").stdout


def test_stub_status_on_loopback_only_and_the_exporter_on_the_guest_address(lab, converged):
    status = lab.sh(PROXY, "python3 -c \"import urllib.request as u; "
                                "print(u.urlopen('http://127.0.0.1:8080/stub_status').read().decode())\"")
    assert "Active connections" in status.stdout
    with pytest.raises(OSError):
        socket.create_connection((PROXY_IP, 8080), timeout=3).close()
    metrics = subprocess.run(["curl", "-sS", "--max-time", "5", f"http://{PROXY_IP}:9113/metrics"],
                             capture_output=True, text=True, check=False).stdout
    assert "nginx_up 1" in metrics


def test_access_log_is_json(lab, pebble, converged):
    curl(pebble, f"https://{fqdn('nextcloud')}/logged")
    last = lab.sh(PROXY, "grep /logged /var/log/nginx/access.log | tail -n 1").stdout
    entry = json.loads(last)
    assert entry["host"] == fqdn("nextcloud") and entry["status"] == 200 and entry["tls"] == "TLSv1.3"
    assert entry["upstream_addr"] == f"{guest_ip(SITE, 'nextcloud')}:80"


def test_a_config_nginx_rejects_fails_the_state_and_the_old_one_keeps_serving(lab, pebble, converged):
    files = "/etc/nginx/nginx.conf /etc/nginx/platform-tls.d/servers.conf"
    live = lab.sh(PROXY, f"sha256sum {files}").stdout
    lab.set_pillar(PROXY, proxy_pillar(pebble, routes_override={"mail": {"max_body": "64 MB"}}))
    try:
        bad = apply(lab)
    finally:
        lab.set_pillar(PROXY, proxy_pillar(pebble))
    assert bad.retcode != 0
    failed = bad.failed["reverse-proxy-nginx-tls-config-managed"]
    assert failed.startswith("check_cmd execution failed"), failed
    assert 'arguments in "client_max_body_size" directive' in failed and "test failed" in failed, "nginx says why"
    assert lab.sh(PROXY, f"sha256sum {files}").stdout == live, "the live config is untouched"
    cp = curl(pebble, f"https://{fqdn('mail')}/still")
    assert cp.returncode == 0 and split_response(cp.stdout)[0] == 200, "the running proxy keeps serving"
    again = apply(lab)
    assert again.retcode == 0 and again.changed == {}


def test_forced_renewal_runs_the_deploy_hook_and_nginx_serves_the_new_certificate(lab, pebble, converged):
    unit = lab.sh(PROXY, "systemctl show certbot.service -p Environment").stdout
    assert "REQUESTS_CA_BUNDLE=/etc/letsencrypt/platform-acme-ca.pem" in unit, "certbot.timer's renewals trust pebble"
    before = {r: served_certificate(pebble, fqdn(r)).serial_number for r in ROUTES}
    lab.sh(PROXY, f"rm -f {EVENT_LOG}")
    renew = lab.sh(PROXY, "certbot renew --force-renewal --no-random-sleep-on-renew", check=False, timeout=300,
                        env={"REQUESTS_CA_BUNDLE": "/etc/letsencrypt/platform-acme-ca.pem"})
    assert renew.returncode == 0, renew.stdout + renew.stderr
    after = {r: served_certificate(pebble, fqdn(r)).serial_number for r in ROUTES}
    for route in ROUTES:
        assert after[route] != before[route], f"{route}: nginx still serves the old certificate"
    events = lab.sh(PROXY, f"cat {EVENT_LOG}").stdout.splitlines()
    for route in ROUTES:
        assert f'--retcode-passthrough event.send platform/acme/renewed {{"lineage": "{fqdn(route)}"}}' in events
    journal = lab.sh(PROXY, "journalctl -t platform-acme --no-pager -o cat").stdout
    assert f"renewed {fqdn('mail')}: nginx reloaded" in journal
    assert f"renewed {fqdn('mail')}: event platform/acme/renewed NOT sent (master unreachable)" in journal, \
        "masterless: the event is attempted and its failure logged, the renewal still counts"
    assert "PRIVATE KEY" not in "\n".join(events)
    assert apply(lab).changed == {}, "a renewal leaves nothing for Salt to change"


def test_expiry_check_fires_an_event_per_lineage_close_to_its_end(lab, converged):
    lab.sh(PROXY, f"rm -f {EVENT_LOG}")
    assert lab.sh(PROXY, "systemctl is-enabled acme-expiry-check.timer").stdout.strip() == "enabled"
    lab.sh(PROXY, "systemctl start acme-expiry-check.service", check=False, timeout=120)
    events = lab.sh(PROXY, f"cat {EVENT_LOG}").stdout
    for route in ROUTES:
        assert f'event.send platform/acme/expiring {{"lineage": "{fqdn(route)}", "days_left": ' in events

