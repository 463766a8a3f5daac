"""
mailcow's mail domains, mailboxes, aliases and DKIM keys, through its API (``mailcow_api``).

Each state reads what mailcow has, reports what differs as old/new (never a password or key), and
honours ``test=True``. A mailbox's password lives only in Vault: the state reads it when it
applies and sends it in the API call's body; mailcow cannot tell whether a password matches, so
the state remembers which Vault version it last set (``<cachedir>/mailcow_api/passwords.json``)
and sets the password again when Vault holds a newer version (a rotation). Removal happens only
through ``*_absent`` and ``only_declared``, which the role applies only when the site says so.

.. code-block:: yaml

    mailcow-mailbox-ops@example.org-present:
      mailcow_api.mailbox_present:
        - name: ops@example.org
        - full_name: Ops
        - quota: 2048
        - password_path: roles/mailcow/mailboxes/ops@example.org
"""

import json
import os

from salt.exceptions import CommandExecutionError

__virtualname__ = "mailcow_api"

_DOMAIN_ATTRS = ("description", "active", "mailboxes", "aliases", "quota", "maxquota", "defquota")


def __virtual__():
    if "mailcow_api.domains" not in __salt__:
        return False, "the mailcow_api execution module is not available"
    if "platform_state.converge" not in __utils__:
        return False, "the platform_state utility module is not synced (saltutil.sync_all)"
    return __virtualname__


def _fail(ret, what, exc):
    return __utils__["platform_state.failed"](ret, f"{what}: {exc}")


def _diff(current, wanted):
    return {key: {"old": current.get(key), "new": value} for key, value in wanted.items() if current.get(key) != value}


def domain_present(name, description="", active=True, mailboxes=10, aliases=400, quota=10240, maxquota=10240,
                   defquota=3072):
    """The mail domain ``name`` exists with these limits (quotas in MiB)."""
    ret = __utils__["platform_state.new"](name)
    wanted = {"description": description, "active": bool(active), "mailboxes": int(mailboxes),
              "aliases": int(aliases), "quota": int(quota), "maxquota": int(maxquota), "defquota": int(defquota)}
    try:
        current = __salt__["mailcow_api.domains"]().get(name)
    except CommandExecutionError as exc:
        return _fail(ret, f"mail domain {name}", exc)
    if current is None:
        changes = {"domain": {"old": None, "new": name}}
        apply = lambda: __salt__["mailcow_api.domain_add"](name, wanted)  # noqa: E731
    else:
        changes = _diff(current, wanted)
        apply = lambda: __salt__["mailcow_api.domain_edit"](name, {k: c["new"] for k, c in changes.items()})  # noqa: E731
    verb = "added" if current is None else "changed"
    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"mail domain {name} is as declared", planned=f"mail domain {name} would be {verb}",
        apply=apply, done=f"mail domain {name} {verb}", failure=f"mail domain {name}: ")


def domain_absent(name):
    """The mail domain ``name`` does not exist (mailcow refuses while it has mailboxes)."""
    ret = __utils__["platform_state.new"](name)
    try:
        exists = name in __salt__["mailcow_api.domains"]()
    except CommandExecutionError as exc:
        return _fail(ret, f"mail domain {name}", exc)
    return __utils__["platform_state.converge"](
        ret, __opts__["test"], {"domain": {"old": name, "new": None}} if exists else {},
        unchanged=f"mail domain {name} is absent", planned=f"mail domain {name} would be deleted",
        apply=lambda: __salt__["mailcow_api.domain_delete"](name), done=f"mail domain {name} deleted",
        failure=f"mail domain {name}: ")


def _passwords_path():
    return os.path.join(__opts__["cachedir"], "mailcow_api", "passwords.json")


def _passwords():
    try:
        with open(_passwords_path(), encoding="utf-8") as fh:
            return json.load(fh)
    except (FileNotFoundError, ValueError):
        return {}


