"""The renewal flow on the master side: a real master configured from etc/master.j2 (its reactor
block included), a proxy minion and a mail minion, the real deploy-hook event and the acme runner.

Both minions run on this machine, so the role's paths come from pillar: the lineage lives in a temp
folder (a certificate and key made at run time, never stored), and the "reload" commands only
leave a mark. What is real: the minion event, the reactor's render, the runner's checks against the
master's pillar, the seal on the proxy and the install on the mail guest through the master.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_checkout
from tests.functional.conftest import FACTORY_KEYS

pytestmark = pytest.mark.functional

PROXY, MAIL = "reverse-proxy", "mailcow"
DOMAIN = "example.org"


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("acme-flow")
    live = base / "letsencrypt" / "live" / f"mail.{DOMAIN}"
    live.mkdir(parents=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(live / "privkey.pem"), "-out", str(live / "fullchain.pem"),
                    "-days", "1", "-subj", f"/CN=mail.{DOMAIN}"], check=True, capture_output=True)
    marks = base / "marks"
    marks.mkdir()
    reload_script = base / "nginx-safe-reload"
    reload_script.write_text(f"#!/bin/sh\ntouch {marks}/nginx-reloaded\n")
    reload_script.chmod(0o755)
    return {"base": base, "live": live, "marks": marks, "reload": reload_script, "mail": base / "mail-ssl"}


@pytest.fixture(scope="module")
def checkout(tmp_path_factory, paths):
    site = {
        "name": "acmeflow", "domain": DOMAIN,
        "network": {"cidr": "192.168.60.0/24", "gateway": "192.168.60.1"},
        "salt": {"master": "127.0.0.1"},
        "acme": {"directory": "https://acme.example.net/dir", "email": f"hostmaster@{DOMAIN}"},
        "guests": {
            PROXY: {"kind": "lxc", "vmid": 100, "cores": 1, "memory": 512, "disk": 4,
                    "address": "192.168.60.10/24", "roles": ["reverse_proxy"]},
            MAIL: {"kind": "lxc", "vmid": 104, "cores": 1, "memory": 512, "disk": 4,
                   "address": "192.168.60.14/24", "roles": ["mailcow"]},
        },
        "routes": {"mail": {"guest": MAIL, "port": 8080}, "cloud": {"guest": MAIL, "port": 8081}},
    }
    role = {
        "nginx": {"safe_reload": str(paths["reload"])},
        "acme": {"config_dir": str(paths["base"] / "letsencrypt")},
        "mail_certificate": {
            "files": {"cert": {"path": str(paths["mail"] / "cert.pem"), "mode": "0644"},
                      "key": {"path": str(paths["mail"] / "key.pem"), "mode": "0600"}},
            "reload_cmd": ["touch", str(paths["marks"] / "mail-reloaded")],
        },
    }
    base = tmp_path_factory.mktemp("acme-checkout")
    source = base / "site.sls"
    source.write_text(yaml.safe_dump({"site": site, "reverse_proxy": role}))
    return make_checkout(base, source, site_name="acmeflow")


@pytest.fixture(scope="module")
def master(salt_factories, checkout):
    _, conf = checkout
    rendered = yaml.safe_load((conf / "master").read_text())
    overrides = {key: value for key, value in rendered.items() if key not in FACTORY_KEYS}
    factory = salt_factories.salt_master_daemon("acme-master", overrides=overrides)
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="module")
def minions(master):
    proxy = master.salt_minion_daemon(PROXY, overrides={"hash_type": "sha256"})
    mail = master.salt_minion_daemon(MAIL, overrides={"hash_type": "sha256"})
    with proxy.started(start_timeout=120), mail.started(start_timeout=120):
        calls = {name: m.salt_call_cli(timeout=120) for name, m in ((PROXY, proxy), (MAIL, mail))}
        for call in calls.values():
            assert call.run("saltutil.sync_modules").returncode == 0
            assert call.run("saltutil.refresh_pillar", wait=True).returncode == 0
        yield calls


def clear(paths):
    for path in [*paths["marks"].iterdir(), *(paths["mail"].iterdir() if paths["mail"].exists() else [])]:
        path.unlink()


def test_renewed_mail_lineage_reloads_the_proxy_and_lands_sealed_on_the_mail_guest(master, minions, paths):
    clear(paths)
    sent = minions[PROXY].run("event.send", "platform/acme/renewed", data={"lineage": f"mail.{DOMAIN}"})
    assert sent.returncode == 0
    assert wait_for((paths["marks"] / "mail-reloaded").exists, 60), "the mail guest was not updated"
    assert (paths["marks"] / "nginx-reloaded").exists(), "nginx -t + reload on the proxy"
    key = (paths["live"] / "privkey.pem").read_bytes()
    assert (paths["mail"] / "key.pem").read_bytes() == key
    assert (paths["mail"] / "key.pem").stat().st_mode & 0o777 == 0o600
    assert (paths["mail"] / "cert.pem").read_bytes() == (paths["live"] / "fullchain.pem").read_bytes()
    body = b"".join(key.splitlines()[1:-1])[:40].decode()
    cache = Path(master.config["cachedir"])
    leaked = subprocess.run(["grep", "-rl", body, str(cache)], capture_output=True, text=True, check=False)
    assert leaked.stdout == "", f"the private key is in the master's cache: {leaked.stdout}"


def test_another_lineage_reloads_the_proxy_only(master, minions, paths):
    clear(paths)
    sent = minions[PROXY].run("event.send", "platform/acme/renewed", data={"lineage": f"cloud.{DOMAIN}"})
    assert sent.returncode == 0
    assert wait_for((paths["marks"] / "nginx-reloaded").exists, 60)
    time.sleep(3)
    assert not (paths["marks"] / "mail-reloaded").exists()


def test_events_from_a_non_proxy_or_for_a_foreign_lineage_do_nothing(master, minions, paths):
    clear(paths)
    for sender, lineage in ((MAIL, f"mail.{DOMAIN}"), (PROXY, f"evil.{DOMAIN}"), (PROXY, "../../etc")):
        assert minions[sender].run("event.send", "platform/acme/renewed", data={"lineage": lineage}).returncode == 0
    assert not wait_for(lambda: any(paths["marks"].iterdir()), 10), "each of these events must be ignored"


def test_the_runner_says_why_it_refuses(master, minions):
    run = master.salt_run_cli(timeout=120)
    assert "is not a reverse proxy of the site" in run.run("acme.renewed", MAIL, f"mail.{DOMAIN}").data["comment"]
    refused = run.run("acme.renewed", PROXY, f"evil.{DOMAIN}").data["comment"]
    assert refused == (f"evil.{DOMAIN} is not a lineage of {PROXY} (expected one of: cloud.{DOMAIN}, "
                       f"mail.{DOMAIN})")
    expiring = run.run("acme.expiring", PROXY, f"mail.{DOMAIN}", 12).data
    assert expiring["result"] is True and expiring["days_left"] == 12


def test_sealed_files_open_only_on_the_guest_they_were_sealed_for(master, minions, paths):
    import salt.client

    mail_key = (Path(master.config["pki_dir"]) / "minions" / MAIL).read_text()
    target = {"key": {"path": str(paths["base"] / "stolen.pem"), "mode": "0600"}}
    # Through the master's LocalClient, as the runner does: the CLI would split a multi-line PEM argument.
    with salt.client.get_local_client(master.config_file) as client:
        sealed = client.cmd(PROXY, "platform_tls.seal", [{"key": str(paths["live"] / "privkey.pem")}, mail_key])[PROXY]
        assert set(sealed) == {"key", "data"} and "PRIVATE KEY" not in str(sealed)
        stolen = client.cmd(PROXY, "platform_tls.install_sealed", [sealed, target])[PROXY]
    assert "not for this minion's key" in str(stolen)
    assert not (paths["base"] / "stolen.pem").exists()
