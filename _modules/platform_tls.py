"""
Hand a certificate and its private key from one guest to another through the Salt master without
the master (its job cache, its event bus, its logs) ever holding the key in the clear.

The sender seals the files for the receiver's minion key (the RSA public key the master accepted
for it): a fresh Fernet key encrypts the files, RSA-OAEP encrypts that key. Only the receiver's
``/etc/salt/pki/minion/minion.pem`` opens it. ``reactor/acme-renewed.sls`` ->
``_runners/acme.py`` use it to copy the renewed mail certificate from the proxy to the mail guest.

No function returns or logs key material: ``seal`` returns ciphertext, ``install_sealed`` returns
paths, whether anything changed and whether the reload ran.
"""

import base64
import json
import logging
import os
import subprocess

from salt.exceptions import CommandExecutionError

try:
    from cryptography.fernet import Fernet, InvalidToken
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    HAS_CRYPTOGRAPHY = True
except ImportError:
    HAS_CRYPTOGRAPHY = False

log = logging.getLogger(__name__)

__virtualname__ = "platform_tls"


def __virtual__():
    if not HAS_CRYPTOGRAPHY:
        return False, "platform_tls needs the cryptography package"
    return __virtualname__


def _oaep():
    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def seal(paths, public_key_pem):
    """
    Read the files ``paths`` (a mapping name -> path on this minion) and seal them for the holder of
    the private key of ``public_key_pem`` (a minion's public key as the master accepted it).

    CLI Example:

    .. code-block:: bash

        salt reverse-proxy platform_tls.seal '{cert: /etc/letsencrypt/live/x/fullchain.pem}' "$(cat mail.pub)"
    """
    files = {}
    for name, path in dict(paths).items():
        try:
            with open(path, "rb") as fh:
                files[name] = base64.b64encode(fh.read()).decode()
        except OSError as exc:
            raise CommandExecutionError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        public_key = serialization.load_pem_public_key(public_key_pem.encode())
    except ValueError as exc:
        raise CommandExecutionError(f"not a PEM public key: {exc}") from exc
    data_key = Fernet.generate_key()
    return {
        "key": base64.b64encode(public_key.encrypt(data_key, _oaep())).decode(),
        "data": Fernet(data_key).encrypt(json.dumps(files).encode()).decode(),
    }


def _unseal(sealed, private_key_path):
    with open(private_key_path, "rb") as fh:
        private_key = serialization.load_pem_private_key(fh.read(), password=None)
    try:
        data_key = private_key.decrypt(base64.b64decode(sealed["key"]), _oaep())
        files = json.loads(Fernet(data_key).decrypt(sealed["data"].encode()))
    except (ValueError, InvalidToken) as exc:
        raise CommandExecutionError("the sealed files are not for this minion's key (or were altered)") from exc
    return {name: base64.b64decode(content) for name, content in files.items()}


def _write(path, content, mode):
    """Atomically replace ``path`` with ``content``; False when it already holds exactly that."""
    try:
        with open(path, "rb") as fh:
            if fh.read() == content and (os.stat(path).st_mode & 0o777) == mode:
                return False
    except FileNotFoundError:
        pass
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.platform-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def install_sealed(sealed, destinations, reload_cmd=None, private_key=None):
    """
    Open ``sealed`` (from ``seal``) with this minion's own key and write each file to its
    destination (a mapping name -> {path, mode}); run ``reload_cmd`` (a list, no shell) when a file
    changed. Returns the paths, whether anything changed and the reload's outcome; never contents.

    CLI Example:

    .. code-block:: bash

        salt mailcow platform_tls.install_sealed "$SEALED" '{cert: {path: /x/cert.pem, mode: "0644"}}'
    """
    key_path = private_key or os.path.join(__opts__["pki_dir"], "minion.pem")
    files = _unseal(sealed, key_path)
    unknown = set(destinations) - set(files)
    if unknown:
        raise CommandExecutionError(f"no sealed file named {', '.join(sorted(unknown))}")
    changed = []
    for name, dest in sorted(destinations.items()):
        if _write(dest["path"], files[name], int(str(dest.get("mode", "0600")), 8)):
            changed.append(dest["path"])
    result = {"changed": changed, "reloaded": False}
    if changed and reload_cmd:
        proc = subprocess.run(list(reload_cmd), capture_output=True, text=True, check=False, timeout=300)
        if proc.returncode != 0:
            raise CommandExecutionError(
                f"installed {', '.join(changed)} but {reload_cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
        result["reloaded"] = True
    log.info("platform_tls: installed %s", ", ".join(changed) or "nothing (unchanged)")
    return result
