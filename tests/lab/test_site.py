"""The example site in the lab: provisioned by salt-cloud, converged by the real states, checked from outside.

One lab for the session (the `site_lab` fixture of tests/lab/conftest.py, shared with the
tests/lab/test_site_<part>.py modules that run after this one): `sitectl lab up`'s own code path
(salt-cloud -m with the lxclab driver, first highstate through the created-event reactor, a second
highstate), in a state dir of its own. Any lab already running on this machine is replaced, and
everything is torn down at the end.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import warnings

import pytest

from sitectl import labctl
from tests.lab.infra import guest_host

pytestmark = pytest.mark.lab

CONNECT = ("python3 -c \"import socket,sys; s=socket.socket(); s.settimeout(3);\n"
           "try: s.connect((sys.argv[1], int(sys.argv[2]))); print('open')\n"
           "except ConnectionRefusedError: print('refused')\n"
           "except OSError as e: print('dropped', type(e).__name__)\" {} {}")


def ip(site_lab, guest: str) -> str:
    return site_lab.lab.pillar["site"]["guests"][guest]["address"].split("/")[0]


def connect_from(site_lab, src: str, dst: str, port: int) -> str:
    host = guest_host(src, site_lab.lab.lab_dir)
    return host.check_output(CONNECT.format(ip(site_lab, dst), port)).split()[0]


def connect_from_host(address: str, port: int) -> str:
    with socket.socket() as sock:
        sock.settimeout(3)
        try:
            sock.connect((address, port))
            return "open"
        except ConnectionRefusedError:
            return "refused"
        except OSError:
            return "dropped"


def test_every_guest_converges_and_the_second_highstate_changes_nothing(site_lab):
    guests = site_lab.lab.guests
    assert len(guests) == 11
    for name in guests:
        first, second = site_lab.report["first"].get(name), site_lab.report["second"].get(name)
        assert first and second, f"{name}: no highstate ran (lab up stopped: {site_lab.report['first']})"
        assert first["failed"] == 0, (name, first["errors"])
        assert first["changed"] > 0, f"{name}: the first highstate must have configured the guest"
        assert second["failed"] == 0 and second["changed"] == 0, (name, second)
        if first.get("retried"):  # Salt raised inside the run; the bring-up ran it once more (shown, not hidden)
            warnings.warn(f"{name}: the first highstate raised inside Salt and was run once more: "
                          f"{first['retried']}", stacklevel=1)
    assert site_lab.rc == 0


def test_a_second_bring_up_on_the_converged_lab_recreates_nothing_and_changes_nothing(site_lab):
    import salt.runner

    lab = site_lab.lab
    keys = lab.settings.state_dir / "pki" / "master" / "minions"
    before = {key.name: hashlib.sha256(key.read_bytes()).hexdigest() for key in keys.iterdir()}
    ret = salt.runner.RunnerClient(lab.master_opts()).cmd("bringup.up", print_event=False)
    assert ret["result"] is True, ret.get("stopped")
    assert ret["phases"][0] == ["vault"] and sorted(g for phase in ret["phases"] for g in phase) == lab.guests
    assert {name: (g["action"], g["changed"], g["failed"]) for name, g in ret["guests"].items()} == {
        name: ("unchanged", 0, 0) for name in lab.guests}, "each guest only checked with test=True"
    after = {key.name: hashlib.sha256(key.read_bytes()).hexdigest() for key in keys.iterdir()}
    assert after == before, "salt-cloud makes a new key pair per creation: no guest was created again"


@pytest.mark.parametrize("guest", ["vault", "postgresql", "monitoring"])
def test_base_state_is_in_effect_inside_the_guest(site_lab, guest):
    host = guest_host(guest, site_lab.lab.lab_dir)
    for service in ("ssh", "nftables", "prometheus-node-exporter", "salt-minion"):
        assert host.service(service).is_running, service
        assert host.service(service).is_enabled, service
    sshd = host.check_output("sshd -T")
    assert "passwordauthentication no" in sshd
    assert "kbdinteractiveauthentication no" in sshd
    assert "permitrootlogin without-password" in sshd
    ops = host.user("ops")
    assert "platform-admins" in ops.groups
    keys = host.file("/home/ops/.ssh/authorized_keys").content_string
    assert "EXAMPLEonlyREPLACEwithYOURkey" in keys
    assert host.check_output("sudo -l -U ops").count("NOPASSWD: ALL") == 1
    assert host.file("/etc/localtime").linked_to == "/usr/share/zoneinfo/Europe/Moscow"
    assert "en_US.utf8" in host.check_output("locale -a")
    assert 'APT::Periodic::Unattended-Upgrade "1";' in host.file("/etc/apt/apt.conf.d/20auto-upgrades").content_string
    assert "master: 10.77.0.1" in host.file("/etc/salt/minion.d/10-platform.conf").content_string
    assert host.socket(f"tcp://{ip(site_lab, guest)}:9100").is_listening
    assert "table inet platform" in host.check_output("nft list table inet platform")


def test_ssh_is_open_to_the_admin_source_only(site_lab):
    assert connect_from_host(ip(site_lab, "vault"), 22) == "open"
    assert connect_from(site_lab, "rabbitmq", "vault", 22) == "dropped"


def test_node_exporter_answers_the_monitoring_guest_and_no_one_else(site_lab):
    monitoring = guest_host("monitoring", site_lab.lab.lab_dir)
    metrics = monitoring.check_output(f"curl -s --max-time 5 http://{ip(site_lab, 'postgresql')}:9100/metrics")
    assert "node_cpu_seconds_total" in metrics
    assert connect_from(site_lab, "rabbitmq", "postgresql", 9100) == "dropped"
    assert connect_from_host(ip(site_lab, "postgresql"), 9100) == "dropped"


def test_database_port_is_open_to_its_consumers_only(site_lab):
    assert connect_from(site_lab, "microservices", "postgresql", 5432) == "open"
    assert connect_from(site_lab, "reverse-proxy", "postgresql", 5432) == "dropped"
    assert connect_from_host(ip(site_lab, "postgresql"), 5432) == "dropped"


def test_public_ports_of_the_proxy_are_open_to_anyone(site_lab):
    assert connect_from_host(ip(site_lab, "reverse-proxy"), 443) == "open"
    assert connect_from_host(ip(site_lab, "vault"), 443) == "dropped"


def test_guest_reaches_the_package_mirror_and_nothing_else_outside(site_lab):
    host = guest_host("vault", site_lab.lab.lab_dir)
    assert host.run("apt-get update -qq").rc == 0
    outside = host.check_output(CONNECT.format("1.1.1.1", 443))
    assert outside.split()[0] == "dropped"


def test_a_lab_minion_cannot_fetch_pillar_files(site_lab):
    import salt.client

    client = salt.client.LocalClient(mopts=site_lab.lab.master_opts())
    got = client.cmd("vault", "cp.get_file_str", ["salt://site/example.sls"], timeout=30)
    assert got == {"vault": False}
    listed = client.cmd("vault", "cp.list_master", timeout=30)["vault"]
    assert "common/init.sls" in listed and not [f for f in listed if f.startswith(("site/", "overlays/"))]


def test_salt_cloud_lists_and_shows_the_lab_guests(site_lab):
    import subprocess
    import sys
    from pathlib import Path

    salt_cloud = str(Path(sys.executable).parent / "salt-cloud")
    conf = str(site_lab.lab.conf)
    listed = json.loads(subprocess.run([salt_cloud, "-c", conf, "-Q", "--out", "json"], capture_output=True,
                                       text=True, check=True).stdout)
    nodes = listed["platform"]["lxclab"]
    assert sorted(nodes) == site_lab.lab.guests
    assert all(node["state"] == "running" for node in nodes.values())
    shown = json.loads(subprocess.run([salt_cloud, "-c", conf, "-y", "-a", "show_instance", "vault", "--out", "json"],
                                      capture_output=True, text=True, check=True).stdout)
    assert "10.77.0.111" in json.dumps(shown)


def test_lab_status_and_reapplying_one_guest(site_lab, capsys):
    assert labctl.status(state_dir=site_lab.state) == 0
    shown = capsys.readouterr().out
    assert "master: running" in shown
    assert all(f"{name} " in shown for name in site_lab.lab.guests)
    assert labctl.apply("postgresql", state_dir=site_lab.state) == 0
    assert re.search(r"^postgresql: ok [1-9][0-9]*, changed 0, failed 0 ", capsys.readouterr().out, re.M)


# -- Vault in the lab (issue 5): bootstrapped by the lab as its operator, read through the master --

BAO = "BAO_ADDR=https://127.0.0.1:8200 BAO_CACERT=/etc/openbao/tls/ca.crt /usr/local/bin/bao"
PROBE = "roles/postgresql/lab-probe"
FIELDS = {"password": {"length": 32, "alphabet": "alphanumeric"}}


def salt_cmd(site_lab, target: str, fun: str, *args, **kwargs) -> tuple[object, int]:
    import salt.client

    client = salt.client.LocalClient(mopts=site_lab.lab.master_opts())
    reply = client.cmd(target, fun, list(args), kwarg=kwargs or None, timeout=120, full_return=True)[target]
    return reply["ret"], reply.get("retcode", 0)


def bao_status(site_lab) -> dict:
    host = guest_host("vault", site_lab.lab.lab_dir)
    out = host.run(f"{BAO} status -format=json")  # exit code 2 means sealed, output is still the status
    return json.loads(out.stdout)


def test_vault_is_initialised_unsealed_on_raft_and_the_master_holds_only_ciphertext(site_lab):
    import stat

    from sitectl.vaultctl import Operators

    status = bao_status(site_lab)
    assert status["initialized"] is True and status["sealed"] is False
    assert status["storage_type"] == "raft"
    init_dir = site_lab.state / "vault-init"
    init_file = init_dir / "example.json"
    assert stat.S_IMODE(init_file.stat().st_mode) == 0o600
    init = json.loads(init_file.read_text())
    assert set(init) == {"url", "shares", "threshold", "unseal_keys_pgp", "root_token_pgp"}
    assert not (init_dir / "root.token").exists(), "the decrypted root token must not stay on disk"
    # The root token was revoked at the end of the bootstrap: decrypted now, it is refused.
    import hvac

    with Operators(["lab"], keyring=init_dir / "lab-operator.asc") as operators:
        root = operators.decrypt(init["root_token_pgp"])
    client = hvac.Client(url=init["url"], token=root, verify=str(init_dir / "ca.crt"))
    with pytest.raises(hvac.exceptions.Forbidden):
        client.auth.token.lookup_self()
    # The master's AppRole credentials: a 0600 file of their own, read through the sdb profile only.
    creds = site_lab.lab.conf / "vault-master.yaml"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    import yaml

    assert list(yaml.safe_load((site_lab.lab.conf / "master.d" / "vault.conf").read_text())) == ["platform_vault"]


def test_a_guest_reads_its_roles_generated_secret_through_the_master_and_another_role_is_refused(site_lab):
    ret, code = salt_cmd(site_lab, "postgresql", "state.single", "vault_server.secret_generated", PROBE,
                         fields=FIELDS)
    (first,) = ret.values()
    assert code == 0 and first["result"] is True and first["changes"], first
    value, code = salt_cmd(site_lab, "postgresql", "vault_server.secret_read", PROBE, "password")
    assert code == 0 and re.fullmatch(r"[A-Za-z0-9]{32}", value)
    assert value not in json.dumps(ret)
    ret, _ = salt_cmd(site_lab, "postgresql", "state.single", "vault_server.secret_generated", PROBE, fields=FIELDS)
    (again,) = ret.values()
    assert again["result"] is True and not again["changes"], "generated once, never again"
    # The rabbitmq guest's master-issued token carries salt_role_rabbitmq: refused, reading and writing.
    refused, code = salt_cmd(site_lab, "rabbitmq", "vault_server.secret_read", PROBE, "password")
    assert code != 0 and f"secret/data/{PROBE}: permission denied" in str(refused)
    ret, _ = salt_cmd(site_lab, "rabbitmq", "state.single", "vault_server.secret_generated",
                      "roles/postgresql/lab-probe-2", fields=FIELDS)
    (denied,) = ret.values()
    assert denied["result"] is False and "permission denied" in denied["comment"]


def test_the_raft_snapshot_timer_has_a_token_that_takes_a_snapshot(site_lab):
    host = guest_host("vault", site_lab.lab.lab_dir)
    token = host.file("/etc/openbao/snapshot.token")
    assert token.mode == 0o600 and token.user == "root"
    assert host.service("vault-raft-snapshot.timer").is_enabled
    assert host.run("systemctl start vault-raft-snapshot.service").rc == 0
    assert re.search(r"\.snap$", host.check_output("ls /var/backups/vault"), re.M)


def test_a_restarted_vault_is_sealed_fails_the_run_loudly_and_the_operator_unseals_it(site_lab):
    from sitectl.vaultctl import LabVault

    host = guest_host("vault", site_lab.lab.lab_dir)
    assert host.run("systemctl restart openbao").rc == 0
    assert bao_status(site_lab)["sealed"] is True
    ret, code = salt_cmd(site_lab, "vault", "state.apply", "vault.unseal")
    failed = [s for s in ret.values() if s["result"] is False]
    assert code != 0 and any("is SEALED" in s["comment"] for s in failed), failed
    read, code = salt_cmd(site_lab, "postgresql", "vault_server.secret_read", PROBE, "password")
    assert code != 0 and "sealed" in str(read).lower()
    LabVault(site_lab.lab, "vault").unseal_again()
    assert bao_status(site_lab)["sealed"] is False
    value, code = salt_cmd(site_lab, "postgresql", "vault_server.secret_read", PROBE, "password")
    assert code == 0 and len(value) == 32


def test_the_vault_api_is_open_to_the_site_only(site_lab):
    assert connect_from(site_lab, "rabbitmq", "vault", 8200) == "open"
    assert connect_from_host(ip(site_lab, "vault"), 8200) == "open"  # the admin source


# -- services: unit.running (_states/unit.py), Salt's service.running with a one-call no-op ----------

EXPORTER = "prometheus-node-exporter"
EXPORTER_STATE = "unit_|-common-node-exporter-service-running_|-prometheus-node-exporter_|-running"


def test_a_service_is_left_alone_when_well_and_brought_back_when_stopped_disabled_reloaded_or_reconfigured(site_lab):
    host = guest_host("microservices", site_lab.lab.lab_dir)

    def main_pid() -> str:
        return host.check_output(f"systemctl show -p MainPID --value {EXPORTER}")

    def apply() -> dict:
        ret, code = salt_cmd(site_lab, "microservices", "state.apply", "common.node_exporter")
        assert code == 0 and isinstance(ret, dict), ret
        assert all(s["result"] is True for s in ret.values()), ret
        return ret[EXPORTER_STATE]

    before = main_pid()
    quiet = apply()
    assert quiet["changes"] == {} and "already running" in quiet["comment"], quiet
    assert main_pid() == before, "a no-op touched the running service"

    host.check_output(f"systemctl disable --now {EXPORTER}")
    back = apply()
    assert back["changes"], back
    assert host.service(EXPORTER).is_running and host.service(EXPORTER).is_enabled

    host.check_output(f"touch /lib/systemd/system/{EXPORTER}.service")  # a unit file newer than systemd's copy
    assert host.check_output(f"systemctl show -p NeedDaemonReload --value {EXPORTER}") == "yes"
    apply()
    assert host.check_output(f"systemctl show -p NeedDaemonReload --value {EXPORTER}") == "no"

    pid = main_pid()
    host.check_output(f"echo 'ARGS=\"--drifted\"' > /etc/default/{EXPORTER}")
    restarted = apply()
    assert restarted["changes"] == {EXPORTER: True} and main_pid() != pid, restarted
    assert "--drifted" not in host.file(f"/etc/default/{EXPORTER}").content_string
    assert host.service(EXPORTER).is_running

    # unit.enabled: postgresql.service (Debian's, which starts the clusters) disabled by hand
    pg = guest_host("postgresql", site_lab.lab.lab_dir)
    pg.check_output("systemctl disable postgresql")
    key = "unit_|-postgresql-service-enabled_|-postgresql_|-enabled"  # sls_id also runs its requisites
    ret, code = salt_cmd(site_lab, "postgresql", "state.sls_id", "postgresql-service-enabled", "postgresql")
    assert code == 0 and ret[key]["result"] is True and ret[key]["changes"], ret
    assert pg.service("postgresql").is_enabled
    ret, code = salt_cmd(site_lab, "postgresql", "state.sls_id", "postgresql-service-enabled", "postgresql")
    assert code == 0 and ret[key]["changes"] == {} and "already enabled" in ret[key]["comment"], ret[key]


# -- the data tier (issue 6) through the real master and Vault ------------------------------------


def attach(site_lab, guest: str, argv: list[str], data: str | None = None):
    import subprocess

    return subprocess.run(["lxc-attach", "-P", site_lab.lab.lab_dir, "-n", guest, "--clear-env", "--",
                           "env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", *argv],
                          input=data, capture_output=True, text=True, check=False, timeout=300)


def psql(site_lab, guest: str, user: str, db: str, password: str):
    """psql from ``guest`` over the network; the password goes through a 0600 pgpass file (stdin)."""
    script = ('umask 077; f=$(mktemp); cat > "$f"; PGPASSFILE="$f" PGCONNECT_TIMEOUT=5 psql -XAt '
              f'"host={ip(site_lab, "postgresql")} dbname={db} user={user} sslmode=disable" '
              '-c "select current_user || \'@\' || current_database()"; rc=$?; rm -f "$f"; exit $rc')
    return attach(site_lab, guest, ["bash", "-c", script], data=f"*:*:*:{user}:{password}\n")


def test_an_app_reads_its_database_password_through_the_master_and_reaches_only_its_own_database(site_lab):
    password, code = salt_cmd(site_lab, "microservices", "vault_server.secret_read",
                              "roles/postgresql/users/chat", "password")
    assert code == 0 and len(password) >= 24, "the client's policy grants its own credential"
    other, code = salt_cmd(site_lab, "microservices", "vault_server.secret_read",
                           "roles/postgresql/users/nextcloud", "password")
    assert code != 0 and "permission denied" in str(other)
    refused, code = salt_cmd(site_lab, "rabbitmq", "vault_server.secret_read", "roles/postgresql/users/chat",
                             "password")
    assert code != 0 and "permission denied" in str(refused)
    installed = attach(site_lab, "microservices", ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                                                   "postgresql-client"])
    assert installed.returncode == 0, installed.stderr[-500:]
    ok = psql(site_lab, "microservices", "chat", "chat", password)
    assert ok.returncode == 0 and ok.stdout.strip() == "chat@chat", ok.stderr
    elsewhere = psql(site_lab, "microservices", "chat", "nextcloud", password)
    assert elsewhere.returncode != 0
    assert "permission denied" in elsewhere.stderr or "no pg_hba.conf entry" in elsewhere.stderr, elsewhere.stderr
    wrong = psql(site_lab, "microservices", "chat", "chat", "not-the-password")
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr
    assert password not in json.dumps(site_lab.report)


# -- the edge (issue 7): real pebble in the lab, renewal through the real master's reactor ---------

DOMAIN = "your-domain.com"
MAIL_CERT = "/opt/mailcow-dockerized/data/assets/ssl/cert.pem"


def served(site_lab, name: str, path: str = "/") -> tuple[int, str, int]:
    """(serial of the certificate served for ``name``, first response line, body) through the
    proxy, verified against the lab pebble's root."""
    import ssl

    from cryptography import x509

    context = ssl.create_default_context(cafile=str(site_lab.state / "lab-acme" / "pebble-root.pem"))
    with socket.create_connection((ip(site_lab, "reverse-proxy"), 443), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            serial = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    return serial, head.splitlines()[0], body


@pytest.fixture(scope="module")
def upstream(site_lab):
    """A page in the nextcloud guest's web root, served by the role's own nginx (the Nextcloud server
    itself is not buildable here)."""
    script = "mkdir -p /var/www/nextcloud && echo 'upstream: nextcloud guest' > /var/www/nextcloud/index.html"
    started = attach(site_lab, "nextcloud", ["sh", "-c", script])
    assert started.returncode == 0, started.stderr
    assert connect_from(site_lab, "reverse-proxy", "nextcloud", 80) == "open"
    yield "upstream: nextcloud guest"
    attach(site_lab, "nextcloud", ["rm", "-f", "/var/www/nextcloud/index.html"])


def test_each_route_is_served_over_https_with_a_certificate_from_the_labs_acme_server(site_lab, upstream):
    serial, status, body = served(site_lab, f"nextcloud.{DOMAIN}")
    assert status.startswith("HTTP/1.1 200") and body.strip() == upstream
    mail_serial, status, _ = served(site_lab, f"mail.{DOMAIN}")
    assert status.split()[1] == "502", "nothing listens on the mail guest's 8080 in the lab: the proxy says so"
    assert serial != mail_serial, "one certificate per route"
    host = guest_host("reverse-proxy", site_lab.lab.lab_dir)
    assert "nginx: configuration file /etc/nginx/nginx.conf test is successful" in host.run("nginx -t").stderr


def bus_wait(bus, predicate, timeout: float):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = bus.get_event(wait=1, full=True)
        if event and predicate(event["tag"], event["data"]):
            return event, time.monotonic()
    return None, time.monotonic()


def test_a_renewal_fires_the_reactor_which_reloads_the_proxy_and_hands_the_mail_certificate_over(site_lab):
    import time

    import salt.utils.event

    before, _, _ = served(site_lab, f"mail.{DOMAIN}")
    opts = site_lab.lab.master_opts()
    with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True) as bus:
        t0 = time.monotonic()
        # As certbot.service runs it (its drop-in trusts the lab's ACME server), forced.
        renew = attach(site_lab, "reverse-proxy", ["env", "REQUESTS_CA_BUNDLE=/etc/letsencrypt/platform-acme-ca.pem",
                                                   "certbot", "renew", "--force-renewal", "--no-random-sleep-on-renew",
                                                   "--cert-name", f"mail.{DOMAIN}"])
        assert renew.returncode == 0, renew.stderr[-1500:]
        event, _ = bus_wait(bus, lambda tag, data: tag == "platform/acme/renewed", 60)
        assert event and event["data"]["id"] == "reverse-proxy"
        sent = {k: v for k, v in event["data"]["data"].items() if not k.startswith("__pub_")}  # Salt's own
        assert sent == {"lineage": f"mail.{DOMAIN}"}, "the event names the lineage only"
        ret, t_ret = bus_wait(bus, lambda tag, data: tag.startswith("salt/run/") and tag.endswith("/ret")
                              and data.get("fun") == "runner.acme.renewed", 120)
    assert ret, "the reactor ran no acme.renewed runner"
    result = ret["data"]["return"]
    assert result["result"] is True and result["nginx"] == "reloaded", result
    assert result["mail"]["guest"] == "mailcow"
    mail_key = MAIL_CERT.replace("cert.pem", "key.pem")
    assert result["mail"]["path"] == f"secret/roles/reverse_proxy/certificates/mail.{DOMAIN}", "through Vault"
    assert result["mail"]["changed"] == sorted([MAIL_CERT, mail_key]) and result["mail"]["reloaded"] is False
    after, _, _ = served(site_lab, f"mail.{DOMAIN}")
    assert after != before, "the proxy serves the renewed certificate"
    mail = guest_host("mailcow", site_lab.lab.lab_dir)
    handed = mail.check_output(f"openssl x509 -noout -serial -in {MAIL_CERT}").split("=")[1]
    assert int(handed, 16) == after, "the mail guest holds the same renewed certificate"
    assert mail.file(mail_key).mode == 0o600
    proxy_key = attach(site_lab, "reverse-proxy", ["cat", f"/etc/letsencrypt/live/mail.{DOMAIN}/privkey.pem"]).stdout
    same_key = mail.file(mail_key).sha256sum == hashlib.sha256(proxy_key.encode()).hexdigest()
    assert same_key, "the mail guest holds the renewed key"
    body = "".join(proxy_key.splitlines()[1:-1])[64:104]  # the key's own bytes, past its algorithm header
    leaked = subprocess.run(["grep", "-rlF", body, opts["cachedir"]], capture_output=True, text=True, check=False)
    assert leaked.stdout == "", f"the private key is in the master's cache: {leaked.stdout}"
    assert t_ret - t0 < 120


