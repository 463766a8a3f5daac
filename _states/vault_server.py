"""
The Vault (or OpenBao) server as states: initialised, unsealed, and configured as code.

Every state calls the ``vault_server`` execution module, returns early when nothing differs,
reports changes without any key, token or secret value, and with ``test=True`` returns
``result: None`` saying what it would do. Connection settings: see the execution module.

.. code-block:: yaml

    vault-kv-mounted:
      vault_server.secrets_engine_enabled:
        - name: secret
        - backend_type: kv
        - options: {version: '2'}

    vault-postgresql-admin-generated:
      vault_server.secret_generated:
        - name: roles/postgresql/admin
        - fields:
            password: {length: 32, alphabet: alphanumeric}
"""

import difflib

from salt.exceptions import CommandExecutionError

__virtualname__ = "vault_server"


def __virtual__():
    if "vault_server.status" not in __salt__:
        return False, "the vault_server execution module is not available"
    if "platform_state.converge" not in __utils__:
        return False, "the platform_state utility module is not synced (saltutil.sync_all)"
    return __virtualname__


def _conn(url, verify):
    return {"url": url, "verify": verify}


def initialized(name, pgp_keys, root_token_pgp_key, secret_threshold=None, url=None, verify=None):
    """
    Vault is initialised. If it is not, initialise it with one unseal key share per operator PGP
    key and the root token encrypted to ``root_token_pgp_key``; the ciphertext is written to
    ``name`` (a path on the host running the state: run it on the master) and nowhere else.

    An initialised Vault is left alone, whether or not ``name`` exists.
    """
    ret = __utils__["platform_state.new"](name)
    try:
        state = __salt__["vault_server.status"](**_conn(url, verify))
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, exc)
    where = state["url"]
    now_initialized = {"initialized": {"old": False, "new": True}}

    def done(result):
        comment = (f"Vault at {where} initialised: {result['shares']} share(s), threshold {result['threshold']}; "
                   f"unseal key shares and root token, PGP-encrypted, are in {name}")
        return comment, {**now_initialized, "ciphertext": name}

    return __utils__["platform_state.converge"](
        ret, __opts__["test"], {} if state["initialized"] else now_initialized,
        unchanged=f"Vault at {where} is already initialised",
        planned=(f"Vault at {where} would be initialised with {len(pgp_keys or [])} PGP-encrypted key share(s); "
                 f"the ciphertext would be written to {name}"),
        apply=lambda: __salt__["vault_server.initialize"](
            pgp_keys, root_token_pgp_key, name, secret_threshold=secret_threshold, **_conn(url, verify)),
        done=done,
    )


def unsealed(name, key_files=None, url=None, verify=None):
    """
    Vault is unsealed. A sealed Vault is unsealed with the key shares in ``key_files`` (one
    decrypted share per file, written by the operators); without enough of them the state fails
    and says that Vault is sealed.
    """
    ret = __utils__["platform_state.new"](name)
    conn = _conn(url, verify)
    try:
        state = __salt__["vault_server.status"](**conn)
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, exc)
    where = state["url"]
    if not state["initialized"]:
        return __utils__["platform_state.failed"](
            ret, f"Vault at {where} is not initialised: initialise it first (see docs/vault.md)")
    present = [path for path in key_files or [] if __salt__["file.file_exists"](path)] if state["sealed"] else []
    planned = (f"Vault at {where} is SEALED; {len(present)} key share file(s) present, "
               f"{state['threshold']} share(s) needed")
    if state["sealed"] and not present:
        if __opts__["test"]:
            return __utils__["platform_state.failed"](ret, planned)
        return __utils__["platform_state.failed"](
            ret, f"Vault at {where} is SEALED (progress {state['progress']}/{state['threshold']}): no unseal key "
                 f"share given; operators must provide {state['threshold']} share(s) (see docs/vault.md, "
                 f"'Unseal after a restart')")

    def unseal():
        after = __salt__["vault_server.unseal"](key_files=present, **conn)
        if after["sealed"]:
            raise CommandExecutionError(f"Vault at {where} is still SEALED after {len(present)} key share(s): "
                                        f"progress {after['progress']}/{after['threshold']}")

    return __utils__["platform_state.converge"](
        ret, __opts__["test"], {"sealed": {"old": True, "new": False}} if state["sealed"] else {},
        unchanged=f"Vault at {where} is unsealed",
        planned=planned,
        apply=unseal,
        done=f"Vault at {where} unsealed with {len(present)} key share(s)",
    )


