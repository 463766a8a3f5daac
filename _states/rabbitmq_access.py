"""
RabbitMQ vhosts, and users whose passwords live only in Vault, with their exact permissions.

The password is read from Vault (``vault_server.secret_read``) when the state runs, never at
render time, so it is in no compiled state data, no output, no comment, no change and no log.
The ``rabbitmq_access`` execution module hands it to ``rabbitmqctl`` on standard input. A
changed password in Vault is applied with ``change_password``: the broker is not restarted and
open connections stay up. Every state honours ``test=True``.

.. code-block:: yaml

    rabbitmq-user-chat-present:
      rabbitmq_access.user_present:
        - name: chat
        - password_path: roles/rabbitmq/users/chat
        - permissions:
            chat: {configure: '.*', write: '.*', read: '.*'}
"""

from salt.exceptions import CommandExecutionError

__virtualname__ = "rabbitmq_access"

KINDS = ("configure", "write", "read")


def __virtual__():
    if "rabbitmq_access.users" not in __salt__:
        return False, "the rabbitmq_access execution module is not available"
    return __virtualname__


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
        users = __salt__["rabbitmq_access.users"]()
        exists = name in users
        password_ok = exists and __salt__["rabbitmq_access.authenticates"](name, password)
        current = __salt__["rabbitmq_access.permissions"](name) if exists else {}
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
            __salt__["rabbitmq_access.add_user"](name, password)
        elif not password_ok:
            __salt__["rabbitmq_access.change_password"](name, password)
        if "tags" in changes:
            __salt__["rabbitmq_access.set_tags"](name, wanted_tags)
        for vhost, change in changes.get("permissions", {}).items():
            if change["new"] is None:
                __salt__["rabbitmq_access.clear_permissions"](vhost, name)
            else:
                __salt__["rabbitmq_access.set_permissions"](vhost, name, *(change["new"][k] for k in KINDS))
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
        exists = name in __salt__["rabbitmq_access.users"]()
        if not exists:
            ret["comment"] = f"RabbitMQ user {name} is absent"
            return ret
        if __opts__["test"]:
            ret["result"] = None
            ret["comment"] = f"RabbitMQ user {name} would be deleted"
        else:
            __salt__["rabbitmq_access.delete_user"](name)
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
        extra = sorted(set(__salt__["rabbitmq_access.users"]()) - set(users))
        if not extra:
            ret["comment"] = "RabbitMQ has no user but the declared ones"
            return ret
        if __opts__["test"]:
            ret["result"] = None
            ret["comment"] = f"RabbitMQ user(s) {', '.join(extra)} would be deleted"
        else:
            for user in extra:
                __salt__["rabbitmq_access.delete_user"](user)
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
        if name in __salt__["rabbitmq_access.vhosts"]():
            ret["comment"] = f"RabbitMQ vhost {name} exists"
            return ret
        if __opts__["test"]:
            ret["result"] = None
            ret["comment"] = f"RabbitMQ vhost {name} would be added"
        else:
            __salt__["rabbitmq_access.add_vhost"](name)
            ret["comment"] = f"RabbitMQ vhost {name} added"
    except CommandExecutionError as exc:
        ret["result"] = False
        ret["comment"] = f"RabbitMQ vhost {name}: {exc}"
        return ret
    ret["changes"] = {"vhost": {"old": None, "new": name}}
    return ret
