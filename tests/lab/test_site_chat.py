"""The chat service in the whole-site lab (issue 14), checked from outside as its users would: two
WebSocket clients through the reverse proxy over HTTPS (the lab pebble's certificate verified) join
one room and each receives the other's message; the message is in the chat database on the
postgresql guest; a restart of the service loses no stored message; with RabbitMQ stopped /healthz
fails through the proxy, and the service recovers by itself when RabbitMQ returns."""

from __future__ import annotations

import json
import time

import pytest

from tests.chat import wsclient
from tests.lab.infra import guest_host

pytestmark = pytest.mark.lab

FQDN = "chat.your-domain.com"


def address(site_lab, guest: str) -> str:
    return site_lab.lab.pillar["site"]["guests"][guest]["address"].split("/")[0]


@pytest.fixture(scope="module")
def public(site_lab):
    """How a user reaches the service: the public name pinned to the proxy, the lab pebble's root."""
    return {"pins": {FQDN: address(site_lab, "reverse-proxy")},
            "cafile": str(site_lab.state / "lab-acme" / "pebble-root.pem"), "base": f"wss://{FQDN}"}


def public_health(public) -> tuple[int, dict]:
    """GET https://chat.<domain>/healthz through the proxy, the certificate verified."""
    return wsclient.run(wsclient.get_json(f"https://{FQDN}/healthz", public["pins"], public["cafile"]))


def wait_public_health(public, status: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = public_health(public)
        if last[0] == status:
            return last[1]
        time.sleep(1)
    raise AssertionError(f"https://{FQDN}/healthz did not answer {status} in {timeout} s: {last}")


def test_the_chat_guest_serves_a_healthy_release_of_the_example_service(site_lab, public):
    chat = guest_host("microservices", site_lab.lab.lab_dir)
    assert chat.service("chat").is_running and chat.service("chat").is_enabled
    release = json.loads(chat.check_output("cat /opt/chat/current/RELEASE.json"))
    assert release["source"] == "salt://chat/example" and release["go"] == "go1.19.8"
    assert chat.file("/etc/chat/chat.env").mode == 0o600 and chat.file("/etc/chat/chat.env").user == "chat"
    assert wait_public_health(public, 200, 30)["checks"] == {"postgresql": "ok", "rabbitmq": "ok"}


def test_two_clients_through_the_proxy_exchange_a_message_that_is_stored_and_survives_a_restart(site_lab, public):
    got = wsclient.run(wsclient.exchange(public["base"], public["base"], "lab-site", public["pins"], public["cafile"]))
    assert got["bob"]["body"] == f"hello bob {got['tag']}" and got["bob"]["sender"] == "ann"
    assert got["ann"]["body"] == f"hello ann {got['tag']}" and got["ann"]["sender"] == "bob"
    db = guest_host("postgresql", site_lab.lab.lab_dir)
    query = f"SELECT sender FROM messages WHERE right(body, 8) = '{got['tag']}' ORDER BY id"  # noqa: S608 (hex)
    rows = db.check_output(f'runuser -u postgres -- psql -XAt -d chat -c "{query}"')
    assert rows.split() == ["ann", "bob"], "both messages are in the chat database"
    chat = guest_host("microservices", site_lab.lab.lab_dir)
    chat.run_test("systemctl restart chat.service")
    wait_public_health(public, 200, 60)
    history = wsclient.run(wsclient.history(public["base"], "lab-site", public["pins"], public["cafile"]))
    bodies = [m["body"] for m in history]
    assert f"hello bob {got['tag']}" in bodies and f"hello ann {got['tag']}" in bodies


def test_healthz_fails_through_the_proxy_without_rabbitmq_and_the_service_recovers_by_itself(site_lab, public):
    broker = guest_host("rabbitmq", site_lab.lab.lab_dir)
    chat = guest_host("microservices", site_lab.lab.lab_dir)
    pid = chat.check_output("systemctl show -p MainPID --value chat.service")
    broker.run_test("systemctl stop rabbitmq-server")
    try:
        down = wait_public_health(public, 503, 30)
        assert down["checks"]["rabbitmq"].startswith("down") and down["checks"]["postgresql"] == "ok"
    finally:
        broker.run_test("systemctl start rabbitmq-server")
    assert wait_public_health(public, 200, 90)["checks"]["rabbitmq"] == "ok"
    assert chat.check_output("systemctl show -p MainPID --value chat.service") == pid, "no restart was needed"
    got = wsclient.run(wsclient.exchange(public["base"], public["base"], "after-outage", public["pins"],
                                         public["cafile"]))
    assert got["bob"]["body"] == f"hello bob {got['tag']}"
