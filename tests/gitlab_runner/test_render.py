"""The runners of the example site, rendered by Salt's own compiler and checked statically: the
config.toml the state would write (GitLab Runner's documented keys, concurrency from the guest's
cores, no privileged containers, the pull policy among the allowed ones, the metrics listener on the
port the firewall opens to monitoring), the deploy wrappers' argument check (run with sh), and the
lab's part (Docker only)."""

from __future__ import annotations

import importlib.util
import shlex
import subprocess

import jinja2
import pytest
import tomllib

from sitectl import ROOT, render
from sitectl.config import SaltSettings, write_config
from tests.conftest import load_site, state_args

pytestmark = pytest.mark.render

# GitLab Runner's config.toml keys this role writes (docs.gitlab.com/runner/configuration/advanced-configuration).
GLOBAL_KEYS = {"concurrent", "check_interval", "shutdown_timeout", "listen_address", "runners"}
RUNNER_KEYS = {"name", "url", "id", "token", "executor", "limit", "docker"}
DOCKER_KEYS = {"image", "privileged", "disable_cache", "volumes", "pull_policy", "allowed_pull_policies",
               "allowed_images", "shm_size"}
RUNNER_GUEST, CONTROL = "git-lab-docker-runner", "control"


def _state_module():
    spec = importlib.util.spec_from_file_location("gitlab_runner_state", ROOT / "_states" / "gitlab_runner.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    plain = write_config(SaltSettings(state_dir=tmp_path_factory.mktemp("gr-plain"), site="example"))
    lab = write_config(SaltSettings(state_dir=tmp_path_factory.mktemp("gr-lab"), site="example", overlay="lab"))
    return {"plain": plain, "lab": lab}


def config_toml(highstate: dict) -> tuple[dict, dict]:
    args = state_args(highstate["gitlab-runner-config-present"], "gitlab_runner")
    module = _state_module()
    runners = [{"name": r["name"], "url": args["url"], "id": 7, "token": "glrt-test-only", "executor": r["executor"],
                **{k: v for k, v in r.items() if k not in ("name", "token_path", "executor")}} for r in args["runners"]]
    text = module.render({"concurrent": args["concurrent"], "check_interval": args["check_interval"],
                          "shutdown_timeout": args["shutdown_timeout"], "listen_address": args["listen_address"]},
                         runners)
    return tomllib.loads(text), args


def test_the_docker_runner_config_toml(configs):
    highstate = render.highstate(configs["plain"], RUNNER_GUEST)
    parsed, args = config_toml(highstate)
    assert set(parsed) <= GLOBAL_KEYS
    (runner,) = parsed["runners"]
    assert set(runner) <= RUNNER_KEYS and set(runner["docker"]) <= DOCKER_KEYS
    guest = load_site()["guests"][RUNNER_GUEST]
    assert runner["executor"] == "docker" and runner["limit"] == guest["cores"] == parsed["concurrent"]
    docker = runner["docker"]
    assert docker["privileged"] is False, "no privileged containers unless the site says so"
    assert set(docker["pull_policy"]) <= set(docker["allowed_pull_policies"])
    assert "/cache" in docker["volumes"]
    assert any(docker["image"].startswith(p.rstrip("*")) for p in docker["allowed_images"])
    assert parsed["listen_address"] == "10.10.10.107:9252"
    assert args["runners"][0]["token_path"] == "roles/gitlab_runner/runners/git-lab-docker-runner-docker"  # noqa: S105
    assert not any("token" in str(v).lower() and "glrt" in str(v) for v in highstate.values()), \
        "no token in the compiled highstate"
    assert "docker-service-running" in highstate and "gitlab-runner-cleanup-timer-running" in highstate


def test_the_deploy_runner_is_a_shell_runner_and_its_wrappers_take_only_a_commit(configs, tmp_path):
    highstate = render.highstate(configs["plain"], CONTROL)
    parsed, _ = config_toml(highstate)
    (runner,) = parsed["runners"]
    assert runner["executor"] == "shell" and runner["name"] == "control-shell" and "docker" not in runner
    assert "docker-service-running" not in highstate, "no Docker on the control node"
    wrappers = state_args(highstate["gitlab-runner-deploy-wrappers-managed"], "file")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ROOT / "salt")), autoescape=False)  # noqa: S701
    env.filters["quote"] = shlex.quote
    template = env.get_template("gitlab_runner/files/platform-job.sh.j2")
    fake = tmp_path / "sitectl"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > '{tmp_path}/args'\n")
    fake.chmod(0o755)
    script = tmp_path / "platform-deploy"
    script.write_text(template.render({**wrappers["defaults"], "sitectl": str(fake), "command": "deploy"}))
    sha = "0123456789abcdef0123456789abcdef01234567"
    for bad in (["--commit", "HEAD"], ["--commit", sha, "--restart-master", "id"], ["--commit", sha[:-1]],
                ["--commit", sha + "; id"], []):
        assert subprocess.run(["sh", str(script), *bad], capture_output=True, check=False).returncode == 2, bad
    assert not (tmp_path / "args").exists()
    done = subprocess.run(["sh", str(script), "--commit", sha, "--artifacts", "/builds/x/deploy"], check=False)
    assert done.returncode == 0
    assert (tmp_path / "args").read_text().split() == [
        "--state-dir", "/srv/salt-platform/.salt", "deploy", "--checkout", "/srv/salt-platform", "--commit", sha,
        "--artifacts", "/builds/x/deploy"]


def test_in_the_lab_the_runner_guest_gets_docker_and_no_runner(configs):
    highstate = render.highstate(configs["lab"], RUNNER_GUEST)
    assert "docker-service-running" in highstate
    assert not [k for k in highstate if k.startswith("gitlab-runner-") and "cleanup" not in k], \
        "GitLab Runner itself is not installed in the lab"
    control = render.highstate(configs["lab"], CONTROL)
    assert not [k for k in control if k.startswith(("gitlab-runner-", "salt-master-"))]
