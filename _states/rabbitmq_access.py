"""
RabbitMQ vhosts, and users whose passwords live only in Vault, with their exact permissions.

The password is read from Vault (``vault_server.secret_read``) when the state runs, never at
render time, so it is in no compiled state data, no output, no comment, no change and no log. It
reaches ``rabbitmqctl`` on standard input (``authenticate_user``, ``add_user``,
``change_password``), never on a command line. A changed password in Vault is applied with
``change_password``: the broker is not restarted and open connections stay up.

``rabbitmqctl`` is RabbitMQ's own CLI script run directly (not Debian's ``/usr/sbin`` wrapper,
which re-parses its arguments with a shell), as root with the rabbitmq user's home for the
Erlang cookie.

.. code-block:: yaml

    rabbitmq-user-chat-present:
      rabbitmq_access.user_present:
        - name: chat
        - password_path: roles/rabbitmq/users/chat
        - permissions:
            chat: {configure: '.*', write: '.*', read: '.*'}
"""

import json

from salt.exceptions import CommandExecutionError

__virtualname__ = "rabbitmq_access"

RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
HOME = "/var/lib/rabbitmq"
KINDS = ("configure", "write", "read")
# rabbitmqctl authenticate_user's exit code for wrong credentials (EX_DATAERR).
_BAD_CREDENTIALS = 65


def __virtual__():
    # No check of rabbitmqctl here: on a guest's first run the package is installed by the
    # same highstate, after this module was loaded.
    return __virtualname__


def _ctl(*args, stdin=None, accept=(0,)):
    res = __salt__["cmd.run_all"](
        [RABBITMQCTL, "-q", *args],
        python_shell=False,
        stdin=stdin,
        cwd=HOME,
        env={"HOME": HOME},
        output_loglevel="quiet",
        ignore_retcode=True,
        reset_system_locale=False,
    )
    if res["retcode"] not in accept:
        detail = (res["stderr"] or res["stdout"]).strip().replace("\n", " ")
        raise CommandExecutionError(f"rabbitmqctl {args[0]} {args[1] if len(args) > 1 else ''}".rstrip()
                                    + f" failed (exit {res['retcode']}): {detail}")
    return res


def _json(*args):
    out = _ctl(*args, "--formatter", "json")["stdout"].strip()
    return json.loads(out) if out else []


def _users():
    return {entry["user"]: sorted(entry["tags"]) for entry in _json("list_users")}


def _permissions(name):
    return {entry["vhost"]: {k: entry[k] for k in KINDS} for entry in _json("list_user_permissions", name)}


def _authenticates(name, password):
    return _ctl("authenticate_user", name, stdin=password, accept=(0, _BAD_CREDENTIALS))["retcode"] == 0


def _ret(name):
    return {"name": name, "result": True, "comment": "", "changes": {}}


