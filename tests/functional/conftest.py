"""A real Salt master configured from the repository's own template, two minions, and salt-cloud's
provider, and a real Alertmanager on loopback (Debian's prometheus-alertmanager, with the routing
the monitoring role renders) where the acme runner posts the alerts it raises.

The minions run on this machine, so the highstate they are given comes from a harmless test tree
placed before the repository's salt/ (its top.sls shadows the real one): the base state is never
applied here; it converges in the lab guests. ``fn-web`` is the site's reverse proxy; ``db`` is
another guest of the site (what a compromised guest would forge from). salt-cloud's provider is the
Proxmox driver against fakepve (the one double the project allows), so "salt-cloud really created
this guest" is asked of a provider as in production.
"""

from __future__ import annotations

import datetime
import shutil
import subprocess
import time
from pathlib import Path

import jinja2
import pytest
import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from fakepve import FakePve
from fakepve.certs import make_cert

from sitectl import ROOT
from sitectl.config import SaltSettings, write_config
from tests.conftest import SITES, make_checkout
from tests.openbao import free_port
from tests.proxmox.conftest import (
    GRANTED,
    NODE,
    SALT_CLOUD,
    SECRET_ENV,
    TOKEN_ID,
    TOKEN_SECRET,
    GuestAgents,
    _populate,
    _Served,
)

MINION_ID = "fn-web"
OTHER_ID = "db"
LINEAGE = "cloud.example.org"
# Keys of the rendered master config that pytest-salt-factories owns for its own daemons; every
# other key (file roots, pillar roots, module dirs, ext_pillar, reactor, ...) comes from etc/master.j2.
FACTORY_KEYS = {
    "id", "user", "root_dir", "pki_dir", "cachedir", "sock_dir", "pidfile", "log_file", "key_logfile",
    "log_level_logfile", "interface", "publish_port", "ret_port",
}


@pytest.fixture(scope="package")
def pve(tmp_path_factory):
    """fakepve on loopback for the package: salt-cloud's provider, with nothing created yet."""
    cert, key, _ = make_cert(str(tmp_path_factory.mktemp("fn-pve-pki")), hosts=("127.0.0.1",))
    fake = FakePve(host="127.0.0.1", port=0)
    fake.time_scale = 0
    _populate(fake)
    fake.grant(TOKEN_ID, "/", *GRANTED)
    served = _Served(fake, cert, key)
    agents = GuestAgents(fake)
    fake.cafile = cert
    try:
        yield fake
    finally:
        agents.stop()
        served.stop()


class Alertmanager:
    """Debian's Alertmanager on loopback with the routing tree the monitoring role renders
    (salt/monitoring/files/alertmanager.yml.j2, its defaults); mail goes to a closed loopback port."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        params = yaml.safe_load((ROOT / "salt/monitoring/defaults.yaml").read_text())["monitoring"]["alertmanager"]
        params["require_tls"] = False
        # YAML, not HTML: nothing to escape (the role renders it the same way, through Salt's Jinja).
        env = jinja2.Environment(extensions=["jinja2.ext.do"], undefined=jinja2.StrictUndefined,
                                 autoescape=False)  # noqa: S701
        env.filters["yaml"] = lambda data, flow=False: yaml.safe_dump(data, default_flow_style=flow)
        template = env.from_string((ROOT / "salt/monitoring/files/alertmanager.yml.j2").read_text())
        (workdir / "smtp.pass").write_text("unused\n")
        self.config = workdir / "alertmanager.yml"
        self.config.write_text(template.render(
            alertmanager=params, smarthost=f"127.0.0.1:{free_port()}", mail_to="hostmaster@example.org",
            mail_from="alertmanager@example.org", fqdn="monitoring.example.org",
            password_file=str(workdir / "smtp.pass")))

    def start(self) -> Alertmanager:
        binary = shutil.which("prometheus-alertmanager")
        assert binary, "Debian's prometheus-alertmanager is not installed (make setup)"
        self.log = (self.workdir / "alertmanager.log").open("ab")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.config}", f"--storage.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/-/ready", timeout=2).ok:
                    return self
            except requests.exceptions.ConnectionError:
                pass
            assert self.proc.poll() is None, (self.workdir / "alertmanager.log").read_text()
            time.sleep(0.3)
        raise AssertionError(f"Alertmanager did not answer on {self.url}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None

    def alerts(self, **labels) -> list[dict]:
        """The alerts Alertmanager holds now (API v2), those with ``labels`` only."""
        matchers = [f'{key}="{value}"' for key, value in labels.items()]
        reply = requests.get(f"{self.url}/api/v2/alerts", params={"filter": matchers}, timeout=10)
        reply.raise_for_status()
        return reply.json()


@pytest.fixture(scope="package")
def alertmanager(tmp_path_factory):
    server = Alertmanager(tmp_path_factory.mktemp("fn-alertmanager")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def acme_paths(tmp_path_factory) -> dict:
    """The proxy's certbot folder and its nginx reload, in a temp folder (the minion runs here)."""
    base = tmp_path_factory.mktemp("fn-acme")
    live = base / "letsencrypt" / "live" / LINEAGE
    live.mkdir(parents=True)
    reloads = base / "nginx-reloads"
    script = base / "nginx-safe-reload"
    script.write_text(f"#!/bin/sh\necho reloaded >> {reloads}\n")
    script.chmod(0o755)
    return {"base": base, "live": live, "reload": script, "reloads": reloads}


