"""What of the runner guest converges in the lab, for real: a nested scratch-lab guest with the role
gitlab_runner and the lab's settings (Debian's docker.io; GitLab Runner not installed: no build is
reachable from here). Docker Engine runs, an image built in the guest (no registry) starts a
container, the disk cleanup timer is active and its service runs on this engine, and a second apply
changes nothing. GitLab Runner itself is not installed and not claimed."""

from __future__ import annotations

import pytest

from tests.scratchlab import guest_pillar, scratch_site

pytestmark = pytest.mark.lab

RUNNER = "runner"
SITE = scratch_site({RUNNER: {"host": 107, "roles": ["gitlab_runner"]}})
LAB_PILLAR = {"docker": {"flavor": "debian"}, "gitlab_runner": {"install": False}}  # pillar/overlays/lab.sls
IMAGE_NAME = "platform-test/job"
IMAGE = f"{IMAGE_NAME}:local"


@pytest.fixture(scope="module")
def lab(scratch_lab):
    scratch_lab.start_guests(SITE, RUNNER)
    scratch_lab.push_salt(RUNNER, guest_pillar(SITE, RUNNER, LAB_PILLAR))
    return scratch_lab


@pytest.fixture(scope="module")
def converged(lab):
    return lab.apply(RUNNER, "common,gitlab_runner"), lab.apply(RUNNER, "common,gitlab_runner")


def test_the_runner_guest_converges_docker_and_the_cleanup_timer(lab, converged):
    first, second = converged
    assert not first.failed, first.failed
    assert not second.failed and not second.changed, f"the second apply changed {list(second.changed)}"
    assert "docker-service-running" in first.states and "gitlab-runner-cleanup-timer-running" in first.states
    assert not [s for s in first.states if s.startswith("gitlab-runner-") and "cleanup" not in s], \
        "GitLab Runner is not installed in the lab"
    assert lab.sh(RUNNER, "systemctl is-active docker docker-disk-cleanup.timer").stdout.split() == ["active"] * 2
    assert lab.sh(RUNNER, "command -v gitlab-runner", check=False).returncode != 0


def test_a_job_image_built_in_the_guest_runs_and_the_cleanup_runs_on_this_engine(lab, converged):
    lab.apt_install(RUNNER, "busybox-static")
    lab.sh(RUNNER, f"""set -eu
        root=$(mktemp -d); mkdir -p "$root/bin"; cp /bin/busybox "$root/bin/"; ln -s busybox "$root/bin/sh"
        tar -C "$root" -c . | docker import - {IMAGE} >/dev/null
        rm -rf "$root"
        """)
    out = lab.sh(RUNNER, f"docker run --rm {IMAGE} sh -c 'echo job ran'").stdout
    assert out.strip() == "job ran"
    done = lab.sh(RUNNER, "systemctl start docker-disk-cleanup.service && systemctl show -p Result --value "
                          "docker-disk-cleanup.service", check=False)
    assert done.returncode == 0 and done.stdout.strip() == "success", done.stdout + done.stderr
    assert IMAGE_NAME in lab.sh(RUNNER, "docker images --format '{{.Repository}}'").stdout, \
        "an image younger than the window is kept"
