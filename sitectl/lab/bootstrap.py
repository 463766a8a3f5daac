"""`make lab` from an empty machine: what the lab needs on the host, with the independent parts at once.

Run by the system's python3 before the project's venv exists (standard library only, as is the rest
of sitectl.lab), then it hands over to ``.venv/bin/sitectl lab up``::

    python3 -m sitectl.lab.bootstrap [--venv .venv]

1. the lab's own Debian packages (``HOST_PACKAGES``: LXC, debootstrap, nftables, the backup
   repository's rclone, pebble..., and python3-venv), not the test tiers' (``make test`` installs
   those);
2. the venv, with pip brought up to date;
3. at once: the guest template (debootstrap and the guests' Salt wheels, on the venv's pip; cached
   after the first build) and the project's Python packages (``pip install -e '.[test]'``, the same
   venv ``make test`` uses, skipped when ``pyproject.toml`` did not change since), which installs
   Salt from those wheels (built once for both);
4. ``sitectl lab up``, which finds the template built.

Every phase prints a line when it starts and when it ends, with its time, flushed at once (also in a
pipe or a CI log). Whatever fails stops the run with its output.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..bringup import phase
from .host import HOST_PACKAGES, ensure_host_packages

ROOT = Path(__file__).resolve().parent.parent.parent
# setuptools' note on every editable install (a box of text, not a problem) is silenced, nothing else.
QUIET_EDITABLE = {"PYTHONWARNINGS": "ignore:Editable installation"}


def _run(argv: list[str], what: str, env: dict | None = None) -> str:
    proc = subprocess.run(argv, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc.stdout


def venv_current(venv: Path) -> bool:
    """The venv's packages were installed from this pyproject.toml (the Makefile's stamp)."""
    stamp = venv / ".installed"
    return stamp.is_file() and stamp.stat().st_mtime >= (ROOT / "pyproject.toml").stat().st_mtime


def install_packages(venv: Path) -> None:
    if venv_current(venv):
        return
    # Salt and its dependencies from the wheels the guests' template installs (built once, by whichever
    # of the two jobs asks first; the other waits on the build's lock): Salt's sdist and timelib's C
    # code built twice at once were a minute of the two cores.
    build = "from sitectl.lab.template import build_wheels; print(build_wheels())"
    wheels = _run([str(venv / "bin/python"), "-c", build], "the Salt wheels' build",
                  {"PYTHONPATH": str(ROOT)}).strip().splitlines()[-1]
    _run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "--find-links", wheels, "-e", ".[test]"],
         "pip install", QUIET_EDITABLE)
    (venv / ".installed").touch()


def build_template(venv: Path) -> None:
    # In the venv's Python: the guests' wheels are built with its pip (Debian's python3 has none).
    _run([str(venv / "bin/python"), "-c", "from sitectl.lab.template import build_template; build_template()"],
         "the guest template's build", {"PYTHONPATH": str(ROOT)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", default=".venv", help="the project's venv (default: .venv)")
    parser.add_argument("--no-up", action="store_true", help="prepare only; do not run `sitectl lab up`")
    args = parser.parse_args(argv)
    venv = (ROOT / args.venv).resolve()
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    with phase("the lab's host packages"):
        ensure_host_packages([*HOST_PACKAGES, "python3-venv"])
    with phase("the Python venv"):
        if not (venv / "bin/python").is_file():
            _run([sys.executable, "-m", "venv", str(venv)], "python3 -m venv")
        if not venv_current(venv):
            _run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "--upgrade", "pip"], "pip's upgrade")
    # Independent: pip install writes the venv's site-packages, the template's build only reads pip.
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = {"the project's Python packages": (install_packages, venv),
                "guest template (cached after the first build)": (build_template, venv)}

        def timed(name):
            fun, arg = jobs[name]
            with phase(name):
                fun(arg)

        for done in [pool.submit(timed, name) for name in jobs]:
            done.result()
    if args.no_up:
        return 0
    sys.stdout.flush()
    os.execv(str(venv / "bin/sitectl"), [str(venv / "bin/sitectl"), "lab", "up"])  # noqa: S606 - hands over
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
