"""The drill's RabbitMQ check, on definitions as `rabbitmqctl export_definitions` writes them: what a
restore must bring back is compared, the broker's own version fields are not."""

from __future__ import annotations

import base64
import copy
import secrets

import pytest

from sitectl.drill import rabbitmq_fingerprint

pytestmark = pytest.mark.render

def fake_hash() -> str:
    """A stand-in for a password hash as the export writes it (base64), made at run time."""
    return base64.b64encode(secrets.token_bytes(36)).decode()


EXPORT = {
    "rabbit_version": "3.10.8", "rabbitmq_version": "3.10.8", "product_name": "RabbitMQ",
    "users": [{"name": "chat", "password_hash": fake_hash(), "hashing_algorithm": "rabbit_password_hashing_sha256",
               "tags": [], "limits": {}}],
    "vhosts": [{"name": "chat", "limits": []}],
    "permissions": [{"user": "chat", "vhost": "chat", "configure": ".*", "write": ".*", "read": ".*"}],
    "queues": [{"name": "recovery_drill", "vhost": "chat", "durable": True, "auto_delete": False, "arguments": {}}],
    "exchanges": [],
    "bindings": [{"source": "amq.direct", "vhost": "chat", "destination": "recovery_drill",
                  "destination_type": "queue", "routing_key": "recovery_drill", "arguments": {}}],
    "policies": [],
}


def test_the_same_definitions_from_another_broker_version_compare_equal():
    other = copy.deepcopy(EXPORT)
    other.update(rabbit_version="3.13.7", rabbitmq_version="3.13.7")
    other["users"][0]["limits"] = {"max-connections": 10}  # not part of what the role declares
    assert rabbitmq_fingerprint(other) == rabbitmq_fingerprint(EXPORT)


def test_a_clients_own_transient_queues_are_not_the_brokers_to_restore():
    """The chat service's exclusive, server-named queue and its binding come back under another name
    when it reconnects: they are left out; the durable queue is not."""
    live = copy.deepcopy(EXPORT)
    live["queues"].append({"name": "amq.gen-CKu7lvq5VK", "vhost": "chat", "durable": False, "auto_delete": True,
                           "arguments": {}})
    live["bindings"].append({"source": "chat.messages", "vhost": "chat", "destination": "amq.gen-CKu7lvq5VK",
                             "destination_type": "queue", "routing_key": "", "arguments": {}})
    assert rabbitmq_fingerprint(live) == rabbitmq_fingerprint(EXPORT)
    assert [q for q in rabbitmq_fingerprint(live)["queues"] if "recovery_drill" in q]


@pytest.mark.parametrize("change", [
    lambda d: d["users"][0].update({"password_hash": fake_hash()}),
    lambda d: d["users"][0].update(tags=["administrator"]),
    lambda d: d["permissions"][0].update(write="^$"),
    lambda d: d["queues"].clear(),
    lambda d: d["bindings"][0].update(routing_key="other"),
    lambda d: d["vhosts"].append({"name": "apps"}),
], ids=["password", "tags", "permission", "queue", "binding", "vhost"])
def test_a_lost_or_changed_definition_shows(change):
    other = copy.deepcopy(EXPORT)
    change(other)
    assert rabbitmq_fingerprint(other) != rabbitmq_fingerprint(EXPORT)


def test_the_drill_waits_for_the_new_guests_minion_restart_before_its_next_command():
    """After the first highstate of the recreated guest, its minion restarts (common.minion) once no job
    runs; a command sent meanwhile is lost. The drill asks until the restart unit is over: an answer
    of "active" or no answer at all (the minion restarting) means ask again."""
    from sitectl import bringup, drill

    class Client:
        def __init__(self, answers):
            self.answers, self.calls = list(answers), []

        def cmd(self, target, fun, arg, timeout):
            self.calls.append((target, fun, arg))
            return self.answers.pop(0) if self.answers else {}

    runner = drill.Runner.__new__(drill.Runner)
    runner.guest = "rabbitmq"
    runner.client = Client([{"rabbitmq": {"stdout": "active"}}, {}, {"rabbitmq": {"stdout": "inactive"}}])
    runner.after_minion_restart(timeout=60, pause=0)
    check = ("rabbitmq", "cmd.run_all", [f"systemctl is-active {bringup.MINION_RESTART_UNIT}"])
    assert runner.client.calls == [check] * 3
