"""The ``rabbitmq_access`` states against a RabbitMQ node started by the test on loopback, passwords
in a real OpenBao: applied directly and after a dry run, the broker checked each time."""

from __future__ import annotations

import secrets

import pytest

from tests.states.conftest import converges, unique

pytestmark = pytest.mark.functional

ALL = {"configure": ".*", "write": ".*", "read": ".*"}


def password_in_vault(bao, path: str) -> str:
    value = secrets.token_urlsafe(24)
    bao.client().secrets.kv.v2.create_or_update_secret(path=path, secret={"password": value})
    return value


def state(caller, fun: str, name: str, **kwargs):
    return lambda test: caller.state(f"rabbitmq_access.{fun}", name, test=test, **kwargs)


def test_a_vhost_is_added(rabbit_caller, rabbitmq, testmode):
    vhost = unique("vhost")
    converges(state(rabbit_caller, "vhost_present", vhost), lambda: vhost in rabbitmq.vhosts(),
              {"vhost": {"old": None, "new": vhost}}, testmode)


def test_a_vhost_named_beyond_ascii_is_read_back_as_named(rabbit_caller, rabbitmq, testmode):
    """The broker's state is read as one JSON document: a name outside ASCII must come back intact."""
    vhost = unique("caf\u00e9-\u00fc")
    converges(state(rabbit_caller, "vhost_present", vhost), lambda: vhost in rabbitmq.vhosts(),
              {"vhost": {"old": None, "new": vhost}}, testmode)


def test_a_new_user_gets_its_vault_password_tags_and_exact_permissions(rabbit_caller, rabbitmq, bao, testmode):
    user, vhost = unique("app"), unique("vhost")
    rabbitmq.ctl("add_vhost", vhost)
    path = f"roles/rabbitmq/users/{user}"
    password = password_in_vault(bao, path)
    declared = {vhost: {"configure": "^app\\.", "write": ".*", "read": ".*"}}

    def on_server():
        return (rabbitmq.logs_in(user, password) and rabbitmq.users().get(user) == ["monitoring"]
                and rabbitmq.permissions(user) == declared)

    converges(state(rabbit_caller, "user_present", user, password_path=path, tags=["monitoring"],
                    permissions=declared),
              on_server,
              {"user": {"old": None, "new": user},
               "password": {"old": None, "new": f"(from secret/data/{path})"},
               "tags": {"old": [], "new": ["monitoring"]},
               "permissions": {vhost: {"old": None, "new": declared[vhost]}}},
              testmode, secret_values=(password,))


def test_a_password_changed_in_vault_and_permissions_on_an_undeclared_vhost_are_taken_back(
        rabbit_caller, rabbitmq, bao, testmode):
    user, kept, other = unique("app"), unique("vhost"), unique("vhost")
    path = f"roles/rabbitmq/users/{user}"
    old = password_in_vault(bao, path)
    for vhost in (kept, other):
        rabbitmq.ctl("add_vhost", vhost)
    applied = rabbit_caller.state("rabbitmq_access.user_present", user, password_path=path,
                                  permissions={kept: ALL, other: ALL})
    assert applied["result"] is True, applied["comment"]
    new = password_in_vault(bao, path)

    def on_server():
        return rabbitmq.logs_in(user, new) and rabbitmq.permissions(user) == {kept: ALL}

    converges(state(rabbit_caller, "user_present", user, password_path=path, permissions={kept: ALL}), on_server,
              {"password": {"old": "(set)", "new": f"(changed to secret/data/{path})"},
               "permissions": {other: {"old": ALL, "new": None}}},
              testmode, secret_values=(old, new))
    assert not rabbitmq.logs_in(user, old), "the old password still works"


def test_a_user_is_deleted(rabbit_caller, rabbitmq, testmode):
    user = unique("leaver")
    rabbitmq.ctl("add_user", user, stdin=secrets.token_urlsafe(16))
    converges(state(rabbit_caller, "user_absent", user), lambda: user not in rabbitmq.users(),
              {"user": {"old": user, "new": None}}, testmode)


def test_a_user_the_site_no_longer_declares_is_deleted(rabbit_caller, rabbitmq, testmode):
    extra = unique("removed")
    rabbitmq.ctl("add_user", extra, stdin=secrets.token_urlsafe(16))
    declared = sorted(set(rabbitmq.users()) - {extra})
    converges(state(rabbit_caller, "only_declared_users", "rabbitmq-users", users=declared),
              lambda: extra not in rabbitmq.users(), {"deleted": [extra]}, testmode)
    assert set(rabbitmq.users()) == set(declared), "a declared user was deleted"


def test_a_secret_missing_from_vault_fails_and_leaves_the_broker_alone(rabbit_caller, rabbitmq, testmode):
    user = unique("app")
    path = f"roles/rabbitmq/users/{user}"
    ret = rabbit_caller.state("rabbitmq_access.user_present", user, test=testmode, password_path=path)
    assert ret["result"] is False
    assert ret["changes"] == {}
    assert ret["comment"].startswith(f"RabbitMQ user {user}: secret/data/{path}: no such secret"), ret["comment"]
    assert user not in rabbitmq.users()


def test_a_password_erlang_would_misread_is_set_as_is_and_never_shown_in_an_error(rabbit_caller, rabbitmq):
    """The module writes through erl_call, with the password inside an Erlang expression: quotes,
    a backslash, the end of a binary literal and text beyond ASCII must reach the broker unchanged,
    and the broker's error for a second creation names its reason, not the password."""
    from salt.exceptions import CommandExecutionError

    user = unique("quoted")
    password = 'a"b\\c">>. ' + "\u00e9\u00df" + secrets.token_urlsafe(8)
    assert rabbit_caller.cmd("rabbitmq_access.add_user", user, password) is True
    assert rabbitmq.logs_in(user, password)
    assert rabbit_caller.cmd("rabbitmq_access.authenticates", user, password) is True
    assert rabbit_caller.cmd("rabbitmq_access.authenticates", user, password + "x") is False
    with pytest.raises(CommandExecutionError) as failed:
        rabbit_caller.cmd("rabbitmq_access.add_user", user, password)
    assert "user_already_exists" in str(failed.value)
    assert password not in str(failed.value) and password[-8:] not in str(failed.value)
