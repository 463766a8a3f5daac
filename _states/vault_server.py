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
    return __virtualname__


def _ret(name):
    return {"name": name, "result": True, "comment": "", "changes": {}}


def _failed(ret, exc):
    ret["result"] = False
    ret["comment"] = str(exc)
    return ret


def _conn(url, verify):
    return {"url": url, "verify": verify}


def initialized(name, pgp_keys, root_token_pgp_key, secret_threshold=None, url=None, verify=None):
    """
    Vault is initialised. If it is not, initialise it with one unseal key share per operator PGP
    key and the root token encrypted to ``root_token_pgp_key``; the ciphertext is written to
    ``name`` (a path on the host running the state: run it on the master) and nowhere else.

    An initialised Vault is left alone, whether or not ``name`` exists.
    """
    ret = _ret(name)
    try:
        state = __salt__["vault_server.status"](**_conn(url, verify))
    except CommandExecutionError as exc:
        return _failed(ret, exc)
    if state["initialized"]:
        ret["comment"] = f"Vault at {state['url']} is already initialised"
        return ret
    shares = len(pgp_keys or [])
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = (f"Vault at {state['url']} would be initialised with {shares} PGP-encrypted key "
                          f"share(s); the ciphertext would be written to {name}")
        ret["changes"] = {"initialized": {"old": False, "new": True}}
        return ret
    try:
        result = __salt__["vault_server.initialize"](
            pgp_keys, root_token_pgp_key, name, secret_threshold=secret_threshold, **_conn(url, verify)
        )
    except CommandExecutionError as exc:
        return _failed(ret, exc)
    ret["comment"] = (f"Vault at {state['url']} initialised: {result['shares']} share(s), threshold "
                      f"{result['threshold']}; unseal key shares and root token, PGP-encrypted, are in {name}")
    ret["changes"] = {"initialized": {"old": False, "new": True}, "ciphertext": name}
    return ret


def unsealed(name, key_files=None, url=None, verify=None):
    """
    Vault is unsealed. A sealed Vault is unsealed with the key shares in ``key_files`` (one
    decrypted share per file, written by the operators); without enough of them the state fails
    and says that Vault is sealed.
    """
    ret = _ret(name)
    conn = _conn(url, verify)
    try:
        state = __salt__["vault_server.status"](**conn)
    except CommandExecutionError as exc:
        return _failed(ret, exc)
    where = state["url"]
    if not state["initialized"]:
        return _failed(ret, f"Vault at {where} is not initialised: initialise it first (see docs/vault.md)")
    if not state["sealed"]:
        ret["comment"] = f"Vault at {where} is unsealed"
        return ret
    present = [path for path in key_files or [] if __salt__["file.file_exists"](path)]
    if __opts__["test"]:
        ret["result"] = None if present else False
        ret["comment"] = (f"Vault at {where} is SEALED; {len(present)} key share file(s) present, "
                          f"{state['threshold']} share(s) needed")
        if present:
            ret["changes"] = {"sealed": {"old": True, "new": False}}
        return ret
    if not present:
        return _failed(ret, f"Vault at {where} is SEALED (progress {state['progress']}/{state['threshold']}): "
                            f"no unseal key share given; operators must provide {state['threshold']} share(s) "
                            f"(see docs/vault.md, 'Unseal after a restart')")
    try:
        state = __salt__["vault_server.unseal"](key_files=present, **conn)
    except CommandExecutionError as exc:
        return _failed(ret, exc)
    if state["sealed"]:
        return _failed(ret, f"Vault at {where} is still SEALED after {len(present)} key share(s): "
                            f"progress {state['progress']}/{state['threshold']}")
    ret["comment"] = f"Vault at {where} unsealed with {len(present)} key share(s)"
    ret["changes"] = {"sealed": {"old": True, "new": False}}
    return ret


def _describe(settings):
    return ", ".join(f"{k} {v}" for k, v in settings.items() if v is not None)


def _enabled(name, kind, listing, wanted, enable, url, verify):
    """``wanted`` settings ({type, version, ...}) are enabled at ``name``; ``listing`` returns
    path/ -> settings in the same flat form."""
    ret = _ret(name)
    key = name.strip("/") + "/"
    try:
        current = listing().get(key)
    except CommandExecutionError as exc:
        return _failed(ret, exc)
    if current is not None:
        if any(v is not None and str(current.get(k)) != str(v) for k, v in wanted.items()):
            # Re-enabling would destroy what is stored there: an operator decides.
            return _failed(ret, f"{kind} {key} exists with {_describe(current)}; expected {_describe(wanted)}. "
                                f"Not changed: replacing it would destroy its data")
        ret["comment"] = f"{kind} {key} is enabled ({_describe(current)})"
        return ret
    ret["changes"] = {key: {"old": None, "new": _describe(wanted)}}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"{kind} {key} would be enabled ({_describe(wanted)})"
        return ret
    try:
        enable()
    except CommandExecutionError as exc:
        ret["changes"] = {}
        return _failed(ret, exc)
    ret["comment"] = f"{kind} {key} enabled ({_describe(wanted)})"
    return ret


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

    return _enabled(name, "secrets engine", listing, {"type": backend_type, **options}, enable, url, verify)


