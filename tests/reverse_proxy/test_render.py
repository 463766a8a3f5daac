"""The reverse_proxy role rendered for the example site and the lab overlay with Salt's own compiler
(no daemon), and its nginx configuration checked by the real `nginx -t` in each of its shapes."""

from __future__ import annotations

import copy
import shutil
import subprocess

import pytest

from sitectl import ROOT, render
from tests.conftest import guest_with_role, load_site, state_args

pytestmark = pytest.mark.render

PROXY = guest_with_role(load_site(), "reverse_proxy")

LINEAGES = ("api.your-domain.com", "app.your-domain.com", "chat.your-domain.com", "mail.your-domain.com",
            "nextcloud.your-domain.com", "office.your-domain.com")
DNS01 = {"site": {"acme": {"challenge": "dns-01", "dns_server": "10.10.10.1"}}}


def show(config, pillar=None) -> dict:
    high = render.caller(config, PROXY).cmd("state.show_sls", "reverse_proxy", pillar=pillar)
    assert isinstance(high, dict), high
    return high


@pytest.fixture(scope="module")
def proxy_high(example_config):
    return show(example_config)


@pytest.fixture(scope="module")
def lab_config(tmp_path_factory):
    from sitectl.config import SaltSettings, write_config

    return write_config(SaltSettings(state_dir=tmp_path_factory.mktemp("edge-lab-state"), overlay="lab"))


def test_one_certificate_per_route_from_the_sites_directory_over_http01(proxy_high):
    for lineage in LINEAGES:
        cmd = state_args(proxy_high[f"reverse-proxy-certificate-{lineage}-issued"], "cmd")
        assert "certonly" in cmd["name"] and "--authenticator webroot --webroot-path /var/www/acme" in cmd["name"]
        assert "--server https://acme-v02.api.letsencrypt.org/directory" in cmd["name"]
        assert "--email hostmaster@your-domain.com" in cmd["name"]
        assert f"--cert-name {lineage}" in cmd["name"] and f"--domain '{lineage}'" in cmd["name"]
        assert cmd["creates"] == f"/etc/letsencrypt/renewal/{lineage}.conf", "a second run requests nothing"
        assert {"unit": "reverse-proxy-nginx-running"} in cmd["require"], "http-01 needs nginx on port 80 first"
        assert "env" not in cmd, "production trusts the system's CAs only"
    packages = state_args(proxy_high["reverse-proxy-packages-installed"], "pkg")["pkgs"]
    assert packages == ["nginx", "certbot", "prometheus-nginx-exporter"]


def test_every_config_change_is_checked_by_nginx_before_it_goes_live(proxy_high):
    conf = state_args(proxy_high["reverse-proxy-nginx-config-managed"], "file")
    assert conf["name"] == "/etc/nginx/nginx.conf" and conf["check_cmd"] == "/usr/sbin/nginx -t -q -c"
    tls = state_args(proxy_high["reverse-proxy-nginx-tls-config-managed"], "file")
    assert tls["name"] == "/etc/nginx/platform-tls.d/servers.conf"
    assert tls["check_cmd"] == "/usr/local/sbin/nginx-check-tls"
    assert [{"cmd": f"reverse-proxy-certificate-{lineage}-issued"} for lineage in LINEAGES] == [
        r for r in tls["require"] if "cmd" in r], "the HTTPS servers come after their certificates"
    managed = [sid for sid, state in proxy_high.items() if "file" in state
               and state_args(state, "file").get("name") in ("/etc/nginx/nginx.conf", tls["name"])]
    assert sorted(managed) == ["reverse-proxy-nginx-config-managed", "reverse-proxy-nginx-tls-config-managed"], \
        "each nginx file is managed by one state"
    reload = state_args(proxy_high["reverse-proxy-nginx-running"], "unit")
    assert reload["reload"] is True and reload["watch"] == [{"file": "reverse-proxy-nginx-config-managed"}]
    tls_reload = state_args(proxy_high["reverse-proxy-nginx-tls-reloaded"], "unit")
    assert tls_reload["reload"] is True and tls_reload["watch"] == [{"file": "reverse-proxy-nginx-tls-config-managed"}]


def test_routes_resolve_to_their_guests_with_their_limits(proxy_high):
    routes = {r["name"]: r for r in state_args(proxy_high["reverse-proxy-nginx-config-managed"], "file")["context"]
              ["routes"]}
    assert routes["nextcloud"]["upstream"] == "10.10.10.102:80" and routes["nextcloud"]["max_body"] == "16G"
    assert routes["nextcloud"]["timeout"] == 3600 and routes["mail"]["timeout"] == 60
    assert routes["mail"]["upstream"] == "10.10.10.104:8080" and routes["mail"]["websocket"] is False


