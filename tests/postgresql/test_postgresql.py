"""The postgresql role: rendered for the example site (no daemon), and converged in real LXC guests
with a real OpenBao, checked the way a user would: psql from the client guests with the passwords
from Vault, a backup that is restored, a password rotated under an open session, Vault gone."""

from __future__ import annotations

import importlib.util
import re
import secrets
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import yaml

from sitectl import ROOT, render, site
from tests.conftest import state_args
from tests.scratchlab import SALT_CACHE_DIR, guest_ip, guest_pillar, scratch_site

SERVER, CLIENT, OUTSIDER = "postgresql", "microservices", "outsider"
SITE = scratch_site(
    {
        SERVER: {"host": 103, "roles": ["postgresql"], "memory": 1024},
        # Apps on k3s: clients that need nothing else from the site (the chat role needs a broker too).
        CLIENT: {"host": 101, "roles": ["k3s"], "uses": [SERVER]},
        OUTSIDER: {"host": 102, "roles": ["k3s"]},
    },
    databases={"chat": {"clients": [CLIENT]}, "ledger": {"owner": "accounts", "clients": [CLIENT]}},
)
SERVER_IP, CLIENT_IP, OUTSIDER_IP = (guest_ip(SITE, name) for name in (SERVER, CLIENT, OUTSIDER))
USERS = "roles/postgresql/users"
CONFIG_FILES = ("/etc/postgresql/15/main/pg_hba.conf", "/etc/postgresql/15/main/conf.d/50-platform.conf",
                "/etc/default/prometheus-postgres-exporter")


# ------------------------------------------------------------------ rendered, no daemon

def show(config, pillar=None) -> dict:
    high = render.caller(config, "postgresql").cmd("state.show_sls", "postgresql", pillar=pillar)
    assert isinstance(high, dict), high
    return high


def rendered(config, high: dict, state_id: str) -> str:
    caller = render.caller(config, "postgresql")
    args = state_args(high[state_id], "file")
    with open(caller.cmd("cp.cache_file", args["source"])) as fh:
        return caller.cmd("file.apply_template_on_contents", fh.read(), "jinja", args["context"], None, "base")


@pytest.fixture(scope="module")
def example_high(example_config):
    return show(example_config)


@pytest.mark.render
def test_memory_settings_are_derived_from_the_guests_memory(example_config, example_high, example_site):
    assert example_site["guests"]["postgresql"]["memory"] == 4096
    text = rendered(example_config, example_high, "postgresql-config-file-managed")
    for line in ("shared_buffers = '1024MB'", "effective_cache_size = '3072MB'", "maintenance_work_mem = '256MB'",
                 "work_mem = '10MB'", "listen_addresses = 'localhost,10.10.10.103'",
                 "password_encryption = 'scram-sha-256'"):
        assert line in text.splitlines(), text


@pytest.mark.render
def test_pg_hba_admits_each_owner_from_its_client_guests_only_with_scram(example_config, example_high):
    text = rendered(example_config, example_high, "postgresql-hba-file-managed")
    rules = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    assert ["local", "all", "postgres", "peer"] in rules
    assert ["host", "postgres", "postgres_exporter", "127.0.0.1/32", "scram-sha-256"] in rules
    hosts = sorted(tuple(r[1:4]) for r in rules if r[0] == "host" and r[2] != "postgres_exporter")
    assert hosts == [("apps", "apps", "10.10.10.112/32"), ("chat", "chat", "10.10.10.101/32"),
                     ("grafana", "grafana", "10.10.10.120/32"), ("nextcloud", "nextcloud", "10.10.10.102/32")]
    assert all(r[-1] in ("peer", "scram-sha-256") for r in rules)
    assert not re.search(r"\b(trust|md5|password)\b", text)


@pytest.mark.render
def test_passwords_are_read_when_the_state_runs_never_compiled_into_it(example_high):
    for owner in ("nextcloud", "chat", "grafana", "apps", "postgres_exporter"):
        gen = state_args(example_high[f"postgresql-user-{owner}-secret-generated"], "vault_server")
        assert gen["name"] == f"{USERS}/{owner}" and gen["fields"]["password"]["length"] >= 32
        role = state_args(example_high[f"postgresql-user-{owner}-present"], "pg_role")
        assert role["password_path"] == f"{USERS}/{owner}" and "password" not in role
    exporter = state_args(example_high["postgresql-user-postgres_exporter-present"], "pg_role")
    assert exporter["member_of"] == ["pg_monitor"]
    env = state_args(example_high["postgresql-exporter-env-managed"], "file")
    assert env["show_changes"] is False and env["mode"] == "0600"