def user_present(name, password_path, field="password", mount="secret", tags=None, permissions=None):
    """
    The user ``name`` exists, authenticates with the password in Vault at ``password_path``
    (KV v2 under ``mount``, field ``field``), has exactly ``tags`` and exactly
    ``permissions`` (vhost -> {configure, write, read}; permissions on other vhosts are cleared).
    """
    ret = _ret(name)
    wanted_tags = sorted(tags or [])
    wanted = {vhost: {k: str(perms[k]) for k in KINDS} for vhost, perms in (permissions or {}).items()}
    try:
        password = __salt__["vault_server.secret_read"](password_path, field, mount=mount)
        users = _users()
        exists = name in users
        password_ok = exists and _authenticates(name, password)
        current = _permissions(name) if exists else {}
    except CommandExecutionError as exc:
        ret["result"] = False
        ret["comment"] = f"RabbitMQ user {name}: {exc}"
        return ret

    changes = {}
    if not exists:
        changes["user"] = {"old": None, "new": name}
        changes["password"] = {"old": None, "new": f"(from {mount}/data/{password_path})"}
    elif not password_ok:
        changes["password"] = {"old": "(set)", "new": f"(changed to {mount}/data/{password_path})"}
    if users.get(name, []) != wanted_tags:
        changes["tags"] = {"old": users.get(name, []), "new": wanted_tags}
    for vhost in sorted(set(wanted) | set(current)):
        if wanted.get(vhost) != current.get(vhost):
            changes.setdefault("permissions", {})[vhost] = {"old": current.get(vhost), "new": wanted.get(vhost)}
    if not changes:
        ret["comment"] = f"RabbitMQ user {name} has its password from {mount}/data/{password_path}, its tags and " \
                         f"permissions"
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"RabbitMQ user {name} would be {'changed' if exists else 'created'}"
        ret["changes"] = changes
        return ret

    try:
        if not exists:
            _ctl("add_user", name, stdin=password)
        elif not password_ok:
            _ctl("change_password", name, stdin=password)
        if "tags" in changes:
            _ctl("set_user_tags", name, *wanted_tags)
        for vhost, change in changes.get("permissions", {}).items():
            if change["new"] is None:
                _ctl("clear_permissions", "-p", vhost, name)
            else:
                _ctl("set_permissions", "-p", vhost, name, *(change["new"][k] for k in KINDS))
    except CommandExecutionError as exc:
        ret["result"] = False
        ret["comment"] = f"RabbitMQ user {name}: {exc}"
        ret["changes"] = {}
        return ret
    ret["changes"] = changes
    ret["comment"] = f"RabbitMQ user {name} {'changed' if exists else 'created'}"
    return ret


def user_absent(name):
    """The user ``name`` does not exist (RabbitMQ's default ``guest``, for one)."""
    ret = _ret(name)
    try:
        exists = name in _users()
        if not exists:
            ret["comment"] = f"RabbitMQ user {name} is absent"
            return ret
        if __opts__["test"]:
            ret["result"] = None
            ret["comment"] = f"RabbitMQ user {name} would be deleted"
        else:
            _ctl("delete_user", name)
            ret["comment"] = f"RabbitMQ user {name} deleted"
    except CommandExecutionError as exc:
        ret["result"] = False
        ret["comment"] = f"RabbitMQ user {name}: {exc}"
        return ret
    ret["changes"] = {"user": {"old": name, "new": None}}
    return ret


def only_declared_users(name, users):
    """
    No user but ``users`` exists: a consumer removed from the site loses its account (its
    connections are closed by RabbitMQ). ``name`` only labels the state. Vhosts are never removed
    this way: deleting one deletes its queues and messages.
    """
    ret = _ret(name)
    try:
        extra = sorted(set(_users()) - set(users))
        if not extra:
            ret["comment"] = "RabbitMQ has no user but the declared ones"
            return ret
        if __opts__["test"]:
            ret["result"] = None
            ret["comment"] = f"RabbitMQ user(s) {', '.join(extra)} would be deleted"
        else:
            for user in extra:
                _ctl("delete_user", user)
            ret["comment"] = f"RabbitMQ user(s) {', '.join(extra)} deleted (not declared)"
    except CommandExecutionError as exc:
        ret["result"] = False
        ret["comment"] = f"RabbitMQ users: {exc}"
        return ret
    ret["changes"] = {"deleted": extra}
    return ret


def vhost_present(name):
    """The virtual host ``name`` exists."""
    ret = _ret(name)
    try:
        if name in {entry["name"] for entry in _json("list_vhosts")}:
            ret["comment"] = f"RabbitMQ vhost {name} exists"
            return ret
        if __opts__["test"]:
            ret["result"] = None
            ret["comment"] = f"RabbitMQ vhost {name} would be added"
        else:
            _ctl("add_vhost", name)
            ret["comment"] = f"RabbitMQ vhost {name} added"
    except CommandExecutionError as exc:
        ret["result"] = False
        ret["comment"] = f"RabbitMQ vhost {name}: {exc}"
        return ret
    ret["changes"] = {"vhost": {"old": None, "new": name}}
    return ret