def _remember_password(address, version):
    known = _passwords()
    if version is None:
        known.pop(address, None)
    else:
        known[address] = version
    path = _passwords_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(f"{path}.new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(known, fh)
    os.replace(f"{path}.new", path)


def mailbox_present(name, password_path, full_name="", quota=3072, active=True, password_field="password",  # noqa: S107
                    mount="secret"):
    """
    The mailbox ``name`` (an address of a mail domain mailcow has) exists with ``full_name``,
    ``quota`` (MiB) and the password in Vault at ``password_path`` (KV v2, field ``password_field``).
    """
    ret = __utils__["platform_state.new"](name)
    where = f"{mount}/data/{password_path}"
    wanted = {"name": full_name, "quota": int(quota), "active": bool(active)}
    try:
        secret = __salt__["vault_server.secret_version"](password_path, mount=mount)
        if secret is None or password_field not in secret["fields"]:
            raise CommandExecutionError(f"{where} has no field {password_field!r} (generate it first)")
        current = __salt__["mailcow_api.mailboxes"]().get(name)
    except CommandExecutionError as exc:
        return _fail(ret, f"mailbox {name}", exc)
    version = secret["version"]
    if current is None:
        changes = {"mailbox": {"old": None, "new": name}, **_diff({}, wanted),
                   "password": {"old": None, "new": f"(from {where})"}}
    else:
        changes = _diff(current, wanted)
        if _passwords().get(name) != version:
            changes["password"] = {"old": "(set)", "new": f"(version {version} of {where})"}

    def write():
        password = None
        if "password" in changes:
            password = __salt__["vault_server.secret_read"](password_path, password_field, mount=mount)
        if current is None:
            __salt__["mailcow_api.mailbox_add"](name, password, name=full_name, quota=int(quota), active=active)
        else:
            attrs = {k: c["new"] for k, c in changes.items() if k in wanted}
            __salt__["mailcow_api.mailbox_edit"](name, attrs, password=password)
        _remember_password(name, version)

    verb = "added" if current is None else "changed"
    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"mailbox {name} is as declared, with version {version} of its password from {where}",
        planned=f"mailbox {name} would be {verb}", apply=write, done=f"mailbox {name} {verb}",
        failure=f"mailbox {name}: ")


def mailbox_absent(name):
    """The mailbox ``name`` does not exist (its mail is deleted with it)."""
    ret = __utils__["platform_state.new"](name)
    try:
        exists = name in __salt__["mailcow_api.mailboxes"]()
    except CommandExecutionError as exc:
        return _fail(ret, f"mailbox {name}", exc)

    def delete():
        __salt__["mailcow_api.mailbox_delete"](name)
        _remember_password(name, None)

    return __utils__["platform_state.converge"](
        ret, __opts__["test"], {"mailbox": {"old": name, "new": None}} if exists else {},
        unchanged=f"mailbox {name} is absent", planned=f"mailbox {name} would be deleted",
        apply=delete, done=f"mailbox {name} deleted", failure=f"mailbox {name}: ")


def alias_present(name, goto, active=True):
    """The alias ``name`` delivers to exactly ``goto`` (a list of addresses)."""
    ret = __utils__["platform_state.new"](name)
    wanted = {"goto": sorted(goto), "active": bool(active)}
    try:
        current = __salt__["mailcow_api.aliases"]().get(name)
    except CommandExecutionError as exc:
        return _fail(ret, f"alias {name}", exc)
    if current is None:
        changes = {"alias": {"old": None, "new": name}, **_diff({}, wanted)}
        apply = lambda: __salt__["mailcow_api.alias_add"](name, wanted["goto"], active=active)  # noqa: E731
    else:
        changes = _diff(current, wanted)
        apply = lambda: __salt__["mailcow_api.alias_edit"](current["id"], {k: c["new"] for k, c in changes.items()})  # noqa: E731
    verb = "added" if current is None else "changed"
    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"alias {name} is as declared", planned=f"alias {name} would be {verb}",
        apply=apply, done=f"alias {name} {verb}", failure=f"alias {name}: ")