def test_a_forged_renewal_event_from_another_minion_changes_nothing(site_lab):
    import salt.utils.event

    mail = guest_host("mailcow", site_lab.lab.lab_dir)
    before = mail.run(f"sha256sum {MAIL_CERT}").stdout  # empty when no renewal handed one over yet
    opts = site_lab.lab.master_opts()
    with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True) as bus:
        forged = attach(site_lab, "rabbitmq", ["/opt/saltstack/salt/bin/salt-call", "event.send",
                                               "platform/acme/renewed", f'{{"lineage": "mail.{DOMAIN}"}}'])
        assert forged.returncode == 0, forged.stderr
        ret, _ = bus_wait(bus, lambda tag, data: tag.startswith("salt/run/") and tag.endswith("/ret")
                          and data.get("fun") == "runner.acme.renewed", 60)
    assert ret, "the runner answers the event (and refuses it)"
    assert ret["data"]["return"]["result"] is False
    # Who sent it is not known and decides nothing: the proxy's certificate is the one already acted on.
    assert "newer than the one last acted on" in ret["data"]["return"]["comment"]
    assert mail.run(f"sha256sum {MAIL_CERT}").stdout == before


def test_a_microservice_reads_its_broker_password_through_the_master_and_uses_only_its_own_vhost(site_lab):
    from tests.rabbitmq.amqp import AMQP_PROBE

    password, code = salt_cmd(site_lab, "microservices", "vault_server.secret_read",
                              "roles/rabbitmq/users/chat", "password")
    assert code == 0 and len(password) >= 24
    refused, code = salt_cmd(site_lab, "microservices", "vault_server.secret_read",
                             "roles/rabbitmq/users/apps", "password")
    assert code != 0 and "permission denied" in str(refused)
    installed = attach(site_lab, "microservices", ["sh", "-c", "DEBIAN_FRONTEND=noninteractive apt-get install "
                                                               "-y -qq --no-install-recommends python3-pika"])
    assert installed.returncode == 0, installed.stderr[-500:]
    assert attach(site_lab, "microservices", ["sh", "-c", "cat > /root/amqp_probe.py"], data=AMQP_PROBE).returncode == 0

    def probe(vhost: str, secret: str) -> dict:
        out = attach(site_lab, "microservices", ["python3", "/root/amqp_probe.py", ip(site_lab, "rabbitmq"), vhost,
                                                 "chat", "lab-probe"], data=secret)
        return json.loads(out.stdout.strip().splitlines()[-1])

    assert probe("chat", password) == {"ok": True}
    other = probe("apps", password)
    # pika reports a vhost refused at connection open (530 NOT_ALLOWED) as ProbableAccessDeniedError
    assert other["error"] == "ProbableAccessDeniedError" and "NOT_ALLOWED" in other["detail"], other
    assert probe("chat", "not-the-password")["ok"] is False
    assert connect_from(site_lab, "microservices", "rabbitmq", 5672) == "open"
    assert connect_from(site_lab, "reverse-proxy", "rabbitmq", 5672) == "dropped"
    for port in (4369, 25672):  # epmd and Erlang distribution: not for anyone on the network
        assert connect_from(site_lab, "microservices", "rabbitmq", port) in ("dropped", "refused")
