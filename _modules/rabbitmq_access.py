"""
RabbitMQ users, their passwords, tags and permissions, and vhosts, through ``rabbitmqctl``.

``rabbitmqctl`` is RabbitMQ's own CLI script run directly (not Debian's ``/usr/sbin`` wrapper,
which re-parses its arguments with a shell), as root with the rabbitmq user's home for the
Erlang cookie. A password is passed on standard input, never on a command line, and no function
logs or returns one. Errors raise ``CommandExecutionError`` with the command (never a password)
and RabbitMQ's own message.

The functions that take a password are meant for states (``rabbitmq_access``) that read it from
Vault; calling them from the command line would put the password on that command line.
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
    # No check for rabbitmqctl: on a guest's first highstate the package is installed by that
    # same run, after the loader has looked at this module.
    return __virtualname__


def _env():
    """rabbitmqctl's environment: the rabbitmq user's home (its Erlang cookie), and what the config key
    ``rabbitmq_access: {env: ...}`` adds for a node that is not the system's own (the functional tests
    start their own: RABBITMQ_NODENAME, ERL_EPMD_PORT, a HOME with that node's cookie)."""
    conf = __salt__["config.get"]("rabbitmq_access", {}) or {}
    return {"HOME": HOME, **(conf.get("env") or {})}


def _ctl(*args, stdin=None, accept=(0,)):
    env = _env()
    res = __salt__["cmd.run_all"](
        [RABBITMQCTL, "-q", *args],
        python_shell=False,
        stdin=stdin,
        cwd=env["HOME"],
        env=env,
        output_loglevel="quiet",
        ignore_retcode=True,
        reset_system_locale=False,
    )
    if res["retcode"] not in accept:
        detail = (res["stderr"] or res["stdout"]).strip().replace("\n", " ")
        command = " ".join(args[:2])
        raise CommandExecutionError(f"rabbitmqctl {command} failed (exit {res['retcode']}): {detail}")
    return res


def _json(*args):
    out = _ctl(*args, "--formatter", "json")["stdout"].strip()
    return json.loads(out) if out else []


def users():
    """
    Every user: name -> sorted tags.

    CLI Example:

    .. code-block:: bash

        salt rabbitmq rabbitmq_access.users
    """
    return {entry["user"]: sorted(entry["tags"]) for entry in _json("list_users")}


def permissions(name):
    """
    The permissions of user ``name``: vhost -> {configure, write, read}.

    CLI Example:

    .. code-block:: bash

        salt rabbitmq rabbitmq_access.permissions chat
    """
    return {entry["vhost"]: {k: entry[k] for k in KINDS} for entry in _json("list_user_permissions", name)}


def vhosts():
    """
    The names of every vhost.

    CLI Example:

    .. code-block:: bash

        salt rabbitmq rabbitmq_access.vhosts
    """
    return sorted(entry["name"] for entry in _json("list_vhosts"))


def authenticates(name, password):
    """True if user ``name`` authenticates with ``password``, False if RabbitMQ refuses it."""
    return _ctl("authenticate_user", name, stdin=password, accept=(0, _BAD_CREDENTIALS))["retcode"] == 0


def add_user(name, password):
    """Create user ``name`` with ``password`` (and no tags, no permissions)."""
    _ctl("add_user", name, stdin=password)
    return True


def change_password(name, password):
    """Set the password of user ``name``; its open connections stay up."""
    _ctl("change_password", name, stdin=password)
    return True


def set_tags(name, tags):
    """Replace the tags of user ``name`` by ``tags``."""
    _ctl("set_user_tags", name, *tags)
    return True


def set_permissions(vhost, name, configure, write, read):
    """Set the permissions of user ``name`` on ``vhost`` (three regular expressions)."""
    _ctl("set_permissions", "-p", vhost, name, configure, write, read)
    return True


def clear_permissions(vhost, name):
    """Remove every permission of user ``name`` on ``vhost``."""
    _ctl("clear_permissions", "-p", vhost, name)
    return True


def delete_user(name):
    """
    Delete user ``name``; RabbitMQ closes its connections.

    CLI Example:

    .. code-block:: bash

        salt rabbitmq rabbitmq_access.delete_user guest
    """
    _ctl("delete_user", name)
    return True


def add_vhost(name):
    """Create the vhost ``name``."""
    _ctl("add_vhost", name)
    return True