@pytest.mark.render
def test_config_is_checked_before_restart_and_pg_hba_before_reload(example_high):
    conf = state_args(example_high["postgresql-config-file-managed"], "file")
    assert conf["check_cmd"] == "/usr/local/sbin/pg-check-config"
    reload = state_args(example_high["postgresql-service-hba-reloaded"], "cmd")
    assert reload["require"] == [{"cmd": "postgresql-service-hba-checked"}]
    running = state_args(example_high["postgresql-service-running"], "unit")
    assert {"file": "postgresql-hba-file-managed"} not in running["watch"], "pg_hba.conf needs a reload only"


@pytest.mark.render
def test_the_pgdg_switch_renders_apt_postgresql_org_and_the_newer_major(example_config):
    high = show(example_config, {"postgresql": {"repository": "pgdg", "version": 17}})
    repo = state_args(high["postgresql-package-pgdg-repo-managed"], "pkgrepo")
    assert repo["name"] == ("deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] "
                            "https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main")
    assert state_args(high["postgresql-package-installed"], "pkg")["pkgs"][:2] == ["postgresql-17",
                                                                                   "postgresql-client-17"]
    assert state_args(high["postgresql-service-running"], "unit")["name"] == "postgresql@17-main"
    assert state_args(high["postgresql-hba-file-managed"], "file")["name"] == "/etc/postgresql/17/main/pg_hba.conf"


@pytest.mark.render
def test_the_postgresql_pillar_is_validated_with_the_site(example_site):
    roles = yaml.safe_load((ROOT / "pillar/platform/roles.sls").read_text())["roles"]
    good = {"repository": "pgdg", "version": 17, "backup": {"keep_days": 14}, "settings": {"jit": False}}
    assert site.validate({"site": example_site, "roles": roles, "postgresql": good}) == []
    bad = {"repository": "ppa", "version": 9, "backup": {"keep_days": 0}}
    errors = site.validate({"site": example_site, "roles": roles, "postgresql": bad})
    assert "postgresql.repository: got 'ppa'; expected 'debian' (the release's own major) or 'pgdg' " \
           "(apt.postgresql.org)" in errors
    assert "postgresql.version: got 9; expected a PostgreSQL major version (13-18)" in errors
    assert "postgresql.backup.keep_days: got 0; expected days (1-3650)" in errors


def load_pg_role():
    spec = importlib.util.spec_from_file_location("pg_role_module", ROOT / "_modules" / "pg_role.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.render
@pytest.mark.parametrize("password", ["Tr0ub4dor3", "pässwörd\u00adwith soft hyphen", "\u2168 and \u00aa"])
def test_the_scram_verifier_is_the_one_postgresql_computes(password):
    from salt.modules.postgres import _scram_sha_256

    pg_role = load_pg_role()
    salt = bytes(range(16))
    assert pg_role.scram_verifier(password, salt, 4096) == _scram_sha_256(password, salt_bytes=salt, iterations=4096)
    stored = pg_role.scram_verifier(password)
    assert pg_role._matches(password, stored) and not pg_role._matches(password + "x", stored)
    assert not pg_role._matches(password, "md5" + "0" * 32), "anything but a SCRAM verifier is a mismatch"


# ------------------------------------------------------------------ converged in LXC guests

class Postgres:
    """The converged lab: the scratch lab, its dev Vault, and the two first applies."""

    def __init__(self, lab, first, second):
        self.lab, self.first, self.second = lab, first, second
        self.bao = lab.bao

    def password(self, role: str) -> str:
        return self.bao.read(f"{USERS}/{role}")

    def psql(self, guest: str, user: str, db: str, password: str, *sql: str, host: str = SERVER_IP):
        """psql over the network as ``user``; the password goes through a 0600 pgpass file."""
        script = ('umask 077; f=$(mktemp); cat > "$f"; PGPASSFILE="$f" PGCONNECT_TIMEOUT=5 psql -XAt '
                  f'-v ON_ERROR_STOP=1 "host={host} port=5432 dbname={db} user={user} sslmode=disable" '
                  + " ".join(f'-c "${i + 1}"' for i in range(len(sql))) + '; rc=$?; rm -f "$f"; exit $rc')
        return self.lab.attach(guest, ["bash", "-c", script, "psql", *sql], check=False,
                               input=f"*:*:*:{user}:{password}\n")

    def superuser(self, sql: str) -> str:
        return self.lab.attach(SERVER, ["runuser", "-u", "postgres", "--", "psql", "-XAtc", sql]).stdout.strip()

    def digests(self) -> dict[str, str]:
        out = self.lab.attach(SERVER, ["sha256sum", *CONFIG_FILES]).stdout
        return {line.split()[1]: line.split()[0] for line in out.splitlines()}

    def started(self) -> str:
        """When the postmaster started: unchanged means not restarted."""
        return self.superuser("SELECT pg_postmaster_start_time()")

    def metrics_up(self, timeout: float = 20) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if re.search(r"^pg_up 1$", requests.get(f"http://{SERVER_IP}:9187/metrics", timeout=5).text, re.M):
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.5)
        return False