def auth_method_enabled(name, method_type, description=None, url=None, verify=None):
    """An auth method of ``method_type`` (approle, kubernetes, ...) is enabled at ``name``."""

    def listing():
        return __salt__["vault_server.auth_methods"](url=url, verify=verify)

    def enable():
        __salt__["vault_server.auth_enable"](name, method_type, description=description, url=url, verify=verify)

    return _enabled(name, "auth method", listing, {"type": method_type}, enable, url, verify)


def audit_device_enabled(name, device_type="file", options=None, url=None, verify=None):
    """An audit device of ``device_type`` is enabled at ``name`` (file: ``options: {file_path: ...}``)."""
    options = {k: str(v) for k, v in (options or {}).items()}

    def listing():
        found = __salt__["vault_server.audit_devices"](url=url, verify=verify)
        return {path: {"type": d["type"], **{k: d["options"].get(k) for k in options}} for path, d in found.items()}

    def enable():
        __salt__["vault_server.audit_enable"](name, device_type, options=options or None, url=url, verify=verify)

    return _enabled(name, "audit device", listing, {"type": device_type, **options}, enable, url, verify)


def _apply(ret, what, verb, write):
    """The common end of a present state: test mode says what would happen, else ``write()``."""
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"{what} would be {verb}"
        return ret
    try:
        write()
    except CommandExecutionError as exc:
        ret["changes"] = {}
        return _failed(ret, exc)
    ret["comment"] = f"{what} {verb}"
    return ret


def policy_present(name, rules, url=None, verify=None):
    """An ACL policy ``name`` has exactly ``rules`` (HCL). Changes show the diff of the rules."""
    ret = _ret(name)
    try:
        current = __salt__["vault_server.policy_read"](name, url=url, verify=verify)
    except CommandExecutionError as exc:
        return _failed(ret, exc)
    if current is not None and current.strip() == rules.strip():
        ret["comment"] = f"policy {name} has the declared rules"
        return ret
    diff = "".join(difflib.unified_diff((current or "").splitlines(True), rules.splitlines(True),
                                        "current", "declared"))
    ret["changes"] = {"rules": diff}
    verb = "created" if current is None else "updated"
    return _apply(ret, f"policy {name}", verb,
                  lambda: __salt__["vault_server.policy_write"](name, rules, url=url, verify=verify))


def _config_present(name, path, params, secret_params, url, verify):
    """``params`` are set at ``path``; keys in ``secret_params`` are written when the object is
    created, never compared (Vault does not return them) and never shown."""
    ret = _ret(name)
    try:
        current = __salt__["vault_server.read"](path, url=url, verify=verify)
    except CommandExecutionError as exc:
        return _failed(ret, exc)
    normalize = __salt__["vault_server.normalize"]
    wanted = {k: v for k, v in params.items() if not k.startswith("__")}
    differs = {}
    for key, value in wanted.items():
        if key in secret_params:
            continue
        have = None if current is None else current.get(key)
        if normalize(value) != normalize(have) and not (value in ("", [], None) and have in ("", [], None)):
            differs[key] = {"old": have, "new": value}
    if current is not None and not differs:
        ret["comment"] = f"{path} has the declared settings"
        return ret
    if current is None:
        ret["changes"] = {path: {"old": None, "new": {k: ("(secret)" if k in secret_params else v)
                                                      for k, v in wanted.items()}}}
    else:
        ret["changes"] = differs
    verb = "created" if current is None else "updated"
    payload = wanted if current is None else {k: v for k, v in wanted.items() if k not in secret_params}
    return _apply(ret, path, verb, lambda: __salt__["vault_server.write"](path, payload, url=url, verify=verify))


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
    ret = _ret(name)
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
        return _failed(ret, exc)
    have = set(current["fields"]) if current else set()
    missing = sorted(set(fields) - have)
    if not missing and not rotate:
        ret["comment"] = f"{where} has its generated field(s) {', '.join(sorted(fields))} (kept)"
        return ret
    targets = sorted(fields) if rotate else missing
    if __opts__["test"]:
        ret["result"] = None
        verb = "rotated" if rotate else "generated"
        ret["comment"] = f"{where}: field(s) {', '.join(targets)} would be {verb}"
        ret["changes"] = {f: {"old": "(set)" if f in have else None, "new": f"(new {verb} value)"} for f in targets}
        return ret
    try:
        result = __salt__["vault_server.secret_generate"](name, fields, mount=mount, rotate=rotate,
                                                          url=url, verify=verify)
    except CommandExecutionError as exc:
        return _failed(ret, exc)
    done = result["created"] + result["rotated"]
    if not done:
        ret["comment"] = f"{where}: field(s) written meanwhile by another run; kept"
        return ret
    ret["changes"] = {
        **{f: {"old": None, "new": "(generated)"} for f in result["created"]},
        **{f: {"old": "(set)", "new": "(rotated)"} for f in result["rotated"]},
    }
    ret["comment"] = f"{where}: field(s) {', '.join(done)} written (version {result['version']})"
    return ret