def write_certificate(live: Path, days: int = 90) -> int:
    """A fresh self-signed certificate for the lineage (made at run time; its key is thrown away); its serial."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LINEAGE)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=days)).sign(key, hashes.SHA256()))
    (live / "fullchain.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    return cert.serial_number


@pytest.fixture(scope="package")
def checkout(tmp_path_factory, pve, acme_paths, alertmanager):
    site = (SITES / "valid" / "small" / "site.sls").read_text().replace("    web:\n", f"    {MINION_ID}:\n")
    site = site.replace("guest: web", f"guest: {MINION_ID}")
    site += yaml.safe_dump({"reverse_proxy": {"nginx": {"safe_reload": str(acme_paths["reload"])},
                                              "acme": {"config_dir": str(acme_paths["base"] / "letsencrypt")}},
                            # The site has no monitoring guest here: the master posts to the test's Alertmanager.
                            "monitoring": {"alertmanager": {"api_urls": [alertmanager.url]}}})
    base = tmp_path_factory.mktemp("functional")
    source = base / "site.sls"
    source.write_text(site)
    root, conf = make_checkout(base, source, site_name="functional")
    proxmox = {"url": pve.url, "token_id": TOKEN_ID, "ca_bundle": pve.cafile, "bootstrap": "none", "node": NODE,
               "timeout": 5, "retries": 2, "backoff": 0.05, "task_timeout": 30, "ip_timeout": 20}
    conf = write_config(SaltSettings(state_dir=base / "state", site="functional", provider="proxmox",
                                     proxmox=proxmox), root=root)
    return root, conf


@pytest.fixture(scope="package")
def salt_cloud(checkout, tmp_path_factory):
    """The real salt-cloud command over the checkout's config (provider: the Proxmox driver, fakepve)."""
    _, conf = checkout
    home = tmp_path_factory.mktemp("fn-cloud-home")

    def run(*args: str) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", SECRET_ENV: TOKEN_SECRET}
        return subprocess.run([str(SALT_CLOUD), "-c", str(conf), "--out", "json", "--log-level", "quiet", "-y",
                               *args], capture_output=True, text=True, env=env, timeout=150, check=False)

    return run


@pytest.fixture(scope="package")
def marker_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("markers")


@pytest.fixture(scope="package")
def test_states(tmp_path_factory, marker_dir) -> Path:
    tree = tmp_path_factory.mktemp("test-states")
    (tree / "top.sls").write_text("base:\n  '*':\n    - marker\n")
    (tree / "marker.sls").write_text(
        "functional-marker-file-managed:\n"
        "  file.managed:\n"
        f"    - name: {marker_dir}/{{{{ grains['id'] }}}}-highstate\n"
        "    - contents: applied\n"
    )
    return tree


@pytest.fixture(scope="package")
def master_overrides(checkout, test_states) -> dict:
    _, conf = checkout
    rendered = yaml.safe_load((conf / "master").read_text())
    overrides = {key: value for key, value in rendered.items() if key not in FACTORY_KEYS}
    overrides["file_roots"] = {"base": [str(test_states), *rendered["file_roots"]["base"]]}
    return overrides


@pytest.fixture(scope="package")
def salt_master(salt_factories, master_overrides):
    # The master asks salt-cloud's provider (fakepve) with the token secret from its environment, as
    # the Proxmox provider config says (token_secret_env).
    salt_factories.environ[SECRET_ENV] = TOKEN_SECRET
    factory = salt_factories.salt_master_daemon("fn-master", overrides=master_overrides)
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="package")
def salt_minion(salt_master):
    factory = salt_master.salt_minion_daemon(MINION_ID, overrides={"hash_type": "sha256"})
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="package")
def salt_call(salt_minion):
    return salt_minion.salt_call_cli(timeout=120)


@pytest.fixture(scope="package")
def salt_run(salt_master):
    return salt_master.salt_run_cli(timeout=120)


@pytest.fixture(scope="package")
def other_minion(salt_master):
    """Another guest of the site (not the reverse proxy): where a forger sits."""
    factory = salt_master.salt_minion_daemon(OTHER_ID, overrides={"hash_type": "sha256"})
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="package")
def other_call(other_minion):
    return other_minion.salt_call_cli(timeout=120)


def wait_for(path: Path, timeout: float) -> bool:
    """True once ``path`` exists, False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.5)
    return False
