"""The second half of `sitectl bootstrap` for real: its setup script sent into a scratch-lab guest
(``lxc-attach`` in place of ``ssh``) makes it a control node: the repository from a bundle, the
pinned Salt in the checkout's venv (from the lab's wheelhouse: PyPI is not the guest's to reach
here, pip's options are the one difference), the master configured by ``sitectl master-config`` and
running, its own minion. A second run changes nothing. Then the runner guest of the site (LXC 107's
role, nested) answers that master, and its highstate through it converges the base state, Docker
Engine and the disk cleanup timer (the lab's settings: Debian's docker.io, GitLab Runner not
installed, no build of it being reachable) and, run again, changes nothing; an image built in the
guest runs a job container and the cleanup runs on that engine."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from sitectl import ROOT, bootstrap
from tests.scratchlab import LAB_DIR, guest_ip, scratch_site, wait_for_minion_restart

pytestmark = pytest.mark.lab

CONTROL, WEB = "control", "runner"
SITE = scratch_site({CONTROL: {"host": 110, "roles": ["salt_master", "deploy_runner"]},
                     WEB: {"host": 107, "roles": ["gitlab_runner"]}})
# As pillar/overlays/lab.sls: Debian's docker.io, and GitLab Runner not installed (no build reachable).
ROLE_SETTINGS = {"gitlab_runner": {"install": {"converge": False}}, "docker": {"flavor": "debian"}}
IMAGE_NAME = "platform-test/job"
IMAGE = f"{IMAGE_NAME}:local"
SITE["salt"] = {"master": guest_ip(SITE, CONTROL)}  # the control node's master, not the lab host's
CHECKOUT = bootstrap.CHECKOUT
SALT = [f"{CHECKOUT}/.venv/bin/salt", "-c", f"{CHECKOUT}/.salt/etc"]


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    """This checkout's HEAD with the scratch site committed, as the owner's repository would hold it."""
    repo = tmp_path_factory.mktemp("control-repo") / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    (repo / "pillar" / "site" / "scratch.sls").write_text(yaml.safe_dump({"site": SITE, **ROLE_SETTINGS}))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "the scratch site"], check=True, env=env)
    return repo


@pytest.fixture(scope="module")
def lab(scratch_lab, wheelhouse):
    scratch_lab.start_guests(SITE, CONTROL, WEB)
    scratch_lab.sh(CONTROL, "mkdir -p /root && tar -x -C /root", input=wheelhouse)
    return scratch_lab


def boot(repository) -> bootstrap.Bootstrap:
    ssh = (f"lxc-attach -P {os.path.realpath(LAB_DIR)} -n {CONTROL} --clear-env -- "
           "env PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 sh -c")
    return bootstrap.Bootstrap(site="scratch", state_dir=repository.parent / "state", root=repository, ssh=ssh,
                               repo_url="git@gitlab.example.org:ops/salt-platform.git", packages=("git",),
                               pip_options=("--no-index", "--find-links", "/root/wheels"))


@pytest.fixture(scope="module")
def control(lab, repository):
    job = boot(repository)
    view = {"name": CONTROL, "ip": guest_ip(SITE, CONTROL)}
    first = job.converge(view, with_proxmox=False)
    second = job.converge(view, with_proxmox=False)
    return first, second


def test_the_setup_makes_a_running_master_and_a_second_run_changes_nothing(lab, control):
    first, second = control
    changed = [line for line in first.splitlines() if line.startswith("changed:")]
    assert any("salt 3008.4" in line for line in changed), first
    assert "changed: salt-master (re)started" in changed and "changed: minion key of control accepted" in changed
    assert [line for line in second.splitlines() if line.startswith("changed:")] == [], second
    assert lab.sh(CONTROL, "systemctl is-active salt-master salt-minion").stdout.split() == ["active", "active"]
    version = lab.sh(CONTROL, f"{CHECKOUT}/.venv/bin/salt-master --version").stdout.split()[1]
    assert version == bootstrap.salt_version()
    master = yaml.safe_load(lab.sh(CONTROL, f"cat {CHECKOUT}/.salt/etc/master").stdout)
    assert master["interface"] == guest_ip(SITE, CONTROL) and master["platform_site"] == "scratch"
    assert master["file_roots"]["base"][0] == f"{CHECKOUT}/salt", "the master serves the checkout"
    assert lab.sh(CONTROL, f"git -C {CHECKOUT} remote get-url origin").stdout.strip() == \
        "git@gitlab.example.org:ops/salt-platform.git"


def _salt(lab, *args: str, wait: int = 10) -> dict:
    """``salt --static`` on the control node; ``wait`` is Salt's timeout (a busy minion is asked
    whether it still runs the job after it, so a highstate is waited for; a silent one is given up)."""
    out = lab.attach(CONTROL, [*SALT, "-t", str(wait), "--out=json", "--static", *args], check=False, timeout=1200)
    try:
        return json.loads(out.stdout)
    except ValueError:
        return {"_cli": f"rc {out.returncode}: {out.stdout[-2000:]} {out.stderr[-2000:]}"}


def _answers(lab, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while _salt(lab, WEB, "test.ping").get(WEB) is not True:
        assert time.monotonic() < deadline, "the guest does not answer the control node's master"
        time.sleep(3)


@pytest.fixture(scope="module")
def through_control(lab, control) -> tuple[object, object]:
    """The runner guest's minion pointed at the control node's master, its key accepted there, and
    two highstates through it: their returns."""
    lab.write_file(WEB, "/etc/salt/minion.d/master.conf",
                   f"master: {guest_ip(SITE, CONTROL)}\nid: {WEB}\nhash_type: sha256\n")
    lab.sh(WEB, "systemctl restart salt-minion")
    deadline = time.monotonic() + 120
    while WEB not in lab.sh(CONTROL, f"{SALT[0]}-key {' '.join(SALT[1:])} -l pre").stdout:
        assert time.monotonic() < deadline, "the guest's key never reached the control node's master"
        time.sleep(2)
    lab.sh(CONTROL, f"{SALT[0]}-key {' '.join(SALT[1:])} -y -a {WEB}")
    _answers(lab)
    first = _salt(lab, WEB, "state.highstate", wait=900)
    wait_for_minion_restart(lab, WEB)  # scheduled by the first highstate (common.minion) when needed
    _answers(lab)
    return first.get(WEB, first), _salt(lab, WEB, "state.highstate", wait=900).get(WEB)


def test_the_runner_guest_converges_through_that_master_and_the_second_highstate_changes_nothing(through_control):
    first, second = through_control
    assert isinstance(first, dict) and isinstance(second, dict), (first, second)
    failed = {k: v["comment"] for k, v in first.items() if v["result"] is not True}
    assert not failed, failed
    slss = {v["__sls__"] for v in first.values()}
    assert {"common.firewall", "docker.service", "gitlab_runner.cleanup"} <= slss, "the highstate came from that master"
    assert not [k for k in first if "gitlab-runner-package" in k or "gitlab-runner-config" in k], \
        "GitLab Runner itself is not installed in the lab"
    assert not [k for k, v in second.items() if v["changes"] or v["result"] is not True], \
        "the second highstate through the control node's master changed something"


def test_a_job_image_built_in_the_guest_runs_and_the_cleanup_runs_on_this_engine(lab, through_control):
    assert lab.sh(WEB, "systemctl is-active docker docker-disk-cleanup.timer").stdout.split() == ["active"] * 2
    lab.apt_install(WEB, "busybox-static")
    lab.sh(WEB, f"""set -eu
        root=$(mktemp -d); mkdir -p "$root/bin"; cp /bin/busybox "$root/bin/"; ln -s busybox "$root/bin/sh"
        tar -C "$root" -c . | docker import - {IMAGE} >/dev/null
        rm -rf "$root"
        """)
    assert lab.sh(WEB, f"docker run --rm {IMAGE} sh -c 'echo job ran'").stdout.strip() == "job ran"
    done = lab.sh(WEB, "systemctl start docker-disk-cleanup.service && systemctl show -p Result --value "
                       "docker-disk-cleanup.service", check=False)
    assert done.returncode == 0 and done.stdout.strip() == "success", done.stdout + done.stderr
    assert IMAGE_NAME in lab.sh(WEB, "docker images --format '{{.Repository}}'").stdout, \
        "an image younger than the window is kept"


def test_nothing_of_the_bundle_is_left_behind(lab, control):
    assert lab.sh(CONTROL, "ls /root/*.bundle 2>/dev/null | wc -l").stdout.strip() == "0"
