"""The salt_master role rendered for the example site's control guest with Salt's own compiler (no
daemon): how the master's venv is installed, in production and with a wheelhouse."""

from __future__ import annotations

import shlex

import pytest

from sitectl import render
from tests.conftest import state_args

pytestmark = pytest.mark.render

CONTROL = "control"


def show(config, pillar=None) -> dict:
    high = render.caller(config, CONTROL).cmd("state.show_sls", "salt_master", pillar=pillar)
    assert isinstance(high, dict), high
    return high


def _install(high: dict) -> tuple[list[str], str]:
    args = state_args(high["salt-master-install-venv-installed"], "cmd")
    return shlex.split(args["name"]), args["unless"]


def test_production_installs_the_checkout_from_pypi_with_what_building_salt_needs(example_config):
    high = show(example_config)
    argv, unless = _install(high)
    pip = argv[argv.index("/srv/salt-platform/.venv/bin/pip"):argv.index("&&", argv.index("python3") + 5)]
    assert pip == ["/srv/salt-platform/.venv/bin/pip", "install", "--quiet", "-e", "/srv/salt-platform"]
    assert {"gcc", "python3-dev", "python3-venv"} <= set(state_args(
        high["salt-master-install-packages-installed"], "pkg")["pkgs"])
    assert "sha256sum --status -c /srv/salt-platform/.venv/.installed-from" in unless, \
        "a changed pyproject.toml (a new pin) installs again"
    config = state_args(high["salt-master-config-rendered"], "cmd")
    assert {"sls": "salt_master.install"} in config["require"], "the config is rendered by the venv's sitectl"


def test_a_wheelhouse_is_passed_to_pip_as_separate_quoted_arguments(example_config):
    wheels = {"salt_master": {"install": {"packages": ["python3-venv"],
                                          "pip_options": ["--no-index", "--find-links", "/root/wheels"]}}}
    argv, _ = _install(show(example_config, wheels))
    at = argv.index("install")
    assert argv[at:at + 5] == ["install", "--quiet", "--no-index", "--find-links", "/root/wheels"]
