"""Backups off the guests and the disaster-recovery drill in the whole-site lab (after test_site.py,
on the same lab: the `site_lab` fixture of tests/lab/conftest.py).

The lab's repository is rclone's restic REST server on the lab host; each stateful guest's job ships
there, node exporter serves each job's last success, and a repository that does not answer or is
damaged fails the job loudly. A repository that does not answer stops the drill before anything is
destroyed. Then the drill
for real, PostgreSQL, RabbitMQ, then Vault: destroy, recreate through salt-cloud, converge, restore, compare the
data, and the consumers' own access, untouched, works again."""

from __future__ import annotations

import json
import re

import pytest

from sitectl import drill
from tests.lab.test_site import attach, ip, psql, salt_cmd

pytestmark = pytest.mark.lab


def run_job(site_lab, guest: str, job: str):
    return attach(site_lab, guest, ["bash", "-c", f"systemctl start platform-backup@{job}.service; rc=$?; "
                                    f"journalctl -u platform-backup@{job}.service -n 20 --no-pager -o cat; exit $rc"])


def test_every_stateful_guest_ships_its_backup_off_the_guest(site_lab):
    repo = site_lab.lab.backup_repository()
    assert repo is not None and repo.answers()
    for guest, job in (("postgresql", "postgresql"), ("vault", "vault"), ("rabbitmq", "rabbitmq")):
        ran = run_job(site_lab, guest, job)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert (repo.data / f"{guest}-{job}" / "config").is_file()
        assert list((repo.data / f"{guest}-{job}" / "snapshots").iterdir())
        metrics = attach(site_lab, guest, ["cat", f"/var/lib/prometheus/node-exporter/platform_backup_{job}.prom"])
        assert f'platform_backup_last_success_timestamp_seconds{{job="{job}"}}' in metrics.stdout


def last_success(site_lab, guest: str, job: str) -> str:
    return attach(site_lab, guest, ["cat", f"/var/lib/prometheus/node-exporter/platform_backup_{job}.prom"]).stdout


def test_node_exporter_serves_each_jobs_last_success_and_schedule(site_lab):
    served = attach(site_lab, "postgresql", ["curl", "-fsS", f"http://{ip(site_lab, 'postgresql')}:9100/metrics"])
    assert re.search(r'^platform_backup_last_success_timestamp_seconds\{job="postgresql"\} \S+$', served.stdout, re.M)
    assert re.search(r'^platform_backup_schedule_seconds\{job="postgresql"\} 86400$', served.stdout, re.M)


def test_an_unreachable_repository_fails_the_job_loudly(site_lab):
    before = last_success(site_lab, "rabbitmq", "rabbitmq")
    repo = site_lab.lab.backup_repository()
    repo.stop_recorded()
    try:
        ran = run_job(site_lab, "rabbitmq", "rabbitmq")
    finally:
        repo.ensure()
    assert ran.returncode != 0
    assert "FAILED: the repository is unreachable" in ran.stdout, ran.stdout
    assert last_success(site_lab, "rabbitmq", "rabbitmq") == before


def test_a_damaged_repository_fails_the_job_loudly(site_lab):
    before = last_success(site_lab, "rabbitmq", "rabbitmq")
    data = site_lab.lab.backup_repository().data / "rabbitmq-rabbitmq" / "data"
    packs = [p for p in data.rglob("*") if p.is_file()]
    saved = {pack: pack.read_bytes() for pack in packs}
    for pack in packs:
        pack.write_bytes(b"\0" * pack.stat().st_size)
    try:
        ran = run_job(site_lab, "rabbitmq", "rabbitmq")
    finally:
        for pack, data in saved.items():
            pack.write_bytes(data)
    assert ran.returncode != 0
    assert "FAILED: restic check found the repository damaged" in ran.stdout, ran.stdout
    assert last_success(site_lab, "rabbitmq", "rabbitmq") == before


def test_an_unreachable_repository_stops_the_drill_before_anything_is_destroyed(site_lab):
    repo = site_lab.lab.backup_repository()
    repo.stop_recorded()
    try:
        runner = drill.Runner(site_lab.lab, "postgresql")
        with pytest.raises(drill.DrillFailed, match="the repository is unreachable"):
            runner.run()
    finally:
        repo.ensure()
    assert list(runner.drill.phases) == ["preflight"]
    assert "postgresql" in {g["name"] for g in site_lab.lab.host.list_guests(site_lab.lab.lab_dir)}


def _drill(site_lab, guest: str) -> drill.Drill:
    runner = drill.Runner(site_lab.lab, guest)
    try:
        result = runner.run()
    finally:
        drill.report(runner.drill)
        (site_lab.state / f"drill-{guest}.json").write_text(json.dumps(runner.drill.__dict__, indent=2))
    assert list(result.phases)[:3] == ["preflight", "destroy", "recreate"]
    return result


def test_postgresql_is_destroyed_and_comes_back_from_the_repository_with_its_data(site_lab):
    result = _drill(site_lab, "postgresql")
    assert any("tables identical" in note for note in result.notes)
    # The chat service's access, untouched: its password from Vault through the master, its database.
    password, code = salt_cmd(site_lab, "microservices", "vault_server.secret_read",
                              "roles/postgresql/users/chat", "password")
    assert code == 0
    ok = psql(site_lab, "microservices", "chat", "chat", password)
    assert ok.returncode == 0 and ok.stdout.strip() == "chat@chat", ok.stderr
    rows = attach(site_lab, "postgresql", ["runuser", "-u", "postgres", "--", "psql", "-XAt", "-d", "chat", "-c",
                                           "SELECT count(*) FROM recovery_drill"])
    assert int(rows.stdout.strip()) >= 1000


def test_rabbitmq_is_destroyed_and_comes_back_with_its_users_queues_and_permissions(site_lab):
    result = _drill(site_lab, "rabbitmq")
    assert any("queues and" in note and "bindings back" in note for note in result.notes)
    # The chat service, untouched: it reconnects to the new broker with its password from Vault (the
    # restored user's hash is the old one) and says so on its health endpoint.
    url = f"http://{ip(site_lab, 'microservices')}:8080/healthz"
    healthy = attach(site_lab, "microservices", ["bash", "-c", "for i in $(seq 90); do "
                     f"curl -fsS {url} && exit 0; sleep 1; done; exit 1"])
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    again = site_lab.lab.highstate(["rabbitmq"])["rabbitmq"]
    assert not again.failed and not again.changed, again.errors


def test_vault_is_destroyed_and_comes_back_with_every_secret_readable_by_the_same_policies(site_lab):
    result = _drill(site_lab, "vault")
    assert any("secrets identical" in note for note in result.notes)
    # The master's Vault access, untouched: it issues guests their tokens again, and the policies hold.
    version, code = salt_cmd(site_lab, "microservices", "vault_server.secret_version", "roles/postgresql/users/chat")
    assert code == 0 and version["version"] >= 1
    refused, code = salt_cmd(site_lab, "rabbitmq", "vault_server.secret_version", "roles/postgresql/users/chat")
    assert code != 0 and "permission denied" in str(refused)
    again = site_lab.lab.highstate(["postgresql"])["postgresql"]
    assert not again.failed, again.errors
