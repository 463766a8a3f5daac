"""
Files written and checked the same way by this tree's execution modules (``local_pki``,
``master_file``): owner, group and mode read and set, and content written atomically (a temporary
file beside the target, born with the final owner and mode, renamed over it), so a reader never
sees half a file and a secret file is never readable by others, not even for a moment.
Modules call these as ``__utils__["platform_files.<function>"]``.
"""

import grp
import os
import pwd
import secrets

from salt.exceptions import CommandExecutionError


def _ids(user, group):
    try:
        return pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    except KeyError as exc:
        raise CommandExecutionError(f"no such user or group: {exc.args[0]}") from None


def attributes(path):
    """``{'user', 'group', 'mode'}`` of ``path`` (mode as a 4-digit octal string), or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return {"user": user, "group": group, "mode": f"{st.st_mode & 0o7777:04o}"}


def attribute_changes(path, user, group, mode):
    """``{attribute: {old, new}}`` for each of owner, group and mode of ``path`` that differs from
    what is asked; empty when there is no file (the content's change says that)."""
    have = attributes(path)
    if not have:
        return {}
    want = {"user": user, "group": group, "mode": f"{int(str(mode), 8):04o}"}
    return {k: {"old": have[k], "new": v} for k, v in want.items() if have[k] != v}


def set_attributes(path, user, group, mode):
    """Give ``path`` its owner, group and mode."""
    uid, gid = _ids(user, group)
    try:
        os.chown(path, uid, gid)
        os.chmod(path, int(str(mode), 8))
    except OSError as exc:
        raise CommandExecutionError(f"{path}: {exc.strerror}") from None
    return True


def temporary_path(path):
    """A name beside ``path`` for its next content."""
    return os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")


def write_atomic(path, data, user, group, mode):
    """``data`` (bytes) to ``path`` atomically, born with its owner and mode."""
    uid, gid = _ids(user, group)
    tmp = temporary_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, int(str(mode), 8))
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise CommandExecutionError(f"{path}: {exc.strerror}") from None
    return True
