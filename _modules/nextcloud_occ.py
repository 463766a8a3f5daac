"""
Nextcloud through its own command line, ``occ``, as the user that owns the installation.

``occ`` is Nextcloud's supported way to install and configure a server (the admin UI writes the
same ``config.php``): this module reads what is (``status``, ``config:list system``, ``app:list``,
``config:app:get``) and changes one setting at a time, so a state sets only what differs and
``config.php`` is never a template that occ and the admin UI would fight with.

No secret is ever an argument: ``maintenance:install`` takes the database and admin passwords from
the environment of the PHP process (the ``occ-env.php`` wrapper the role installs moves
``NC_DATABASE_PASS`` and ``NC_ADMIN_PASS`` into occ's own argument vector inside PHP, so they are
never in a command line, the process list or a log; a process's environment is readable by its user
and root only). Output is never logged (``output_loglevel: quiet``); a failure is raised with occ's
own message.

Configuration, minion config key ``nextcloud_occ`` (defaults: Debian's PHP 8.2, the role's paths):

.. code-block:: yaml

    nextcloud_occ:
      php: /usr/bin/php8.2
      root: /var/www/nextcloud
      user: nextcloud
      env_wrapper: /usr/local/lib/nextcloud/occ-env.php
      # command: [/path/to/occ]   # replaces "php [wrapper] root/occ" (the render tier's fake occ)
"""

import getpass
import json
import logging
import os
import re

from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "nextcloud_occ"

DEFAULTS = {
    "php": "/usr/bin/php8.2",
    "root": "/var/www/nextcloud",
    "user": "nextcloud",
    "env_wrapper": "/usr/local/lib/nextcloud/occ-env.php",
    "command": None,
}
_VERSION = re.compile(r"\$OC_VersionString\s*=\s*'([0-9]+\.[0-9]+\.[0-9]+)[^']*'")
_APP = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")
# occ --type of a value: the JSON types config:system:set knows.
_TYPES = ((bool, "boolean"), (int, "integer"), (float, "double"), (str, "string"))


def __virtual__():
    return __virtualname__


def _conf():
    """The defaults, then the role's parameters (pillar ``platform:params:nextcloud``), then the config
    key ``nextcloud_occ``."""
    params = __salt__["pillar.get"]("platform:params:nextcloud", {}, unmask=True) or {}
    derived = {key: params[key] for key in ("root", "user") if params.get(key)}
    if (params.get("php") or {}).get("version"):
        derived["php"] = f"/usr/bin/php{params['php']['version']}"
    return {**DEFAULTS, **derived, **(__salt__["config.get"]("nextcloud_occ", {}) or {})}


def _argv(args, secrets=False):
    conf = _conf()
    if conf["command"]:
        return [*conf["command"], *args]
    occ = os.path.join(conf["root"], "occ")
    return [conf["php"], *([conf["env_wrapper"]] if secrets else []), occ, *args]


def _call(args, env=None, secrets=False):
    """``occ ARGS`` as the installation's user: cmd.run_all's answer, nothing of it logged."""
    conf = _conf()
    argv = _argv([*args, "--no-interaction", "--no-ansi"], secrets=secrets)
    return __salt__["cmd.run_all"](
        argv,
        runas=None if conf["user"] == getpass.getuser() else conf["user"],
        env=env or {},
        python_shell=False,
        output_loglevel="quiet",
        ignore_retcode=True,
        cwd=conf["root"] if os.path.isdir(conf["root"]) else "/",
    )


def _failure(args, ret):
    message = (ret["stderr"].strip() or ret["stdout"].strip()).splitlines()
    return CommandExecutionError(f"occ {args[0]}: {' '.join(message[-3:]) or 'exit ' + str(ret['retcode'])}")


def run(args, env=None, check=True, secrets=False):
    """``occ ARGS`` as the installation's user (``--no-interaction``, no ANSI): its stdout, or
    CommandExecutionError with occ's own message. ``env`` adds variables (the wrapper's secrets with
    ``secrets=True``); nothing of the call is logged but the subcommand's name."""
    ret = _call(args, env=env, secrets=secrets)
    if check and ret["retcode"] != 0:
        raise _failure(args, ret)
    return ret["stdout"]


def _json(args):
    out = run([*args, "--output=json"])
    try:
        return json.loads(out[out.index("{"):] if "{" in out else out)
    except ValueError as exc:
        raise CommandExecutionError(f"occ {args[0]}: not JSON ({exc})") from None


def code_version(root=None):
    """The version of the code in the web root (its version.php), or None when there is none."""
    path = os.path.join(root or _conf()["root"], "version.php")
    try:
        with open(path, encoding="utf-8") as fh:
            match = _VERSION.search(fh.read())
    except FileNotFoundError:
        return None
    if not match:
        raise CommandExecutionError(f"{path} names no version ($OC_VersionString)")
    return match.group(1)


def version_tuple(version):
    return tuple(int(part) for part in str(version).split("."))


def status():
    """``occ status``: installed, version, versionstring, maintenance, needsDbUpgrade."""
    return _json(["status"])