def _describe(settings):
    return ", ".join(f"{k} {v}" for k, v in settings.items() if v is not None)


def _enabled(name, kind, listing, wanted, enable):
    """``wanted`` settings ({type, version, ...}) are enabled at ``name``; ``listing`` returns
    path/ -> settings in the same flat form."""
    ret = __utils__["platform_state.new"](name)
    key = name.strip("/") + "/"
    try:
        current = listing().get(key)
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, exc)
    if current is not None and any(v is not None and str(current.get(k)) != str(v) for k, v in wanted.items()):
        # Re-enabling would destroy what is stored there: an operator decides.
        return __utils__["platform_state.failed"](
            ret, f"{kind} {key} exists with {_describe(current)}; expected {_describe(wanted)}. "
                 f"Not changed: replacing it would destroy its data")
    return __utils__["platform_state.converge"](
        ret, __opts__["test"], {} if current is not None else {key: {"old": None, "new": _describe(wanted)}},
        unchanged=f"{kind} {key} is enabled ({_describe(current or wanted)})",
        planned=f"{kind} {key} would be enabled ({_describe(wanted)})",
        apply=enable,
        done=f"{kind} {key} enabled ({_describe(wanted)})",
    )


def secrets_engine_enabled(name, backend_type="kv", options=None, description=None, url=None, verify=None):
    """
    A secrets engine of ``backend_type`` is enabled at ``name`` (for kv, ``options: {version: '2'}``
    is the default). An engine of another type or version at that path fails the state: it is
    never moved or replaced.
    """
    if backend_type == "kv" and options is None:
        options = {"version": "2"}
    options = {k: str(v) for k, v in (options or {}).items()}

    def listing():
        found = __salt__["vault_server.mounts"](url=url, verify=verify)
        return {path: {"type": m["type"], **{k: m["options"].get(k) for k in options}} for path, m in found.items()}

    def enable():
        __salt__["vault_server.mount_enable"](name, backend_type, options=options or None,
                                              description=description, url=url, verify=verify)

    return _enabled(name, "secrets engine", listing, {"type": backend_type, **options}, enable)


def auth_method_enabled(name, method_type, description=None, url=None, verify=None):
    """An auth method of ``method_type`` (approle, kubernetes, ...) is enabled at ``name``."""

    def listing():
        return __salt__["vault_server.auth_methods"](url=url, verify=verify)

    def enable():
        __salt__["vault_server.auth_enable"](name, method_type, description=description, url=url, verify=verify)

    return _enabled(name, "auth method", listing, {"type": method_type}, enable)


def audit_device_enabled(name, device_type="file", options=None, url=None, verify=None):
    """An audit device of ``device_type`` is enabled at ``name`` (file: ``options: {file_path: ...}``)."""
    options = {k: str(v) for k, v in (options or {}).items()}

    def listing():
        found = __salt__["vault_server.audit_devices"](url=url, verify=verify)
        return {path: {"type": d["type"], **{k: d["options"].get(k) for k in options}} for path, d in found.items()}

    def enable():
        __salt__["vault_server.audit_enable"](name, device_type, options=options or None, url=url, verify=verify)

    return _enabled(name, "audit device", listing, {"type": device_type, **options}, enable)


def policy_present(name, rules, url=None, verify=None):
    """An ACL policy ``name`` has exactly ``rules`` (HCL). Changes show the diff of the rules."""
    ret = __utils__["platform_state.new"](name)
    try:
        current = __salt__["vault_server.policy_read"](name, url=url, verify=verify)
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, exc)
    same = current is not None and current.strip() == rules.strip()
    diff = "".join(difflib.unified_diff((current or "").splitlines(True), rules.splitlines(True),
                                        "current", "declared"))
    verb = "created" if current is None else "updated"
    return __utils__["platform_state.converge"](
        ret, __opts__["test"], {} if same else {"rules": diff},
        unchanged=f"policy {name} has the declared rules",
        planned=f"policy {name} would be {verb}",
        apply=lambda: __salt__["vault_server.policy_write"](name, rules, url=url, verify=verify),
        done=f"policy {name} {verb}",
    )