def alias_absent(name):
    """The alias ``name`` does not exist."""
    ret = __utils__["platform_state.new"](name)
    try:
        current = __salt__["mailcow_api.aliases"]().get(name)
    except CommandExecutionError as exc:
        return _fail(ret, f"alias {name}", exc)
    return __utils__["platform_state.converge"](
        ret, __opts__["test"], {"alias": {"old": name, "new": None}} if current else {},
        unchanged=f"alias {name} is absent", planned=f"alias {name} would be deleted",
        apply=lambda: __salt__["mailcow_api.alias_delete"](current["id"]), done=f"alias {name} deleted",
        failure=f"alias {name}: ")


def dkim_present(name, selector="dkim", key_size=2048):
    """mailcow has a DKIM key for the mail domain ``name`` (it generates one; an existing key is kept:
    rotating it is deleting it with ``mailcow_api.dkim_delete`` and applying again)."""
    ret = __utils__["platform_state.new"](name)
    try:
        current = __salt__["mailcow_api.dkim"](name)
    except CommandExecutionError as exc:
        return _fail(ret, f"DKIM key of {name}", exc)
    changes = {} if current else {"dkim": {"old": None, "new": f"{selector} ({key_size} bits)"}}
    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"mailcow signs {name}'s mail with the DKIM key of selector "
                  f"{(current or {}).get('dkim_selector')}",
        planned=f"mailcow would generate a DKIM key for {name}",
        apply=lambda: __salt__["mailcow_api.dkim_add"](name, selector=selector, key_size=key_size),
        done=f"mailcow generated a DKIM key for {name} (selector {selector})", failure=f"DKIM key of {name}: ")


def only_declared(name, domains, mailboxes, aliases):
    """
    mailcow has no alias, mailbox or mail domain but the declared ones: those the site dropped are
    deleted, aliases first, then mailboxes (with their mail), then domains. ``name`` only labels the
    state. The role applies it only when the site's ``mail.remove_undeclared`` is true.
    """
    ret = __utils__["platform_state.new"](name)
    try:
        extra = {
            "aliases": {a: spec["id"] for a, spec in __salt__["mailcow_api.aliases"]().items() if a not in aliases},
            "mailboxes": sorted(set(__salt__["mailcow_api.mailboxes"]()) - set(mailboxes)),
            "domains": sorted(set(__salt__["mailcow_api.domains"]()) - set(domains)),
        }
    except CommandExecutionError as exc:
        return _fail(ret, "undeclared mail objects", exc)
    changes = {kind: {"old": sorted(found), "new": []} for kind, found in extra.items() if found}

    def delete():
        for alias_id in extra["aliases"].values():
            __salt__["mailcow_api.alias_delete"](alias_id)
        for address in extra["mailboxes"]:
            __salt__["mailcow_api.mailbox_delete"](address)
            _remember_password(address, None)
        for domain in extra["domains"]:
            __salt__["mailcow_api.domain_delete"](domain)

    what = ", ".join(f"{len(v['old'])} {k}" for k, v in changes.items())
    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged="mailcow has no mail domain, mailbox or alias the site does not declare",
        planned=f"undeclared {what} would be deleted", apply=delete, done=f"undeclared {what} deleted",
        failure="undeclared mail objects: ")


def ready(name, timeout=600, interval=5):
    """
    mailcow's API answers with the key from Vault within ``timeout`` seconds (after the stack first
    starts, its PHP and database take a while). Changes nothing; ``name`` only labels the state.
    """
    import time  # pylint: disable=import-outside-toplevel

    ret = __utils__["platform_state.new"](name)
    deadline = time.monotonic() + float(timeout)
    while True:
        try:
            count = len(__salt__["mailcow_api.domains"]())
        except CommandExecutionError as exc:
            # Only a web server that is not up yet is waited for; a refused key or a missing
            # secret will not change by waiting.
            starting = any(sign in str(exc) for sign in ("unreachable", "not JSON", "HTTP 5"))
            if not starting or time.monotonic() >= deadline:
                return _fail(ret, "mailcow's API", exc)
            time.sleep(float(interval))
            continue
        ret["comment"] = f"mailcow's API answers ({count} mail domain(s))"
        return ret