@pytest.fixture(scope="module")
def pg(scratch_lab):
    lab = scratch_lab
    lab.start_guests(SITE, SERVER, CLIENT, OUTSIDER)
    bao = lab.start_vault()
    with ThreadPoolExecutor(max_workers=2) as pool:
        clients = [pool.submit(lab.apt_install, guest, "postgresql-client-15") for guest in (CLIENT, OUTSIDER)]
        lab.push_salt(SERVER, guest_pillar(SITE, SERVER), vault_token=bao.root_token)
        first = lab.apply(SERVER, "postgresql")
        for done in clients:
            done.result()
    second = lab.apply(SERVER, "postgresql")
    print(f"\npostgresql: first apply {first.seconds} s, second {second.seconds} s")
    return Postgres(lab, first, second)


@pytest.mark.lab
def test_the_first_apply_converges_and_the_second_changes_nothing(pg):
    assert not pg.first.failed, pg.first.failed
    assert "postgresql-user-chat-present" in pg.first.changed
    assert not pg.second.failed, pg.second.failed
    assert not pg.second.changed, pg.second.changed


@pytest.mark.lab
def test_the_server_listens_on_the_guests_address_and_localhost_and_so_does_the_exporter(pg):
    out = pg.lab.attach(SERVER, ["ss", "-Hltn"]).stdout
    listening = {line.split()[3] for line in out.splitlines()}
    assert {a for a in listening if a.endswith(":5432")} == {"127.0.0.1:5432", "[::1]:5432", f"{SERVER_IP}:5432"}
    assert {a for a in listening if a.endswith(":9187")} == {f"{SERVER_IP}:9187"}


@pytest.mark.lab
def test_memory_settings_follow_the_guests_memory_and_nothing_waits_for_a_restart(pg):
    shown = {name: pg.superuser(f"SHOW {name}") for name in
             ("shared_buffers", "effective_cache_size", "maintenance_work_mem", "work_mem")}
    assert shown == {"shared_buffers": "256MB", "effective_cache_size": "768MB", "maintenance_work_mem": "64MB",
                     "work_mem": "4MB"}, "1024 MiB guest: 1/4, 3/4, 1/16, and the 4 MB floor"
    assert pg.superuser("SELECT count(*) FROM pg_settings WHERE pending_restart") == "0"


@pytest.mark.lab
def test_each_owner_reaches_its_own_database_from_its_client_and_nothing_else_gets_in(pg):
    chat, accounts = pg.password("chat"), pg.password("accounts")
    who = "SELECT current_user || '@' || current_database()"
    ok = pg.psql(CLIENT, "chat", "chat", chat, who)
    assert (ok.returncode, ok.stdout.strip()) == (0, "chat@chat"), ok.stderr
    ok = pg.psql(CLIENT, "accounts", "ledger", accounts, who)
    assert (ok.returncode, ok.stdout.strip()) == (0, "accounts@ledger"), ok.stderr
    refusals = {
        "another owner's database": (CLIENT, "chat", "ledger", chat),
        "a guest that is not a client": (OUTSIDER, "chat", "chat", chat),
        "the server's own address": (SERVER, "chat", "chat", chat),
        "the superuser over the network": (CLIENT, "postgres", "chat", chat),
    }
    for why, (guest, user, db, password) in refusals.items():
        out = pg.psql(guest, user, db, password, who)
        host = pg.lab.guests[guest]
        assert out.returncode != 0, why
        assert f'no pg_hba.conf entry for host "{host}", user "{user}", database "{db}"' in out.stderr, why
    wrong = pg.psql(CLIENT, "chat", "chat", "not-the-password", who)
    assert 'password authentication failed for user "chat"' in wrong.stderr


