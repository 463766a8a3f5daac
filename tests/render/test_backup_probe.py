"""platform-backup --probe (every highstate's check before `--init`) against a real repository.

Debian's restic and rclone's restic REST server on loopback, the script and the job file rendered
from the state tree's own templates. The probe must say whether the repository answers and opens
with the job's password; it opens it with restic (key derivation included) only when the password
or the repository's keys differ from its last successful open, and fails in every case where
restic would.
"""

from __future__ import annotations

import os
import shlex
import subprocess

import jinja2
import pytest

from sitectl import ROOT
from sitectl.lab.backup_repo import BackupRepository
from tests.openbao import free_port

JOB = "probe"


def render(name: str, **context) -> str:
    # a shell script, not HTML: Salt renders it without escaping too
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)  # noqa: S701
    env.filters["quote"] = lambda value: shlex.quote(str(value))
    return env.from_string((ROOT / "salt/backup/files" / name).read_text()).render(**context)


@pytest.fixture
def repository(tmp_path):
    repo = BackupRepository(tmp_path / "served", "127.0.0.1", free_port()).start()
    yield repo
    repo.stop()


@pytest.fixture
def job(tmp_path, repository):
    config, cache, textfiles, bin_dir = (tmp_path / d for d in ("etc", "cache", "textfile", "bin"))
    for folder in (config, cache, textfiles, bin_dir):
        folder.mkdir(mode=0o700)
    password = config / f"{JOB}.password"
    password.write_text("correct horse battery staple\n")
    password.chmod(0o600)
    conf = {"repository": f"{repository.url}/guest-{JOB}", "password_file": str(password), "cache_dir": str(cache),
            "host": "guest", "paths": [str(tmp_path)], "prepare": [],
            "retention": {"keep_last": 1, "keep_daily": 1, "keep_weekly": 1, "keep_monthly": 1},
            "schedule_seconds": 86400, "check_read_data_subset": 0}
    (config / f"{JOB}.conf").write_text(render("job.conf.j2", job=JOB, conf=conf))
    script = bin_dir / "platform-backup"
    script.write_text(render("platform-backup.sh.j2", config_dir=str(config), textfile_dir=str(textfiles)))
    script.chmod(0o750)

    class Job:
        def __init__(self):
            self.password, self.cache, self.conf = password, cache, conf
            self.record = cache / f"platform-probe-{JOB}"
            self.shadow = tmp_path / "shadow"  # a `restic` that fails, put first in PATH

        def run(self, mode: str, restic: bool = True) -> int:
            path = os.environ.get("PATH", "/usr/bin:/bin")
            if not restic:
                self.shadow.mkdir(exist_ok=True)
                fake = self.shadow / "restic"
                fake.write_text("#!/bin/sh\necho called >> \"$(dirname \"$0\")/calls\"\nexit 99\n")
                fake.chmod(0o755)
                path = f"{self.shadow}:{path}"
            env = {"PATH": path, "HOME": str(tmp_path), "LANG": "C.UTF-8"}
            return subprocess.run([str(script), f"--{mode}", JOB], env=env, capture_output=True, timeout=120,
                                  check=False).returncode

        def restic_calls(self) -> int:
            calls = self.shadow / "calls"
            return len(calls.read_text().splitlines()) if calls.exists() else 0

    return Job()


def test_probe_fails_before_init_and_passes_after(job):
    assert job.run("probe") == 1, "no repository yet: the state must initialise it"
    assert job.run("init") == 0
    assert job.run("probe") == 0
    assert job.record.exists() and oct(job.record.stat().st_mode & 0o777) == "0o600"


def test_probe_opens_the_repository_again_only_when_password_or_keys_changed(job, repository, tmp_path):
    assert job.run("init") == 0
    assert job.run("probe") == 0  # opened with restic: recorded

    assert job.run("probe", restic=False) == 0, "same password, same keys: restic is not needed"
    assert job.restic_calls() == 0

    job.password.write_text("another password\n")
    assert job.run("probe", restic=False) == 1 and job.restic_calls() == 1, "a new password is tried with restic"
    assert job.run("probe") == 1, "and restic refuses it"

    job.password.write_text("correct horse battery staple\n")
    assert job.run("probe", restic=False) == 0, "the password of the last open again"

    other = tmp_path / "other.password"
    other.write_text("a second key\n")
    env = {**os.environ, "RESTIC_REPOSITORY": job.conf["repository"], "RESTIC_PASSWORD_FILE": str(job.password),
           "RESTIC_CACHE_DIR": str(job.cache)}
    subprocess.run(["restic", "key", "add", "--new-password-file", str(other)], env=env, check=True,
                   capture_output=True, timeout=120)
    calls = job.restic_calls()
    assert job.run("probe", restic=False) == 1 and job.restic_calls() == calls + 1, "new keys: opened again"
    assert job.run("probe") == 0


def test_probe_fails_when_the_repository_is_gone_or_unreachable(job, repository):
    assert job.run("init") == 0
    assert job.run("probe") == 0
    (repository.data / f"guest-{JOB}" / "config").unlink()
    assert job.run("probe", restic=False) == 1, "no config any more: not a repository"
    repository.stop()
    assert job.run("probe", restic=False) == 1, "the server does not answer"