def _config_present(name, path, params, secret_params, url, verify):
    """``params`` are set at ``path``; keys in ``secret_params`` are written when the object is
    created, never compared (Vault does not return them) and never shown."""
    ret = __utils__["platform_state.new"](name)
    try:
        current = __salt__["vault_server.read"](path, url=url, verify=verify)
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, exc)
    normalize = __salt__["vault_server.normalize"]
    wanted = {k: v for k, v in params.items() if not k.startswith("__")}
    differs = {}
    for key, value in wanted.items():
        if key in secret_params:
            continue
        have = None if current is None else current.get(key)
        if normalize(value) != normalize(have) and not (value in ("", [], None) and have in ("", [], None)):
            differs[key] = {"old": have, "new": value}
    if current is None:
        shown = {k: ("(secret)" if k in secret_params else v) for k, v in wanted.items()}
        changes = {path: {"old": None, "new": shown}}
        payload = wanted
    else:
        changes = differs
        payload = {k: v for k, v in wanted.items() if k not in secret_params}
    verb = "created" if current is None else "updated"
    return __utils__["platform_state.converge"](
        ret, __opts__["test"], changes,
        unchanged=f"{path} has the declared settings",
        planned=f"{path} would be {verb}",
        apply=lambda: __salt__["vault_server.write"](path, payload, url=url, verify=verify),
        done=f"{path} {verb}",
    )


def approle_role_present(name, mount="approle", url=None, verify=None, **params):
    """An AppRole role ``name`` with the given settings (token_policies, token_ttl, ...)."""
    return _config_present(name, f"auth/{mount}/role/{name}", params, (), url, verify)


def kubernetes_config_present(name, url=None, verify=None, **params):
    """
    The Kubernetes auth method mounted at ``name`` is configured (kubernetes_host,
    kubernetes_ca_cert, ...). ``token_reviewer_jwt`` is written on creation only and never shown.
    """
    return _config_present(name, f"auth/{name}/config", params, ("token_reviewer_jwt",), url, verify)


def kubernetes_role_present(name, mount="kubernetes", url=None, verify=None, **params):
    """A Kubernetes auth role ``name`` (bound_service_account_names/namespaces, token_policies, ...)."""
    return _config_present(name, f"auth/{mount}/role/{name}", params, (), url, verify)


def secret_generated(name, fields, mount="secret", rotate=False, url=None, verify=None):
    """
    The KV v2 secret ``name`` has every field of ``fields`` (field -> {length, alphabet}). Absent
    fields are generated and written with check-and-set, so a field that exists, or that another
    run wrote meanwhile, is never overwritten. ``rotate: true`` generates every field anew (use it
    once, from the command line, then remove it). Values are never shown.
    """
    ret = __utils__["platform_state.new"](name)
    where = f"{mount}/data/{name}"
    try:
        for field, spec in fields.items():  # a declaration error fails before anything is read
            declared = spec or {}
            try:
                __salt__["vault_server.generate_value"](declared.get("length", 32),
                                                        declared.get("alphabet", "alphanumeric"))
            except CommandExecutionError as exc:
                raise CommandExecutionError(f"{where}: field {field}: {exc}") from None
        current = __salt__["vault_server.secret_version"](name, mount=mount, url=url, verify=verify)
    except CommandExecutionError as exc:
        return __utils__["platform_state.failed"](ret, exc)
    have = set(current["fields"]) if current else set()
    targets = sorted(fields) if rotate else sorted(set(fields) - have)
    verb = "rotated" if rotate else "generated"

    def written(result):
        done = result["created"] + result["rotated"]
        if not done:
            return f"{where}: field(s) written meanwhile by another run; kept", {}
        return f"{where}: field(s) {', '.join(done)} written (version {result['version']})", {
            **{f: {"old": None, "new": "(generated)"} for f in result["created"]},
            **{f: {"old": "(set)", "new": "(rotated)"} for f in result["rotated"]},
        }

    return __utils__["platform_state.converge"](
        ret, __opts__["test"],
        {f: {"old": "(set)" if f in have else None, "new": f"(new {verb} value)"} for f in targets},
        unchanged=f"{where} has its generated field(s) {', '.join(sorted(fields))} (kept)",
        planned=f"{where}: field(s) {', '.join(targets)} would be {verb}",
        apply=lambda: __salt__["vault_server.secret_generate"](name, fields, mount=mount, rotate=rotate,
                                                               url=url, verify=verify),
        done=written,
    )
