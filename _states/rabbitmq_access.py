"""
RabbitMQ vhosts, and users whose passwords live only in Vault, with their exact permissions.

The password is read from Vault (``vault_server.secret_read``) when the state runs, never at
render time, so it is in no compiled state data, no output, no comment, no change and no log.
The ``rabbitmq_access`` execution module hands it to the broker (``erl_call``) on standard input. A
changed password in Vault is applied with ``change_password``: the broker is not restarted and
open connections stay up. Every state honours ``test=True``. The broker's users, vhosts and
permissions are read once per state run (one ``erl_call``) and read again after any write.

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
    if "platform_state.converge" not in __utils__:
        return False, "the platform_state utility module is not synced (saltutil.sync_all)"
    return __virtualname__


def _user_changes(name, where, exists, password_ok, tags, permissions):
    """What differs for user ``name``: ``tags`` and ``permissions`` are (current, wanted) pairs; the
    password shows only where it comes from."""
    changes = {}
    if not exists:
        changes["user"] = {"old": None, "new": name}
        changes["password"] = {"old": None, "new": f"(from {where})"}
    elif not password_ok:
        changes["password"] = {"old": "(set)", "new": f"(changed to {where})"}
    if tags[0] != tags[1]:
        changes["tags"] = {"old": tags[0], "new": tags[1]}
    current, wanted = permissions
    for vhost in sorted(set(wanted) | set(current)):
        if wanted.get(vhost) != current.get(vhost):
            changes.setdefault("permissions", {})[vhost] = {"old": current.get(vhost), "new": wanted.get(vhost)}
    return changes


def user_present(name, password_path, field="password", mount="secret", tags=None, permissions=None):
    """
    The user ``name`` exists, authenticates with the password in Vault at ``password_path``
    (KV v2 under ``mount``, field ``field``), has exactly ``tags`` and exactly
    ``permissions`` (vhost -> {configure, write, read}; permissions on other vhosts are cleared).
    """
    ret = __utils__["platform_state.new"](name)
    wanted_tags = sorted(tags or [])
    wanted = {vhost: {k: str(perms[k]) for k in KINDS} for vhost, perms in (permissions or {}).items()}
    where = f"{mount}/data/{password_path}"
    __salt__["rabbitmq_access.run_cache"]()
    try:
        password = __salt__["vault_server.secret_read"](password_path, field, mount=mount)
        users = __salt__["rabbitmq_access.users"]()
        exists = name in users
        password_ok = exists and __salt__["rabbitmq_access.authenticates"](name, password)
        current = __salt__["rabbitmq_access.permissions"](name) if exists else {}
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, f"RabbitMQ user {name}: {exc}")

    changes = _user_changes(name, where, exists, password_ok, (users.get(name, []), wanted_tags), (current, wanted))

    def write():
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

    verb = "changed" if exists else "created"
    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"RabbitMQ user {name} has its password from {where}, its tags and permissions",
        planned=f"RabbitMQ user {name} would be {verb}",
        apply=write,
        done=f"RabbitMQ user {name} {verb}",
        failure=f"RabbitMQ user {name}: ",
    )


def user_absent(name):
    """The user ``name`` does not exist (RabbitMQ's default ``guest``, for one)."""
    ret = __utils__["platform_state.new"](name)
    __salt__["rabbitmq_access.run_cache"]()
    try:
        exists = name in __salt__["rabbitmq_access.users"]()
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, f"RabbitMQ user {name}: {exc}")
    return __utils__["platform_state.converge"](
        ret, __opts__["test"], {"user": {"old": name, "new": None}} if exists else {},
        unchanged=f"RabbitMQ user {name} is absent",
        planned=f"RabbitMQ user {name} would be deleted",
        apply=lambda: __salt__["rabbitmq_access.delete_user"](name),
        done=f"RabbitMQ user {name} deleted",
        failure=f"RabbitMQ user {name}: ",
    )


def only_declared_users(name, users):
    """
    No user but ``users`` exists: a consumer removed from the site loses its account (its
    connections are closed by RabbitMQ). ``name`` only labels the state. Vhosts are never removed
    this way: deleting one deletes its queues and messages.
    """
    ret = __utils__["platform_state.new"](name)
    __salt__["rabbitmq_access.run_cache"]()
    try:
        extra = sorted(set(__salt__["rabbitmq_access.users"]()) - set(users))
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, f"RabbitMQ users: {exc}")

    def delete():
        for user in extra:
            __salt__["rabbitmq_access.delete_user"](user)

    return __utils__["platform_state.converge"](
        ret, __opts__["test"], {"deleted": extra} if extra else {},
        unchanged="RabbitMQ has no user but the declared ones",
        planned=f"RabbitMQ user(s) {', '.join(extra)} would be deleted",
        apply=delete,
        done=f"RabbitMQ user(s) {', '.join(extra)} deleted (not declared)",
        failure="RabbitMQ users: ",
    )


def vhost_present(name):
    """The virtual host ``name`` exists."""
    ret = __utils__["platform_state.new"](name)
    __salt__["rabbitmq_access.run_cache"]()
    try:
        exists = name in __salt__["rabbitmq_access.vhosts"]()
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, f"RabbitMQ vhost {name}: {exc}")
    return __utils__["platform_state.converge"](
        ret, __opts__["test"], {} if exists else {"vhost": {"old": None, "new": name}},
        unchanged=f"RabbitMQ vhost {name} exists",
        planned=f"RabbitMQ vhost {name} would be added",
        apply=lambda: __salt__["rabbitmq_access.add_vhost"](name),
        done=f"RabbitMQ vhost {name} added",
        failure=f"RabbitMQ vhost {name}: ",
    )
