"""
PostgreSQL login roles whose passwords are set as SCRAM-SHA-256 verifiers computed here.

Salt's own ``postgres`` module passes each statement, password verifier included, to ``psql -c``:
the verifier then stands in the process list and in Salt's INFO log ("Executing command ...").
This module sends every statement to ``psql`` on standard input, as the ``postgres`` superuser
over the local socket (peer authentication), with statement logging switched off for the session.
PostgreSQL receives only the verifier, never the password, and no function returns or logs either.

Role and group names must match ``^[a-z_][a-z0-9_]{0,62}$`` (the site's schema says the same),
so they are quoted as identifiers without further escaping. Database names too (``database_present``).

Speed (issue 21): every role (login, verifier, groups) and every database (owner, whether PUBLIC
may connect or create temporary tables) is read in one psql session, as one JSON document. In a
state run the ``pg_role`` states ask for that once per run (``run_cache``) and every write drops
it, so the next read asks the server again; outside a state run every call reads the server.
"""

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets

from salt.exceptions import CommandExecutionError
from salt.ext.saslprep import saslprep

log = logging.getLogger(__name__)

__virtualname__ = "pg_role"

NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_VERIFIER = re.compile(r"^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$")
_HIDE = re.compile(r"SCRAM-SHA-256\$[^'\s]*")
# Keeps a failing statement (and the verifier in it) out of the server's log.
_QUIET = "SET log_statement = 'none';\nSET log_min_error_statement = 'panic';\n"


def __virtual__():
    return __virtualname__


def _check_name(name):
    if not isinstance(name, str) or not NAME.match(name):
        raise CommandExecutionError(f"{name!r} is not a role name this module manages; expected "
                                    f"^[a-z_][a-z0-9_]{{0,62}}$")
    return name


def _prepared(password):
    """The password as PostgreSQL hashes it (pg_saslprep): ASCII as is, anything else through
    SASLprep (RFC 4013), or as is when SASLprep refuses it."""
    if password.isascii():
        return password
    try:
        return saslprep(password)
    except ValueError:
        return password


