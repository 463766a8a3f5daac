"""``gitlab_runner.config_present`` with tokens in a real OpenBao and GitLab's runner API played by a
double that follows GitLab's API description (tests/gitlab_runner/gitlab_api.py): applied directly
and after a dry run, the file and the API checked each time."""

from __future__ import annotations

import json
import secrets

import pytest
import tomllib

from tests.gitlab_runner.gitlab_api import GitLabRunnerApi
from tests.states.conftest import make_caller, unique

pytestmark = pytest.mark.functional

DOCKER = {"image": "debian:bookworm", "privileged": False, "volumes": ["/cache"], "pull_policy": ["if-not-present"],
          "allowed_images": ["debian:*"], "allowed_pull_policies": ["if-not-present"]}


@pytest.fixture(scope="module")
def gitlab():
    api = GitLabRunnerApi().start()
    yield api
    api.stop()


@pytest.fixture(scope="module")
def runner_caller(states_tmp, bao, bao_token_file):
    return make_caller(states_tmp / "salt-runner", bao, bao_token_file)


def token_in_vault(bao, gitlab, name: str) -> tuple[str, str]:
    token = gitlab.create_runner(name)
    path = f"roles/gitlab_runner/runners/{name}"
    bao.client().secrets.kv.v2.create_or_update_secret(path=path, secret={"token": token})
    return path, token


def run(caller, path, gitlab, runners, **kwargs):
    return lambda test: caller.state("gitlab_runner.config_present", str(path), test=test, url=gitlab.url,
                                     runners=runners, **kwargs)


def registered(config) -> dict:
    if not config.exists():
        return {}
    return {r["name"]: r for r in tomllib.loads(config.read_text()).get("runners", [])}


def test_a_runner_is_registered_with_its_vault_token_and_config_toml_written(runner_caller, bao, gitlab, tmp_path,
                                                                            testmode):
    name = unique("docker")
    path, token = token_in_vault(bao, gitlab, name)
    config = tmp_path / "gitlab-runner" / "config.toml"
    (tmp_path / "gitlab-runner").mkdir()
    (tmp_path / "gitlab-runner" / ".runner_system_id").write_text("s_0123456789ab\n")
    runners = [{"name": name, "token_path": path, "executor": "docker", "limit": 4, "docker": DOCKER}]
    before = len(gitlab.requests)
    state = run(runner_caller, config, gitlab, runners, concurrent=4, listen_address="127.0.0.1:9252")
    if testmode:
        planned = state(True)
        assert planned["result"] is None and planned["changes"]["registered"] == [name]
        assert not config.exists() and len(gitlab.requests) == before, "test=True wrote nothing and called no API"
    applied = state(False)
    assert applied["result"] is True, applied["comment"]
    assert applied["changes"]["registered"] == [name]
    assert f"(token from Vault: secret/data/{path}#token)" in applied["changes"]["diff"]
    written = tomllib.loads(config.read_text())
    assert written["concurrent"] == 4 and written["listen_address"] == "127.0.0.1:9252"
    (runner,) = written["runners"]
    assert runner["token"] == token and runner["id"] == gitlab.runners[token]["id"]
    assert runner["executor"] == "docker" and runner["limit"] == 4 and runner["url"] == gitlab.url
    assert runner["docker"]["privileged"] is False and runner["docker"]["allowed_images"] == ["debian:*"]
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    calls = [(m, p) for m, p, _ in gitlab.requests[before:]]
    assert calls == [("POST", "/api/v4/runners/verify")], "verified with its token; POST /runners never used"
    assert gitlab.runners[token]["system_ids"] == {"s_0123456789ab"}
    again = state(testmode)
    assert again["result"] is True and again["changes"] == {}, again
    assert len(gitlab.requests) == before + 1, "a second run calls no API"
    assert token not in json.dumps([applied, again])


def test_a_runner_the_site_removes_is_unregistered_and_a_rotated_token_verified(runner_caller, bao, gitlab, tmp_path,
                                                                                testmode):
    kept, gone = unique("shell"), unique("docker")
    kept_path, _ = token_in_vault(bao, gitlab, kept)
    gone_path, gone_token = token_in_vault(bao, gitlab, gone)
    config = tmp_path / "config.toml"
    both = [{"name": kept, "token_path": kept_path, "executor": "shell", "limit": 1},
            {"name": gone, "token_path": gone_path, "executor": "docker", "limit": 2, "docker": DOCKER}]
    assert run(runner_caller, config, gitlab, both)(False)["result"] is True
    assert gone_token in gitlab.runners
    rotated = gitlab.create_runner(kept)
    bao.client().secrets.kv.v2.create_or_update_secret(path=kept_path, secret={"token": rotated})
    state = run(runner_caller, config, gitlab, both[:1])

    def on_server():
        return gone_token not in gitlab.runners and set(registered(config)) == {kept} \
            and registered(config)[kept]["token"] == rotated

    if testmode:
        planned = state(True)
        assert planned["result"] is None
        assert planned["changes"]["registered"] == [kept] and planned["changes"]["unregistered"] == [gone]
        assert gone_token in gitlab.runners, "test=True unregistered nothing"
    applied = state(False)
    assert applied["result"] is True, applied["comment"]
    assert applied["changes"]["unregistered"] == [gone] and applied["changes"]["registered"] == [kept]
    assert on_server()
    assert ("DELETE", "/api/v4/runners") in [(m, p) for m, p, _ in gitlab.requests]
    assert state(testmode)["changes"] == {}
    for secret in (rotated, gone_token):
        assert secret not in json.dumps(applied)


def test_a_token_gitlab_refuses_fails_and_keeps_the_old_file(runner_caller, bao, gitlab, tmp_path):
    name = unique("docker")
    path = f"roles/gitlab_runner/runners/{name}"
    refused = f"glrt-{secrets.token_urlsafe(20)}"  # made here: GitLab's double knows no such runner
    bao.client().secrets.kv.v2.create_or_update_secret(path=path, secret={"token": refused})
    config = tmp_path / "config.toml"
    config.write_text("concurrent = 1\n")
    ret = run(runner_caller, config, gitlab, [{"name": name, "token_path": path, "executor": "shell"}])(False)
    assert ret["result"] is False and "403" in ret["comment"]
    assert config.read_text() == "concurrent = 1\n"
    assert refused not in json.dumps(ret)


def test_a_token_missing_from_vault_fails_naming_its_path(runner_caller, gitlab, tmp_path):
    ret = run(runner_caller, tmp_path / "config.toml", gitlab,
              [{"name": "x", "token_path": "roles/gitlab_runner/runners/absent", "executor": "shell"}])(False)
    assert ret["result"] is False and "roles/gitlab_runner/runners/absent" in ret["comment"]
    assert not (tmp_path / "config.toml").exists()


def test_the_double_refuses_what_gitlab_refuses(gitlab):
    import requests

    assert requests.post(f"{gitlab.url}/api/v4/runners/verify", data={}, timeout=5).json() == \
        {"error": "token is missing"}
    assert requests.post(f"{gitlab.url}/api/v4/runners", data={"token": "GR1348941x"}, timeout=5).status_code == 410
    assert requests.delete(f"{gitlab.url}/api/v4/runners", data={"token": "glrt-x"}, timeout=5).status_code == 403
