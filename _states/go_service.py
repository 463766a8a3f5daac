"""
A Go service deployed as versioned releases (``released``), and its environment file with
credentials read from Vault when the state runs (``env_file``). Both honour ``test=True`` and end
through ``platform_state``; no secret value is in a return, a comment or a log.

.. code-block:: yaml

    chat-release-deployed:
      go_service.released:
        - name: chat
        - source: {git: {url: https://gitlab.example.org/team/chat.git, ref: v1.4.0,
                         token: 'vault:roles/chat/git#token'}}
        - base_dir: /opt/chat
        - unit: chat.service
        - health_url: http://127.0.0.1:8080/healthz
        - go: {root: /usr/lib/go, version: go1.19.8}
        - build: {gopath: [/usr/share/gocode], package: .}

    chat-env-file-managed:
      go_service.env_file:
        - name: /etc/chat/chat.env
        - user: chat
        - values: {CHAT_LISTEN: '10.0.0.5:8080'}
        - secrets: {PGPASSWORD: {path: roles/postgresql/users/chat, field: password}}
"""

import os
import pwd

from salt.exceptions import CommandExecutionError

__virtualname__ = "go_service"


def __virtual__():
    if "go_service.resolve" not in __salt__:
        return False, "the go_service execution module is not available"
    if "platform_state.converge" not in __utils__:
        return False, "the platform_state utility module is not synced (saltutil.sync_all)"
    return __virtualname__


def released(name, source, base_dir, unit, health_url, go, build=None, binary=None, health_timeout=60, keep=3):
    """
    The release built from ``source`` is ``current`` under ``base_dir`` and ``unit`` serves it
    healthily (``health_url`` answers 200).

    - same source as ``current``: nothing is built or restarted (a health check still runs: a
      current release that is not healthy fails the state, and changes nothing);
    - a new source: built with the pinned toolchain (``go``: ``root``, ``version``), switched to,
      ``unit`` restarted and checked for ``health_timeout`` seconds; if the check fails, ``current``
      goes back to the previous release, which is restarted, and the state fails saying so;
    - a release that failed before (build or health) fails at once, naming why, until the source
      changes or ``<base_dir>/failed/<id>`` is removed.
    """
    ret = __utils__["platform_state.new"](name)
    build = build or {}
    binary = binary or name
    mod = "go_service."
    try:
        wanted = __salt__[mod + "resolve"](source, base_dir)
        serving = __salt__[mod + "current"](base_dir)
        refused = __salt__[mod + "failure"](base_dir, wanted) if wanted != serving else None
        where = __salt__[mod + "describe"](source)
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, f"{name}: {exc}")

    if wanted == serving:
        ok, said = __salt__[mod + "health"](health_url, health_timeout)
        if not ok:
            return __utils__["platform_state.failed"](
                ret, f"{name}: release {wanted} ({where}) is current but fails its health check ({health_url}: {said})")
    if refused:
        still = f"release {serving} still serves" if serving else "no release serves"
        return __utils__["platform_state.failed"](
            ret, f"{name}: release {wanted} ({where}) was refused before ({refused}); {still}. Change the source, "
                 f"or remove {base_dir}/failed/{wanted} to try it again")

    changes = {} if wanted == serving else {"release": {"old": serving, "new": wanted}, "source": where}

    def deploy():
        return __salt__[mod + "deploy"](name, source, wanted, base_dir, unit, health_url, go, build, binary,
                                        health_timeout=health_timeout, keep=keep)

    def done(outcome):
        out = dict(changes)
        if outcome["pruned"]:
            out["pruned"] = outcome["pruned"]
        how = ("the kept release, not rebuilt" if outcome["reused"]
               else f"built in {outcome['build']['build_seconds']} s with {outcome['build']['go']}")
        return f"{name}: release {wanted} ({where}) serves and is healthy ({how})", out

    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"{name}: release {wanted} ({where}) is current and healthy",
        planned=f"{name}: release {wanted} ({where}) would be built and replace {serving or 'nothing'}",
        apply=deploy,
        done=done,
        failure=f"{name}: ",
    )


def _quote(value):
    """A value as systemd's EnvironmentFile= reads it back verbatim (double quotes, backslash escapes)."""
    text = str(value)
    if "\n" in text or "\r" in text or "\0" in text:
        raise CommandExecutionError("a value with a line break cannot be written to an environment file")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parse(content):
    out = {}
    for line in content.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value
    return out


def _env_changes(name, entries, existing, stat, owner, owner_name, mode):
    """What differs in the file: variable names added, removed or changed (never values), mode, owner."""
    changes = {}
    for label, keys in (("added", sorted(set(entries) - set(existing))),
                        ("removed", sorted(set(existing) - set(entries))),
                        ("changed", sorted(k for k in set(entries) & set(existing) if entries[k] != existing[k]))):
        if keys:
            changes.setdefault("variables", {})[label] = keys
    if stat is None:
        changes["file"] = {"old": None, "new": name}
        return changes
    if (stat.st_mode & 0o7777) != int(str(mode), 8):
        changes["mode"] = {"old": oct(stat.st_mode & 0o7777)[2:].zfill(4), "new": str(mode)}
    if (stat.st_uid, stat.st_gid) != owner:
        changes["owner"] = {"old": f"{stat.st_uid}:{stat.st_gid}", "new": owner_name}
    return changes


def env_file(name, user, values=None, secrets=None, group=None, mode="0600"):
    """
    ``name`` is an environment file (systemd's ``EnvironmentFile=``) with exactly ``values``
    (variable -> literal) and ``secrets`` (variable -> ``{path, field, mount}`` of a KV v2 secret,
    read when the state runs), owned by ``user`` (and ``group``, default the user's) with ``mode``.
    Changes name the variables that differ, never their values.
    """
    ret = __utils__["platform_state.new"](name)
    group = group or user
    try:
        entries = {key: _quote(value) for key, value in (values or {}).items()}
        for key, ref in (secrets or {}).items():
            entries[key] = _quote(__salt__["vault_server.secret_read"](ref["path"], ref.get("field", "password"),
                                                                         mount=ref.get("mount", "secret")))
        try:
            uid, gid = pwd.getpwnam(user).pw_uid, __salt__["file.group_to_gid"](group)
        except KeyError:
            if not __opts__["test"]:
                raise
            uid = gid = None  # a dry run before the account exists: the file would be new anyway
        if gid == "":
            raise CommandExecutionError(f"no group {group!r}")
        existing, stat = {}, None
        if os.path.isfile(name):
            with open(name, encoding="utf-8") as fh:
                existing = _parse(fh.read())
            stat = os.stat(name)
    except (CommandExecutionError, KeyError) as exc:
        return __utils__["platform_state.failed"](ret, f"{name}: {exc}")

    changes = _env_changes(name, entries, existing, stat, (uid, gid), f"{user}:{group}", mode)

    def write():
        folder = os.path.dirname(name)
        tmp = os.path.join(folder, f".{os.path.basename(name)}.new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write("# Managed by Salt (go_service.env_file); values from the role and Vault.\n")
                fh.writelines(f"{key}={entries[key]}\n" for key in sorted(entries))
            os.chown(tmp, uid, gid)
            os.chmod(tmp, int(str(mode), 8))
            os.replace(tmp, name)
        except OSError as exc:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise CommandExecutionError(str(exc)) from exc

    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"{name} has its {len(entries)} variables, owner {user} and mode {mode}",
        planned=f"{name} would be written ({len(entries)} variables)",
        apply=write,
        done=f"{name} written ({len(entries)} variables)",
        failure=f"{name}: ",
    )
