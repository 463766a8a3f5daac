"""
Hand a certificate and its private key from one guest to another through Vault (KV v2).

The sender's ``publish`` reads the files on its own disk and writes them, with its master-issued
token, into one secret; the receiver's ``install`` reads exactly that version with its own token
and writes the files. The values travel between each minion and Vault only: the Salt master (its
job cache, its event bus, its logs) sees paths, versions and names, never a file's content. Who
may write and who may read is Vault's policy: the proxy's ``salt_role_reverse_proxy`` covers
``roles/reverse_proxy/*``; read on one lineage's path is granted to the mail route's guest alone
(``sitectl.roles.secret_grants``). ``reactor/acme-renewed.sls`` -> ``_runners/acme.py`` use it to
copy the renewed mail certificate from the proxy to the mail guest.

Both functions authenticate with saltext-vault's per-minion token, return plain data (paths,
versions, what changed) and raise ``CommandExecutionError`` naming the secret's path and Vault's
own message (sealed, unreachable, permission denied); nothing is written on the receiver unless
the whole secret was read.
"""

import logging
import os
import subprocess

from salt.exceptions import CommandExecutionError, SaltException

try:
    import requests
    from saltext.vault.utils import vault

    HAS_SALTEXT_VAULT = True
except ImportError:
    HAS_SALTEXT_VAULT = False

log = logging.getLogger(__name__)

__virtualname__ = "certificate_handover"


def __virtual__():
    if not HAS_SALTEXT_VAULT:
        return False, "certificate_handover needs saltext-vault (the master-issued Vault token)"
    return __virtualname__


def _vault_error(where, exc):
    """Vault's own message for ``where``; saltext-vault's errors carry the API's errors only."""
    if isinstance(exc, vault.VaultUnavailableError):
        cause = f"Vault is sealed or unavailable ({exc})"
    elif isinstance(exc, vault.VaultPermissionDeniedError):
        cause = f"permission denied: the token's policies do not allow this ({exc})"
    elif isinstance(exc, requests.exceptions.RequestException):
        cause = f"Vault is unreachable ({type(exc).__name__}: {exc})"
    else:
        cause = f"{type(exc).__name__}: {exc}"
    return CommandExecutionError(f"{where}: {cause}")


def _connect(where):
    """This minion's master-issued token, before any read or write: a master that cannot issue one
    (Vault sealed or unreachable from the master) is said as such."""
    try:
        vault.get_kv(__opts__, __context__)
    except (SaltException, requests.exceptions.RequestException) as exc:
        raise CommandExecutionError(f"{where}: no Vault token from the master ({exc})") from None


def _read(where, version=None):
    """The secret at ``where`` (mount/path) with its metadata; None when it does not exist."""
    _connect(where)
    try:
        return vault.read_kv(where, __opts__, __context__, include_metadata=True, version=version)
    except vault.VaultNotFoundError:
        return None
    except (SaltException, requests.exceptions.RequestException) as exc:
        raise _vault_error(where, exc) from None


def publish(path, files, mount="secret"):
    """
    Write the files ``files`` (a mapping name -> path on this minion) as the fields of the KV v2
    secret ``path``. A secret that already holds exactly these files is left at its version.
    Returns the secret's path, its version, the field names and whether a version was written.

    CLI Example:

    .. code-block:: bash

        salt reverse-proxy certificate_handover.publish roles/reverse_proxy/certificates/mail.example.org \
            '{cert: /etc/letsencrypt/live/mail.example.org/fullchain.pem,
              key: /etc/letsencrypt/live/mail.example.org/privkey.pem}'
    """
    where = f"{mount}/{path}"
    contents = {}
    for name, source in dict(files).items():
        try:
            with open(source, encoding="ascii") as fh:
                contents[name] = fh.read()
        except OSError as exc:
            raise CommandExecutionError(f"cannot read {source}: {exc.strerror}") from exc
        except UnicodeDecodeError:
            raise CommandExecutionError(f"{source} is not a PEM file (not ASCII)") from None
    current = _read(where)
    if current is not None and current.get("data") == contents:
        version = current["metadata"]["version"]
        changed = False
    else:
        try:
            written = vault.write_kv(where, contents, __opts__, __context__)
        except (SaltException, requests.exceptions.RequestException) as exc:
            raise _vault_error(where, exc) from None
        version = written["data"]["version"]
        changed = True
    log.info("certificate_handover: %s at version %s (%s)", where, version, "written" if changed else "unchanged")
    return {"path": where, "version": version, "fields": sorted(contents), "changed": changed}


