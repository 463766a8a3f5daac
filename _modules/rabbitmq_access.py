"""
RabbitMQ users, their passwords, tags and permissions, and vhosts, through ``rabbitmqctl``.

``rabbitmqctl`` is RabbitMQ's own CLI script run directly (not Debian's ``/usr/sbin`` wrapper,
which re-parses its arguments with a shell), as root with the rabbitmq user's home for the
Erlang cookie. A password is passed on standard input, never on a command line, and no function
logs or returns one. Errors raise ``CommandExecutionError`` with the command (never a password)
and RabbitMQ's own message.

The functions that take a password are meant for states (``rabbitmq_access``) that read it from
Vault; calling them from the command line would put the password on that command line.

Speed (issue 21): each ``rabbitmqctl`` call starts an Erlang VM (about a second on two cores). The
reads (users with their tags, vhosts, every permission and each user's stored password hash) are
one ``rabbitmqctl eval`` for all of them; in a state run the ``rabbitmq_access`` states ask for
that once per run (``run_cache``) and every write drops it, so the next read asks the broker
again. Outside a state run every call reads the broker. ``authenticates`` checks a password
against the hash RabbitMQ stored, the way its internal backend does (salt + SHA-256/512/MD5 of salt
and password); a hashing module it does not know is asked with ``authenticate_user``. Hashes never
leave this module: no function returns or logs one.
"""

import base64
import hashlib
import hmac
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


# One Erlang expression for every read: users (tags, stored hash and its hashing module), vhosts and
# permissions, printed as one line of JSON. A user deleted between the listing and its lookup is left out.
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
io:format("~ts~n", [rabbit_json:encode(#{<<"users">> => Users, <<"vhosts">> => rabbit_vhost:list_names(),
                                        <<"permissions">> => Perms})]),
ok.
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
    out = _ctl("eval", _READ_ALL)["stdout"]
    line = next((x for x in out.splitlines() if x.startswith("{")), None)
    if line is None:
        raise CommandExecutionError(f"rabbitmqctl eval printed no state: {out.strip()[-300:]}")
    raw = json.loads(line)
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
    return _ctl("authenticate_user", name, stdin=password, accept=(0, _BAD_CREDENTIALS))["retcode"] == 0


def add_user(name, password):
    """Create user ``name`` with ``password`` (and no tags, no permissions)."""
    _forget()
    _ctl("add_user", name, stdin=password)
    return True


def change_password(name, password):
    """Set the password of user ``name``; its open connections stay up."""
    _forget()
    _ctl("change_password", name, stdin=password)
    return True


def set_tags(name, tags):
    """Replace the tags of user ``name`` by ``tags``."""
    _forget()
    _ctl("set_user_tags", name, *tags)
    return True


def set_permissions(vhost, name, configure, write, read):
    """Set the permissions of user ``name`` on ``vhost`` (three regular expressions)."""
    _forget()
    _ctl("set_permissions", "-p", vhost, name, configure, write, read)
    return True


def clear_permissions(vhost, name):
    """Remove every permission of user ``name`` on ``vhost``."""
    _forget()
    _ctl("clear_permissions", "-p", vhost, name)
    return True


def delete_user(name):
    """
    Delete user ``name``; RabbitMQ closes its connections.

    CLI Example:

    .. code-block:: bash

        salt rabbitmq rabbitmq_access.delete_user guest
    """
    _forget()
    _ctl("delete_user", name)
    return True


def add_vhost(name):
    """Create the vhost ``name``."""
    _forget()
    _ctl("add_vhost", name)
    return True
