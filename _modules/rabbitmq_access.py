"""
RabbitMQ users, their passwords, tags and permissions, and vhosts, through Erlang's ``erl_call``.

Each call is one Erlang expression evaluated in the running node by ``erl_call`` (Debian's
``erlang-base``, a dependency of ``rabbitmq-server``), as root with the rabbitmq user's home for
the Erlang cookie: the same distribution connection ``rabbitmqctl`` makes, without starting an
Erlang VM (about 10 ms instead of about a second on two cores; issue 21). The functions called are
those ``rabbitmqctl``'s own commands call (``rabbit_auth_backend_internal``, ``rabbit_vhost``),
acting as the user ``salt`` in the broker's log. A password goes to ``erl_call`` on standard input,
base64-encoded inside the expression, never on a command line, and no function logs or returns
one. Errors raise ``CommandExecutionError`` with the operation (never a password) and RabbitMQ's
own answer.

The node is ``RABBITMQ_NODENAME`` from the config key ``rabbitmq_access: {env: ...}`` (the
functional tests start a node of their own), else ``NODENAME`` of rabbitmq-env.conf, else
``rabbit@<short hostname>``, RabbitMQ's default.

The functions that take a password are meant for states (``rabbitmq_access``) that read it from
Vault; calling them from the command line would put the password on that command line.

The reads (users with their tags, vhosts, every permission and each user's stored password hash)
are one expression for all of them; in a state run the ``rabbitmq_access`` states ask for that once
per run (``run_cache``) and every write drops it, so the next read asks the broker again. Outside a
state run every call reads the broker. ``authenticates`` checks a password against the hash
RabbitMQ stored, the way its internal backend does (salt + SHA-256/512/MD5 of salt and password);
a hashing module it does not know is asked to the broker's own login check. Hashes never leave this
module: no function returns or logs one.
"""

import base64
import hashlib
import hmac
import json
import re
import socket

from salt.exceptions import CommandExecutionError

__virtualname__ = "rabbitmq_access"

ERL_CALL = "/usr/bin/erl_call"
HOME = "/var/lib/rabbitmq"
ENV_FILE = "/etc/rabbitmq/rabbitmq-env.conf"
KINDS = ("configure", "write", "read")
# Who the broker's log names for each change (rabbitmqctl names "rmq-cli").
ACTING_USER = "salt"


def __virtual__():
    # No check for erl_call: on a guest's first highstate the package is installed by that
    # same run, after the loader has looked at this module.
    return __virtualname__


def _env():
    """erl_call's environment: the rabbitmq user's home (its Erlang cookie), and what the config key
    ``rabbitmq_access: {env: ...}`` adds for a node that is not the system's own (the functional tests
    start their own: RABBITMQ_NODENAME, ERL_EPMD_PORT, a HOME with that node's cookie)."""
    conf = __salt__["config.get"]("rabbitmq_access", {}) or {}
    return {"HOME": HOME, **(conf.get("env") or {})}


def _node(env):
    """The broker's node name, found the way rabbitmqctl finds it."""
    name = env.get("RABBITMQ_NODENAME")
    if not name:
        try:
            with open(env.get("RABBITMQ_CONF_ENV_FILE", ENV_FILE), encoding="utf-8") as conf:
                for line in conf:
                    found = re.match(r"""\s*(?:RABBITMQ_)?NODENAME=["']?([^"'\s]+)""", line)
                    if found:
                        name = found.group(1)
        except FileNotFoundError:
            pass
    name = name or "rabbit"
    return name if "@" in name else f"{name}@{socket.gethostname().split('.')[0]}"


def _binary(text):
    """An Erlang binary literal for ``text``, whatever it holds (UTF-8, then base64)."""
    encoded = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return f'base64:decode(<<"{encoded}">>)'


