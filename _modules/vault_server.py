"""
The Vault (or OpenBao) server's lifecycle and configuration, through its HTTP API with hvac.

Initialisation (unseal keys and root token encrypted to operators' PGP keys, so only ciphertext
ever leaves the server), unsealing, secrets engines, auth methods, policies, roles of auth
methods, audit devices and generated secrets in KV v2.

Connection, from the keyword arguments or the minion/master config key ``vault_server``:

.. code-block:: yaml

    vault_server:
      url: https://vault.example.org:8200
      verify: /etc/ssl/platform/ca.crt   # a CA bundle path, or true/false
      token_file: /root/.vault-token      # optional; see below

Authenticated calls take their token from ``token_file`` when one is configured; otherwise from
saltext-vault's master-issued per-minion token (the ``vault`` configuration of saltext-vault), so
a minion can do only what the policies the master assigns to it allow.

Functions return plain data and raise ``CommandExecutionError`` naming the API path and the
server's own message. No function logs or returns a key, token or secret value except
``secret_read``, whose purpose is to hand a value to a template.
"""

import base64
import hashlib
import json
import logging
import os
import re
import secrets
import string

from salt.exceptions import CommandExecutionError

try:
    import hvac
    import hvac.exceptions
    import requests

    HAS_HVAC = True
except ImportError:
    HAS_HVAC = False

log = logging.getLogger(__name__)

__virtualname__ = "vault_server"