def test_renewal_hook_expiry_timer_and_exporter(proxy_high):
    hook = state_args(proxy_high["reverse-proxy-renewal-deploy-hook-managed"], "file")
    assert hook["name"] == "/etc/letsencrypt/renewal-hooks/deploy/salt-event" and hook["mode"] == "0755"
    check = state_args(proxy_high["reverse-proxy-renewal-expiry-check-managed"], "file")
    assert check["context"]["warn_days"] == 21
    assert "OnCalendar=*-*-* 06:40:00" in state_args(proxy_high["reverse-proxy-renewal-expiry-timer-managed"],
                                                     "file")["contents"]
    args = state_args(proxy_high["reverse-proxy-exporter-args-managed"], "file")["contents"]
    assert ('ARGS="-nginx.scrape-uri=http://127.0.0.1:8080/stub_status -web.listen-address=10.10.10.100:9113"'
            in args)


def test_the_lab_overlay_points_certbot_at_the_labs_acme_server(lab_config):
    high = show(lab_config)
    cmd = state_args(high["reverse-proxy-certificate-mail.your-domain.com-issued"], "cmd")["name"]
    assert "--server https://10.77.0.1:14000/dir" in cmd
    routes = state_args(high["reverse-proxy-nginx-config-managed"], "file")["context"]["routes"]
    # the apps' routes (api, app) go to the k3s guest's ingress
    assert {r["upstream"] for r in routes} == {"10.77.0.101:8080", "10.77.0.102:80", "10.77.0.104:8080",
                                                "10.77.0.102:9980", "10.77.0.112:80"}


def test_dns01_asks_for_one_wildcard_with_the_tsig_key_from_vault(example_config):
    high = show(example_config, DNS01)
    cmd = state_args(high["reverse-proxy-certificate-your-domain.com-issued"], "cmd")
    assert "--authenticator dns-rfc2136 --dns-rfc2136-credentials /etc/letsencrypt/rfc2136.ini" in cmd["name"]
    assert "--domain '*.your-domain.com' --domain 'your-domain.com'" in cmd["name"]
    assert not [s for s in high if s.startswith("reverse-proxy-certificate-mail")], "no per-route lineage"
    creds = state_args(high["reverse-proxy-acme-rfc2136-credentials-managed"], "file")
    assert creds["mode"] == "0600" and creds["show_changes"] is False
    assert creds["context"]["tsig"]["vault_path"] == "roles/reverse_proxy/acme-tsig"
    assert "python3-certbot-dns-rfc2136" in state_args(high["reverse-proxy-packages-installed"], "pkg")["pkgs"]
    template = (ROOT / "salt/reverse_proxy/files/rfc2136.ini.j2").read_text()
    assert "vault_server.secret_read" in template and "dns_rfc2136_server = {{ server }}" in template


# ------------------------------------------------------------------ the nginx configuration itself


def make_cert(tmp_path, name: str, ocsp: bool) -> dict:
    """A throwaway certificate and key, with or without an OCSP responder URL."""
    folder = tmp_path / name
    folder.mkdir()
    extra = ["-addext", "authorityInfoAccess=OCSP;URI:http://ocsp.example.net"] if ocsp else []
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(folder / "privkey.pem"), "-out", str(folder / "fullchain.pem"), "-days", "1",
                    "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}", *extra],
                   check=True, capture_output=True)
    shutil.copy(folder / "fullchain.pem", folder / "chain.pem")
    return {"cert": str(folder / "fullchain.pem"), "key": str(folder / "privkey.pem"),
            "chain": str(folder / "chain.pem")}


def render_template(example_config, proxy_high, state_id: str, template: str, **override) -> str:
    """A template of the proxy rendered with the context its state passes (``override`` on top)."""
    context = copy.deepcopy(state_args(proxy_high[state_id], "file")["context"])
    context.update(override)
    text = (ROOT / "salt/reverse_proxy/files" / template).read_text()
    return render.caller(example_config, PROXY).cmd(
        "file.apply_template_on_contents", text, "jinja", context, None, "base")


def nginx_conf(example_config, proxy_high, tmp_path, certs: dict | None = None) -> str:
    """nginx.conf and the routes' HTTPS servers as the two states render them, written into
    ``tmp_path`` (nginx.conf including tmp_path/tls/*.conf); returns both texts joined."""
    tls_state = state_args(proxy_high["reverse-proxy-nginx-tls-config-managed"], "file")
    routes = copy.deepcopy(tls_state["context"]["routes"])
    for route in routes:
        route.update((certs or {}).get(route["name"], {}))
    rp = state_args(proxy_high["reverse-proxy-nginx-config-managed"], "file")["context"]["rp"]
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir(exist_ok=True)
    main = render_template(example_config, proxy_high, "reverse-proxy-nginx-config-managed", "nginx.conf.j2",
                           rp={**rp, "nginx": {**rp["nginx"], "tls_dir": str(tls_dir)}})
    servers = render_template(example_config, proxy_high, "reverse-proxy-nginx-tls-config-managed",
                              "tls_servers.conf.j2", routes=routes)
    (tmp_path / "nginx.conf").write_text(main)
    (tls_dir / "servers.conf").write_text(servers)
    return main + servers