def _call(what, expression, secret=False):
    """Evaluate ``expression`` (Erlang, without the final full stop) in the broker and return what
    erl_call printed after ``{ok, `` (the result's text); anything else raises, naming ``what``.
    With ``secret`` (the expression holds a password) a failure names only the error's reason: an
    Erlang crash report prints the arguments of the call."""
    env = _env()
    res = __salt__["cmd.run_all"](
        [ERL_CALL, "-n", _node(env), "-e"],
        python_shell=False,
        stdin=expression + ".\n",
        cwd=env["HOME"],
        env=env,
        output_loglevel="quiet",
        ignore_retcode=True,
        reset_system_locale=False,
    )
    out = res["stdout"].strip()
    if res["retcode"] == 0 and out.startswith("{ok, ") and out.endswith("}"):
        return out[len("{ok, "):-1]
    detail = re.sub(r"\s+", " ", (out or res["stderr"]).strip())[-500:]
    if secret:
        reason = re.search(r"\{error,\s*\{?'?([A-Za-z_]+)", detail)
        detail = reason.group(1) if reason else "(the broker's answer is not shown: it may hold the password)"
    raise CommandExecutionError(f"RabbitMQ {what} failed (erl_call exit {res['retcode']}): {detail}")


def _write(what, expression, secret=False):
    """A change: the broker's function must return ``ok``."""
    _forget()
    got = _call(what, expression, secret)
    if got != "ok":
        raise CommandExecutionError(f"RabbitMQ {what} failed: {'(an answer other than ok)' if secret else got[-500:]}")
    return True


# One Erlang expression for every read: users (tags, stored hash and its hashing module), vhosts and
# permissions, as JSON in base64 (erl_call prints a string of those characters as it is). A user
# deleted between the listing and its lookup is left out.
_READ_ALL = """
Users = lists:flatmap(fun(P) ->
    Name = proplists:get_value(user, P),
    case rabbit_auth_backend_internal:lookup_user(Name) of
        {ok, U} -> [#{<<"name">> => Name,
                      <<"tags">> => [atom_to_binary(T, utf8) || T <- internal_user:get_tags(U)],
                      <<"hash">> => base64:encode(internal_user:get_password_hash(U)),
                      <<"hashing">> => atom_to_binary(internal_user:get_hashing_algorithm(U), utf8)}];
        _ -> []
    end
  end, rabbit_auth_backend_internal:list_users()),
Perms = [maps:from_list([{atom_to_binary(K, utf8), V} || {K, V} <- P])
         || P <- rabbit_auth_backend_internal:list_permissions()],
base64:encode_to_string(rabbit_json:encode(#{<<"users">> => Users, <<"vhosts">> => rabbit_vhost:list_names(),
                                             <<"permissions">> => Perms}))
"""
_RUN_CACHE = "rabbitmq_access.run_cache"
# RabbitMQ's password hashing modules: salted hash = salt (4 bytes) + H(salt + password).
_HASHES = {
    "rabbit_password_hashing_sha256": hashlib.sha256,
    "rabbit_password_hashing_sha512": hashlib.sha512,
    "rabbit_password_hashing_md5": hashlib.md5,
}


def run_cache():
    """Keep the broker's state read once for the rest of this state run (states call it first;
    every write function below drops it at once): _utils/platform_state.py."""
    return __utils__["platform_state.cache_open"](__context__, _RUN_CACHE)


def _forget():
    __utils__["platform_state.cache_drop"](__context__, _RUN_CACHE)


def _read_all():
    return __utils__["platform_state.cached"](__context__, _RUN_CACHE, "state", _read_broker)


def _read_broker():
    out = _call("read of users, vhosts and permissions", _READ_ALL)
    if re.fullmatch(r'"[A-Za-z0-9+/=]*"', out):
        encoded = out[1:-1]
    elif re.fullmatch(r"\[[0-9,\s]*\]", out):  # a long string can come as a list of character codes
        encoded = bytes(int(x) for x in out[1:-1].split(",") if x.strip()).decode("ascii")
    else:
        raise CommandExecutionError(f"RabbitMQ read of users, vhosts and permissions: unexpected answer {out[:300]}")
    raw = json.loads(base64.b64decode(encoded))
    state = {
        "users": {u["name"]: {"tags": sorted(u["tags"]), "hash": u["hash"], "hashing": u["hashing"]}
                  for u in raw["users"]},
        "vhosts": sorted(raw["vhosts"]),
        "permissions": {},
    }
    for entry in raw["permissions"]:
        state["permissions"].setdefault(entry["user"], {})[entry["vhost"]] = {k: entry[k] for k in KINDS}
    return state


