"""
A large file from the master's file server, compared by one hash (``_states/master_file.py``):
the vault role's ``bao`` binary (OpenBao flavour, 182 MB).

Why not ``file.managed``: for a ``salt://`` source it caches the source in the minion's cache and
hashes that copy and the target several times over: six sha256 passes over the binary, 0.54 s of
every no-op highstate on the vault guest. Here a no-op asks the master for the source's hash (it
keeps it by mtime) and hashes the installed file once; only when they differ is the file fetched,
to a temporary file beside the target that is renamed over it.
"""

import os

import salt.utils.hashutils
from salt.exceptions import CommandExecutionError

__virtualname__ = "master_file"


def __virtual__():
    return __virtualname__


def source_hash(source, saltenv="base"):
    """``{'hash_type', 'hsum'}`` of ``source`` (``salt://...``) on the master's file server."""
    if not str(source).startswith("salt://"):
        raise CommandExecutionError(f"{source}: expected a salt:// path on the master's file server")
    found = __salt__["cp.hash_file"](source, saltenv)
    if not found or not found.get("hsum"):
        raise CommandExecutionError(f"{source} is not on the master's file server")
    return {"hash_type": found["hash_type"], "hsum": found["hsum"]}


def local_hash(path, hash_type="sha256"):
    """The ``hash_type`` digest of the file at ``path``, or None when there is none."""
    if not os.path.isfile(path):
        return None
    try:
        return salt.utils.hashutils.get_hash(path, form=hash_type, chunk_size=1 << 20)
    except OSError as exc:
        raise CommandExecutionError(f"{path}: {exc.strerror}") from None


def fetch(source, name, expected, user="root", group="root", mode="0644", saltenv="base"):
    """Fetch ``source`` beside ``name``, check it against ``expected`` (``{'hash_type', 'hsum'}``)
    and rename it over ``name`` with its owner and mode."""
    tmp = __utils__["platform_files.temporary_path"](name)
    try:
        got = __salt__["cp.get_file"](source, tmp, saltenv=saltenv)
        if not got or not os.path.isfile(tmp):
            raise CommandExecutionError(f"{source} could not be fetched from the master")
        hsum = salt.utils.hashutils.get_hash(tmp, form=expected["hash_type"], chunk_size=1 << 20)
        if hsum != expected["hsum"]:
            raise CommandExecutionError(f"{source} changed on the master while it was fetched; try again")
        __utils__["platform_files.set_attributes"](tmp, user, group, mode)
        os.replace(tmp, name)
    except OSError as exc:
        raise CommandExecutionError(f"{name}: {exc.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True


def attribute_changes(path, user, group, mode):
    """Owner, group and mode of ``path`` that differ from those asked (``{attribute: {old, new}}``)."""
    return __utils__["platform_files.attribute_changes"](path, user, group, mode)


def set_attributes(path, user, group, mode):
    """Give ``path`` its owner, group and mode."""
    return __utils__["platform_files.set_attributes"](path, user, group, mode)
