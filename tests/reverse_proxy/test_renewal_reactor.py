"""The renewal flow on the master side: a real master configured from etc/master.j2 (its reactor
block and its Vault block included), a proxy minion, a mail minion and one more guest, a real
OpenBao dev server bootstrapped as docs/vault.md says (the policies salt/vault/configure.sls renders
for this site), the real deploy-hook event and the acme runner.

The minions run on this machine, so the role's paths come from pillar: the lineage lives in a temp
folder (a certificate and key made at run time, never stored), and the "reload" commands only
leave a mark. What is real: the minion event, the reactor's render, the runner's checks against the
master's pillar, the master-issued per-minion tokens and their policies, the proxy's write into
Vault and the mail guest's read and install.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_checkout
from tests.functional.conftest import FACTORY_KEYS
from tests.openbao import BaoServer
from tests.vault.conftest import bootstrap_master_approle, give_master_vault

pytestmark = pytest.mark.functional

PROXY, MAIL, OTHER = "reverse-proxy", "mailcow", "cloud"
DOMAIN = "example.org"
CERTIFICATE_PATH = f"roles/reverse_proxy/certificates/mail.{DOMAIN}"


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def issue(live: Path) -> None:
    """A new certificate and key for the lineage (the folder's name), as a renewal leaves them."""
    live.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(live / "privkey.pem"), "-out", str(live / "fullchain.pem"),
                    "-days", "1", "-subj", f"/CN={live.name}"], check=True, capture_output=True)


