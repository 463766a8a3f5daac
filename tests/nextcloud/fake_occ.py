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
            part = int(part)
            while len(node) <= part:
                node.append(None)
            if not isinstance(node[part], (dict, list)):
                node[part] = [] if nxt.isdigit() else {}
            node = node[part]
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


def main() -> int:
    state_file = Path(sys.argv[1])
    state = load(state_file)
    args = sys.argv[2:]
    state["calls"].append([a for a in args if a not in ("--no-interaction", "--no-ansi")])
    command, (positional, opts) = args[0], options(args[1:])
    out, code = "", 0
    if command == "status":
        out = json.dumps({k: state[k] for k in ("installed", "version", "versionstring", "maintenance")}
                         | {"needsDbUpgrade": False, "edition": "", "productname": "Nextcloud"})
    elif command == "maintenance:install":
        secrets = {k: os.environ.get(k, "") for k in ("NC_DATABASE_PASS", "NC_ADMIN_PASS")}
        if not all(secrets.values()):
            print("Database password / admin password not provided.", file=sys.stderr)
            code = 1
        elif state["installed"]:
            print("Command \"maintenance:install\" is not defined.", file=sys.stderr)
            code = 1
        else:
            state["installed"] = True
            state["install"] = opts
            state["env_seen"] = {k: len(v) for k, v in secrets.items()}
            state["system"].update({"datadirectory": opts["data-dir"], "dbtype": opts["database"],
                                    "dbname": opts["database-name"], "dbhost": opts["database-host"],
                                    "dbuser": opts["database-user"], "dbpassword": "***REMOVED SENSITIVE VALUE***",
                                    "trusted_domains": ["localhost"], "overwrite.cli.url": "http://localhost"})
            state["install_secrets"] = secrets  # kept to check the values, never printed
            out = "Nextcloud was successfully installed"
    elif not state["installed"]:
        print("Nextcloud is not installed - only a limited number of commands are available", file=sys.stderr)
        code = 1
    elif command == "config:list":
        out = json.dumps({"system": state["system"]})
    elif command == "config:system:set":
        set_path(state["system"], positional, typed(opts["value"], opts.get("type", "string")))
        out = f"System config value {' => '.join(positional)} set to {opts['value']}"
    elif command == "config:system:delete":
        delete_path(state["system"], positional)
    elif command == "config:app:get":
        value = state["app_config"].get(positional[0], {}).get(positional[1])
        code = 0 if value is not None else 1
        out = value or ""
    elif command == "config:app:set":
        state["app_config"].setdefault(positional[0], {})[positional[1]] = opts["value"]
    elif command == "app:list":
        out = json.dumps(state["apps"])
    elif command in ("app:install", "app:enable"):
        app = positional[0]
        if command == "app:install" and app not in state["store"]:
            print(f"Could not download app {app}", file=sys.stderr)
            code = 1
        else:
            state["apps"]["disabled"].pop(app, None)
            state["apps"]["enabled"][app] = "1.0.0"
    elif command == "maintenance:mode":
        state["maintenance"] = "on" in opts
    elif command == "upgrade":
        if not state["maintenance"]:
            print("maintenance mode is off", file=sys.stderr)
            code = 1
        state["upgraded_to"] = state.get("code_version")
    elif command == "db:add-missing-indices":
        pass
    else:
        print(f"Command \"{command}\" is not defined.", file=sys.stderr)
        code = 1
    state_file.write_text(json.dumps(state))
    if out:
        print(out)
    return code


if __name__ == "__main__":
    sys.exit(main())
