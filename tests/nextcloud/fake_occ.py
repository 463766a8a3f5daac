"""A stand-in for Nextcloud's ``occ`` with the command surface the role uses, for the render tier: the
Nextcloud server has no build reachable from this machine, so what the states make ``occ`` do is
checked here as the commands and arguments they produce, against a fake that answers in occ's own
shapes (``--output=json`` of status, config:list, app:list; exit codes; the secret options taken from
the environment as the role's ``occ-env.php`` wrapper gives them to occ).

usage: python fake_occ.py STATE_FILE ARGS...   (STATE_FILE: JSON; every call is appended to
STATE_FILE's "calls": argv, and the names of the NC_* variables it got; a secret value never)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def load(path: Path) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    return {"installed": False, "version": "31.0.9.1", "versionstring": "31.0.9", "maintenance": False,
            "system": {}, "apps": {"enabled": {"dav": "1.31.0", "files": "2.3.1"}, "disabled": {}},
            "store": ["calendar", "contacts", "richdocuments"], "app_config": {}, "calls": [], "env_seen": {}}


def options(args: list[str]) -> tuple[list[str], dict[str, str]]:
    positional, opts = [], {}
    for arg in args:
        if arg.startswith("--"):
            key, _, value = arg[2:].partition("=")
            opts[key] = value
        else:
            positional.append(arg)
    return positional, opts


def set_path(tree: dict, path: list[str], value):
    node = tree
    for i, part in enumerate(path[:-1]):
        nxt = path[i + 1]
        if isinstance(node, list):
            index = int(part)
            while len(node) <= index:
                node.append(None)
            if not isinstance(node[index], (dict, list)):
                node[index] = [] if nxt.isdigit() else {}
            node = node[index]
        else:
            if not isinstance(node.get(part), (dict, list)):
                node[part] = [] if nxt.isdigit() else {}
            node = node[part]
    last = path[-1]
    if isinstance(node, list):
        last = int(last)
        while len(node) <= last:
            node.append(None)
    node[last] = value


def delete_path(tree: dict, path: list[str]):
    node = tree
    for part in path[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.get(part)
        if node is None:
            return
    last = path[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        del node[int(last)]
    elif isinstance(node, dict):
        node.pop(last, None)


def typed(value: str, kind: str):
    return {"boolean": lambda v: v == "true", "integer": int, "double": float}.get(kind, str)(value)


class Refused(Exception):
    """occ's own failure: its message on stderr, exit 1 (and what it still wrote to stdout, if any)."""

    def __init__(self, message="", out=""):
        super().__init__(message)
        self.message, self.out = message, out


def status(state, positional, opts):
    return json.dumps({k: state[k] for k in ("installed", "version", "versionstring", "maintenance")}
                      | {"needsDbUpgrade": False, "edition": "", "productname": "Nextcloud"})


def install(state, positional, opts):
    secrets = {k: os.environ.get(k, "") for k in ("NC_DATABASE_PASS", "NC_ADMIN_PASS")}
    if not all(secrets.values()):
        raise Refused("Database password / admin password not provided.")
    if state["installed"]:
        raise Refused('Command "maintenance:install" is not defined.')
    state.update(installed=True, install=opts, install_secrets=secrets)  # kept to check the values, never printed
    state["system"].update({"datadirectory": opts["data-dir"], "dbtype": opts["database"],
                            "dbname": opts["database-name"], "dbhost": opts["database-host"],
                            "dbuser": opts["database-user"], "dbpassword": "***REMOVED SENSITIVE VALUE***",
                            "trusted_domains": ["localhost"], "overwrite.cli.url": "http://localhost"})
    return "Nextcloud was successfully installed"


def system_set(state, positional, opts):
    set_path(state["system"], positional, typed(opts["value"], opts.get("type", "string")))
    return f"System config value {' => '.join(positional)} set to {opts['value']}"


def app_config_get(state, positional, opts):
    value = state["app_config"].get(positional[0], {}).get(positional[1])
    if value is None:
        raise Refused("")
    return value


def app_install(state, positional, opts):
    if positional[0] not in state["store"]:
        raise Refused(f"Could not download app {positional[0]}")
    return app_enable(state, positional, opts)


def app_enable(state, positional, opts):
    state["apps"]["disabled"].pop(positional[0], None)
    state["apps"]["enabled"][positional[0]] = "1.0.0"
    return ""


def upgrade(state, positional, opts):
    if not state["maintenance"]:
        raise Refused("maintenance mode is off")
    return "Update successful"


def _check(name, severity="success", description=None):
    """One SetupResult as occ serialises it (OCP\\SetupCheck\\SetupResult::jsonSerialize)."""
    return {"name": name, "severity": severity, "description": description, "descriptionParameters": None,
            "linkToDoc": None}


def setup_checks(state, positional, opts):
    """``occ setupchecks`` (Nextcloud 28+): the results by category and check class; like occ, exit 1
    as soon as one check is anything but a success, JSON or not. Before 28 the command does not exist."""
    if int(state["versionstring"].split(".")[0]) < 28:
        raise Refused('Command "setupchecks" is not defined.')
    results = state.get("setupchecks") or {
        "system": {"OCA\\Settings\\SetupChecks\\CronInfo": _check("Cron last run", description="Last background "
                                                                                              "job execution ran")},
        "network": {"OCA\\Settings\\SetupChecks\\WellKnownUrls": _check(".well-known URLs")}}
    out = json.dumps(results) if opts.get("output", "plain").startswith("json") else "\n".join(
        f"\t{category}:" for category in results)
    if any(check["severity"] != "success" for checks in results.values() for check in checks.values()):
        raise Refused("", out)
    return out


COMMANDS = {
    "status": status,
    "maintenance:install": install,
    "config:list": lambda state, positional, opts: json.dumps({"system": state["system"]}),
    "config:system:set": system_set,
    "config:system:delete": lambda state, positional, opts: delete_path(state["system"], positional) or "",
    "config:app:get": app_config_get,
    "config:app:set": lambda state, positional, opts: state["app_config"].setdefault(positional[0], {}).update(
        {positional[1]: opts["value"]}) or "",
    "app:list": lambda state, positional, opts: json.dumps(state["apps"]),
    "app:install": app_install,
    "app:enable": app_enable,
    "maintenance:mode": lambda state, positional, opts: state.update(maintenance="on" in opts) or "",
    "upgrade": upgrade,
    "db:add-missing-indices": lambda state, positional, opts: "",
    "setupchecks": setup_checks,
}
BEFORE_INSTALL = {"status", "maintenance:install"}


def main() -> int:
    state_file = Path(sys.argv[1])
    state = load(state_file)
    args = sys.argv[2:]
    state["calls"].append([a for a in args if a not in ("--no-interaction", "--no-ansi")])
    command, (positional, opts) = args[0], options(args[1:])
    try:
        if command not in COMMANDS:
            raise Refused(f'Command "{command}" is not defined.')
        if command not in BEFORE_INSTALL and not state["installed"]:
            raise Refused("Nextcloud is not installed - only a limited number of commands are available")
        out, code = COMMANDS[command](state, positional, opts), 0
    except Refused as exc:
        out, code = exc.out, 1
        if exc.message:
            print(exc.message, file=sys.stderr)
    state_file.write_text(json.dumps(state))
    if out:
        print(out)
    return code


if __name__ == "__main__":
    sys.exit(main())
