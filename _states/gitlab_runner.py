"""
GitLab Runner's ``config.toml`` from the site, with each runner's authentication token read from
Vault when the state runs (GitLab's current workflow: the runner is created in GitLab, its ``glrt-``
token is written to Vault by the operator; no registration token exists anywhere).

``config_present`` writes the whole file: the global settings (``concurrent``, the metrics
``listen_address``), and one ``[[runners]]`` per runner the site gives this guest. A runner whose
token is new (or rotated in Vault) is verified with GitLab first (``POST /api/v4/runners/verify``,
which also gives its id); a runner in the file that the site no longer gives this guest is
unregistered (``DELETE /api/v4/runners``) after the new file is in place. The file is checked by
parsing it back (TOML) before it replaces the old one, written 0600, and its diff is shown with
every token replaced by where it came from. ``test=True`` calls no API and writes nothing.

.. code-block:: yaml

    gitlab-runner-config-present:
      gitlab_runner.config_present:
        - name: /etc/gitlab-runner/config.toml
        - url: https://gitlab.example.org
        - concurrent: 4
        - listen_address: 10.0.0.107:9252
        - runners:
          - name: runner-docker
            token_path: roles/gitlab_runner/runners/runner-docker
            executor: docker
            limit: 4
            docker: {image: 'debian:bookworm', privileged: false, volumes: [/cache]}
"""

import difflib
import json
import os
import tempfile

from salt.exceptions import CommandExecutionError

__virtualname__ = "gitlab_runner"

REDACTED = "(token from Vault: {where})"


def __virtual__():
    if "gitlab_runner.verify" not in __salt__:
        return False, "the gitlab_runner execution module is not available"
    if "platform_state.converge" not in __utils__:
        return False, "the platform_state utility module is not synced (saltutil.sync_all)"
    return __virtualname__


def _value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    raise CommandExecutionError(f"config.toml: cannot write a value of type {type(value).__name__}")


def _table(lines, indent, mapping):
    for key, value in mapping.items():
        if not isinstance(value, dict) and value is not None:
            lines.append(f"{indent}{key} = {_value(value)}")


def render(settings, runners):
    """config.toml's text: ``settings`` (global keys) and ``runners`` (each a mapping whose dict values
    are sub-tables, e.g. ``docker`` -> ``[runners.docker]``)."""
    lines = ["# Managed by Salt (salt/gitlab_runner, state gitlab_runner.config_present). Edits are replaced."]
    _table(lines, "", settings)
    for runner in runners:
        lines += ["", "[[runners]]"]
        _table(lines, "  ", runner)
        for key, value in runner.items():
            if isinstance(value, dict):
                lines.append(f"  [runners.{key}]")
                _table(lines, "    ", value)
    return "\n".join(lines) + "\n"


def _parse(text):
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CommandExecutionError(f"config.toml does not parse: {exc}") from exc


def _read(path):
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return "", {}
    try:
        return text, _parse(text)
    except CommandExecutionError:
        return text, {}


def _write(path, text):
    _parse(text)  # a file that does not parse never replaces a working one
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".config.toml.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _system_id(path):
    try:
        with open(os.path.join(os.path.dirname(path), ".runner_system_id"), encoding="utf-8") as fh:
            return fh.read().strip() or None
    except FileNotFoundError:
        return None


def _redact(text, tokens):
    for where, token in tokens.items():
        text = text.replace(json.dumps(token), json.dumps(REDACTED.format(where=where)))
    return text


def config_present(name, url, runners, concurrent=1, check_interval=3, shutdown_timeout=30, listen_address=None,
                   mount="secret", field="token", ca_bundle=None):
    """config.toml at ``name`` holds exactly ``runners`` (their tokens from Vault at ``token_path``),
    registered with GitLab at ``url``; runners it held that are not in ``runners`` are unregistered."""
    ret = __utils__["platform_state.new"](name)
    current_text, current = _read(name)
    held = {r.get("name"): r for r in current.get("runners", []) if isinstance(r, dict)}
    wanted_names = [r["name"] for r in runners]
    tokens, where = {}, {}
    try:
        for runner in runners:
            where[runner["name"]] = f"{mount}/data/{runner['token_path']}#{field}"
            tokens[runner["name"]] = __salt__["vault_server.secret_read"](runner["token_path"], field, mount=mount)
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, f"GitLab Runner {name}: {exc}")
    to_verify = [n for n in wanted_names if held.get(n, {}).get("token") != tokens[n] or "id" not in held.get(n, {})]
    removed = [n for n in held if n not in wanted_names]
    settings = {"concurrent": int(concurrent), "check_interval": int(check_interval),
                "shutdown_timeout": int(shutdown_timeout), "listen_address": listen_address}

    def document(ids):
        out = []
        for runner in runners:
            extra = {k: v for k, v in runner.items() if k not in ("name", "token_path", "executor")}
            out.append({"name": runner["name"], "url": url, "id": ids.get(runner["name"], 0),
                        "token": tokens[runner["name"]], "executor": runner["executor"], **extra})
        return render(settings, out)

    ids = {n: held[n]["id"] for n in wanted_names if n not in to_verify}
    shown = {where[n]: tokens[n] for n in wanted_names}
    shown.update({f"the removed runner {n}": held[n].get("token") for n in removed if held[n].get("token")})
    planned_text = document({**ids, **{n: "(from GitLab)" for n in to_verify}}) if to_verify else document(ids)
    changes = {}
    if planned_text != current_text:
        diff = difflib.unified_diff(_redact(current_text, shown).splitlines(),
                                    _redact(planned_text, shown).splitlines(),
                                    "config.toml (now)", "config.toml (new)", lineterm="")
        changes["diff"] = "\n".join(diff)
    if to_verify:
        changes["registered"] = sorted(to_verify)
    if removed:
        changes["unregistered"] = sorted(removed)

    def apply():
        system_id = _system_id(name)
        for runner_name in to_verify:
            ids[runner_name] = __salt__["gitlab_runner.verify"](url, tokens[runner_name], system_id=system_id,
                                                               ca_bundle=ca_bundle)["id"]
        _write(name, document(ids))
        for runner_name in removed:
            token = held[runner_name].get("token")
            if token:
                __salt__["gitlab_runner.delete"](held[runner_name].get("url") or url, token, ca_bundle=ca_bundle)

    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"{name} holds the runners {', '.join(wanted_names) or '(none)'}, registered with {url}",
        planned=f"{name} would be written" + (f"; {', '.join(to_verify)} verified with {url}" if to_verify else "")
        + (f"; {', '.join(removed)} unregistered" if removed else ""),
        apply=apply,
        done=f"{name} written" + (f"; {', '.join(to_verify)} verified with {url}" if to_verify else "")
        + (f"; {', '.join(removed)} unregistered" if removed else ""),
        failure=f"GitLab Runner {name}: ",
    )
