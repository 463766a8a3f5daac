"""Compile a guest's pillar and highstate with Salt's own machinery, masterless, no daemon."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import salt._logging.impl
import salt.client
import salt.config

# Salt queues records in a temporary handler until a daemon sets logging up; nothing here does,
# so drop it and let the caller's own logging (pytest's, the CLI's) see the records.
salt._logging.impl.shutdown_temp_handler()


@cache
def _base_opts(config_dir: str) -> dict:
    return salt.config.minion_config(str(Path(config_dir) / "minion"))


def caller(config_dir: Path, minion_id: str, grains: dict | None = None, pillar: dict | None = None,
           overrides: dict | None = None):
    """A salt.client.Caller acting as ``minion_id`` over the checkout (file_client: local)."""
    opts = copy.deepcopy(_base_opts(str(config_dir)))
    opts.update(overrides or {})
    opts["id"] = minion_id
    # As salt-call does: without it, Caller compiles the pillar a second time for every call.
    opts["__cli"] = "salt-call"
    opts["cachedir"] = f"{opts['cachedir']}/{minion_id}"
    if grains:
        opts["grains"] = {**salt.loader.grains(opts), **grains}
    if pillar:
        opts["pillar"] = pillar
    return salt.client.Caller(mopts=opts)


def pillar(config_dir: Path, minion_id: str) -> dict:
    return caller(config_dir, minion_id).cmd("pillar.items", unmask=True)


def highstate(config_dir: Path, minion_id: str, grains: dict | None = None) -> dict | list:
    """The compiled highstate (state id -> module -> args), or the list of errors Salt reports."""
    return caller(config_dir, minion_id, grains=grains).cmd("state.show_highstate")
