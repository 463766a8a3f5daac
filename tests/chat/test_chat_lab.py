"""The chat role in real LXC guests: PostgreSQL, RabbitMQ and the reverse proxy converged by their own
roles (the proxy's certificate from a pebble on the gateway), the chat guest built from a git
repository served over HTTP with a token kept in Vault (a real git fetch, refs that move), checked
from outside as a user would: WebSocket clients exchange a message that is in the database, directly
and through the proxy over verified HTTPS; the same ref changes nothing; a new ref rebuilds and
restarts; a ref that does not build or whose health check fails leaves the previous release serving,
and the state says so; with RabbitMQ stopped /healthz fails (through the proxy too), and the service
recovers by itself when RabbitMQ returns."""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.chat import chatlab, wsclient
from tests.chat.chatlab import CHAT, CHAT_IP, DB, MQ
from tests.scratchlab import address
from tests.scratchlab import pebble as scratch_pebble

pytestmark = pytest.mark.lab

BASE = f"http://{CHAT_IP}:8080"
PROXY_IP = address(100).split("/")[0]  # chatlab.site's reverse proxy


def health() -> tuple[int, dict]:
    got = requests.get(f"{BASE}/healthz", timeout=10)
    return got.status_code, got.json()


def wait_health(status: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = health()
            if last[0] == status:
                return last[1]
        except requests.RequestException as exc:
            last = exc
        time.sleep(1)
    raise AssertionError(f"/healthz did not answer {status} in {timeout} s: {last}")


@pytest.fixture(scope="module")
def pebble(scratch_lab):
    """The ACME server of the route's certificate, on the gateway."""
    with scratch_pebble(scratch_lab, PROXY_IP) as acme:
        yield acme


@pytest.fixture(scope="module")
def chat(scratch_lab, pebble):
    state = chatlab.start(scratch_lab, scratch_lab.workdir, pebble)
    state.public = {"pins": {chatlab.FQDN: PROXY_IP}, "cafile": str(pebble.root), "base": f"wss://{chatlab.FQDN}"}
    print(f"\nchat lab: data tier {state.data_tier_seconds} s, chat first apply {state.first.seconds} s, "
          f"second {state.second.seconds} s")
    try:
        yield state
    finally:
        state.git.stop()


def test_the_first_apply_builds_v1_from_git_and_the_second_changes_nothing(chat):
    assert not chat.first.failed, chat.first.failed
    deployed = chat.first.states["chat-release-deployed"]
    assert deployed["changes"]["release"] == {"old": None, "new": chat.release("v1")}
    assert "serves and is healthy" in deployed["comment"] and "go1.19.8" in deployed["comment"]
    assert not chat.second.failed, chat.second.failed
    assert chat.second.changed == {}, chat.second.changed
    assert chat.current() == chat.release("v1")
    meta = json.loads(chat.sh("cat /opt/chat/current/RELEASE.json"))
    assert meta["source"] == f"{chat.git.url} at v1" and meta["go"] == "go1.19.8"
    # every fetch carried the token from Vault; nothing was fetched without it
    assert chat.git.requests and all(authorized for _, authorized in chat.git.requests)


def test_no_secret_is_in_the_output_or_on_a_command_line_and_the_env_file_is_the_services_alone(chat):
    secrets_ = [chat.lab.bao.read("roles/postgresql/users/chat"), chat.lab.bao.read("roles/rabbitmq/users/chat"),
                chat.token]
    for apply in chat.lab.applies:
        for value in secrets_:
            assert value not in apply.raw
    assert chat.sh("stat -c '%a %U %G' /etc/chat/chat.env") == "600 chat chat"
    assert chat.sh("stat -c '%a %U %G' /etc/chat") == "750 root chat"
    env = chat.sh("cat /etc/chat/chat.env")
    assert f'PGPASSWORD="{secrets_[0]}"' in env and f'CHAT_AMQP_PASSWORD="{secrets_[1]}"' in env
    cmdline = chat.sh("tr '\\0' ' ' < /proc/$(systemctl show -p MainPID --value chat.service)/cmdline")
    assert cmdline.strip() == "/opt/chat/current/bin/chat"
    assert not any(value in chat.sh("cat /opt/chat/source.git/config") for value in secrets_)


def test_the_service_runs_hardened_under_its_own_user(chat):
    shown = dict(line.split("=", 1) for line in chat.sh(
        "systemctl show chat.service -p User -p NoNewPrivileges -p ProtectSystem -p PrivateTmp "
        "-p StateDirectory -p ActiveState -p UnitFileState -p CapabilityBoundingSet").splitlines())
    assert shown == {"User": "chat", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                     "StateDirectory": "chat", "ActiveState": "active", "UnitFileState": "enabled",
                     "CapabilityBoundingSet": ""}
    pid = chat.pid()
    assert chat.sh(f"stat -c %U /proc/{pid}") == "chat"
    assert chat.sh(f"grep ^NoNewPrivs /proc/{pid}/status").split() == ["NoNewPrivs:", "1"]
    root_mount = chat.sh(f"awk '$5 == \"/\" {{print $6}}' /proc/{pid}/mountinfo")
    assert root_mount.split(",")[0] == "ro", f"the service sees / as {root_mount}"


def test_two_clients_exchange_a_message_that_is_stored_and_metrics_are_served(chat):
    got = wsclient.run(wsclient.exchange(f"ws://{CHAT_IP}:8080", f"ws://{CHAT_IP}:8080", "lab"))
    assert got["bob"]["body"] == f"hello bob {got['tag']}" and got["bob"]["sender"] == "ann"
    assert got["ann"]["body"] == f"hello ann {got['tag']}" and got["ann"]["instance"] == CHAT
    query = "SELECT sender FROM messages WHERE body LIKE '%' || :'tag' ORDER BY id"  # tag: 8 hex digits
    rows = chat.lab.attach(DB, ["runuser", "-u", "postgres", "--", "psql", "-XAt", "-d", "chat",
                                f"--set=tag={got['tag']}"], input=query).stdout
    assert rows.split() == ["ann", "bob"]
    metrics = requests.get(f"http://{CHAT_IP}:9464/metrics", timeout=10).text
    assert "chat_messages_received_total" in metrics and 'chat_dependency_up{dependency="postgresql"}' in metrics
    assert requests.get(f"{BASE}/metrics", timeout=10).status_code == 404, "metrics stay off the public port"


def public_health(chat) -> tuple[int, dict]:
    return wsclient.run(wsclient.get_json(f"https://{chatlab.FQDN}/healthz", chat.public["pins"],
                                          chat.public["cafile"]))


def test_two_clients_through_the_proxy_over_verified_https_exchange_a_message(chat):
    public = chat.public
    got = wsclient.run(wsclient.exchange(public["base"], public["base"], "public", public["pins"], public["cafile"]))
    assert got["bob"]["body"] == f"hello bob {got['tag']}" and got["ann"]["body"] == f"hello ann {got['tag']}"
    assert public_health(chat) == (200, {"status": "ok", "checks": {"postgresql": "ok", "rabbitmq": "ok"},
                                         "instance": CHAT})


def test_test_mode_shows_a_new_ref_and_changes_nothing(chat):
    pid = chat.pid()
    planned = chat.apply("v2", test=True)
    assert planned.states["chat-release-deployed"]["result"] is None
    assert planned.states["chat-release-deployed"]["changes"]["release"] == {
        "old": chat.release("v1"), "new": chat.release("v2")}
    assert chat.current() == chat.release("v1") and chat.pid() == pid


def test_a_new_ref_is_built_switched_to_and_restarted(chat):
    pid = chat.pid()
    applied = chat.apply("v2")
    assert not applied.failed, applied.failed
    assert applied.changed["chat-release-deployed"]["release"] == {"old": chat.release("v1"), "new": chat.release("v2")}
    assert chat.current() == chat.release("v2") and chat.pid() != pid
    assert wait_health(200)["checks"] == {"postgresql": "ok", "rabbitmq": "ok"}
    again = chat.apply("v2")
    assert not again.failed and again.changed == {}


def test_a_ref_that_does_not_build_leaves_the_previous_release_serving(chat):
    pid = chat.pid()
    applied = chat.apply("broken")
    comment = applied.failed["chat-release-deployed"]
    assert "go build failed" in comment and "undefinedFunction" in comment
    assert f"release {chat.release('v2')} still serves" in comment
    assert applied.changed == {}
    assert chat.current() == chat.release("v2") and chat.pid() == pid
    wait_health(200, timeout=5)


def test_a_ref_whose_health_check_fails_is_rolled_back_and_the_state_says_so(chat):
    applied = chat.apply("unhealthy")
    comment = applied.failed["chat-release-deployed"]
    assert f"release {chat.release('unhealthy')}" in comment and "failed its health check" in comment
    assert f"rolled back to release {chat.release('v2')}, which serves again" in comment
    assert chat.current() == chat.release("v2")
    wait_health(200, timeout=10)
    # refused once, refused at once afterwards, naming why, without building or restarting
    pid = chat.pid()
    again = chat.apply("unhealthy")
    assert "was refused before (health check: 503" in again.failed["chat-release-deployed"]
    assert again.seconds < applied.seconds and chat.pid() == pid
    back = chat.apply("v2")
    assert not back.failed and back.changed == {}


def test_healthz_fails_with_rabbitmq_stopped_and_the_service_recovers_by_itself(chat):
    pid = chat.pid()
    chat.lab.sh(MQ, "systemctl stop rabbitmq-server")
    try:
        down = wait_health(503, timeout=30)
        assert down["checks"]["rabbitmq"].startswith("down") and down["checks"]["postgresql"] == "ok"
        status, through_proxy = public_health(chat)
        assert status == 503 and through_proxy["checks"]["rabbitmq"].startswith("down"), "the proxy reports it"
    finally:
        chat.lab.sh(MQ, "systemctl start rabbitmq-server")
    assert wait_health(200, timeout=60)["checks"]["rabbitmq"] == "ok"
    assert chat.pid() == pid, "recovered without a restart"
    got = wsclient.run(wsclient.exchange(f"ws://{CHAT_IP}:8080", f"ws://{CHAT_IP}:8080", "after-outage"))
    assert got["bob"]["body"].startswith("hello bob")


def test_stored_messages_survive_a_restart(chat):
    got = wsclient.run(wsclient.exchange(f"ws://{CHAT_IP}:8080", f"ws://{CHAT_IP}:8080", "durable"))
    chat.lab.sh(CHAT, "systemctl restart chat.service")
    wait_health(200)
    bodies = [m["body"] for m in wsclient.run(wsclient.history(f"ws://{CHAT_IP}:8080", "durable"))]
    assert f"hello bob {got['tag']}" in bodies and f"hello ann {got['tag']}" in bodies


def test_the_default_source_the_example_shipped_with_the_state_tree_replaces_the_git_release(chat):
    pid = chat.pid()
    applied = chat.apply(None)
    assert not applied.failed, applied.failed
    change = applied.changed["chat-release-deployed"]
    assert change["source"] == "salt://chat/example" and change["release"]["old"] == chat.release("v2")
    assert chat.pid() != pid and wait_health(200, timeout=10)["checks"]["rabbitmq"] == "ok"
    again = chat.apply(None)
    assert not again.failed and again.changed == {}
