"""The mail guest of the whole-site lab (the session's ``site_lab``, tests/lab/conftest.py): it holds the
proxy's current mail certificate right after the lab is up (a lineage's first issuance is handed over
as a renewal is), Docker Engine runs there, and the report lists mailcow as converged only partly.

mailcow's own stack is NOT verified here: its images are unreachable from this machine."""

from __future__ import annotations

import pytest

from tests.lab.infra import guest_host

pytestmark = pytest.mark.lab

DOMAIN = "your-domain.com"
LIVE = f"/etc/letsencrypt/live/mail.{DOMAIN}"
MAIL_SSL = "/opt/mailcow-dockerized/data/assets/ssl"


def serial(host, path: str) -> int:
    return int(host.check_output(f"openssl x509 -noout -serial -in {path}").split("=")[1], 16)


def test_the_mail_guest_holds_the_proxys_certificate_right_after_the_lab_is_up(site_lab):
    proxy = guest_host("reverse-proxy", site_lab.lab.lab_dir)
    mail = guest_host("mailcow", site_lab.lab.lab_dir)
    assert mail.file(f"{MAIL_SSL}/cert.pem").exists, "no certificate on the mail guest after the first day"
    assert serial(mail, f"{MAIL_SSL}/cert.pem") == serial(proxy, f"{LIVE}/fullchain.pem")
    key = mail.file(f"{MAIL_SSL}/key.pem")
    assert key.mode == 0o600 and key.user == "root"
    assert key.sha256sum == proxy.file(f"{LIVE}/privkey.pem").sha256sum, "the key of that certificate"


def test_docker_runs_on_the_mail_guest(site_lab):
    mail = guest_host("mailcow", site_lab.lab.lab_dir)
    assert mail.service("docker").is_running
    assert mail.check_output("docker info --format '{{.Driver}}'") == "overlay2"


def test_the_report_says_mailcow_converged_only_partly(site_lab):
    import io

    from sitectl import labctl

    table = io.StringIO()
    labctl.print_table(site_lab.lab, {}, {}, out=table)
    out = table.getvalue()
    off, partly = out.split("not converged in the lab", 1)[1].split("converged in part", 1)
    assert "mailcow" not in off, "the role converges: only its stack is switched off"
    line = next(line for line in partly.splitlines() if line.strip().startswith("mailcow.stack "))
    assert line.split()[1:3] == ["on", "mailcow"] and "unreachable" in line
    first = site_lab.report["first"]["mailcow"]
    assert first["failed"] == 0, first["errors"]


def connect(address: str, port: int) -> str:
    import socket

    with socket.socket() as sock:
        sock.settimeout(3)
        try:
            sock.connect((address, port))
            return "open"
        except ConnectionRefusedError:
            return "refused"
        except OSError:
            return "dropped"


def test_the_mail_ports_are_open_to_the_world_and_the_web_ui_to_the_proxy_only(site_lab):
    address = site_lab.lab.pillar["site"]["guests"]["mailcow"]["address"].split("/")[0]
    # Nothing listens in the lab (no mailcow): "refused" is the firewall letting the port through.
    for port in (25, 465, 587, 993):
        assert connect(address, port) == "refused", port
    for port in (8080, 143, 110, 3306):
        assert connect(address, port) == "dropped", port
    proxy = guest_host("reverse-proxy", site_lab.lab.lab_dir)
    probe = ("python3 -c \"import socket; s=socket.socket(); s.settimeout(3)\n"
             "try: s.connect(('" + address + "', 8080)); print('open')\n"
             "except ConnectionRefusedError: print('refused')\n"
             "except OSError: print('dropped')\"")
    assert proxy.check_output(probe) == "refused", "the proxy reaches the web UI's port"