def key_body(paths) -> str:
    """A run of the private key's base64 body past its algorithm header (the same for every P-256
    key): the key's own bytes, which a leak would contain."""
    body = b"".join((paths["live"] / "privkey.pem").read_bytes().splitlines()[1:-1]).decode()
    return body[64:104]


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("acme-flow")
    live = base / "letsencrypt" / "live" / f"mail.{DOMAIN}"
    live.mkdir(parents=True)
    issue(live)
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
            OTHER: {"kind": "lxc", "vmid": 102, "cores": 1, "memory": 512, "disk": 4,
                    "address": "192.168.60.12/24", "roles": ["k3s"]},
            "vault": {"kind": "lxc", "vmid": 111, "cores": 1, "memory": 512, "disk": 4,
                      "address": "192.168.60.11/24", "roles": ["vault"]},
        },
        "routes": {"mail": {"guest": MAIL, "port": 8080}, "cloud": {"guest": OTHER, "port": 8081}},
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
def bao(paths):
    server = BaoServer(paths["base"] / "bao", dev=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def master(salt_factories, checkout, bao, paths):
    _, conf = checkout
    credentials, _ = bootstrap_master_approle(paths["base"], bao, conf)
    rendered = yaml.safe_load((conf / "master").read_text())
    overrides = {key: value for key, value in rendered.items() if key not in FACTORY_KEYS}
    factory = salt_factories.salt_master_daemon("acme-master", overrides=overrides)
    give_master_vault(factory, bao, credentials)
    try:
        with factory.started(start_timeout=120):
            yield factory
    finally:
        shutil.rmtree(Path(factory.config_dir).parent, ignore_errors=True)  # with the credentials


@pytest.fixture(scope="module")
def minions(master):
    with contextlib.ExitStack() as stack:
        calls = {}
        for name in (PROXY, MAIL, OTHER):
            minion = master.salt_minion_daemon(name, overrides={"hash_type": "sha256"})
            stack.enter_context(minion.started(start_timeout=120))
            calls[name] = minion.salt_call_cli(timeout=120)
        for call in calls.values():
            assert call.run("saltutil.sync_modules").returncode == 0
            assert call.run("saltutil.refresh_pillar", wait=True).returncode == 0
        yield calls


def clear(paths):
    for path in [*paths["marks"].iterdir(), *(paths["mail"].iterdir() if paths["mail"].exists() else [])]:
        path.unlink()


def clear_marks(paths):
    for path in paths["marks"].iterdir():
        path.unlink()


def renew(master) -> dict:
    """The runner as the reactor calls it, from the command line: its return."""
    ret = master.salt_run_cli(timeout=180).run("acme.renewed", PROXY, f"mail.{DOMAIN}")
    assert isinstance(ret.data, dict), ret.stderr
    return ret.data


def assert_no_key_on_the_master(master, minions, event_listener, since: float, body: str) -> None:
    """The key is in none of: the master's cache (job cache included), the events on its bus since
    ``since`` (job returns, the runner's return), the master's and the minions' logs."""
    cache = Path(master.config["cachedir"])
    leaked = subprocess.run(["grep", "-rl", body, str(cache)], capture_output=True, text=True, check=False)
    assert leaked.stdout == "", f"the private key is in the master's cache: {leaked.stdout}"
    events = event_listener.get_events([(master.id, "*")], after_time=since)
    returns = [e for e in events if "/ret" in e.tag]
    assert returns, "no job return was seen on the master's bus: the check below would prove nothing"
    bus = json.dumps([e.full_data for e in events], default=str)
    on_the_bus = body in bus or "PRIVATE KEY" in bus
    assert not on_the_bus, "the private key went over the master's event bus"
    for log in [master.config["log_file"], *(cli.config["log_file"] for cli in minions.values())]:
        logged = body in Path(log).read_text(errors="replace")
        assert not logged, f"the private key is in {log}"


def test_renewed_mail_lineage_reloads_the_proxy_and_lands_on_the_mail_guest_through_vault(
        master, minions, paths, bao, event_listener):
    clear(paths)
    since = time.time()
    sent = minions[PROXY].run("event.send", "platform/acme/renewed", data={"lineage": f"mail.{DOMAIN}"})
    assert sent.returncode == 0
    assert wait_for((paths["marks"] / "mail-reloaded").exists, 60), "the mail guest was not updated"
    assert (paths["marks"] / "nginx-reloaded").exists(), "nginx -t + reload on the proxy"
    key = (paths["live"] / "privkey.pem").read_bytes()
    assert (paths["mail"] / "key.pem").read_bytes() == key
    assert (paths["mail"] / "key.pem").stat().st_mode & 0o777 == 0o600
    assert (paths["mail"] / "cert.pem").read_bytes() == (paths["live"] / "fullchain.pem").read_bytes()
    assert (paths["mail"] / "cert.pem").stat().st_mode & 0o777 == 0o644
    stored = bao.kv(CERTIFICATE_PATH)
    assert stored["data"]["key"].encode() == key, "the key went through Vault, under the proxy's role"

    def runner_returns():
        return [e for e in event_listener.get_events([(master.id, "salt/run/*/ret")], after_time=since)
                if e.data.get("fun") == "runner.acme.renewed"]

    assert wait_for(runner_returns, 60), "the reactor's acme.renewed returned nothing"
    (runner,) = runner_returns()
    mail = runner.data["return"]["mail"]
    assert mail == {"guest": MAIL, "published": True, "path": f"secret/{CERTIFICATE_PATH}",
                    "version": stored["metadata"]["version"], "reloaded": True,
                    "changed": sorted(str(paths["mail"] / name) for name in ("cert.pem", "key.pem"))}, mail
    assert_no_key_on_the_master(master, minions, event_listener, since, key_body(paths))


def test_an_unchanged_certificate_changes_nothing_and_a_renewed_one_replaces_it(master, minions, paths, bao):
    issue(paths["live"])
    first = renew(master)
    assert first["result"] is True, first["comment"]
    clear_marks(paths)
    again = renew(master)
    assert again["result"] is False and "newer than the one last acted on" in again["comment"], again
    assert bao.kv(CERTIFICATE_PATH)["metadata"]["version"] == first["mail"]["version"]
    assert not any(paths["marks"].iterdir()), "the same certificate again: nothing reloaded"
    live = str(paths["live"])
    same = minions[PROXY].run("certificate_handover.publish", CERTIFICATE_PATH,
                              json.dumps({"cert": f"{live}/fullchain.pem", "key": f"{live}/privkey.pem"}))
    assert same.returncode == 0, same.stderr
    assert (same.data["changed"], same.data["version"]) == (False, first["mail"]["version"]), \
        "no new version for the same files"

    issue(paths["live"])
    renewed = renew(master)["mail"]
    assert renewed["published"] is True and renewed["version"] == first["mail"]["version"] + 1
    assert renewed["reloaded"] is True and (paths["marks"] / "mail-reloaded").exists()
    assert (paths["mail"] / "key.pem").read_bytes() == (paths["live"] / "privkey.pem").read_bytes()
    assert (paths["mail"] / "cert.pem").read_bytes() == (paths["live"] / "fullchain.pem").read_bytes()


def test_another_lineage_reloads_the_proxy_only(master, minions, paths):
    clear(paths)
    issue(paths["live"].parent / f"cloud.{DOMAIN}")  # the runner acts on a certificate it finds renewed
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
    # The certificate on the proxy is valid for a day: the runner reads that, not the event's 12.
    assert expiring["result"] is True and expiring["days_left"] in (0, 1)


def test_only_the_mail_guests_token_reads_the_certificate(master, minions, paths):
    issue(paths["live"])
    version = renew(master)["mail"]["version"]
    secret = f"secret/{CERTIFICATE_PATH}"
    # The certificate field only: it is public, and a salt-call's return is the master's to see.
    read = minions[MAIL].run("vault.read_secret", secret, "cert")
    assert read.returncode == 0, read.stderr
    assert read.data == (paths["live"] / "fullchain.pem").read_text()
    elsewhere = minions[MAIL].run("vault.read_secret", "secret/roles/reverse_proxy/acme-tsig", "name")
    assert elsewhere.returncode != 0 and "permission denied" in elsewhere.stderr, "exactly that path, no more"

    refused = minions[OTHER].run("vault.read_secret", secret, "cert")
    assert refused.returncode != 0 and refused.data is None
    assert "permission denied" in refused.stderr, refused.stderr
    stolen = paths["base"] / "stolen.pem"
    target = {"key": {"path": str(stolen), "mode": "0600"}}
    refused = minions[OTHER].run("certificate_handover.install", CERTIFICATE_PATH, version, json.dumps(target))
    assert refused.returncode != 0
    assert f"{secret}: permission denied" in refused.stderr, refused.stderr
    assert not stolen.exists()


def test_a_sealed_or_unreachable_vault_fails_the_runner_and_the_mail_guest_keeps_its_files(master, minions,
                                                                                          paths, bao):
    issue(paths["live"])
    assert renew(master)["result"] is True
    kept = {name: (paths["mail"] / name).read_bytes() for name in ("cert.pem", "key.pem")}
    issue(paths["live"])
    clear_marks(paths)

    bao.client().sys.seal()
    sealed = renew(master)
    assert sealed["result"] is False
    assert sealed["comment"].startswith(f"certificate_handover.publish failed on {PROXY}: "), sealed["comment"]
    assert "Vault is sealed" in sealed["comment"], sealed["comment"]

    bao.stop()
    unreachable = renew(master)
    assert unreachable["result"] is False
    assert unreachable["comment"].startswith(f"certificate_handover.publish failed on {PROXY}: "), \
        unreachable["comment"]
    assert "Connection refused" in unreachable["comment"], unreachable["comment"]

    assert {name: (paths["mail"] / name).read_bytes() for name in kept} == kept
    assert not (paths["marks"] / "mail-reloaded").exists()
