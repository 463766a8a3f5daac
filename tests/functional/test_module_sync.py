"""Custom modules reach a minion through salt/top.sls, and only when the master's have changed.

The site's minions run with Salt's own sync on every highstate switched off
(``autoload_dynamic_modules: false``, sitectl.site.MINION_SETTINGS); top.sls syncs when the SHA-256 of
the master's extension modules (pillar ``platform:extension_modules``, the platform ext_pillar)
differs from the one the minion last synced. Here a real master over the checkout's own top.sls and
ext_pillar, with one more file root holding a module this test changes, and a real minion with the
site's setting.
"""

from __future__ import annotations

import os
import time

import pytest

from sitectl.pillarcache import extension_modules
from sitectl.site import MINION_SETTINGS

pytestmark = pytest.mark.functional

MODULE = "def answer():\n    return {answer}\n"


@pytest.fixture(scope="module")
def extra_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sync-root")
    (root / "_modules").mkdir()
    (root / "_modules" / "syncprobe.py").write_text(MODULE.format(answer=1))
    return root


@pytest.fixture(scope="module")
def file_roots(checkout, extra_root):
    # the checkout's own salt/ (its top.sls), not the functional package's test tree
    return [str(checkout[0] / "salt"), str(extra_root)]


@pytest.fixture(scope="module")
def sync_minion(salt_factories, master_overrides, file_roots):
    overrides = dict(master_overrides)
    overrides["file_roots"] = {"base": file_roots}
    master = salt_factories.salt_master_daemon("fn-sync-master", overrides=overrides)
    with master.started(start_timeout=120):
        minion = master.salt_minion_daemon(
            "fn-sync", overrides={k: v for k, v in MINION_SETTINGS.items() if k != "log_level_logfile"})
        with minion.started(start_timeout=120):
            yield minion


def synced_mark(minion) -> str:
    return os.path.join(minion.config["cachedir"], "platform-extension-modules")


def test_the_site_minions_do_not_sync_on_every_highstate():
    assert MINION_SETTINGS["autoload_dynamic_modules"] is False


def test_top_syncs_once_and_again_only_after_a_module_changed(sync_minion, extra_root, file_roots):
    call = sync_minion.salt_call_cli(timeout=120)
    mark = synced_mark(sync_minion)
    assert not os.path.exists(mark)
    assert "syncprobe.answer" not in str(call.run("sys.list_functions", "syncprobe").data)

    fingerprint = extension_modules(file_roots)  # what the master's ext_pillar computes

    assert call.run("state.show_top").returncode == 0  # top.sls rendered: the first sync
    assert open(mark).read().strip() == fingerprint
    assert call.run("syncprobe.answer").data == 1
    first = os.stat(mark).st_mtime_ns

    time.sleep(0.05)
    assert call.run("state.show_top").returncode == 0  # nothing changed: no sync
    assert os.stat(mark).st_mtime_ns == first

    (extra_root / "_modules" / "syncprobe.py").write_text(MODULE.format(answer=2))
    changed = extension_modules(file_roots)
    assert changed != fingerprint
    assert call.run("state.show_top").returncode == 0  # the master's modules changed: synced again
    assert open(mark).read().strip() == changed
    assert call.run("syncprobe.answer").data == 2