def nginx_check(tmp_path) -> subprocess.CompletedProcess:
    """`nginx -t` of the configuration nginx_conf wrote."""
    return subprocess.run([nginx_binary(), "-t", "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True,
                          check=False)


def nginx_binary() -> str:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not shutil.which(nginx):
        pytest.fail("nginx is not installed on this machine (make setup installs it)")
    return nginx


def tls_check(example_config, proxy_high, tmp_path, candidate: str) -> subprocess.CompletedProcess:
    """The role's own check of an HTTPS servers candidate (nginx-check-tls), run against the live
    configuration nginx_conf wrote into ``tmp_path``."""
    script = render_template(example_config, proxy_high, "reverse-proxy-nginx-tls-check-managed",
                             "nginx-check-tls.sh.j2", config=str(tmp_path / "nginx.conf"),
                             tls_dir=str(tmp_path / "tls"), binary=nginx_binary())
    (tmp_path / "nginx-check-tls").write_text(script)
    (tmp_path / "candidate.conf").write_text(candidate)
    return subprocess.run(["sh", str(tmp_path / "nginx-check-tls"), str(tmp_path / "candidate.conf")],
                          capture_output=True, text=True, check=False)


def test_before_any_certificate_nginx_serves_port_80_only_and_starts(example_config, proxy_high, tmp_path):
    text = nginx_conf(example_config, proxy_high, tmp_path)
    assert "listen 443 ssl http2;" not in text, "no HTTPS server without its certificate"
    assert "listen 443 ssl default_server;\n        ssl_reject_handshake on;" in text
    assert "location ^~ /.well-known/acme-challenge/ {\n            root /var/www/acme;" in text
    assert "return 301 https://$host$request_uri;" in text
    result = nginx_check(tmp_path)
    assert result.returncode == 0, result.stderr


def test_with_certificates_https_servers_and_stapling_only_where_a_responder_is_named(example_config, proxy_high,
                                                                                    tmp_path):
    certs = {"mail": make_cert(tmp_path, "mail.your-domain.com", ocsp=True),
             "nextcloud": make_cert(tmp_path, "nextcloud.your-domain.com", ocsp=False)}
    text = nginx_conf(example_config, proxy_high, tmp_path, certs)
    servers = text.split("server {")
    mail = next(s for s in servers if "listen 443 ssl http2;" in s and "mail.your-domain.com" in s)
    cloud = next(s for s in servers if "listen 443 ssl http2;" in s and "nextcloud.your-domain.com" in s)
    assert "ssl_stapling on;" in mail and "resolver 10.10.10.1;" in mail
    assert "ssl_stapling" not in cloud, "no OCSP URL (pebble, Let's Encrypt since 2025): no stapling"
    assert 'add_header Strict-Transport-Security "max-age=63072000" always;' in cloud
    assert "client_max_body_size 16G;" in cloud and "proxy_read_timeout 3600s;" in cloud
    assert "proxy_set_header Connection \"\";" in cloud
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in text and "log_format platform_json escape=json" in text
    result = nginx_check(tmp_path)
    assert result.returncode == 0, result.stderr
    candidate = (tmp_path / "tls" / "servers.conf").read_text()
    accepted = tls_check(example_config, proxy_high, tmp_path, candidate)
    assert accepted.returncode == 0, accepted.stderr


def test_a_value_nginx_rejects_fails_the_check(example_config, proxy_high, tmp_path):
    live_certs = {"nextcloud": make_cert(tmp_path, "nextcloud.your-domain.com", ocsp=False)}
    nginx_conf(example_config, proxy_high, tmp_path, live_certs)
    live = (tmp_path / "tls" / "servers.conf").read_text()
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad_certs = {"nextcloud": {**live_certs["nextcloud"], "max_body": "16 GB"}}
    bad = nginx_conf(example_config, proxy_high, bad_dir, bad_certs)
    candidate = bad[bad.index("# Managed by Salt (reverse_proxy.certificates)"):]
    result = tls_check(example_config, proxy_high, tmp_path, candidate)
    assert result.returncode != 0 and "client_max_body_size" in result.stderr, "nginx says why"
    assert (tmp_path / "tls" / "servers.conf").read_text() == live, "the live servers stay"
    assert nginx_check(tmp_path).returncode == 0


def test_the_reverse_proxy_pillar_is_validated_with_the_site(example_site):
    import yaml

    from sitectl import site

    roles = yaml.safe_load((ROOT / "pillar/platform/roles.sls").read_text())["roles"]
    defaults = yaml.safe_load((ROOT / "salt/reverse_proxy/defaults.yaml").read_text())["reverse_proxy"]
    assert site.validate({"site": example_site, "roles": roles, "reverse_proxy": defaults}) == []
    bad = {"renewal": {"expiry_warn_days": 0}, "mail_certificate": {"reload_cmd": "docker restart x"},
           "acme": {"tsig": {"algorithm": "HMAC-MD5"}}}
    errors = site.validate({"site": example_site, "roles": roles, "reverse_proxy": bad})
    assert errors == [
        "reverse_proxy.acme.tsig.algorithm: got 'HMAC-MD5'; expected HMAC-SHA256 or HMAC-SHA512",
        "reverse_proxy.mail_certificate.reload_cmd: got 'docker restart x'; expected a command as a list of words "
        "(no shell)",
        "reverse_proxy.renewal.expiry_warn_days: got 0; expected days (from 1)",
    ]