def users():
    """
    Every user: name -> sorted tags.

    CLI Example:

    .. code-block:: bash

        salt rabbitmq rabbitmq_access.users
    """
    return {name: user["tags"] for name, user in _read_all()["users"].items()}


def permissions(name):
    """
    The permissions of user ``name``: vhost -> {configure, write, read}.

    CLI Example:

    .. code-block:: bash

        salt rabbitmq rabbitmq_access.permissions chat
    """
    return dict(_read_all()["permissions"].get(name, {}))


def vhosts():
    """
    The names of every vhost.

    CLI Example:

    .. code-block:: bash

        salt rabbitmq rabbitmq_access.vhosts
    """
    return list(_read_all()["vhosts"])


def _hash_matches(stored, hashing, password):
    """True/False when ``hashing`` is a module this knows; None otherwise."""
    digest = _HASHES.get(hashing)
    if digest is None:
        return None
    raw = base64.b64decode(stored or "")
    if len(raw) <= 4:  # no password set: nothing authenticates
        return False
    salt = raw[:4]
    return hmac.compare_digest(raw[4:], digest(salt + password.encode("utf-8")).digest())


def authenticates(name, password):
    """True if user ``name`` authenticates with ``password``, False if RabbitMQ refuses it."""
    user = _read_all()["users"].get(name)
    if user is None:
        return False
    matches = _hash_matches(user["hash"], user["hashing"], password)
    if matches is not None:
        return matches
    got = _call(f"login check of user {name}",
                f"case rabbit_access_control:check_user_pass_login({_binary(name)}, {_binary(password)}) of "
                "{ok, _} -> true; _ -> false end", secret=True)
    return got == "true"


def add_user(name, password):
    """Create user ``name`` with ``password`` (and no tags, no permissions)."""
    return _write(f"add_user {name}", f"rabbit_auth_backend_internal:add_user({_binary(name)}, {_binary(password)}, "
                                      f"{_binary(ACTING_USER)})", secret=True)


def change_password(name, password):
    """Set the password of user ``name``; its open connections stay up."""
    return _write(f"change_password {name}", f"rabbit_auth_backend_internal:change_password({_binary(name)}, "
                                             f"{_binary(password)}, {_binary(ACTING_USER)})", secret=True)


def set_tags(name, tags):
    """Replace the tags of user ``name`` by ``tags``."""
    atoms = ", ".join(f"binary_to_atom({_binary(tag)}, utf8)" for tag in tags)
    return _write(f"set_user_tags {name}", f"rabbit_auth_backend_internal:set_tags({_binary(name)}, [{atoms}], "
                                           f"{_binary(ACTING_USER)})")


def set_permissions(vhost, name, configure, write, read):
    """Set the permissions of user ``name`` on ``vhost`` (three regular expressions)."""
    args = ", ".join(_binary(x) for x in (name, vhost, configure, write, read, ACTING_USER))
    return _write(f"set_permissions -p {vhost} {name}", f"rabbit_auth_backend_internal:set_permissions({args})")


def clear_permissions(vhost, name):
    """Remove every permission of user ``name`` on ``vhost``."""
    args = ", ".join(_binary(x) for x in (name, vhost, ACTING_USER))
    return _write(f"clear_permissions -p {vhost} {name}", f"rabbit_auth_backend_internal:clear_permissions({args})")


def delete_user(name):
    """
    Delete user ``name``; RabbitMQ closes its connections.

    CLI Example:

    .. code-block:: bash

        salt rabbitmq rabbitmq_access.delete_user guest
    """
    return _write(f"delete_user {name}", f"rabbit_auth_backend_internal:delete_user({_binary(name)}, "
                                         f"{_binary(ACTING_USER)})")


def add_vhost(name):
    """Create the vhost ``name``."""
    return _write(f"add_vhost {name}", f"rabbit_vhost:add({_binary(name)}, {_binary(ACTING_USER)})")