def scram_verifier(password, salt=None, iterations=4096):
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677, as in
    PostgreSQL's scram-common.c). A fresh random salt unless one is given."""
    salt = secrets.token_bytes(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", _prepared(password).encode("utf-8"), salt, iterations)
    stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda raw: base64.b64encode(raw).decode("ascii")  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _matches(password, verifier):
    match = _VERIFIER.match(verifier or "")
    if not match:
        return False
    expected = scram_verifier(password, base64.b64decode(match.group(2)), int(match.group(1)))
    return hmac.compare_digest(expected, verifier)


def _cluster():
    """psql's --host/--port from the config key ``pg_role`` (``{host: <socket directory>, port: <port>}``),
    for a cluster that is not the default one (the functional tests start their own); none by default."""
    conf = __salt__["config.get"]("pg_role", {}) or {}
    return [f"--{key}={conf[key]}" for key in ("host", "port") if conf.get(key)]


def _psql(sql, runas="postgres", variables=None):
    """Run ``sql`` (from stdin, with psql ``variables`` for :'name' quoting) as the superuser;
    unaligned tuples, or CommandExecutionError."""
    ret = __salt__["cmd.run_all"](
        ["psql", "--no-psqlrc", "--quiet", "--no-align", "--tuples-only", "--set=ON_ERROR_STOP=1",
         "--dbname=postgres", *_cluster(), *(f"--set={key}={value}" for key, value in (variables or {}).items())],
        runas=runas,
        stdin=_QUIET + sql,
        python_shell=False,
        output_loglevel="quiet",
        clean_env=True,
        cwd="/",
    )
    if ret["retcode"] != 0:
        raise CommandExecutionError(f"psql as {runas}: {_HIDE.sub('(verifier)', ret['stderr'].strip())}")
    return ret["stdout"]


_CATALOG = (
    "SELECT json_build_object("
    "'roles', (SELECT coalesce(json_object_agg(r.rolname, json_build_object("
    "'login', r.rolcanlogin, 'verifier', coalesce(r.rolpassword, ''), "
    "'member_of', (SELECT coalesce(json_agg(g.rolname ORDER BY g.rolname), '[]') FROM pg_auth_members m "
    "JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid))), '{}') FROM pg_authid r), "
    "'databases', (SELECT coalesce(json_object_agg(d.datname, json_build_object("
    "'owner', pg_get_userbyid(d.datdba), "
    "'public_connect', has_database_privilege('public', d.oid, 'CONNECT'), "
    "'public_temporary', has_database_privilege('public', d.oid, 'TEMPORARY'))), '{}') FROM pg_database d));\n"
)
_RUN_CACHE = "pg_role.run_cache"


def run_cache():
    """Keep the server's roles and databases read once for the rest of this state run (the states
    call it first; every write below drops it at once): _utils/platform_state.py."""
    return __utils__["platform_state.cache_open"](__context__, _RUN_CACHE)


def _forget():
    __utils__["platform_state.cache_drop"](__context__, _RUN_CACHE)


def _catalog(runas="postgres"):
    """Every role (login, verifier: internal only, groups) and database (owner, PUBLIC's CONNECT and
    TEMPORARY), from one psql session."""
    return __utils__["platform_state.cached"](__context__, _RUN_CACHE, (runas, tuple(_cluster())),
                                              lambda: json.loads(_psql(_CATALOG, runas).strip()))


def _role(name, runas="postgres"):
    """The role's attributes with its stored verifier (internal only), or None."""
    role = _catalog(runas)["roles"].get(_check_name(name))
    if role is None:
        return None
    return {"login": bool(role["login"]), "verifier": role["verifier"], "member_of": list(role["member_of"])}


def differences(name, password, login=True, member_of=(), runas="postgres"):
    """
    What ``present`` would change, without values: ``{}`` when the role exists with the password,
    the login attribute and the group memberships asked for; else some of ``role: created``,
    ``password: changed``, ``login: {old, new}``, ``member_of: [groups to add]``.
    """
    for group in member_of:
        _check_name(group)
    current = _role(name, runas)
    if current is None:
        return {"role": "created", **({"member_of": sorted(member_of)} if member_of else {})}
    out = {}
    if not _matches(str(password), current["verifier"]):
        out["password"] = "changed"  # noqa: S105 (what changed, not a value)
    if current["login"] != bool(login):
        out["login"] = {"old": current["login"], "new": bool(login)}
    missing = sorted(set(member_of) - set(current["member_of"]))
    if missing:
        out["member_of"] = missing
    return out


def present(name, password, login=True, member_of=(), runas="postgres"):
    """
    Create the role or bring it to the password, login attribute and group memberships given
    (groups are only added). Returns what changed, as ``differences`` does. A password change is
    an ALTER ROLE: sessions already open stay open, and the server is not restarted.
    """
    changes = differences(name, password, login=login, member_of=member_of, runas=runas)
    if not changes:
        return changes
    role = f'"{_check_name(name)}"'
    statements = []
    attributes = "LOGIN" if login else "NOLOGIN"
    if "role" in changes:
        statements.append(f"CREATE ROLE {role} {attributes} PASSWORD '{scram_verifier(str(password))}';")
    else:
        if "password" in changes:
            statements.append(f"ALTER ROLE {role} PASSWORD '{scram_verifier(str(password))}';")
        if "login" in changes:
            statements.append(f"ALTER ROLE {role} {attributes};")
    for group in changes.get("member_of", []):
        statements.append(f'GRANT "{group}" TO {role};')
    _forget()
    _psql("BEGIN;\n" + "\n".join(statements) + "\nCOMMIT;\n", runas)
    log.info("pg_role: %s: %s", name, ", ".join(sorted(changes)))
    return changes


def database_differences(name, owner, runas="postgres"):
    """
    What ``database_present`` would change: ``{}`` when database ``name`` exists, is owned by
    ``owner`` and PUBLIC may neither connect to it nor create temporary tables in it; else some of
    ``database: created``, ``owner: {old, new}``, ``public: [CONNECT, TEMPORARY]`` (to revoke).

    CLI Example:

    .. code-block:: bash

        salt postgresql pg_role.database_differences chat chat
    """
    _check_name(name)
    _check_name(owner)
    current = _catalog(runas)["databases"].get(name)
    if current is None:
        return {"database": "created", "public": ["CONNECT", "TEMPORARY"]}
    out = {}
    if current["owner"] != owner:
        out["owner"] = {"old": current["owner"], "new": owner}
    public = [p for p, granted in (("CONNECT", current["public_connect"]),
                                   ("TEMPORARY", current["public_temporary"])) if granted]
    if public:
        out["public"] = public
    return out


def database_present(name, owner, runas="postgres"):
    """
    Create database ``name`` owned by ``owner`` (or give it to ``owner``), and revoke CONNECT and
    TEMPORARY from PUBLIC: a role reaches only the databases it owns. Returns what changed, as
    ``database_differences`` does.
    """
    changes = database_differences(name, owner, runas)
    if not changes:
        return changes
    _forget()
    if "database" in changes:  # CREATE DATABASE cannot run inside a transaction block
        _psql(f'CREATE DATABASE "{name}" OWNER "{owner}";\n', runas)
    statements = []
    if "owner" in changes:
        statements.append(f'ALTER DATABASE "{name}" OWNER TO "{owner}";')
    if changes.get("public"):
        statements.append(f'REVOKE {", ".join(changes["public"])} ON DATABASE "{name}" FROM PUBLIC;')
    if statements:
        _psql("BEGIN;\n" + "\n".join(statements) + "\nCOMMIT;\n", runas)
    log.info("pg_role: database %s: %s", name, ", ".join(sorted(changes)))
    return changes
