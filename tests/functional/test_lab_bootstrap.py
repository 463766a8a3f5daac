"""`make lab` from an empty machine (sitectl/lab/bootstrap.py): it starts on Debian's own python3,
before any venv, and the guest template's build runs while pip installs the project's packages."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from sitectl import ROOT
from sitectl.lab import bootstrap

pytestmark = pytest.mark.functional

SYSTEM_PYTHON = "/usr/bin/python3"


def test_the_bootstrap_starts_on_the_systems_python_with_no_package_installed():
    """-S: no site-packages at all, as on a machine where nothing was installed yet."""
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-S", "-c",
         f"import sys; sys.path.insert(0, {str(ROOT)!r}); import sitectl.lab.bootstrap as b; "
         "print(len(b.HOST_PACKAGES))"],
        capture_output=True, text=True, check=False, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert int(probe.stdout) > 5
    usage = subprocess.run([SYSTEM_PYTHON, "-m", "sitectl.lab.bootstrap", "--help"], cwd=ROOT,
                           capture_output=True, text=True, check=False, timeout=60)
    assert usage.returncode == 0 and "--no-up" in usage.stdout, usage.stderr


def test_template_and_packages_overlap_and_every_phase_prints_its_start_and_end(tmp_path, monkeypatch, capsys):
    """The two longest phases of a first `make lab` run at once: each one here takes 1 s and records
    when it ran; the whole takes well under their sum, and each prints its start and end."""
    spans: dict[str, tuple[float, float]] = {}
    lock = threading.Lock()

    def slow(name):
        def run(venv):
            t0 = time.monotonic()
            time.sleep(1.0)
            with lock:
                spans[name] = (t0, time.monotonic())
        return run

    installed: list[list[str]] = []
    monkeypatch.setattr(bootstrap, "ensure_host_packages", installed.append)
    monkeypatch.setattr(bootstrap, "_run", lambda argv, what, env=None: None)
    monkeypatch.setattr(bootstrap, "install_packages", slow("pip"))
    monkeypatch.setattr(bootstrap, "build_template", slow("template"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").write_text("")
    t0 = time.monotonic()
    assert bootstrap.main(["--no-up", "--venv", str(tmp_path)]) == 0
    elapsed = time.monotonic() - t0
    (pip_start, pip_end), (tpl_start, tpl_end) = spans["pip"], spans["template"]
    assert pip_start < tpl_end and tpl_start < pip_end, f"the two did not overlap: {spans}"
    assert elapsed < 1.9, elapsed
    assert installed and "python3-venv" in installed[0] and "debootstrap" in installed[0]
    out = capsys.readouterr().out
    for name in ("the lab's host packages", "the Python venv", "the project's Python packages",
                 "guest template (cached after the first build)"):
        assert f"] {name}: started" in out and f"] {name}: done in " in out, out


def test_a_failed_phase_stops_the_run_with_its_output(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bootstrap, "ensure_host_packages", lambda packages: None)
    monkeypatch.setattr(bootstrap, "venv_current", lambda venv: True)
    monkeypatch.setattr(bootstrap, "build_template", lambda venv: bootstrap._run(
        [sys.executable, "-c", "import sys; print('debootstrap: no mirror'); sys.exit(3)"],
        "the guest template's build"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").write_text("")
    with pytest.raises(SystemExit) as stopped:
        bootstrap.main(["--no-up", "--venv", str(tmp_path)])
    assert "the guest template's build failed (exit 3)" in str(stopped.value)
    assert "debootstrap: no mirror" in str(stopped.value)
    assert "guest template (cached after the first build): failed after" in capsys.readouterr().out
