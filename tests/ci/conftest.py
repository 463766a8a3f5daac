"""The owner's CI, run for real: the repository's ``.gitlab-ci.yml`` executed by ``gitlab-ci-local``
(shell executor) in a developer's clone, and its deploy job's command, ``sitectl deploy``, moving a
control node's checkout and highstating through a real Salt master.

- ``origin``: a bare repository playing the owner's GitLab project (branch ``main``);
- ``control``: the control node's checkout, a clone of it; the master's file roots, pillar and
  extension modules are that checkout's, so a deploy is what the master serves next;
- ``dev``: the developer's clone where a commit is made and "pushed" (the pipeline of a push
  compares the pushed commit with the branch before the push, as GitLab does);
- a real master (pytest-salt-factories) over the control checkout and one minion, ``web``, a guest
  of the site; the minion runs on this machine, so the checkout's ``salt/`` is a harmless tree
  (a marker file whose content the commits change, and states that fail on purpose).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from sitectl import ROOT
from sitectl.config import SaltSettings, write_config
from tests.conftest import SITES

GITLAB_CI_LOCAL = ROOT / ".ci" / "node_modules" / ".bin" / "gitlab-ci-local"
MINION_ID = "ci-web"
# The keys pytest-salt-factories owns for its daemons; every other key comes from etc/master.j2.
FACTORY_KEYS = {
    "id", "user", "root_dir", "pki_dir", "cachedir", "sock_dir", "pidfile", "log_file", "key_logfile",
    "log_level_logfile", "interface", "publish_port", "ret_port",
}
# What the master runs and serves, copied from the repository into the checkout (salt/ is the test's).
MASTER_TREE = ("_pillar", "_modules", "_states", "_utils", "_runners", "_clouds", "reactor", "etc",
               "cloud.profiles.d")


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "dev", "GIT_AUTHOR_EMAIL": "dev@example.org",
           "GIT_COMMITTER_NAME": "dev", "GIT_COMMITTER_EMAIL": "dev@example.org"}
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                          env=env).stdout.strip()


@dataclass
class Repos:
    origin: Path
    control: Path
    dev: Path
    state: Path  # the control checkout's rendered config (sitectl master-config)
    markers: Path

    def commit(self, files: dict[str, str | None], message: str) -> str:
        """A commit in the developer's clone (None removes a file); its id."""
        for name, text in files.items():
            path = self.dev / name
            if text is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        git(self.dev, "add", "-A")
        git(self.dev, "commit", "-q", "-m", message)
        return git(self.dev, "rev-parse", "HEAD")

    def push(self, branch: str = "main") -> str:
        """Push HEAD to ``branch`` of origin, keeping the developer's view of origin/main as it was
        before the push: what GitLab compares a push pipeline's changes with."""
        before = git(self.dev, "rev-parse", "refs/remotes/origin/main")
        git(self.dev, "push", "-q", "origin", f"HEAD:refs/heads/{branch}")
        git(self.dev, "update-ref", "refs/remotes/origin/main", before)
        return git(self.dev, "rev-parse", "HEAD")

    def settle(self) -> None:
        """After a pipeline: the developer's origin/main catches up with origin."""
        git(self.dev, "fetch", "-q", "origin")


def _harmless_tree(markers: Path) -> dict[str, str]:
    return {
        "salt/top.sls": "base:\n  '*':\n    - deploy\n",
        "salt/deploy/init.sls": (
            "deploy-marker-file-managed:\n"
            "  file.managed:\n"
            f"    - name: {markers}/{{{{ grains['id'] }}}}\n"
            "    - source: salt://deploy/version.txt\n"
        ),
        "salt/deploy/version.txt": "A\n",
        "docs/ci.md": "the docs\n",
    }