def install(database, admin_user, data_dir, database_password, admin_password):
    """``occ maintenance:install`` against PostgreSQL; the passwords go through the environment.

    database
        {name, user, host} (host as ``address:port``)
    """
    run(["maintenance:install", "--database=pgsql", f"--database-name={database['name']}",
         f"--database-host={database['host']}", f"--database-user={database['user']}",
         f"--admin-user={admin_user}", f"--data-dir={data_dir}"],
        env={"NC_DATABASE_PASS": str(database_password), "NC_ADMIN_PASS": str(admin_password)}, secrets=True)
    log.info("nextcloud_occ: installed against %s/%s", database["host"], database["name"])
    return True


def system_config():
    """The system configuration as occ lists it (sensitive values masked by occ itself)."""
    return _json(["config:list", "system"]).get("system", {})


def _leaves(value, path=()):
    """(path, value) of every scalar under ``value``; a list's items by their index."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, str(index)))
    else:
        yield path, value


def _at(config, path):
    node = config
    for part in path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _same(current, wanted):
    if isinstance(wanted, bool) or isinstance(current, bool):
        return current is wanted
    return current == wanted and type(current) is type(wanted)


def config_differences(wanted, current=None):
    """What ``system_set`` would change for ``wanted`` (key -> value): ``{key: {old, new}}`` for each
    top-level key whose value differs. A list is owned whole (its extra items go); a mapping's other
    keys are left to the admin."""
    current = system_config() if current is None else current
    out = {}
    for key, value in wanted.items():
        have = current.get(key)
        if isinstance(value, dict):
            differs = any(not _same(_at(have, path), leaf) for path, leaf in _leaves(value))
        elif value == []:
            differs = bool(have)
        elif isinstance(value, list):
            differs = not isinstance(have, list) or len(have) != len(value) or any(
                not _same(_at(have, path), leaf) for path, leaf in _leaves(value))
        else:
            differs = not _same(have, value)
        if differs:
            out[key] = {"old": have, "new": value}
    return out


def _type(value):
    return next(name for kind, name in _TYPES if isinstance(value, kind))


def system_set(key, value):
    """Set system key ``key`` to ``value`` with ``occ config:system:set``, one scalar at a time (a
    list's or mapping's items by their path); a list's items beyond ``value``'s are deleted."""
    if not _KEY.match(str(key)):
        raise CommandExecutionError(f"{key!r} is not a system configuration key")
    if value in ([], {}):
        run(["config:system:delete", key])
        return True
    if isinstance(value, list):
        current = _at(system_config(), (key,))
        for index in range(len(current) - 1 if isinstance(current, list) else -1, len(value) - 1, -1):
            run(["config:system:delete", key, str(index)])
    for path, leaf in _leaves(value, (key,)):
        if leaf is None:
            run(["config:system:delete", *path])
        else:
            text = json.dumps(leaf) if isinstance(leaf, bool) else str(leaf)
            run(["config:system:set", *path, f"--value={text}", f"--type={_type(leaf)}"])
    return True


def apps():
    """``{"enabled": {app: version}, "disabled": {app: version}}``."""
    listed = _json(["app:list"])
    return {"enabled": listed.get("enabled") or {}, "disabled": listed.get("disabled") or {}}


def app_enable(app):
    """Enable ``app``, installing it from the app store first when the server does not have it."""
    if not _APP.match(str(app)):
        raise CommandExecutionError(f"{app!r} is not an app id")
    listed = apps()
    if app not in listed["enabled"] and app not in listed["disabled"]:
        run(["app:install", app])
    else:
        run(["app:enable", app])
    return True


def app_config_get(app, key):
    """An app's setting (``occ config:app:get``), or None when it is not set."""
    out = run(["config:app:get", app, key], check=False)
    return out.strip() if out.strip() else None


def app_config_set(app, key, value):
    if not _APP.match(str(app)) or not _KEY.match(str(key)):
        raise CommandExecutionError(f"{app!r}/{key!r} is not an app setting")
    run(["config:app:set", app, key, f"--value={value}"])
    return True


def maintenance(on):
    run(["maintenance:mode", "--on" if on else "--off"])
    return True


def upgrade():
    """``occ upgrade`` (the code in the web root is newer than the database), then the indices the
    new release adds."""
    run(["upgrade"])
    run(["db:add-missing-indices"])
    return True


def setup_checks():
    """``occ setupchecks --output=json`` (Nextcloud 28 and later), as the admin overview shows them:
    ``{category: {check class: {name, severity, description, descriptionParameters, linkToDoc}}}``,
    severity one of success, info, warning, error. occ exits 1 as soon as one check is anything but a
    success (an info too), so its exit code adds nothing to the JSON: the JSON is read whatever the
    exit code, and only an answer that is not that JSON (occ's own error) raises."""
    args = ["setupchecks", "--output=json"]
    ret = _call(args)
    out = ret["stdout"].strip()
    if out == "[]":  # PHP's json_encode of no results at all
        return {}
    try:
        results = json.loads(out[out.index("{"):]) if "{" in out else None
    except ValueError:
        results = None
    if not isinstance(results, dict) or not all(isinstance(v, (dict, list)) for v in results.values()):
        raise _failure(args, ret)
    return {category: checks if isinstance(checks, dict) else {str(i): c for i, c in enumerate(checks)}
            for category, checks in results.items()}
