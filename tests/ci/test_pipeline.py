"""The repository's .gitlab-ci.yml, run by gitlab-ci-local, and its deploy job against a real master.

The tests build on each other in file order (one origin, one control checkout, one master): the
docs change deploys nothing; the salt change deploys; a failing state fails the job; a state that
cannot even render stops the deploy before anything is applied.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ci.conftest import MINION_ID, deploy_calls, git

pytestmark = pytest.mark.functional


def jobs(pipeline, **kwargs) -> list[str]:
    """The jobs a pipeline would run (gitlab-ci-local --list-csv leaves out the when: never ones)."""
    lines = pipeline("--list-csv", **kwargs).stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("name;stage;when"))
    return sorted(line.split(";")[0] for line in lines[header + 1:] if ";" in line)


def marker(repos) -> str | None:
    path = repos.markers / MINION_ID
    return path.read_text() if path.exists() else None


def artifact(repos, name: str) -> dict:
    found = sorted(repos.dev.glob(f".gitlab-ci-local/artifacts/deploy/**/{name}"))
    assert found, f"no artifact {name} exported by the deploy job"
    return json.loads(found[0].read_text())


def test_a_change_under_docs_on_main_runs_no_deploy(repos, pipeline, deploy_command):
    before = git(repos.control, "rev-parse", "HEAD")
    repos.commit({"docs/ci.md": "the docs, edited\n"}, "docs only")
    repos.push()
    result = pipeline()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "starting shell (deploy)" not in result.stdout, result.stdout
    assert deploy_calls(deploy_command) == []
    assert git(repos.control, "rev-parse", "HEAD") == before
    repos.settle()


def test_a_change_under_salt_on_an_unprotected_main_or_another_branch_runs_no_deploy(repos, pipeline,
                                                                                      deploy_command):
    repos.commit({"salt/deploy/version.txt": "not deployed\n"}, "a salt change on a branch")
    assert jobs(pipeline) == ["deploy"], "on a protected main, a change under salt/ deploys"
    assert jobs(pipeline, protected=False) == [], "an unprotected main never deploys"
    git(repos.dev, "checkout", "-q", "-b", "feature")
    try:
        result = pipeline()
        assert result.returncode == 0, result.stdout + result.stderr
        assert deploy_calls(deploy_command) == []
        assert jobs(pipeline, source="merge_request_event") == ["lint", "tests"], \
            "a merge request runs lint and the fast tiers, never a deploy"
    finally:
        git(repos.dev, "checkout", "-q", "main")
        git(repos.dev, "reset", "-q", "--hard", "HEAD~1")


def test_a_change_under_salt_on_main_deploys_it(repos, pipeline, deploy_command):
    sha = repos.commit({"salt/deploy/version.txt": "B\n"}, "a salt change")
    repos.push()
    result = pipeline()
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert deploy_calls(deploy_command) == [f"--commit {sha} --artifacts {repos.dev}/deploy"]
    assert git(repos.control, "rev-parse", "HEAD") == sha, "the control node's checkout moved to the pushed commit"
    assert marker(repos) == "B\n", "the highstate applied what the commit says"
    # The per-guest table; guests of the site without a key are listed as not created yet.
    assert "test=True ok/chg/fail" in out and "highstate ok/chg/fail" in out
    row = next(line for line in out.splitlines() if f" {MINION_ID} " in line and "reverse_proxy" in line)
    assert "0/1/0" in row, row
    assert "not created yet (the manual provision job creates them): cloud, control, db" in out
    tested = artifact(repos, "highstate-test.json")
    state = next(iter(tested[MINION_ID].values()))
    assert state["result"] is None and state["changes"], "test=True saw the change coming, and made none"
    applied = artifact(repos, "highstate.json")
    assert next(iter(applied[MINION_ID].values()))["result"] is True
    repos.settle()


def test_the_same_commit_again_changes_nothing_and_an_older_one_is_not_deployed(repos, deploy_command):
    sha = git(repos.control, "rev-parse", "HEAD")
    again = subprocess.run([str(deploy_command), "--commit", sha], capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "checkout: already there" in again.stdout
    row = next(line for line in again.stdout.splitlines() if line.startswith(f"{MINION_ID} "))
    assert row.count("1/0/0") == 2, f"the second deploy changes nothing: {row}"
    older = git(repos.control, "rev-parse", "HEAD~1")
    stale = subprocess.run([str(deploy_command), "--commit", older], capture_output=True, text=True, check=False)
    assert stale.returncode == 0 and "not deployed again" in stale.stdout
    assert git(repos.control, "rev-parse", "HEAD") == sha


def test_a_commit_that_is_not_on_main_or_a_dirty_checkout_is_refused(repos, deploy_command):
    git(repos.dev, "checkout", "-q", "-b", "unmerged")
    try:
        sha = repos.commit({"salt/deploy/version.txt": "unmerged\n"}, "never merged")
        git(repos.dev, "push", "-q", "origin", "HEAD:refs/heads/unmerged")
    finally:
        git(repos.dev, "checkout", "-q", "main")
    refused = subprocess.run([str(deploy_command), "--commit", sha], capture_output=True, text=True, check=False)
    assert refused.returncode == 2 and "is not on origin/main" in refused.stderr
    assert subprocess.run([str(deploy_command), "--commit", "HEAD"], capture_output=True, text=True,
                          check=False).returncode == 2
    sha = repos.commit({"salt/deploy/version.txt": "C\n"}, "another salt change")
    repos.push()
    repos.settle()
    edited = repos.control / "salt" / "deploy" / "version.txt"
    edited.write_text("edited on the control node\n")
    try:
        dirty = subprocess.run([str(deploy_command), "--commit", sha], capture_output=True, text=True, check=False)
        assert dirty.returncode == 2 and "local changes" in dirty.stderr
        assert marker(repos) == "B\n"
    finally:
        git(repos.control, "checkout", "--", "salt/deploy/version.txt")


def test_a_failing_state_fails_the_deploy_job(repos, pipeline):
    sha = repos.commit({
        "salt/top.sls": "base:\n  '*':\n    - deploy\n    - broken\n",
        "salt/broken.sls": "deploy-broken-cmd-run:\n  cmd.run:\n    - name: 'exit 3'\n",
        "salt/deploy/version.txt": "D\n",
    }, "a state that fails when applied")
    repos.push()
    result = pipeline()
    out = result.stdout + result.stderr
    assert result.returncode != 0, f"the pipeline must fail when a state failed:\n{out}"
    assert f"FAILED {MINION_ID}: deploy-broken-cmd-run" in out
    assert git(repos.control, "rev-parse", "HEAD") == sha
    assert artifact(repos, "highstate.json"), "the artifacts are kept when the job fails"
    repos.settle()


def test_a_state_that_does_not_render_stops_the_deploy_before_anything_changes(repos, pipeline):
    repos.commit({
        "salt/top.sls": "base:\n  '*':\n    - deploy\n",
        "salt/broken.sls": None,
        "salt/deploy/init.sls": (repos.dev / "salt" / "deploy" / "init.sls").read_text() + "  {{ unclosed\n",
        "salt/deploy/version.txt": "E\n",
    }, "a state that does not render")
    repos.push()
    result = pipeline()
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "the test=True highstate failed; nothing was applied" in out
    assert marker(repos) == "D\n", "nothing was applied"
    repos.settle()


def test_a_new_guest_in_the_site_is_created_by_the_manual_provision_job_only(repos, pipeline, provision_command):
    site = repos.dev / "pillar" / "site" / "ci.sls"
    added = site.read_text().replace("  routes:\n", (
        "    ci-new:\n      kind: lxc\n      vmid: 104\n      cores: 1\n      memory: 512\n      disk: 4\n"
        "      address: 192.168.50.14/24\n      roles: [rabbitmq]\n  routes:\n"))
    repaired = (repos.dev / "salt" / "deploy" / "init.sls").read_text().replace("  {{ unclosed\n", "")
    repos.commit({"pillar/site/ci.sls": added, "salt/deploy/init.sls": repaired, "salt/deploy/version.txt": "F\n"},
                 "a new guest")
    repos.push()
    assert jobs(pipeline) == ["deploy", "provision"]
    result = pipeline()
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "not created yet (the manual provision job creates them): ci-new, cloud, control, db" in out
    made = provision_command.parent / "map"
    assert not made.exists(), "a manual job runs only when asked"
    result = pipeline("--manual", "provision", "provision")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    created = json.loads(made.read_text())
    assert sorted(n for names in created.values() for n in names) == ["ci-new", "cloud", "control", "db"], \
        "only the guests without a key are created"
    repos.settle()


def test_a_guest_with_a_key_that_does_not_answer_fails_the_deploy(repos, ci_master, deploy_command):
    """A guest the master has a key for but that is gone is given up after the timeout (Salt asks it
    whether it still runs the job) and fails the deploy, without holding it for an hour."""
    keys = Path(ci_master.config["pki_dir"]) / "minions"
    (keys / "db").write_bytes((keys / MINION_ID).read_bytes())
    try:
        sha = git(repos.control, "rev-parse", "HEAD")
        ran = subprocess.run([str(deploy_command), "--commit", sha, "--timeout", "3"], capture_output=True,
                             text=True, check=False, timeout=300)
    finally:
        (keys / "db").unlink()
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "FAILED db: no return from the minion" in ran.stderr
    row = next(line for line in ran.stdout.splitlines() if line.startswith("db "))
    assert "0/0/1" in row, row


def test_a_change_to_the_master_s_own_code_restarts_it_before_the_highstate(repos, deploy_command, tmp_path):
    restarts = tmp_path / "restarts"
    restart = tmp_path / "restart-master"
    restart.write_text(f"#!/bin/sh\necho restarted >> '{restarts}'\n")
    restart.chmod(0o755)
    runner = repos.dev / "_runners" / "platform.py"
    sha = repos.commit({"_runners/platform.py": runner.read_text() + "\n# a change the master holds in memory\n"},
                       "a runner change")
    repos.push()
    repos.settle()
    ran = subprocess.run([str(deploy_command), "--commit", sha, "--restart-master", str(restart)],
                         capture_output=True, text=True, check=False, timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "the master's own code changed: restarting it" in ran.stdout
    assert restarts.read_text() == "restarted\n"
    again = subprocess.run([str(deploy_command), "--commit", sha, "--restart-master", str(restart)],
                           capture_output=True, text=True, check=False, timeout=300)
    assert again.returncode == 0 and restarts.read_text() == "restarted\n", "no restart without a change"


def test_the_deploy_command_is_a_sitectl_command():
    helptext = subprocess.run([sys.executable, "-m", "sitectl.cli", "deploy", "--help"], capture_output=True,
                              text=True, check=True).stdout
    assert "--commit" in helptext and "--artifacts" in helptext