@pytest.mark.lab
def test_network_access_is_scram_by_32_address_and_passwords_are_stored_as_scram_verifiers(pg):
    rules = pg.superuser("SELECT type, array_to_string(database, ','), array_to_string(user_name, ','), "
                         "coalesce(address, ''), coalesce(netmask, ''), auth_method, coalesce(error, '') "
                         "FROM pg_hba_file_rules")
    rows = [line.split("|") for line in rules.splitlines()]
    assert rows == [
        ["local", "all", "postgres", "", "", "peer", ""],
        ["host", "postgres", "postgres_exporter", "127.0.0.1", "255.255.255.255", "scram-sha-256", ""],
        ["host", "chat", "chat", CLIENT_IP, "255.255.255.255", "scram-sha-256", ""],
        ["host", "ledger", "accounts", CLIENT_IP, "255.255.255.255", "scram-sha-256", ""],
    ]
    stored = pg.superuser("SELECT rolname || ' ' || left(rolpassword, 14) FROM pg_authid "
                          "WHERE rolname IN ('chat', 'accounts', 'postgres_exporter') ORDER BY 1")
    assert stored.splitlines() == ["accounts SCRAM-SHA-256$", "chat SCRAM-SHA-256$", "postgres_exporter SCRAM-SHA-256$"]
    assert pg.superuser("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database "
                        "WHERE has_database_privilege('public', datname, 'CONNECT') AND NOT datistemplate") \
        == "postgres", "PUBLIC may not connect to the site's databases"