def _differs(path, content, mode):
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read() != content or (os.stat(path).st_mode & 0o777) != mode
    except (FileNotFoundError, UnicodeDecodeError):
        return True


def _stage(path, content, mode):
    """``content`` in a temporary file beside ``path`` (same file system, so the rename is atomic)."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.platform-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(content)
    os.chmod(tmp, mode)
    return tmp


def install(path, version, destinations, reload_cmd=None, mount="secret"):
    """
    Read version ``version`` of the KV v2 secret ``path`` and write each field named in
    ``destinations`` (a mapping name -> {path, mode}) to its file, each replaced atomically and
    only when it differs; run ``reload_cmd`` (a list, no shell) when a file changed. Nothing is
    written unless the secret was read whole. Returns the secret's path and version, the files
    changed and whether the reload ran; never contents.

    CLI Example:

    .. code-block:: bash

        salt mailcow certificate_handover.install roles/reverse_proxy/certificates/mail.example.org 3 \
            '{cert: {path: /x/cert.pem, mode: "0644"}, key: {path: /x/key.pem, mode: "0600"}}'
    """
    where = f"{mount}/{path}"
    secret = _read(where, version=int(version))
    if secret is None or secret.get("data") is None:
        raise CommandExecutionError(f"{where}: no version {version}")
    missing = set(destinations) - set(secret["data"])
    if missing:
        raise CommandExecutionError(f"{where}: version {version} has no field {', '.join(sorted(missing))}")
    wanted = {}
    for name, dest in sorted(destinations.items()):
        mode = int(str(dest.get("mode", "0600")), 8)
        if _differs(dest["path"], secret["data"][name], mode):
            wanted[dest["path"]] = (secret["data"][name], mode)
    staged = {}
    try:
        for target, (content, mode) in wanted.items():
            staged[target] = _stage(target, content, mode)
    except OSError as exc:
        for tmp in staged.values():
            os.unlink(tmp)
        raise CommandExecutionError(f"cannot write {exc.filename}: {exc.strerror}") from exc
    for target, tmp in staged.items():
        os.replace(tmp, target)
    changed = sorted(staged)
    result = {"path": where, "version": secret["metadata"]["version"], "changed": changed, "reloaded": False}
    if changed and reload_cmd:
        proc = subprocess.run(list(reload_cmd), capture_output=True, text=True, check=False, timeout=300)
        if proc.returncode != 0:
            raise CommandExecutionError(
                f"installed {', '.join(changed)} but {reload_cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
        result["reloaded"] = True
    log.info("certificate_handover: %s version %s: installed %s", where, result["version"],
             ", ".join(changed) or "nothing (unchanged)")
    return result


def current_version(path, mount="secret"):
    """
    The current version of the KV v2 secret ``path`` and its field names, read with this minion's
    token; None when nothing is published there yet. Never the values.

    CLI Example:

    .. code-block:: bash

        salt mailcow certificate_handover.current_version roles/reverse_proxy/certificates/mail.example.org
    """
    where = f"{mount}/{path}"
    secret = _read(where)
    if secret is None or secret.get("data") is None:
        return None
    return {"path": where, "version": secret["metadata"]["version"], "fields": sorted(secret["data"])}


def pending(path, destinations, mount="secret"):
    """
    Which files of ``destinations`` (name -> {path, mode}) differ from the current version of
    ``path``: ``{"version": N, "differ": [paths]}``, or None when nothing is published yet. Reads the
    secret with this minion's token and compares on this minion; returns no content.
    """
    where = f"{mount}/{path}"
    secret = _read(where)
    if secret is None or secret.get("data") is None:
        return None
    missing = set(destinations) - set(secret["data"])
    if missing:
        raise CommandExecutionError(f"{where}: the current version has no field {', '.join(sorted(missing))}")
    differ = sorted(dest["path"] for name, dest in destinations.items()
                    if _differs(dest["path"], secret["data"][name], int(str(dest.get("mode", "0600")), 8)))
    return {"version": secret["metadata"]["version"], "differ": differ}
