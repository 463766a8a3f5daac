"""Backups that leave the guest (salt/backup): the postgresql role's job in a real LXC guest ships a
fresh dump with restic to a repository on the scratch lab's gateway (rclone serve restic), with its
password generated into a real OpenBao; the data comes back after the database is dropped; node
exporter serves the job's last success and schedule; an unreachable or damaged repository fails the
job loudly and leaves the last success where it was."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from sitectl.lab.backup_repo import BackupRepository
from tests.scratchlab import GATEWAY, guest_pillar, scratch_site

SERVER = "postgresql"
PORT = 8008
REPOSITORY = f"rest:http://{GATEWAY}:{PORT}"
# The client is described (a database needs one) but never started.
SITE = scratch_site({SERVER: {"host": 103, "roles": ["postgresql"], "memory": 1024},
                     "apps": {"host": 112, "roles": ["k3s"], "uses": [SERVER]}},
                    databases={"chat": {"clients": ["apps"]}}, backup={"repository": REPOSITORY})
JOB_REPO = f"{SERVER}-postgresql"
METRICS = "/var/lib/prometheus/node-exporter/platform_backup_postgresql.prom"


class Backups:
    def __init__(self, lab, repo, first, second):
        self.lab, self.repo, self.first, self.second = lab, repo, first, second

    def sql(self, db: str, sql: str) -> str:
        return self.lab.attach(SERVER, ["runuser", "-u", "postgres", "--", "psql", "-XAtq", "-v", "ON_ERROR_STOP=1",
                                        "-d", db, "-c", sql]).stdout.strip()

    def run_job(self) -> subprocess.CompletedProcess:
        """The job as its timer starts it: its unit, and what it said in the journal."""
        cp = self.lab.sh(SERVER, "systemctl start platform-backup@postgresql.service", check=False, timeout=600)
        cp.journal = self.lab.sh(SERVER, "journalctl -u platform-backup@postgresql.service -n 30 --no-pager -o cat",
                                 check=False).stdout
        return cp

    def last_success(self) -> float | None:
        text = self.lab.sh(SERVER, f"cat {METRICS} 2>/dev/null || true").stdout
        m = re.search(r'^platform_backup_last_success_timestamp_seconds\{job="postgresql"\} (\d+)$', text, re.M)
        return float(m.group(1)) if m else None

    def host_restic(self, *args: str) -> subprocess.CompletedProcess:
        """restic on the host (the master's side) with the job's password from Vault in a 0600 file."""
        pw = self.repo.workdir / "pw"
        pw.write_text(self.lab.bao.read("roles/postgresql/backup", field="restic_password") + "\n")
        pw.chmod(0o600)
        try:
            return subprocess.run(["restic", "-r", f"{REPOSITORY}/{JOB_REPO}", *args], capture_output=True, check=False,
                                  text=True, timeout=300,
                                  env={"PATH": os.environ["PATH"], "RESTIC_PASSWORD_FILE": str(pw),
                                       "RESTIC_CACHE_DIR": str(self.repo.workdir / "cache")})
        finally:
            pw.unlink()


@pytest.fixture(scope="module")
def backups(scratch_lab):
    lab = scratch_lab
    lab.start_guests(SITE, SERVER)
    bao = lab.start_vault()
    lab.push_salt(SERVER, guest_pillar(SITE, SERVER), vault_token=bao.root_token)
    repo = BackupRepository(lab.workdir / "repository", GATEWAY, PORT).start()
    try:
        yield from _converged(lab, repo)
    finally:
        repo.stop()


def _converged(lab, repo):
    first = lab.apply(SERVER, "postgresql")
    second = lab.apply(SERVER, "postgresql")
    print(f"\nbackup: first apply {first.seconds} s, second {second.seconds} s")
    yield Backups(lab, repo, first, second)


@pytest.mark.lab
def test_the_job_is_declared_once_and_the_second_apply_changes_nothing(backups):
    assert not backups.first.failed, backups.first.failed
    for state in ("backup-postgresql-secret-generated", "backup-postgresql-repository-initialised",
                  "backup-postgresql-timer-running"):
        assert state in backups.first.changed, state
    assert not backups.second.failed, backups.second.failed
    assert not backups.second.changed, backups.second.changed
    # The repository lives on the gateway, not on the guest; its password in Vault only.
    assert (backups.repo.data / JOB_REPO / "config").is_file()
    password = backups.lab.bao.read("roles/postgresql/backup", field="restic_password")
    assert password not in backups.first.raw and password not in backups.second.raw
    mode = backups.lab.sh(SERVER, "stat -c '%a %U' /etc/platform-backup/postgresql.password").stdout.split()
    assert mode == ["600", "root"]
    timers = backups.lab.sh(SERVER, "systemctl is-enabled platform-backup-postgresql.timer").stdout.strip()
    assert timers == "enabled"


@pytest.mark.lab
def test_a_run_ships_a_fresh_dump_that_restores_what_was_written_before_it(backups):
    backups.sql("chat", "CREATE TABLE drill (id int PRIMARY KEY, body text); "
                        "INSERT INTO drill SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
    checksum = "SELECT count(*) || ':' || md5(string_agg(id || body, ',' ORDER BY id)) FROM drill"
    before = backups.sql("chat", checksum)
    t0 = time.time()
    run = backups.run_job()
    assert run.returncode == 0, run.journal
    assert backups.last_success() >= int(t0)
    snapshots = backups.host_restic("snapshots", "--json")
    assert snapshots.returncode == 0, snapshots.stderr
    assert f'"hostname":"{SERVER}"' in snapshots.stdout and '"tags":["postgresql"]' in snapshots.stdout
    # Lose the database and the local dumps: only the repository off the guest still has it.
    backups.lab.sh(SERVER, "runuser -u postgres -- dropdb --force chat && rm -rf /var/backups/postgresql/*")
    backups.lab.sh(SERVER, "platform-restore postgresql && pg-restore-db chat", timeout=600)
    assert backups.sql("chat", checksum) == before


@pytest.mark.lab
def test_node_exporter_serves_the_last_success_and_the_schedule(backups):
    """Debian's node exporter as the base state installs it (its own textfile directory, which
    common.node_exporter leaves as it is)."""
    backups.lab.apt_install(SERVER, "prometheus-node-exporter")
    fetch = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9100/metrics').read().decode())"
    deadline = time.monotonic() + 30
    while True:
        text = backups.lab.attach(SERVER, ["python3", "-c", fetch], check=False).stdout
        if "platform_backup_last_success_timestamp_seconds" in text or time.monotonic() > deadline:
            break
        time.sleep(1)
    success = r'^platform_backup_last_success_timestamp_seconds\{job="postgresql"\} \S+$'
    assert re.search(success, text, re.M), text[-500:]
    assert re.search(r'^platform_backup_schedule_seconds\{job="postgresql"\} 86400$', text, re.M)


@pytest.mark.lab
def test_an_unreachable_repository_fails_the_job_loudly(backups):
    before = backups.last_success()
    backups.repo.stop()
    try:
        run = backups.run_job()
    finally:
        backups.repo.start()
    assert run.returncode != 0
    assert "FAILED: the repository is unreachable" in run.journal, run.journal
    state = backups.lab.sh(SERVER, "systemctl is-failed platform-backup@postgresql.service", check=False).stdout
    assert state.strip() == "failed"
    assert backups.last_success() == before


@pytest.mark.lab
def test_a_damaged_repository_fails_the_job_loudly(backups):
    before = backups.last_success()
    packs = sorted((backups.repo.data / JOB_REPO / "data").rglob("*"))
    packs = [p for p in packs if p.is_file()]
    saved = {p: p.read_bytes() for p in packs}
    for pack in packs:
        pack.write_bytes(b"\0" * pack.stat().st_size)
    try:
        run = backups.run_job()
    finally:
        for pack, data in saved.items():
            pack.write_bytes(data)
    assert run.returncode != 0
    assert "FAILED: restic check found the repository damaged" in run.journal, run.journal
    assert backups.last_success() == before
