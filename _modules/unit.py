"""
What systemd says about one unit, in one ``systemctl show`` call (``_states/unit.py``).

Salt's ``service.running`` asks ``systemctl`` five to seven times per state even when nothing
differs (``status`` three times, ``is-active``, ``is-enabled``...), at about 10 ms each in a guest
plus Salt's command wrapper: 0.06-0.13 s per service state, and a guest has five to nine of them.
One ``show`` of four properties answers the no-op's question.
"""

import subprocess

from salt.exceptions import CommandExecutionError

__virtualname__ = "unit"

PROPERTIES = ("LoadState", "ActiveState", "UnitFileState", "NeedDaemonReload")


def __virtual__():
    if not __grains__.get("init") == "systemd":
        return False, "unit: systemd only"
    return __virtualname__


def show(name):
    """``{LoadState, ActiveState, UnitFileState, NeedDaemonReload}`` of the unit ``name``
    (``.service`` when no type is given)."""
    unit = name if "." in name.rsplit("@", 1)[-1] else f"{name}.service"
    try:
        out = subprocess.run(
            ["systemctl", "show", "--property=" + ",".join(PROPERTIES), "--", unit],
            capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CommandExecutionError(f"systemctl show {unit}: {exc}") from None
    if out.returncode != 0:
        raise CommandExecutionError(f"systemctl show {unit}: {(out.stderr or out.stdout).strip()}")
    found = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    return {key: found.get(key, "") for key in PROPERTIES}