@pytest.mark.lab
def test_the_exporter_serves_metrics_with_a_monitoring_only_role(pg):
    assert pg.metrics_up()
    assert pg.superuser("SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls FROM pg_roles "
                        "WHERE rolname = 'postgres_exporter'") == "f|f|f|f|f"
    assert pg.superuser("SELECT string_agg(g.rolname, ',') FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                        "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = 'postgres_exporter'") == "pg_monitor"


@pytest.mark.lab
def test_no_password_in_state_output_logs_or_caches(pg):
    output = pg.first.raw + pg.second.raw
    for role in ("chat", "accounts", "postgres_exporter"):
        password = pg.password(role)
        assert password not in output, role
        found = pg.lab.attach(SERVER, ["grep", "-rlF", password, "/var/log", SALT_CACHE_DIR, "/srv", "/etc",
                                       "/tmp", "/root", "/var/lib/postgresql"], check=False).stdout.split()
        expected = ["/etc/default/prometheus-postgres-exporter"] if role == "postgres_exporter" else []
        assert found == expected, (role, found)
    mode = pg.lab.attach(SERVER, ["stat", "-c", "%a %U", "/etc/default/prometheus-postgres-exporter"]).stdout.strip()
    assert mode == "600 root"


@pytest.mark.lab
def test_a_backup_is_restored_with_the_documented_command(pg):
    chat = pg.password("chat")
    wrote = pg.psql(CLIENT, "chat", "chat", chat, "CREATE TABLE notes (id int PRIMARY KEY, body text)",
                    "INSERT INTO notes VALUES (1, 'first'), (2, 'second'), (3, 'third')")
    assert wrote.returncode == 0, wrote.stderr
    backups = "/var/backups/postgresql"
    pg.lab.sh(SERVER, f"install -d -o postgres -g postgres -m 0700 {backups}/20200101T000000Z && "
                      f"touch -d '30 days ago' {backups}/20200101T000000Z")

    pg.lab.attach(SERVER, ["systemctl", "start", "postgresql-backup.service"], timeout=120)
    assert pg.lab.attach(SERVER, ["systemctl", "show", "-P", "Result", "postgresql-backup.service"]).stdout.strip() \
        == "success"
    (folder,) = pg.lab.attach(SERVER, ["ls", backups]).stdout.split()
    assert re.fullmatch(r"\d{8}T\d{6}Z", folder), "a folder older than keep_days is removed, the new one kept"
    listing = pg.lab.attach(SERVER, ["stat", "-c", "%n %U %a", *(f"{backups}/{folder}/{f}" for f in
                                     ("globals.sql", "chat.dump", "ledger.dump"))]).stdout.split("\n")
    assert all(line.endswith(" postgres 600") for line in listing if line), listing

    refused = pg.lab.attach(SERVER, ["pg-restore-db", "chat"], check=False)
    assert refused.returncode == 1 and "database chat exists; pass --replace" in refused.stderr
    pg.lab.attach(SERVER, ["runuser", "-u", "postgres", "--", "dropdb", "--force", "chat"])
    gone = pg.psql(CLIENT, "chat", "chat", chat, "SELECT 1")
    assert 'database "chat" does not exist' in gone.stderr

    restored = pg.lab.attach(SERVER, ["pg-restore-db", "chat"], check=False)
    assert restored.returncode == 0, restored.stderr
    rows = pg.psql(CLIENT, "chat", "chat", chat, "SELECT string_agg(body, ',' ORDER BY id) FROM notes")
    assert (rows.returncode, rows.stdout.strip()) == (0, "first,second,third"), rows.stderr
    assert pg.superuser("SELECT pg_get_userbyid(datdba), has_database_privilege('public', 'chat', 'CONNECT') "
                        "FROM pg_database WHERE datname = 'chat'") == "chat|f", "owner and privileges restored"


@pytest.mark.lab
def test_a_password_changed_in_vault_is_rotated_without_restart_and_other_sessions_stay(pg):
    lab = pg.lab
    lab.sh(CLIENT, "umask 077 && cat > /root/.pgpass-accounts", input=f"*:*:*:accounts:{pg.password('accounts')}\n")
    session = subprocess.Popen(
        lab.attach_argv(CLIENT, ["psql", "-XAt", "-v", "ON_ERROR_STOP=1",
                                 f"host={SERVER_IP} port=5432 dbname=ledger user=accounts sslmode=disable"],
                        env={"PGPASSFILE": "/root/.pgpass-accounts"}),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        session.stdin.write("SELECT 'opened', pg_backend_pid();\n")
        session.stdin.flush()
        deadline = time.monotonic() + 20
        pid = ""
        while not pid and time.monotonic() < deadline:
            pid = pg.superuser("SELECT pid FROM pg_stat_activity WHERE usename = 'accounts'")
            time.sleep(0.2)
        assert pid, "the accounts session did not open"
        started = pg.started()

        old = pg.password("chat")
        new = f"rotated{secrets.token_hex(12)}"
        pg.bao.write(f"{USERS}/chat", password=new)
        dry = lab.apply(SERVER, "postgresql", test=True)
        planned = {i: ret for i, ret in dry.states.items() if ret["result"] is not True}
        assert list(planned) == ["postgresql-user-chat-present"], planned
        assert planned["postgresql-user-chat-present"]["changes"] == {"password": "changed"}
        assert pg.psql(CLIENT, "chat", "chat", old, "SELECT 1").stdout.strip() == "1", "test=True changes nothing"

        rotated = lab.apply(SERVER, "postgresql")
        print(f"\npostgresql: rotation apply {rotated.seconds} s")
        assert not rotated.failed, rotated.failed
        assert rotated.changed == {"postgresql-user-chat-present": {"password": "changed"}}
        assert new not in rotated.raw and old not in rotated.raw

        assert pg.psql(CLIENT, "chat", "chat", new, "SELECT 1").stdout.strip() == "1"
        assert 'password authentication failed for user "chat"' in pg.psql(CLIENT, "chat", "chat", old,
                                                                            "SELECT 1").stderr
        assert pg.started() == started, "PostgreSQL was not restarted"
        assert pg.superuser("SELECT pid FROM pg_stat_activity WHERE usename = 'accounts'") == pid

        out, err = session.communicate("SELECT 'still here', pg_backend_pid();\n\\q\n", timeout=30)
        assert session.returncode == 0, err
        assert out.splitlines() == [f"opened|{pid}", f"still here|{pid}"]
    finally:
        if session.poll() is None:
            session.kill()
        lab.attach(CLIENT, ["rm", "-f", "/root/.pgpass-accounts"])


SITE_WITH_OUTSIDER = {
    **SITE,
    "guests": {**SITE["guests"], OUTSIDER: {**SITE["guests"][OUTSIDER], "uses": [SERVER]}},
    "databases": {**SITE["databases"], "chat": {"clients": [CLIENT, OUTSIDER]}},
}


@pytest.mark.lab
def test_a_new_client_in_the_site_is_admitted_with_a_reload_not_a_restart(pg):
    chat = pg.password("chat")
    assert "no pg_hba.conf entry" in pg.psql(OUTSIDER, "chat", "chat", chat, "SELECT 1").stderr
    started = pg.started()
    pg.lab.set_pillar(SERVER, guest_pillar(SITE_WITH_OUTSIDER, SERVER))
    results = pg.lab.apply(SERVER, "postgresql")
    assert not results.failed, results.failed
    assert set(results.changed) == {"postgresql-hba-file-managed", "postgresql-service-hba-checked",
                                    "postgresql-service-hba-reloaded"}
    assert f"+host    chat            chat                 {OUTSIDER_IP}/32    scram-sha-256" in \
        results.states["postgresql-hba-file-managed"]["changes"]["diff"]
    assert pg.psql(OUTSIDER, "chat", "chat", chat, "SELECT current_user").stdout.strip() == "chat"
    assert pg.started() == started, "a change of client access reloads, never restarts"


@pytest.mark.lab
def test_a_setting_the_server_would_refuse_is_never_installed_and_nothing_restarts(pg):
    before, started = pg.digests(), pg.started()
    bad = {"postgresql": {"settings": {"max_wal_size": "2XB"}}}
    pg.lab.set_pillar(SERVER, guest_pillar(SITE_WITH_OUTSIDER, SERVER, bad))
    try:
        results = pg.lab.apply(SERVER, "postgresql")
    finally:
        pg.lab.set_pillar(SERVER, guest_pillar(SITE_WITH_OUTSIDER, SERVER))
    conf = results.states["postgresql-config-file-managed"]
    assert conf["result"] is False and "check_cmd execution failed" in conf["comment"]
    assert 'invalid value for parameter "max_wal_size": "2XB"' in conf["comment"]
    assert results.states["postgresql-service-running"]["result"] is False, "no restart after a refused file"
    assert pg.digests() == before and pg.started() == started
    again = pg.lab.apply(SERVER, "postgresql")
    assert not again.failed and not again.changed, "the old file was kept: nothing to undo"


@pytest.mark.lab
def test_the_exporters_password_is_rotated_and_only_the_exporter_restarts(pg):
    started = pg.started()
    new = f"exporter{secrets.token_hex(12)}"
    pg.bao.write(f"{USERS}/postgres_exporter", password=new)
    results = pg.lab.apply(SERVER, "postgresql")
    assert not results.failed, results.failed
    assert set(results.changed) == {"postgresql-user-postgres_exporter-present", "postgresql-exporter-env-managed",
                                    "postgresql-exporter-service-running"}
    assert new not in results.raw
    assert pg.metrics_up(), "the exporter logs in with the new password"
    assert pg.started() == started


@pytest.mark.lab
def test_without_vault_the_secret_states_fail_and_the_config_keeps_its_content(pg):
    """Last: it stops the dev server, whose secrets live in memory only."""
    chat = pg.password("chat")
    before = pg.digests()
    pg.bao.stop()
    results = pg.lab.apply(SERVER, "postgresql")
    failures = results.failed
    for role in ("chat", "accounts", "postgres_exporter"):
        comment = failures.pop(f"postgresql-user-{role}-secret-generated")
        assert comment.startswith(f"secret/data/{USERS}/{role}: Vault at {pg.bao.url} is unreachable"), comment
        assert f"postgresql-user-{role}-present" in failures
    assert "postgresql-exporter-env-managed" in failures
    assert all(k.startswith(("postgresql-user-", "postgresql-database-", "postgresql-exporter-")) for k in failures)
    assert not results.changed, results.changed
    assert pg.digests() == before, "pg_hba.conf, postgresql.conf and the exporter's file keep their content"
    assert pg.psql(CLIENT, "chat", "chat", chat, "SELECT 1").stdout.strip() == "1", "the server keeps serving"
    assert pg.metrics_up()
