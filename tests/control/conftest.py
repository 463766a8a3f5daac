"""What the control node's lab tests share: the wheels its master's venv is installed from."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path

import pytest

from sitectl import ROOT
from sitectl.lab import template


def _name(requirement: str) -> str:
    return re.split(r"[=<>!~\[ ;]", requirement, maxsplit=1)[0].lower().replace("-", "_").replace(".", "_")


@pytest.fixture(scope="module")
def wheelhouse(lab_template, tmp_path_factory) -> bytes:
    """A tar of wheels for the guest (``wheels/*.whl``): the lab's wheelhouse, from which the guests'
    minions were built (the same pinned Salt), and the project's other pins that it lacks. The guest
    installs from it with ``--no-index --find-links``: PyPI is not the guests' to reach here."""
    found = sorted(Path(os.environ.get("SITECTL_LAB_CACHE", template.DEFAULT_CACHE_DIR)).glob("wheels-*"))
    assert found, "the lab's wheelhouse is missing (sitectl/lab/template.py builds it)"
    have = {_name(w.name.split("-")[0]) for w in found[-1].glob("*.whl")}
    block = (ROOT / "pyproject.toml").read_text().split("\ndependencies = [", 1)[1].split("\n]", 1)[0]
    pins = re.findall(r'^\s*"([^"]+)"', block, flags=re.M)
    missing = [pin for pin in pins if _name(pin) not in have]
    extra = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps", "-d",
                    str(extra), *missing, "wheel"], check=True, timeout=600)
    buf = BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for folder in (found[-1], extra):
            for wheel in folder.glob("*.whl"):
                tar.add(wheel, arcname=f"wheels/{wheel.name}")
    return buf.getvalue()