@pytest.fixture(scope="package")
def repos(tmp_path_factory) -> Repos:
    base = tmp_path_factory.mktemp("ci")
    origin, dev, control, markers = base / "origin.git", base / "dev", base / "control", base / "markers"
    markers.mkdir()
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    subprocess.run(["git", "clone", "-q", str(origin), str(dev)], check=True, capture_output=True)
    for name in MASTER_TREE:
        shutil.copytree(ROOT / name, dev / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "pillar", dev / "pillar", ignore=shutil.ignore_patterns("*_generated.sls", "site"))
    (dev / "pillar" / "site").mkdir()
    site = (SITES / "valid" / "small" / "site.sls").read_text()
    (dev / "pillar" / "site" / "ci.sls").write_text(
        site.replace("    web:\n", f"    {MINION_ID}:\n").replace("guest: web", f"guest: {MINION_ID}"))
    shutil.copy(ROOT / ".gitlab-ci.yml", dev / ".gitlab-ci.yml")
    (dev / ".gitignore").write_text("/.salt/\n/.gitlab-ci-local/\n/deploy/\n")
    repos = Repos(origin, control, dev, base / "state", markers)
    repos.commit(_harmless_tree(markers), "the first commit")
    git(dev, "push", "-q", "origin", "HEAD:refs/heads/main")
    git(dev, "remote", "set-head", "origin", "main")
    # gitlab-ci-local reads the project's path from a GitLab-shaped remote URL.
    git(dev, "remote", "add", "gcl-origin", "https://gitlab.example.org/owner/salt-platform.git")
    subprocess.run(["git", "clone", "-q", str(origin), str(control)], check=True, capture_output=True)
    write_config(SaltSettings(state_dir=repos.state, site="ci"), root=control)
    return repos


@pytest.fixture(scope="package")
def ci_master(salt_factories, repos):
    rendered = yaml.safe_load((repos.state / "etc" / "master").read_text())
    overrides = {key: value for key, value in rendered.items() if key not in FACTORY_KEYS}
    factory = salt_factories.salt_master_daemon("ci-master", overrides=overrides)
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="package")
def ci_minion(ci_master):
    factory = ci_master.salt_minion_daemon(MINION_ID, overrides={"hash_type": "sha256"})
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="package")
def deploy_command(repos, ci_master, ci_minion, tmp_path_factory) -> Path:
    """What /usr/local/sbin/platform-deploy is on the control node (salt/gitlab_runner), over this
    test's checkout and master: ``sitectl deploy`` with the job's arguments appended."""
    script = tmp_path_factory.mktemp("deploy-bin") / "platform-deploy"
    calls = script.parent / "calls"
    script.write_text(
        "#!/bin/sh\n"
        f"echo \"$*\" >> '{calls}'\n"
        f"exec '{sys.executable}' -m sitectl.cli --state-dir '{repos.state}' deploy --checkout '{repos.control}' "
        f"--master-config '{ci_master.config_file}' --restart-master '' \"$@\"\n"
    )
    script.chmod(0o755)
    return script


@pytest.fixture(scope="package")
def provision_command(repos, ci_master, tmp_path_factory) -> Path:
    """/usr/local/sbin/platform-provision over this test's checkout, with a salt-cloud that records
    the map it is given (creating guests is the Proxmox driver's, tested against fakepve in
    tests/proxmox)."""
    where = tmp_path_factory.mktemp("provision-bin")
    fake_cloud = where / "salt-cloud"
    fake_cloud.write_text("#!/bin/sh\n"
                          f"while [ $# -gt 0 ]; do [ \"$1\" = -m ] && cp \"$2\" '{where}/map'; shift; done\n")
    fake_cloud.chmod(0o755)
    script = where / "platform-provision"
    script.write_text(
        "#!/bin/sh\n"
        f"exec '{sys.executable}' -m sitectl.cli --state-dir '{repos.state}' provision --checkout '{repos.control}' "
        f"--master-config '{ci_master.config_file}' --salt-cloud '{fake_cloud}' \"$@\"\n"
    )
    script.chmod(0o755)
    return script


@pytest.fixture(scope="package")
def pipeline(repos, deploy_command, provision_command):
    """Run the developer's clone's pipeline with gitlab-ci-local; (returncode, output)."""
    if not GITLAB_CI_LOCAL.exists():
        pytest.fail(f"{GITLAB_CI_LOCAL} is missing: `make setup` installs it")

    def run(*args: str, protected: bool = True, source: str | None = None) -> subprocess.CompletedProcess:
        variables = [f"DEPLOY_COMMAND={deploy_command}", f"PROVISION_COMMAND={provision_command}",
                     f"CI_COMMIT_REF_PROTECTED={str(protected).lower()}"]
        if source:
            variables.append(f"CI_PIPELINE_SOURCE={source}")
        argv = [str(GITLAB_CI_LOCAL), "--no-color"]
        for variable in variables:
            argv += ["--variable", variable]
        env = {**os.environ, "GCL_IGNORE_PREDEFINED_VARS": "CI_COMMIT_REF_PROTECTED,CI_PIPELINE_SOURCE"}
        return subprocess.run([*argv, *args], capture_output=True, text=True, env=env, timeout=600, check=False,
                              cwd=repos.dev)

    return run


def deploy_calls(deploy_command: Path) -> list[str]:
    calls = deploy_command.parent / "calls"
    return calls.read_text().splitlines() if calls.exists() else []
