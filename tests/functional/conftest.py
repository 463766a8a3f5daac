"""A real Salt master configured from the repository's own template, and one minion.

The minion runs on this machine, so the highstate it is given comes from a harmless test tree
placed before the repository's salt/ (its top.sls shadows the real one): the base state is never
applied here; it converges in the lab guests.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import SITES, make_checkout

MINION_ID = "fn-web"
# Keys of the rendered master config that pytest-salt-factories owns for its own daemons; every
# other key (file roots, pillar roots, module dirs, ext_pillar, reactor, ...) comes from etc/master.j2.
FACTORY_KEYS = {
    "id", "user", "root_dir", "pki_dir", "cachedir", "sock_dir", "pidfile", "log_file", "key_logfile",
    "log_level_logfile", "interface", "publish_port", "ret_port",
}


@pytest.fixture(scope="package")
def checkout(tmp_path_factory):
    site = (SITES / "valid" / "small" / "site.sls").read_text().replace("    web:\n", f"    {MINION_ID}:\n")
    site = site.replace("guest: web", f"guest: {MINION_ID}")
    base = tmp_path_factory.mktemp("functional")
    source = base / "site.sls"
    source.write_text(site)
    root, conf = make_checkout(base, source, site_name="functional")
    return root, conf


@pytest.fixture(scope="package")
def marker_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("markers")


@pytest.fixture(scope="package")
def test_states(tmp_path_factory, marker_dir) -> Path:
    tree = tmp_path_factory.mktemp("test-states")
    (tree / "top.sls").write_text("base:\n  '*':\n    - marker\n")
    (tree / "marker.sls").write_text(
        "functional-marker-file-managed:\n"
        "  file.managed:\n"
        f"    - name: {marker_dir}/{{{{ grains['id'] }}}}-highstate\n"
        "    - contents: applied\n"
    )
    return tree


@pytest.fixture(scope="package")
def master_overrides(checkout, test_states) -> dict:
    _, conf = checkout
    rendered = yaml.safe_load((conf / "master").read_text())
    overrides = {key: value for key, value in rendered.items() if key not in FACTORY_KEYS}
    overrides["file_roots"] = {"base": [str(test_states), *rendered["file_roots"]["base"]]}
    return overrides


@pytest.fixture(scope="package")
def salt_master(salt_factories, master_overrides):
    factory = salt_factories.salt_master_daemon("fn-master", overrides=master_overrides)
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="package")
def salt_minion(salt_master):
    factory = salt_master.salt_minion_daemon(MINION_ID, overrides={"hash_type": "sha256"})
    with factory.started(start_timeout=120):
        yield factory


@pytest.fixture(scope="package")
def salt_call(salt_minion):
    return salt_minion.salt_call_cli(timeout=120)


@pytest.fixture(scope="package")
def salt_run(salt_master):
    return salt_master.salt_run_cli(timeout=120)
