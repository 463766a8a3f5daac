"""The k3s modules and states against the Kubernetes API double of ``apiserver.py`` (real HTTPS on
loopback; not a cluster), through Salt's loader, masterless."""

from __future__ import annotations

import pytest

from tests.k3s.apiserver import RunningApiServer
from tests.states.conftest import bao, bao_token_file, make_caller, states_tmp, testmode  # noqa: F401


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory):
    server = RunningApiServer(tmp_path_factory.mktemp("k3s-api")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def k3s_caller(tmp_path_factory, apiserver, bao, bao_token_file):  # noqa: F811
    return make_caller(tmp_path_factory.mktemp("salt-k3s"), bao, bao_token_file,
                       {"k3s": apiserver.module_config()})
