"""Small helpers shared by the lab host layer: running commands, errors, mounts."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence

# A PATH that works on the host and inside Debian guests; never inherit the caller's.
SANE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class LabError(RuntimeError):
    """A lab operation failed.

    ``guest`` names the guest concerned (or None), ``command`` the failing argv (or None),
    ``returncode`` and ``stderr`` what it returned.
    """

    def __init__(
        self,
        message: str,
        *,
        guest: str | None = None,
        command: Sequence[str] | None = None,
        returncode: int | None = None,
        stderr: str | None = None,
        stdout: str | None = None,
    ):
        self.guest = guest
        self.command = list(command) if command is not None else None
        self.returncode = returncode
        self.stderr = stderr
        self.stdout = stdout
        parts = []
        if guest:
            parts.append(f"guest {guest!r}: ")
        parts.append(message)
        if command is not None:
            parts.append(f"\n  command: {shlex.join(str(c) for c in command)}")
        if returncode is not None:
            parts.append(f"\n  exit status: {returncode}")
        if stderr:
            parts.append("\n  stderr: " + _tail(stderr))
        elif stdout:
            parts.append("\n  stdout: " + _tail(stdout))
        super().__init__("".join(parts))


def _tail(text: str, limit: int = 4000) -> str:
    text = text.strip()
    if len(text) > limit:
        text = "..." + text[-limit:]
    return text.replace("\n", "\n          ")


def host_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment for host commands (no PIP_*, no proxies leaking by accident)."""
    env = {
        "PATH": SANE_PATH,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": os.environ.get("HOME", "/root"),
        "DEBIAN_FRONTEND": "noninteractive",
    }
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str],
    *,
    guest: str | None = None,
    input: bytes | str | None = None,
    check: bool = True,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    what: str | None = None,
    text: bool = True,
) -> subprocess.CompletedProcess:
    """Run argv, capture output; on failure (check=True) raise LabError with stderr."""
    argv = [str(a) for a in argv]
    if isinstance(input, bytes):
        text = False
    try:
        cp = subprocess.run(
            argv,
            check=False,
            input=input,
            capture_output=True,
            timeout=timeout,
            env=dict(env) if env is not None else host_env(),
            text=text,
            errors="replace" if text else None,
        )
    except FileNotFoundError as exc:
        raise LabError(f"{what or 'command'} not found: {exc}", guest=guest, command=argv) from exc
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        raise LabError(
            f"{what or 'command'} timed out after {timeout}s", guest=guest, command=argv, stderr=err
        ) from exc
    if check and cp.returncode != 0:
        err = cp.stderr.decode(errors="replace") if isinstance(cp.stderr, bytes) else cp.stderr
        out = cp.stdout.decode(errors="replace") if isinstance(cp.stdout, bytes) else cp.stdout
        raise LabError(
            f"{what or 'command'} failed", guest=guest, command=argv, returncode=cp.returncode, stderr=err, stdout=out
        )
    return cp


def mounts_under(path: str) -> list[str]:
    """Mount points at or below ``path`` in the host's mount namespace, deepest first."""
    path = os.path.realpath(path)
    found = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            for line in fh:
                mnt = line.split()[4]
                # mountinfo escapes blanks as octal
                mnt = mnt.encode().decode("unicode_escape")
                if mnt == path or mnt.startswith(path.rstrip("/") + "/"):
                    found.append(mnt)
    except OSError:
        return []
    return sorted(set(found), key=lambda m: m.count("/"), reverse=True)


def unmount_under(path: str, *, guest: str | None = None) -> None:
    """Lazily unmount everything at or below ``path``; raise if something stays mounted."""
    for _ in range(3):
        mnts = mounts_under(path)
        if not mnts:
            return
        for mnt in mnts:
            run(["umount", "-l", mnt], check=False, guest=guest)
    left = mounts_under(path)
    if left:
        raise LabError(f"cannot unmount {', '.join(left)}", guest=guest)
