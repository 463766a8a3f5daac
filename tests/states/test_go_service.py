"""The ``go_service`` module and states on this machine: the environment file with passwords from a
real OpenBao (applied directly and after a dry run; values never in a return), and a release built
from a real git repository (file://) with the real Go toolchain, switched to by its ``current`` link.
Restarting a unit and the health-checked rollback need systemd: tests/chat runs them in lab guests."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from salt.exceptions import CommandExecutionError

from tests.chat.gotool import APP, missing_packages
from tests.states.conftest import converges, make_caller, unique

pytestmark = pytest.mark.functional

GO = {"root": "/usr/lib/go-1.19", "version": "go1.19.8"}
BUILD = {"gopath": ["/usr/share/gocode"], "package": "."}


@pytest.fixture(scope="module")
def go_caller(states_tmp, bao, bao_token_file):
    return make_caller(states_tmp / "salt-go", bao, bao_token_file)


def test_an_env_file_gets_its_values_and_vault_passwords_owned_by_the_service(go_caller, bao, tmp_path, testmode):
    path = f"roles/postgresql/users/{unique('app')}"
    password = secrets.token_urlsafe(24)
    bao.write(path, password=password)
    target = tmp_path / "app.env"
    run = lambda test: go_caller.state(  # noqa: E731
        "go_service.env_file", str(target), test=test, user="nobody", group="nogroup",
        values={"PGHOST": "10.0.0.5", "NOTE": 'a "quoted" \\ value'},
        secrets={"PGPASSWORD": {"path": path, "field": "password"}})

    def on_server():
        if not target.exists():
            return False
        st = target.stat()
        return ((st.st_mode & 0o777, st.st_uid) == (0o600, 65534)
                and f'PGPASSWORD="{password}"' in target.read_text()
                and 'NOTE="a \\"quoted\\" \\\\ value"' in target.read_text())

    converges(run, on_server, {"variables": {"added": ["NOTE", "PGHOST", "PGPASSWORD"]},
                               "file": {"old": None, "new": str(target)}},
              testmode, secret_values=(password,))
    # systemd reads it back as written
    shown = subprocess.run(["bash", "-c", f'set -a; . "{target}"; printf %s "$NOTE"'], capture_output=True,
                           text=True, check=True)
    assert shown.stdout == 'a "quoted" \\ value'

    rotated = secrets.token_urlsafe(24)
    bao.write(path, password=rotated)
    os.chmod(target, 0o644)
    ret = run(False)
    assert ret["result"] is True and ret["changes"] == {"variables": {"changed": ["PGPASSWORD"]},
                                                         "mode": {"old": "0644", "new": "0600"}}
    assert rotated not in json.dumps(ret) and f'PGPASSWORD="{rotated}"' in target.read_text()


def test_an_env_file_fails_naming_the_secret_vault_does_not_have(go_caller, tmp_path):
    target = tmp_path / "missing.env"
    ret = go_caller.state("go_service.env_file", str(target), user="nobody", group="nogroup",
                          secrets={"PGPASSWORD": {"path": "roles/postgresql/users/nobody-has-this"}})
    assert ret["result"] is False and "roles/postgresql/users/nobody-has-this: no such secret" in ret["comment"]
    assert not target.exists()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    if missing_packages():
        pytest.fail(f"Debian packages missing (make setup installs them): {missing_packages()}")
    work = tmp_path_factory.mktemp("go-repo") / "work"
    shutil.copytree(APP, work / "cmd" / "chat")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "GIT_AUTHOR_NAME": "dev", "GIT_AUTHOR_EMAIL": "dev@lab",
           "GIT_COMMITTER_NAME": "dev", "GIT_COMMITTER_EMAIL": "dev@lab"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "v1"], ["tag", "v1"]):
        subprocess.run(["git", *args], cwd=work, env=env, check=True)
    return work, subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True,
                                check=True).stdout.strip()


def test_a_git_ref_resolves_to_its_commit_and_builds_into_a_release_that_current_points_at(go_caller, repo, tmp_path):
    work, commit = repo
    base = tmp_path / "opt"
    source = {"git": {"url": f"file://{work}", "ref": "v1", "subdir": "cmd/chat"}}
    release = go_caller.cmd("go_service.resolve", source, str(base))
    assert release == commit[:12]
    assert go_caller.cmd("go_service.resolve", {"git": {**source["git"], "ref": "main"}}, str(base)) == release
    with pytest.raises(CommandExecutionError, match="git ref 'v9' is not in file://"):
        go_caller.cmd("go_service.resolve", {"git": {**source["git"], "ref": "v9"}}, str(base))
    meta = go_caller.cmd("go_service.build", "chat", source, release, str(base), GO, BUILD, "chat")
    assert meta["id"] == release and meta["go"] == "go1.19.8" and meta["source"] == f"file://{work} at v1"
    binary = base / "releases" / release / "bin" / "chat"
    version = subprocess.run([str(binary), "-version"], capture_output=True, text=True, check=True).stdout
    assert version.strip() == release
    assert not (base / "build" / release).exists(), "the sources are removed after the build"
    go_caller.cmd("go_service.switch", str(base), release)
    assert os.readlink(base / "current") == f"releases/{release}"
    assert go_caller.cmd("go_service.current", str(base)) == release


def test_a_toolchain_that_is_not_the_pinned_one_refuses_to_build(go_caller, tmp_path):
    with pytest.raises(CommandExecutionError, match="is go1.19.8, expected the pinned go1.22.0"):
        go_caller.cmd("go_service.toolchain", {**GO, "version": "go1.22.0"}, BUILD, str(tmp_path))


def test_an_archive_whose_checksum_differs_is_refused(go_caller, tmp_path):
    tarball = tmp_path / "src.tar.gz"
    subprocess.run(["tar", "-czf", str(tarball), "-C", str(APP), "."], check=True)
    source = {"archive": {"url": f"file://{tarball}", "sha256": "0" * 64}}
    with pytest.raises(CommandExecutionError, match=f"sha256 is [0-9a-f]{{64}}, expected {'0' * 64}"):
        go_caller.cmd("go_service.build", "chat", source, "0" * 12, str(tmp_path / "opt"), GO, BUILD, "chat")
    assert not list((tmp_path / "opt" / "releases").glob("*")), "no release is left behind"


def test_old_releases_are_pruned_but_never_current_or_previous(go_caller, tmp_path):
    base = tmp_path / "opt"
    for index, release in enumerate(["a" * 12, "b" * 12, "c" * 12, "d" * 12]):
        folder = base / "releases" / release
        folder.mkdir(parents=True)
        (folder / "RELEASE.json").write_text(json.dumps({"id": release}))
        os.utime(folder, (1000 + index, 1000 + index))
    removed = go_caller.cmd("go_service.prune", str(base), 2, ["a" * 12])
    assert removed == ["b" * 12]
    assert sorted(p.name for p in (base / "releases").iterdir()) == ["a" * 12, "c" * 12, "d" * 12]


def test_health_names_what_the_service_answered(go_caller):
    ok, said = go_caller.cmd("go_service.health", "http://127.0.0.1:9/healthz", 1, 0.2)
    assert ok is False and said.startswith("no answer")


def test_the_tree_source_is_named_by_its_files(go_caller, tmp_path):
    tree = Path(go_caller.tree)
    shutil.copytree(APP, tree / "svc", dirs_exist_ok=True)
    first = go_caller.cmd("go_service.resolve", {"tree": {"url": "salt://svc"}}, str(tmp_path))
    assert len(first) == 12
    # a changed file (a new one shows after the file server's list cache, fileserver_list_cache_time)
    (tree / "svc" / "message.go").write_text((APP / "message.go").read_text() + "\n// changed\n")
    assert go_caller.cmd("go_service.resolve", {"tree": {"url": "salt://svc"}}, str(tmp_path)) != first
