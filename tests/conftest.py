"""Shared fixtures: a checkout whose pillar holds a chosen site, its rendered Salt config, and the
scratch lab of the role tests (tests/scratchlab.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import salt._logging.impl
import yaml

from sitectl import ROOT
from sitectl.config import SaltSettings, write_config
from tests import scratchlab

# Salt parks log records in a temporary handler that it flushes to a closed stream at exit.
salt._logging.impl.shutdown_temp_handler()

FIXTURES = Path(__file__).parent / "fixtures"
SITES = FIXTURES / "sites"


def state_args(state: dict, module: str) -> dict:
    """The arguments of one state in a compiled highstate, with the function as ``__fun__``."""
    out = {"__fun__": next(item for item in state[module] if isinstance(item, str))}
    for item in state[module]:
        if isinstance(item, dict):
            out.update(item)
    return out


def load_site(site_file: Path = ROOT / "pillar" / "site" / "example.sls") -> dict:
    """The ``site`` mapping of a site file (plain YAML, as the example and the fixtures are)."""
    with site_file.open() as fh:
        return yaml.safe_load(fh)["site"]


def guests_with_role(site: dict, role: str) -> list[str]:
    """The names of the site's guests that carry ``role``, in the site's order."""
    return [name for name, guest in site["guests"].items() if role in guest.get("roles", [])]


def guest_with_role(site: dict, role: str) -> str:
    """The one guest of the site that carries ``role`` (a test about that role's single guest)."""
    found = guests_with_role(site, role)
    assert len(found) == 1, f"expected exactly one guest with the role {role!r}, the site has {found}"
    return found[0]


def make_checkout(base: Path, site_file: Path | None = None, site_name: str = "example",
                  overlay: str | None = None) -> tuple[Path, Path]:
    """A checkout under ``base``: the real tree linked in, pillar/site/<site_name>.sls from ``site_file``,
    and the repository's pillar overlay ``overlay`` applied when one is named.

    Returns (root, config_dir). Everything but pillar/site is the repository's own.
    """
    root = base / "checkout"
    root.mkdir(parents=True)
    for entry in ROOT.iterdir():
        if entry.name != "pillar" and not entry.name.startswith("."):
            (root / entry.name).symlink_to(entry)
    (root / "pillar").mkdir()
    for name in ("top.sls", "platform", "overlays"):
        (root / "pillar" / name).symlink_to(ROOT / "pillar" / name)
    (root / "pillar" / "site").mkdir()
    source = site_file or ROOT / "pillar" / "site" / f"{site_name}.sls"
    shutil.copy(source, root / "pillar" / "site" / f"{site_name}.sls")
    conf = write_config(SaltSettings(state_dir=base / "state", site=site_name, overlay=overlay), root=root)
    return root, conf


# Parallel runs (pytest-xdist, `make test`): tests that share a package-scoped fixture (a Salt master,
# an OpenBao, fakepve, the whole-site lab) run on one worker, in their order; every other module is a
# group of its own (a scratch lab is per module, on its worker's slot: tests/scratchlab.py). The
# whole-site lab, the longest group by far, is collected first so that a worker starts on it at once.
# (The scheduler groups by path itself: xdist's own xdist_group marker renames node ids, which this
# pytest no longer honours.)
SHARED_PACKAGES = ("lab", "functional", "ci", "vault", "states", "proxmox")
FIRST = "lab"


def group_of(nodeid: str) -> str:
    """The group of a test's node id (``tests/<package>/<module>.py::...``)."""
    path = nodeid.split("::", 1)[0]
    parts = path.split("/")
    return parts[1] if len(parts) > 2 and parts[1] in SHARED_PACKAGES else path


@pytest.hookimpl(optionalhook=True)  # a plain `pytest` needs no xdist
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return GroupScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: group_of(item.nodeid) != FIRST)  # stable: the order within is kept


@pytest.fixture(scope="session", autouse=True)
def no_gpg_agent_left(tmp_path_factory):
    """gpg starts an agent for each home directory a test signs or makes keys in; they end with the run
    (only those of this run's homes)."""
    yield
    for keyring in tmp_path_factory.getbasetemp().rglob("pubring.kbx"):
        subprocess.run(["gpgconf", "--homedir", str(keyring.parent), "--kill", "gpg-agent"],
                       capture_output=True, check=False, timeout=30)


@pytest.fixture(scope="session")
def example_config(tmp_path_factory) -> Path:
    """Salt config over the repository itself with the example site."""
    state = tmp_path_factory.mktemp("example-state")
    return write_config(SaltSettings(state_dir=state, site="example"))


@pytest.fixture(scope="session")
def example_site() -> dict:
    return load_site()


@pytest.fixture(scope="session")
def lab_template() -> str:
    """The host's lab packages and the cached guest template (built once, ~3 minutes cold)."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    from sitectl.lab import host

    host.ensure_host_packages()
    return host.build_template(cache_dir=os.environ.get("SITECTL_LAB_CACHE", host.DEFAULT_CACHE_DIR))


@pytest.fixture(scope="module")
def scratch_lab(lab_template, tmp_path_factory):
    """The scratch lab of one test module: its bridge and nft table up, no guest yet; guests, the dev
    OpenBao (if started), bridge and table are gone after the module."""
    from sitectl.lab import host

    scratch = (scratchlab.LAB_DIR, scratchlab.BRIDGE, scratchlab.TABLE)
    host.teardown(*scratch)  # leftovers of an interrupted run
    net = host.network_up(scratchlab.BRIDGE, f"{scratchlab.GATEWAY}/{scratchlab.SUBNET.prefixlen}",
                          table=scratchlab.TABLE)
    lab = scratchlab.ScratchLab(template=lab_template, nameserver=net["dns_ips"][0],
                                workdir=tmp_path_factory.mktemp("scratch-lab"))
    try:
        yield lab
    finally:
        lab.stop()
        host.teardown(*scratch)
