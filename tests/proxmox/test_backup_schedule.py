"""Proxmox's own backup of the site's guests (`salt-cloud -f backup_schedule platform`): one vzdump job
on /cluster/backup declared from site.backup.vzdump, through the real salt-cloud against fakepve.

fakepve checks every request against PVE's schema and the method's permission (Sys.Modify on /) but
stores nothing for /cluster/backup; the double below keeps the jobs as PVE's API2/Backup.pm does
(create refuses an existing id, update needs one, read returns prune-backups as a mapping) and adds the
checks that handler makes in code: VM.Backup on each VMID and Datastore.AllocateSpace on the storage."""

from __future__ import annotations

import pytest
from fakepve import FakePve
from fakepve.model import PveError

from tests.proxmox.conftest import GRANTED, NODE, TOKEN_ID, _populate, _Served, make_cloud, schema_violations

BACKUP_PRIVILEGES = ("Sys.Modify", "VM.Backup", "Datastore.AllocateSpace")
JOB = "platform-example"


def _prune_mapping(text: str) -> dict:
    return {k: int(v) for k, v in (item.split("=") for item in str(text).split(",") if item)}


class PveWithBackupJobs(FakePve):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.backup_jobs: dict[str, dict] = {}

    def _check_job(self, values, user):
        for vmid in str(values.get("vmid", "")).split(","):
            if vmid:
                self.require(user, f"/vms/{vmid}", "VM.Backup")
        if values.get("storage"):
            self.require(user, f"/storage/{values['storage']}", "Datastore.AllocateSpace")

    def _routes_backup(self):
        async def listing(values, user):
            return [{"id": i, "type": "vzdump", **job} for i, job in sorted(self.backup_jobs.items())]

        async def create(values, user):
            self._check_job(values, user)
            job_id = values["id"]
            if job_id in self.backup_jobs:
                raise PveError(500, f"Job '{job_id}' already exists\n")
            self.backup_jobs[job_id] = {k: v for k, v in values.items() if k != "id"}

        async def read(values, user):
            job = self.backup_jobs.get(values["id"])
            if job is None:
                raise PveError(500, f"Job '{values['id']}' does not exist\n")
            shown = dict(job)
            if "prune-backups" in shown:
                shown["prune-backups"] = _prune_mapping(shown["prune-backups"])
            return {"id": values["id"], "type": "vzdump", **shown}

        async def update(values, user):
            self._check_job(values, user)
            if values["id"] not in self.backup_jobs:
                raise PveError(500, f"Job '{values['id']}' does not exist\n")
            self.backup_jobs[values["id"]].update({k: v for k, v in values.items() if k != "id"})

        return [("GET", "/cluster/backup", listing), ("POST", "/cluster/backup", create),
                ("GET", "/cluster/backup/{id}", read), ("PUT", "/cluster/backup/{id}", update)]


@pytest.fixture
def pve(pve_pki):
    fake = PveWithBackupJobs(host="127.0.0.1", port=0)
    fake.time_scale = 0
    _populate(fake)
    fake.grant(TOKEN_ID, "/", *GRANTED, *BACKUP_PRIVILEGES)
    served = _Served(fake, *pve_pki)
    try:
        yield fake
    finally:
        served.stop()


@pytest.fixture
def cloud(tmp_path, pve, pve_pki):
    return make_cloud(tmp_path, pve, pve_pki[0])


def schedule(cloud) -> dict:
    return cloud.json("-f", "backup_schedule", "platform")["platform"]["proxmox_platform"]


def writes(pve) -> list[tuple[str, str]]:
    return [(m, p.split("/api2/json")[-1]) for m, p, _ in pve.requests if m != "GET"]


@pytest.mark.functional
def test_the_job_covers_every_guest_at_the_provider_and_a_second_run_changes_nothing(cloud, pve):
    pve.add_vm(103, "postgresql", node=NODE)
    pve.add_vm(111, "vault", node=NODE)
    pve.add_vm(555, "not-the-sites", node=NODE)
    pve.add_vm(777, "rabbitmq", node=NODE)  # the site says rabbitmq is 105: a namesake, not the site's
    first = schedule(cloud)
    assert first["result"] == "created" and first["vmids"] == [103, 111]
    assert "rabbitmq" in first["not_yet_created"] and "reverse-proxy" in first["not_yet_created"]
    job = pve.backup_jobs[JOB]
    assert job["vmid"] == "103,111" and job["storage"] == "backup-nfs" and job["schedule"] == "01:30"
    assert job["mode"] == "snapshot" and job["compress"] == "zstd" and job["enabled"] == 1
    assert job["prune-backups"] == "keep-daily=7,keep-weekly=4"
    assert schema_violations(pve.requests) == []

    pve.requests.clear()
    assert schedule(cloud)["result"] == "unchanged"
    assert writes(pve) == []


@pytest.mark.functional
def test_a_guest_added_later_is_added_to_the_job_by_the_next_run(cloud, pve):
    pve.add_vm(103, "postgresql", node=NODE)
    schedule(cloud)
    pve.add_vm(105, "rabbitmq", node=NODE)
    pve.requests.clear()
    second = schedule(cloud)
    assert second["result"] == "updated" and second["changed"] == ["vmid"]
    assert pve.backup_jobs[JOB]["vmid"] == "103,105"
    assert writes(pve) == [("PUT", f"/cluster/backup/{JOB}")]
    assert schema_violations(pve.requests) == []


@pytest.mark.functional
def test_a_token_without_vm_backup_is_refused_with_pves_words(tmp_path, pve_pki):
    fake = PveWithBackupJobs(host="127.0.0.1", port=0)
    fake.time_scale = 0
    _populate(fake)
    fake.grant(TOKEN_ID, "/", *GRANTED, "Sys.Modify", "Datastore.AllocateSpace")
    served = _Served(fake, *pve_pki)
    try:
        fake.add_vm(103, "postgresql", node=NODE)
        result = make_cloud(tmp_path, fake, pve_pki[0]).run("-f", "backup_schedule", "platform")
    finally:
        served.stop()
    assert "Permission check failed (/vms/103, VM.Backup)" in result.stdout + result.stderr
    assert fake.backup_jobs == {}
