"""The chat role rendered for the example site (no daemon): its environment comes from the site (the
database and broker guests, the credentials the site grants this guest, as Vault paths only), the
default source is the example service shipped with the state tree, the unit is hardened, and the
proxy passes WebSocket upgrades on the chat route."""

from __future__ import annotations

import pytest

from sitectl import render
from tests.conftest import state_args

pytestmark = pytest.mark.render


@pytest.fixture(scope="module")
def high(example_config):
    rendered = render.caller(example_config, "microservices").cmd("state.show_sls", "chat")
    assert isinstance(rendered, dict), rendered
    return rendered


def test_the_environment_comes_from_the_site_and_the_passwords_from_the_granted_vault_paths(example_config, high):
    env = state_args(high["chat-config-env-file-managed"], "go_service")
    assert env["name"] == "/etc/chat/chat.env" and env["user"] == "chat"
    values = env["values"]
    assert (values["PGHOST"], values["PGPORT"], values["PGDATABASE"], values["PGUSER"]) == (
        "10.10.10.103", "5432", "chat", "chat")
    assert (values["CHAT_AMQP_HOST"], values["CHAT_AMQP_PORT"], values["CHAT_AMQP_VHOST"]) == (
        "10.10.10.105", "5672", "chat")
    assert values["CHAT_LISTEN"] == "10.10.10.101:8080" and values["CHAT_METRICS_LISTEN"] == "10.10.10.101:9464"
    granted = render.pillar(example_config, "microservices")["platform"]["secret_grants"]["microservices"]
    assert sorted(ref["path"] for ref in env["secrets"].values()) == granted
    assert not [k for k in values if "PASSWORD" in k], "passwords are read when the state runs, never rendered"


def test_the_default_release_is_the_example_service_built_with_the_pinned_toolchain(high):
    release = state_args(high["chat-release-deployed"], "go_service")
    assert release["source"] == {"tree": {"url": "salt://chat/example"}}
    assert release["go"] == {"root": "/usr/lib/go-1.19", "version": "go1.19.8"}
    assert release["health_url"] == "http://10.10.10.101:8080/healthz"
    toolchain = state_args(high["chat-toolchain-go-installed"], "pkg")
    assert {"golang-1.19-go": "1.19.8-2"} in toolchain["pkgs"]
    service = state_args(high["chat-service-running"], "unit")
    assert {"go_service": "chat-config-env-file-managed"} in service["watch"], "a rotated password restarts it"


def test_the_unit_is_hardened(example_config, high):
    caller = render.caller(example_config, "microservices")
    unit = state_args(high["chat-config-unit-managed"], "file")
    with open(caller.cmd("cp.cache_file", unit["source"])) as fh:
        text = caller.cmd("file.apply_template_on_contents", fh.read(), "jinja", unit["context"], None, "base")
    for line in ("User=chat", "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes",
                 "StateDirectory=chat", "EnvironmentFile=/etc/chat/chat.env", "ExecStart=/opt/chat/current/bin/chat",
                 "CapabilityBoundingSet="):
        assert f"\n{line}\n" in text, line


def test_the_chat_route_passes_websocket_upgrades_and_opens_only_to_the_proxy(example_config):
    pillar = render.pillar(example_config, "microservices")
    route = next(r for r in pillar["platform"]["edge"]["routes"] if r["name"] == "chat")
    assert route["fqdn"] == "chat.your-domain.com" and route["websocket"] is True
    assert route["upstream"] == "10.10.10.101:8080"
    firewall = {rule["name"]: rule["from"] for rule in pillar["platform"]["guest"]["firewall"]}
    assert firewall["route-chat"] == ["10.10.10.100/32"]
    assert firewall["metrics"] == ["10.10.10.0/24", "10.10.10.120/32"]