ALPHABETS = {
    "alphanumeric": string.ascii_letters + string.digits,
    "lowercase": string.ascii_lowercase + string.digits,
    # Erlang's own cookie alphabet (RabbitMQ's .erlang.cookie).
    "uppercase": string.ascii_uppercase,
    "hex": "0123456789abcdef",
    "urlsafe": string.ascii_letters + string.digits + "-_",
    "printable": string.ascii_letters + string.digits + "!#%+,-.:=@^_~",
}
_DURATION = re.compile(r"^(\d+)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def __virtual__():
    if not HAS_HVAC:
        return False, "vault_server needs the hvac library"
    return __virtualname__


def _settings(url=None, verify=None, token_file=None):
    conf = __salt__["config.get"]("vault_server", {}) or {}
    return {
        "url": url or conf.get("url"),
        "verify": conf.get("verify", True) if verify is None else verify,
        "token_file": token_file or conf.get("token_file"),
        "timeout": conf.get("timeout", 30),
    }


_LOOKED_UP = "vault_server.issued_credentials_looked_up"


def _issued_credentials():
    """The master-issued token of saltext-vault: (url, verify, token).

    The minion keeps that token on its disk for its lifetime (the master's ``vault:cache:backend:
    disk``), so a job does not ask the master for a new one. Once per job it is looked up: a token
    Vault no longer knows (revoked, or Vault restored from a snapshot) or one issued before the guest
    got a role (it lacks the role's policy) is dropped and a new one issued."""
    try:
        from saltext.vault.utils.vault.factory import clear_cache, get_authd_client
    except ImportError as exc:
        raise CommandExecutionError(
            "no token: set vault_server:token_file or configure saltext-vault (not importable: " f"{exc})"
        ) from exc
    for attempt in range(2):
        try:
            client = get_authd_client(__opts__, __context__)
        except Exception as exc:  # saltext-vault raises many kinds; all mean "no credentials"
            raise CommandExecutionError(f"no token: saltext-vault could not get one from the master: {exc}") from exc
        token = client.auth.get_token()
        config = client.get_config()
        credentials = config["url"], config["verify"], getattr(token, "id", None) or token.lease_id
        if attempt or __context__.get(_LOOKED_UP) or _token_fits(*credentials):
            __context__[_LOOKED_UP] = True
            return credentials
        log.info("vault_server: the kept Vault token is unknown to Vault or lacks a role's policy; a new one")
        clear_cache(__opts__, __context__)
    return credentials


def _token_fits(url, verify, token):
    """False when Vault refuses the token or it lacks a policy this guest's roles give it now; True
    otherwise (also when Vault cannot answer: the call that follows says why, as it would have)."""
    try:
        looked_up = hvac.Client(url=url, token=token, verify=_verify_path(verify),
                                timeout=_settings()["timeout"]).auth.token.lookup_self()
    except hvac.exceptions.Forbidden:
        return False
    except (hvac.exceptions.VaultError, requests.exceptions.RequestException):
        return True
    roles = __salt__["pillar.get"]("platform:guest:roles", [], unmask=True) or []
    wanted = {f"salt_minion_{__opts__['id']}", *(f"salt_role_{role}" for role in roles)} if roles else set()
    return wanted <= set(((looked_up or {}).get("data") or {}).get("policies") or [])


def _verify_path(verify):
    """``verify`` for requests: saltext-vault hands minions the CA certificate itself (PEM), which
    requests cannot take; it goes to a file in the minion's cache (a public certificate)."""
    if not isinstance(verify, str) or not verify.lstrip().startswith("-----BEGIN CERTIFICATE"):
        return verify
    digest = hashlib.sha256(verify.encode()).hexdigest()[:16]
    path = os.path.join(__opts__["cachedir"], "vault_server", f"ca-{digest}.pem")
    if not os.path.isfile(path):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(verify)
        os.replace(tmp, path)
    return path


def _client(url=None, verify=None, token_file=None, authenticated=True):
    conf = _settings(url, verify, token_file)
    token = None
    if authenticated:
        if conf["token_file"]:
            try:
                with open(conf["token_file"], encoding="utf-8") as fh:
                    token = fh.read().strip()
            except OSError as exc:
                raise CommandExecutionError(f"cannot read the token file {conf['token_file']}: {exc}") from exc
        else:
            issued_url, issued_verify, token = _issued_credentials()
            conf["url"] = conf["url"] or issued_url
            if verify is None and "verify" not in (__salt__["config.get"]("vault_server", {}) or {}):
                conf["verify"] = issued_verify
    if not conf["url"]:
        raise CommandExecutionError("no Vault URL: pass url= or set vault_server:url")
    return _kept_client(conf["url"], token, _verify_path(conf["verify"]), conf["timeout"])


_CLIENTS = "vault_server.clients"


def _kept_client(url, token, verify, timeout):
    """One hvac client (one HTTP session, so one TLS handshake) per server and token for the whole
    state run: the vault guest's highstate makes some forty calls, each of which opened a
    connection of its own before. The state run's context is the run's own, so nothing outlives
    it; a new token (``clear_cache``) gets a client of its own."""
    clients = __context__.setdefault(_CLIENTS, {})
    key = (url, token, verify if isinstance(verify, (str, bool)) else repr(verify), timeout)
    client = clients.get(key)
    if client is None:
        client = clients[key] = hvac.Client(url=url, token=token, verify=verify, timeout=timeout)
    return client


def _fail(client, path, exc):
    """CommandExecutionError naming the API path and the cause, in the server's words."""
    if isinstance(exc, hvac.exceptions.VaultDown):
        cause = f"Vault is sealed ({_api_message(exc)})"
    elif isinstance(exc, hvac.exceptions.Forbidden):
        cause = f"permission denied: the token's policies do not allow this ({_api_message(exc)})"
    elif isinstance(exc, hvac.exceptions.VaultError):
        cause = _api_message(exc)
    elif isinstance(exc, requests.exceptions.RequestException):
        cause = f"Vault at {client.url} is unreachable ({type(exc).__name__}: {exc})"
    else:
        cause = str(exc)
    return CommandExecutionError(f"{path}: {cause}")


def _api_message(exc):
    return "; ".join(str(e) for e in exc.errors) if exc.errors else (exc.args[0] if exc.args else type(exc).__name__)


def _call(client, where, func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
        raise _fail(client, where, exc) from None


def _read(client, path):
    """GET /v1/<path>: its ``data``, or None when the path does not exist."""
    try:
        reply = client.adapter.get(f"/v1/{path}")
    except hvac.exceptions.InvalidPath:
        return None
    except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
        raise _fail(client, path, exc) from None
    return (reply or {}).get("data") if isinstance(reply, dict) else None


def _write(client, path, data):
    _call(client, path, client.adapter.post, f"/v1/{path}", json=data)


def status(url=None, verify=None):
    """
    Whether the server is initialised and sealed, without a token.

    CLI Example:

    .. code-block:: bash

        salt vault vault_server.status
    """
    client = _client(url, verify, authenticated=False)
    seal = _call(client, "sys/seal-status", client.sys.read_seal_status)
    return {
        "initialized": seal["initialized"],
        "sealed": seal["sealed"],
        "threshold": seal.get("t"),
        "shares": seal.get("n"),
        "progress": seal.get("progress"),
        "version": seal.get("version"),
        "url": client.url,
    }


def _pgp_base64(key):
    """A PGP public key as Vault wants it: base64 of the binary key. Accepts ASCII armor."""
    text = key.strip()
    if "-----BEGIN PGP PUBLIC KEY BLOCK-----" not in text:
        return "".join(text.split())
    body = text.split("-----BEGIN PGP PUBLIC KEY BLOCK-----", 1)[1].split("-----END PGP PUBLIC KEY BLOCK-----")[0]
    lines = [line.strip() for line in body.strip().splitlines()]
    if "" in lines:  # armor headers end at the first empty line
        lines = lines[lines.index("") + 1 :]
    data = "".join(line for line in lines if line and not line.startswith("="))
    base64.b64decode(data, validate=True)
    return data


def initialize(pgp_keys, root_token_pgp_key, output, secret_threshold=None, url=None, verify=None):
    """
    Initialise a new Vault. Each unseal key share is encrypted to one operator's PGP public key,
    the root token to ``root_token_pgp_key``; the ciphertext is written as JSON to ``output`` (a
    new file, mode 0600, on the host that runs this) and returned. No plaintext key is ever seen
    here.

    pgp_keys
        operators' public keys (ASCII armor or base64), one unseal key share each

    root_token_pgp_key
        the public key the root token is encrypted to

    output
        where the ciphertext is written; must not exist yet (a previous initialisation's
        ciphertext is never overwritten)

    secret_threshold
        shares needed to unseal (default: a majority of the shares)

    CLI Example:

    .. code-block:: bash

        salt-run salt.cmd vault_server.initialize '[...]' '...' /srv/vault-init/site.json url=https://vault:8200
    """
    if not pgp_keys:
        raise CommandExecutionError("no operator PGP keys: pgp_keys must list at least one public key")
    keys = [_pgp_base64(k) for k in pgp_keys]
    root_key = _pgp_base64(root_token_pgp_key)
    shares = len(keys)
    threshold = int(secret_threshold or shares // 2 + 1)
    if not 1 <= threshold <= shares:
        raise CommandExecutionError(f"secret_threshold {threshold} is not between 1 and the {shares} shares")
    client = _client(url, verify, authenticated=False)
    if _call(client, "sys/init", client.sys.is_initialized):
        raise CommandExecutionError(f"sys/init: Vault at {client.url} is already initialised")
    # Claim the output file before initialising: ciphertext that cannot be written is lost for good.
    try:
        os.makedirs(os.path.dirname(os.path.abspath(output)), mode=0o700, exist_ok=True)
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise CommandExecutionError(f"cannot create {output} for the init ciphertext: {exc}") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        try:
            reply = _call(
                client, "sys/init", client.sys.initialize,
                secret_shares=shares, secret_threshold=threshold, pgp_keys=keys, root_token_pgp_key=root_key,
            )
        except CommandExecutionError:
            fh.close()
            os.unlink(output)
            raise
        result = {
            "url": client.url,
            "shares": shares,
            "threshold": threshold,
            "unseal_keys_pgp": reply["keys_base64"],
            "root_token_pgp": reply["root_token"],
        }
        json.dump(result, fh, indent=2)
        fh.write("\n")
    return result


def unseal(key_files=None, url=None, verify=None):
    """
    Submit unseal key shares read from ``key_files`` (one decrypted share per file, as operators
    write them) until the server is unsealed. Returns the seal status; never the keys.

    CLI Example:

    .. code-block:: bash

        salt vault vault_server.unseal key_files='[/run/vault-unseal/alice]'
    """
    client = _client(url, verify, authenticated=False)
    state = status(url, verify)
    if not state["initialized"]:
        raise CommandExecutionError(f"sys/unseal: Vault at {client.url} is not initialised")
    for path in key_files or []:
        if not state["sealed"]:
            break
        try:
            with open(path, encoding="utf-8") as fh:
                key = fh.read().strip()
        except OSError as exc:
            raise CommandExecutionError(f"cannot read the unseal key share {path}: {exc}") from exc
        _call(client, "sys/unseal", client.sys.submit_unseal_key, key=key)
        state = status(url, verify)
    return state


def _listing(where, func_name, fields, url, verify):
    """``sys/mounts``, ``sys/auth`` or ``sys/audit`` as path -> {type, and the named fields}."""
    client = _client(url, verify)
    reply = _call(client, where, getattr(client.sys, func_name))
    return {
        path: {"type": item["type"], **{key: item.get(key) or empty for key, empty in fields.items()}}
        for path, item in (reply.get("data") or reply).items()
        if isinstance(item, dict) and "type" in item
    }


def mounts(url=None, verify=None):
    """
    The enabled secrets engines: path (with trailing slash) -> type, options, description.

    CLI Example:

    .. code-block:: bash

        salt vault vault_server.mounts
    """
    return _listing("sys/mounts", "list_mounted_secrets_engines", {"options": {}, "description": ""}, url, verify)


def mount_enable(path, backend_type, options=None, description=None, url=None, verify=None):
    """
    Enable a secrets engine at ``path``.

    CLI Example:

    .. code-block:: bash

        salt vault vault_server.mount_enable secret kv options='{version: "2"}'
    """
    client = _client(url, verify)
    _call(client, f"sys/mounts/{path}", client.sys.enable_secrets_engine,
          backend_type=backend_type, path=path, options=options, description=description)
    return True


def auth_methods(url=None, verify=None):
    """
    The enabled auth methods: path (with trailing slash) -> type, description.

    CLI Example:

    .. code-block:: bash

        salt vault vault_server.auth_methods
    """
    return _listing("sys/auth", "list_auth_methods", {"description": ""}, url, verify)


def auth_enable(path, method_type, description=None, url=None, verify=None):
    """
    Enable an auth method at ``path``.

    CLI Example:

    .. code-block:: bash

        salt vault vault_server.auth_enable approle approle
    """
    client = _client(url, verify)
    _call(client, f"sys/auth/{path}", client.sys.enable_auth_method,
          method_type=method_type, path=path, description=description)
    return True


def audit_devices(url=None, verify=None):
    """
    The enabled audit devices: path (with trailing slash) -> type, options.

    CLI Example:

    .. code-block:: bash

        salt vault vault_server.audit_devices
    """
    return _listing("sys/audit", "list_enabled_audit_devices", {"options": {}}, url, verify)


def audit_enable(path, device_type, options=None, url=None, verify=None):
    """
    Enable an audit device at ``path``.

    CLI Example:

    .. code-block:: bash

        salt vault vault_server.audit_enable file file options='{file_path: /var/log/vault/audit.log}'
    """
    client = _client(url, verify)
    _call(client, f"sys/audit/{path}", client.sys.enable_audit_device,
          device_type=device_type, path=path, options=options)
    return True


def policy_read(name, url=None, verify=None):
    """
    The rules of an ACL policy, or None when there is none of that name.

    CLI Example:

    .. code-block:: bash

        salt vault vault_server.policy_read salt-role-postgresql
    """
    client = _client(url, verify)
    data = _read(client, f"sys/policies/acl/{name}")
    return None if data is None else data.get("policy")


def policy_write(name, rules, url=None, verify=None):
    """
    Create or replace an ACL policy.

    CLI Example:

    .. code-block:: bash

        salt vault vault_server.policy_write reader 'path "secret/data/x" {capabilities = ["read"]}'
    """
    client = _client(url, verify)
    _call(client, f"sys/policies/acl/{name}", client.sys.create_or_update_acl_policy, name=name, policy=rules)
    return True


def read(path, url=None, verify=None):
    """
    The ``data`` of any configuration path (``auth/approle/role/x``, ``auth/kubernetes/config``),
    or None when it does not exist. Not for secrets: use ``secret_read``.

    CLI Example:

    .. code-block:: bash

        salt vault vault_server.read auth/approle/role/salt-master
    """
    return _read(_client(url, verify), path)


def write(path, data, url=None, verify=None):
    """
    Write ``data`` to a configuration path.

    CLI Example:

    .. code-block:: bash

        salt vault vault_server.write auth/approle/role/salt-master '{token_policies: [salt-master]}'
    """
    client = _client(url, verify)
    _write(client, path, data)
    return True


def _kv_data_path(mount, path):
    return f"{mount}/data/{path}"


def secret_version(path, mount="secret", url=None, verify=None):
    """
    The metadata of a KV v2 secret without its values: current version and field names; None when
    the secret does not exist (or its current version is deleted).

    CLI Example:

    .. code-block:: bash

        salt vault vault_server.secret_version roles/postgresql/admin
    """
    client = _client(url, verify)
    data = _read(client, _kv_data_path(mount, path))
    if data is None or data.get("data") is None:
        return None
    return {"version": data["metadata"]["version"], "fields": sorted(data["data"])}


def ca_certificate():
    """
    The CA certificate (PEM) this minion trusts Vault's listeners with: the ``vault_server:verify``
    setting when it is a PEM or a file, else the one the master hands out with saltext-vault's
    credentials. Empty when the minion has none (the system's trust store applies). A public
    certificate, for clients of Vault's other listeners (Prometheus scraping the metrics listener).

    CLI Example:

    .. code-block:: bash

        salt monitoring vault_server.ca_certificate
    """
    verify = _settings()["verify"]
    if not isinstance(verify, str):
        try:
            verify = _issued_credentials()[1]
        except CommandExecutionError:
            return ""
    if not isinstance(verify, str):
        return ""
    if verify.lstrip().startswith("-----BEGIN CERTIFICATE"):
        return verify
    try:
        with open(verify, encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return ""


def secret_read(path, field, mount="secret", url=None, verify=None):
    """
    One field of a KV v2 secret, for templates (the one function that returns a secret value).
    Fails, naming the path, when the secret or the field is absent: a caller never renders an
    empty value.

    CLI Example:

    .. code-block:: bash

        salt vault vault_server.secret_read roles/postgresql/admin password
    """
    client = _client(url, verify)
    where = _kv_data_path(mount, path)
    data = _read(client, where)
    if data is None or data.get("data") is None:
        raise CommandExecutionError(f"{where}: no such secret")
    if field not in data["data"]:
        raise CommandExecutionError(f"{where}: the secret has no field {field!r}")
    return data["data"][field]


def generate_value(length, alphabet="alphanumeric"):
    """A random string of ``length`` characters of the named alphabet (one of ALPHABETS)."""
    if alphabet not in ALPHABETS:
        raise CommandExecutionError(f"unknown alphabet {alphabet!r}; expected one of: {', '.join(ALPHABETS)}")
    length = int(length)
    if length < 8:
        raise CommandExecutionError(f"length {length} is too short for a generated secret; expected 8 or more")
    chars = ALPHABETS[alphabet]
    return "".join(secrets.choice(chars) for _ in range(length))


def secret_generate(path, fields, mount="secret", rotate=False, url=None, verify=None):
    """
    Generate the ``fields`` of a KV v2 secret that are absent, with check-and-set so that a
    concurrent writer is never overwritten: the write succeeds only if the secret is still at the
    version that was read. ``rotate=True`` generates every declared field anew.

    fields
        field name -> {length: N, alphabet: NAME}; alphabets: alphanumeric, lowercase, uppercase,
        hex, urlsafe, printable

    Returns {"created": [...], "rotated": [...], "kept": [...], "version": N}; never a value.

    CLI Example:

    .. code-block:: bash

        salt vault vault_server.secret_generate roles/postgresql/admin '{password: {length: 32}}'
    """
    client = _client(url, verify)
    where = _kv_data_path(mount, path)
    specs = {name: spec or {} for name, spec in fields.items()}
    values = {name: generate_value(spec.get("length", 32), spec.get("alphabet", "alphanumeric"))
              for name, spec in specs.items()}
    for _ in range(3):
        current = _read(client, where)
        existing = (current or {}).get("data") or {}
        version = current["metadata"]["version"] if current else 0
        new = dict(existing)
        targets = list(specs) if rotate else [name for name in specs if name not in existing]
        if not targets:
            return {"created": [], "rotated": [], "kept": sorted(specs), "version": version}
        for name in targets:
            new[name] = values[name]
        try:
            client.secrets.kv.v2.create_or_update_secret(path=path, secret=new, cas=version, mount_point=mount)
        except hvac.exceptions.InvalidRequest as exc:
            if "check-and-set" in _api_message(exc):
                log.info("%s changed while generating its fields; reading it again", where)
                if rotate:
                    raise CommandExecutionError(f"{where}: changed by another writer during rotation; "
                                                f"nothing was rotated") from None
                continue
            raise _fail(client, where, exc) from None
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
            raise _fail(client, where, exc) from None
        return {
            "created": sorted(n for n in targets if n not in existing),
            "rotated": sorted(n for n in targets if n in existing),
            "kept": sorted(n for n in specs if n not in targets),
            "version": version + 1,
        }
    raise CommandExecutionError(f"{where}: kept changing while its fields were generated; try again")


def normalize(value):
    """Vault's form of a setting as given in a state: durations in seconds, CSV as a list."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return int(match.group(1)) * _SECONDS[match.group(2)]
        if value.isdigit():
            return int(value)
    return value

def secret_fingerprints(nonce, mount="secret", url=None, verify=None):
    """
    Every KV v2 secret under ``mount`` this token may list and read, as path -> HMAC-SHA256 of its
    current data keyed with ``nonce`` (never a value): what a restore drill compares before and after.
    A path the token may list but not read is reported as ``"unreadable"``, a folder it may not list
    (``<folder>/``) as ``"unlistable"``.

    CLI Example:

    .. code-block:: bash

        salt vault vault_server.secret_fingerprints drill-20261201
    """
    import hmac

    client = _client(url, verify)
    found, folders = {}, [""]
    while folders:
        folder = folders.pop()
        try:
            reply = client.adapter.request("LIST", f"/v1/{mount}/metadata/{folder}")
        except hvac.exceptions.InvalidPath:
            continue
        except hvac.exceptions.Forbidden:
            found[folder] = "unlistable"
            continue
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
            raise _fail(client, f"{mount}/metadata/{folder}", exc) from None
        for key in ((reply or {}).get("data") or {}).get("keys", []):
            if key.endswith("/"):
                folders.append(folder + key)
                continue
            try:
                data = _read(client, _kv_data_path(mount, folder + key))
            except CommandExecutionError:
                found[folder + key] = "unreadable"
                continue
            body = json.dumps((data or {}).get("data"), sort_keys=True).encode()
            found[folder + key] = hmac.new(str(nonce).encode(), body, hashlib.sha256).hexdigest()
    return dict(sorted(found.items()))
